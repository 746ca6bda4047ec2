import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Issue 13, "Faults, tested": each fault during the backfill and during the catch-up, under a
/// write load, converges with nothing lost or duplicated (`ReferenceData`'s independent SQL) and
/// no human step: the one coordinator started keeps running through it.
///
/// One set of clusters for the class: s0 on c0 (also target t0, as `PlanFixture` lays it out),
/// s1 on c1, targets t1 and t2 on c2, the metadata on c3. reshard connects as a role of its own (`reshard_fault`), the application and
/// the checks as `postgres`, so a setting on reshard's role touches reshard alone.
final class FaultMatrixTests: XCTestCase {
    enum Fault: CaseIterable {
        case sourceRestart, targetRestart, metadataRestart, sessionsTerminated, targetReadOnly, statementTimeout, networkStall
        /// The metadata's, s0's (also t0's) and t1's clusters restarted one after the other, as a rehearsal's faults
        /// once landed within 8 s: every slice must still be copied, none left claimed or in progress for good.
        case metadataSourceAndTargetRestarts
    }

    enum Phase { case backfill, catchUp }

    func testSourceRestartDuringBackfill() throws { try run(.sourceRestart, during: .backfill) }
    func testSourceRestartDuringCatchUp() throws { try run(.sourceRestart, during: .catchUp) }
    func testTargetRestartDuringBackfill() throws { try run(.targetRestart, during: .backfill) }
    func testTargetRestartDuringCatchUp() throws { try run(.targetRestart, during: .catchUp) }
    func testMetadataRestartDuringBackfill() throws { try run(.metadataRestart, during: .backfill) }
    func testMetadataRestartDuringCatchUp() throws { try run(.metadataRestart, during: .catchUp) }
    func testSessionsTerminatedDuringBackfill() throws { try run(.sessionsTerminated, during: .backfill) }
    func testSessionsTerminatedDuringCatchUp() throws { try run(.sessionsTerminated, during: .catchUp) }
    func testTargetReadOnlyDuringBackfill() throws { try run(.targetReadOnly, during: .backfill) }
    func testTargetReadOnlyDuringCatchUp() throws { try run(.targetReadOnly, during: .catchUp) }
    func testStatementTimeoutDuringBackfill() throws { try run(.statementTimeout, during: .backfill) }
    func testStatementTimeoutDuringCatchUp() throws { try run(.statementTimeout, during: .catchUp) }
    func testNetworkStallDuringBackfill() throws { try run(.networkStall, during: .backfill) }
    func testNetworkStallDuringCatchUp() throws { try run(.networkStall, during: .catchUp) }
    func testMetadataSourceAndTargetRestartsDuringBackfill() throws { try run(.metadataSourceAndTargetRestarts, during: .backfill) }

