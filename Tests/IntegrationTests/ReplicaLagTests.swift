import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// Issue 13: `apply --max-replica-lag` with a real streaming replica (`pg_basebackup -R`) made to
/// lag with `recovery_min_apply_delay`: the backfill pauses and `status`, the progress and the
/// metrics say why; once the replica catches up it resumes and finishes with every row in place.
final class ReplicaLagTests: XCTestCase {
    func testBackfillPausesWhileAReplicaLagsAndResumesWhenItRecovers() throws {
        let spare = try LocalClusterSet.start(count: 1)
        defer { spare.stop() }
        var fixture = try PlanFixture(self)
        fixture.sources[1] = try spare.clusters[0].createDatabase("s1")
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, 16000) g WHERE g % 2 = \(k);
                CREATE TABLE ticks (n bigint);
                ANALYZE items;
                """)
        }
        let replica = try spare.startReplica(of: spare.clusters[0], settings: ["recovery_min_apply_delay": "'6s'"])
        let config = try fixture.writeConfig(
            tables: [("items", "id")], replicas: [1: [replica.connectionString(database: "s1")]])

        // The application keeps writing on s1 (outside the migration), so there is WAL to replay.
        let writing = WritingFlag()
        let s1 = fixture.sources[1]
        let writer = Thread {
            guard let conn = try? PGConnection.connect(s1) else { return }
            var n = 0
            while writing.on {
                n += 1
                _ = try? conn.query("INSERT INTO ticks VALUES ($1)", [n])
                usleep(100_000)
            }
        }
        writer.start()
        defer { writing.stop() }

        let apply = try ReshardCLI.start([
            "apply", "-c", config, "--max-replica-lag", "2s", "--max-rows-per-second", "1000", "--metrics-listen", "127.0.0.1:0",
        ])
        var paused: MigrationStatus?
        XCTAssertTrue(try eventually(timeout: 60) {
            paused = try OperateChecks.status(config)
            return paused?.runtime?.pausedReason?.contains("replicas of s1 lag") == true
        }, "status: \(String(describing: paused?.runtime)) \(apply.stderr)")
        XCTAssertEqual(paused?.phase, "backfilling", "the pause must come before the backfill is done")
        XCTAssertTrue(paused?.runtime?.pausedReason?.contains("> --max-replica-lag 2s") == true, "\(String(describing: paused?.runtime))")
        // The listed replica is asked directly too.
        let r = try PGConnection.connect(replica.connectionString())
        XCTAssertGreaterThan(
            try r.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reshard apply'").get(0, 0, as: Int.self), 0)
        let text = try ReshardCLI.run(["status", "-c", config]).stdout
        XCTAssertTrue(text.contains("backfill paused") && text.contains("replicas of s1 lag"), text)

        // The gauge shows the lag of s1 beyond the limit.
        let address = try XCTUnwrap(apply.stderr.split(separator: "\n").first { $0.hasPrefix("metrics: http://") })
            .dropFirst("metrics: ".count)
        let scrape = Process()
        scrape.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        scrape.arguments = ["-sS", "--max-time", "5", String(address)]
        let pipe = Pipe()
        scrape.standardOutput = pipe
        try scrape.run()
        let metrics = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        scrape.waitUntilExit()
        let lagLine = metrics.split(separator: "\n").first { $0.hasPrefix("reshard_replica_lag_seconds{") && $0.contains("source=\"s1\"") }
        XCTAssertGreaterThan(Double(lagLine?.split(separator: " ").last ?? "") ?? 0, 2, "\(lagLine ?? "no gauge"): \(metrics)")
        XCTAssertTrue(metrics.contains("reshard_backfill_paused{migration=\"plan-test\"} 1"), metrics)

        // While paused, the copy stands still (a batch under way when the pause came may finish).
        XCTAssertTrue(try eventually(timeout: 10) {
            let a = try OperateChecks.status(config)
            usleep(1_500_000)
            let b = try OperateChecks.status(config)
            return a?.rowsCopied == b?.rowsCopied && b?.runtime?.pausedReason != nil
        }, "the backfill must not copy while paused: \(apply.stderr)")

        // The replica catches up: the backfill resumes and finishes.
        try r.execute("ALTER SYSTEM SET recovery_min_apply_delay = 0")
        try r.query("SELECT pg_reload_conf()")
        XCTAssertTrue(try eventually(timeout: 120) {
            let s = try OperateChecks.status(config)
            return s?.phase == "in-sync" && s?.runtime?.pausedReason == nil
        }, apply.stderr)
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertGreaterThan(
            try meta.query("SELECT count(*) FROM reshard.events WHERE message LIKE 'backfill paused: replicas of s1 lag%'").get(0, 0, as: Int.self), 0)
        XCTAssertGreaterThan(try meta.query("SELECT count(*) FROM reshard.events WHERE message = 'backfill resumed'").get(0, 0, as: Int.self), 0)
        writing.stop()
        XCTAssertTrue(try eventually(timeout: 60) { try fixture.sources.allSatisfy(OperateChecks.changelogIsEmpty) }, apply.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        XCTAssertFalse(apply.stderr.contains("password"), apply.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
    }
}

/// Why `@unchecked Sendable`: the flag is only touched under `lock`.
final class WritingFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = true
    var on: Bool { lock.withLock { value } }
    func stop() { lock.withLock { value = false } }
}