    /// A fault that lasts: the coordinator retries (status shows it), and exits 1 naming the
    /// shard only once `--max-retry` is spent, not before.
    func testGivesUpWithExit1OnlyAfterMaxRetry() throws {
        let fixture = try makeFixture()
        let load = WriteLoad(sources: fixture.app.sources, writers: 1, longTransactions: false)
        defer { load.stop() }
        let apply = try ReshardCLI.start(["apply", "-c", fixture.config, "--max-retry", "6"])
        defer { if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) } }
        XCTAssertTrue(try eventually(timeout: 90) { try status(fixture.config)?.phase == "in-sync" || apply.wait(timeout: 0.01) != nil }, apply.stderr)
        try clusters[2].stop(mode: "immediate")
        defer { try? clusters[2].restart(mode: "fast") }
        let stopped = Date()
        XCTAssertTrue(try eventually(timeout: 30) {
            try status(fixture.config)?.runtime?.retries.contains { $0.shard?.hasPrefix("t") == true } == true
        }, "status must show the retries: \(apply.stderr)")
        let exit = apply.wait(timeout: 60)
        let waited = Date().timeIntervalSince(stopped)
        XCTAssertEqual(exit, 1, apply.stderr)
        XCTAssertGreaterThanOrEqual(waited, 6, "gave up before --max-retry")
        XCTAssertTrue(apply.stderr.range(of: #"gave up after retrying for 6 s \(--max-retry\): t\d"#, options: .regularExpression) != nil, apply.stderr)
    }

    static let role = "reshard_fault"
    nonisolated(unsafe) private static var set: LocalClusterSet?

    override class func setUp() {
        super.setUp()
        do {
            let started = try LocalClusterSet.start(count: 4)
            set = started
            // The harness's password file holds one password for any user on 127.0.0.1.
            let line = try String(contentsOfFile: started.clusters[0].passwordFile, encoding: .utf8)
            let password = String(line.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            for cluster in started.clusters {
                let admin = try PGConnection.connect(cluster.connectionString())
                let create = try admin.query("SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text)", [role, password])
                try admin.execute(try create.get(0, 0, as: String.self))
            }
        } catch {
            XCTFail("fault matrix clusters: \(error)")
        }
    }

    override class func tearDown() {
        set?.stop()
        set = nil
        super.tearDown()
    }

    private var clusters: [LocalCluster] { Self.set?.clusters ?? [] }

    /// The databases of one test, as the application (`postgres`) and as reshard see them.
    private struct Fixture {
        var app: PlanFixture
        var reshard: PlanFixture
        var config: String
        var targetNames: [String]
    }

    private func makeFixture() throws -> Fixture {
        XCTAssertEqual(clusters.count, 4, "the class's clusters did not start")
        let id = UUID().uuidString.prefix(6).lowercased()
        func database(_ cluster: LocalCluster, _ name: String) throws -> String {
            let full = "\(name)_\(id)"
            try cluster.createDatabase(full)
            addTeardownBlock {
                let admin = try PGConnection.connect(cluster.connectionString())
                try admin.execute("DROP DATABASE IF EXISTS \(try admin.quoteIdentifier(full)) WITH (FORCE)")
            }
            return full
        }
        let s0 = (clusters[0], try database(clusters[0], "s0"))
        let places: [(LocalCluster, String)] = [
            s0, (clusters[1], try database(clusters[1], "s1")),
            s0, (clusters[2], try database(clusters[2], "t1")),
            (clusters[2], try database(clusters[2], "t2")), (clusters[3], try database(clusters[3], "meta")),
        ]
        let directory = NSTemporaryDirectory() + "reshard-faults-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
        func fixture(user: String) -> PlanFixture {
            let dsns = places.map { $0.0.connectionString(database: $0.1, user: user) }
            return PlanFixture(sources: Array(dsns[0..<2]), targets: Array(dsns[2..<5]), metadata: dsns[5], directory: directory)
        }
        let app = fixture(user: "postgres"), reshard = fixture(user: Self.role)
        try ReferenceData.load(app, scale: 0.01)
        return Fixture(app: app, reshard: reshard, config: try reshard.writeConfig(tables: ReferenceData.tables), targetNames: places[2..<5].map(\.1))
    }

    private func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try? JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }

    private func changelogIsEmpty(_ fixture: PlanFixture) throws -> Bool {
        try fixture.sources.allSatisfy { dsn in
            let conn = try PGConnection.connect(dsn)
            let logs = try conn.query(
                "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
            return try logs.rowCount > 0 && (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
        }
    }

    private func retryEvents(_ fixture: PlanFixture) throws -> Int {
        try PGConnection.connect(fixture.metadata).query("SELECT count(*) FROM reshard.events WHERE message LIKE 'retrying %'")
            .get(0, 0, as: Int.self)
    }

    /// Ends every session of reshard's (its role, `application_name` reshard...) on `clusters`,
    /// optionally in one database.
    @discardableResult
    private func terminateReshardSessions(on clusters: [LocalCluster], database: String? = nil) throws -> Int {
        try clusters.reduce(0) { total, cluster in
            let admin = try PGConnection.connect(cluster.connectionString())
            let ended = try admin.query(
                """
                SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE usename = $1 AND application_name LIKE 'reshard%' AND ($2::text IS NULL OR datname = $2)
                """, [Self.role, database])
            return total + (try ended.get(0, 0, as: Int.self))
        }
    }

    /// The postmaster of `cluster` and every process it started (its backends).
    private func serverProcesses(_ cluster: LocalCluster) throws -> [pid_t] {
        let postmaster = try XCTUnwrap(cluster.postmasterPID)
        var children: [pid_t] = []
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/proc") {
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            // "pid (comm) state ppid ...": the command may hold spaces, so split after ")".
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == postmaster { children.append(pid) }
        }
        return [postmaster] + children
    }

    private func run(_ fault: Fault, during phase: Phase, file: StaticString = #filePath, line: UInt = #line) throws {
        let fixture = try makeFixture()
        let config = fixture.config
        let restartsSource = fault == .sourceRestart || fault == .metadataSourceAndTargetRestarts
        let load = WriteLoad(sources: fixture.app.sources, writers: 2, tolerating: restartsSource ? ["08", "57P01", "57P03"] : [])
        defer { load.stop() }
        // In the backfill the rate limit keeps it going for a few seconds, so the fault lands in it.
        let apply = try ReshardCLI.start(["apply", "-c", config] + (phase == .backfill ? ["--max-rows-per-second", "1500"] : []))
        defer {
            if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) }
            for cluster in clusters {
                _ = try? PGConnection.connect(cluster.connectionString()).execute("ALTER ROLE \(Self.role) RESET ALL")
            }
        }
        /// Waits for `condition`, or for apply to exit (it must not): a failure then shows at once.
        func waitFor(_ timeout: TimeInterval, _ condition: () throws -> Bool) throws -> Bool {
            try eventually(timeout: timeout) { try condition() || apply.wait(timeout: 0.01) != nil } && (try condition())
        }
        var seen: MigrationStatus?
        XCTAssertTrue(try waitFor(90) {
            seen = try status(config)
            guard let s = seen else { return false }
            switch phase {
            case .backfill: return s.phase == "backfilling" && s.rowsCopied >= 1500
            case .catchUp: return s.phase == "in-sync" && load.committed > 100
            }
        }, "never reached the phase: \(String(describing: seen?.phase)) \(apply.stderr)", file: file, line: line)
        if phase == .backfill {
            XCTAssertEqual(try status(config)?.phase, "backfilling", "the fault must land in the backfill", file: file, line: line)
        }

        var retriesSeen = false
        switch fault {
        case .sourceRestart: try clusters[0].restart(mode: "immediate")
        case .targetRestart: try clusters[2].restart(mode: "immediate")
        case .metadataRestart: try clusters[3].restart(mode: "immediate")
        case .metadataSourceAndTargetRestarts:
            for cluster in [clusters[3], clusters[0], clusters[2]] { try cluster.restart(mode: "immediate") }
        case .sessionsTerminated:
            XCTAssertGreaterThan(try terminateReshardSessions(on: clusters), 0, file: file, line: line)
        case .targetReadOnly:
            // Refuses writes until status shows the retries they cause, then takes them again.
            let admin = try PGConnection.connect(clusters[2].connectionString())
            let t1 = try admin.quoteIdentifier(fixture.targetNames[1])
            try admin.execute("ALTER DATABASE \(t1) SET default_transaction_read_only = on")
            try terminateReshardSessions(on: [clusters[2]], database: fixture.targetNames[1])
            retriesSeen = try waitFor(30) { try status(config)?.runtime?.retries.contains { $0.shard == "t1" } == true }
            try admin.execute("ALTER DATABASE \(t1) RESET default_transaction_read_only")
        case .statementTimeout:
            // The role's timeout reaches reshard's sessions as they reconnect; a statement then
            // waits longer than it on a lock (an index build on a target takes such a lock).
            for cluster in clusters {
                try PGConnection.connect(cluster.connectionString()).execute("ALTER ROLE \(Self.role) SET statement_timeout = '1s'")
            }
            try terminateReshardSessions(on: clusters)
            let locker = try PGConnection.connect(fixture.app.targets[1])
            try locker.execute("BEGIN; LOCK TABLE users, posts, likes, handles IN SHARE MODE")
            let observer = try PGConnection.connect(fixture.app.targets[1])
            _ = try eventually(timeout: 10) {
                try observer.query(
                    "SELECT 1 FROM pg_stat_activity WHERE usename = $1 AND wait_event_type = 'Lock'", [Self.role]).rowCount > 0
            }
            usleep(2_500_000)  // the fault: a lock held longer than the timeout
            try locker.execute("COMMIT")
        case .networkStall:
            // The source's server and every backend stop answering, as behind a stalled network.
            let processes = try serverProcesses(clusters[0])
            for pid in processes { kill(pid, SIGSTOP) }
            usleep(10_000_000)  // the fault: a 10 s stall
            for pid in processes.reversed() { kill(pid, SIGCONT) }
        }
        if fault == .targetReadOnly { XCTAssertTrue(retriesSeen, "status never showed the retries of t1", file: file, line: line) }

        // The application goes on writing after the fault, then stops; everything drains.
        let committed = load.committed
        XCTAssertTrue(eventually(timeout: 60) { load.committed > committed + 100 }, "the load stalled", file: file, line: line)
        if phase == .backfill {
            XCTAssertEqual(try ReshardCLI.run(["throttle", "-c", config, "--unlimited"]).status, 0, file: file, line: line)
        }
        XCTAssertTrue(try waitFor(120) { try status(config)?.phase == "in-sync" }, apply.stderr, file: file, line: line)
        load.assertHealthy(file: file, line: line)
        XCTAssertTrue(try waitFor(120) { try changelogIsEmpty(fixture.app) }, "the changelog did not drain: \(apply.stderr)",
                      file: file, line: line)
        XCTAssertNil(apply.wait(timeout: 0.01), "apply must ride through the fault: \(apply.stderr)", file: file, line: line)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr, file: file, line: line)
        try ReferenceData.assertTargetsMatchSources(fixture.app, file: file, line: line)
        if [.sourceRestart, .targetRestart, .metadataRestart, .sessionsTerminated, .targetReadOnly, .metadataSourceAndTargetRestarts].contains(fault) {
            XCTAssertGreaterThan(try retryEvents(fixture.app), 0, "the fault's retries must be events", file: file, line: line)
        }
    }
}

extension PlanFixture {
    /// Databases placed by the test itself, described by one config directory.
    init(sources: [ConnectionString], targets: [ConnectionString], metadata: ConnectionString, directory: String) {
        self.sources = sources
        self.targets = targets
        self.metadata = metadata
        self.directory = directory
    }
}
