import Foundation
import PostgresClient
import ReshardRehearse
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `reshard rehearse` end to end, as a user runs it. Small rows and write rates keep each run
/// around a minute; every run starts and removes its own clusters.
final class RehearseTests: XCTestCase {
    func rehearse(_ arguments: [String], environment: [String: String] = [:]) throws -> (ReshardCLI.Outcome, [String: Any]) {
        let outcome = try ReshardCLI.run(["rehearse", "--json"] + arguments, environment: environment)
        let object = (try? JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8))) as? [String: Any] ?? [:]
        return (outcome, object)
    }

    func testTwoToThreeWithASharedTargetSurvivesEveryFaultKindAndInjectsTheSeedsSchedule() throws {
        let kinds = FaultSchedule.Kind.allCases
        let (outcome, report) = try rehearse([
            "--sources", "2", "--targets", "3", "--shared-targets", "1", "--rows", "2000", "--writes-per-second", "100",
            "--crashes", String(kinds.count), "--seed", "5", "--catch-up-seconds", "10",
        ])
        XCTAssertEqual(outcome.status, 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.suffix(2000))")
        XCTAssertEqual(report["verdict"] as? String, "pass")
        let ledger = try XCTUnwrap(report["ledger"] as? [String: Any])
        XCTAssertGreaterThan(ledger["acknowledged"] as? Int ?? 0, 300, "the workload wrote throughout")
        for field in ["lost", "duplicated", "misplaced", "unacknowledgedSeen"] { XCTAssertEqual(ledger[field] as? Int, 0, field) }
        XCTAssertEqual(report["sharedTargets"] as? [String], ["t0 = s0"])
        // The faults injected are exactly the seed's schedule, every kind once, and all survived.
        let faults = try XCTUnwrap(report["faults"] as? [[String: Any]])
        let schedule = FaultSchedule.make(seed: 5, crashes: kinds.count, kinds: kinds, sources: 2, targets: 3)
        // A shared target cuts over now: the rehearsal switches, and holds locks across the first attempt.
        let switched = (report["cutover"] as? String)?.hasPrefix("cut over") == true
        XCTAssertTrue(switched, "\(report["cutover"] ?? "no cutover field")")
        XCTAssertEqual(faults.map { $0["kind"] as? String }, schedule.faults.map(\.kind.rawValue) + (switched ? ["hold-locks"] : []))
        XCTAssertEqual(faults.map { $0["point"] as? String }, schedule.faults.map(\.point.description) + (switched ? ["the first cutover attempt"] : []))
        for fault in faults {
            XCTAssertEqual(fault["injected"] as? Bool, true, "\(fault)")
            XCTAssertEqual(fault["survived"] as? Bool, true, "\(fault)")
        }
        let layouts = try XCTUnwrap(report["layouts"] as? [[String: Any]])
        XCTAssertEqual(layouts.map { $0["layout"] as? String }, ["new (live)"], "after cleanup the new layout is the live one")
        // Cutover, rollback and cutover again, each switch's stall measured, then cleanup.
        XCTAssertEqual(report["cutover"] as? String, "cut over, rolled back and cut over again under writes")
        XCTAssertEqual((report["writeStallMs"] as? [String: Any])?["samples"] as? Int, 3, "one stall per switch")
        XCTAssertEqual(report["leftovers"] as? [String], [], "cleanup leaves nothing of reshard, on the shared database too")
    }

    func testAPlantedDefectFailsNamingTheLostKeys() throws {
        let (outcome, report) = try rehearse(
            ["--shared-targets", "0", "--rows", "900", "--writes-per-second", "50", "--catch-up-seconds", "2"],
            environment: ["RESHARD_TEST_SKIP_BATCH": "users"])
        XCTAssertEqual(outcome.status, 3, "\(outcome.stdout.suffix(2000))\n\(outcome.stderr.suffix(2000))")
        XCTAssertEqual(report["verdict"] as? String, "fail")
        let ledger = try XCTUnwrap(report["ledger"] as? [String: Any])
        XCTAssertGreaterThan(ledger["lost"] as? Int ?? 0, 0)
        let layouts = try XCTUnwrap(report["layouts"] as? [[String: Any]])
        let built = try XCTUnwrap(layouts.first { ($0["layout"] as? String)?.hasPrefix("new") == true })
        let problems = built["problems"] as? [String] ?? []
        XCTAssertTrue(problems.contains { $0.hasPrefix("lost: users key (") }, "\(problems)")
        XCTAssertFalse(problems.contains { $0.contains("posts") || $0.contains("likes") }, "only the skipped table lost rows: \(problems)")
        let live = try XCTUnwrap(layouts.first { ($0["layout"] as? String)?.hasPrefix("old") == true })
        XCTAssertEqual(live["problems"] as? [String], [], "the application's layout is intact")
    }

    func testConfigRehearsesTheUsersSchemaAndTopologyWithoutTouchingTheirServers() throws {
        let fixture = try PlanFixture(self)
        try PGConnection.connect(fixture.sources[0]).execute(
            """
            CREATE TYPE tier AS ENUM ('basic', 'gold');
            CREATE TABLE accounts (id uuid PRIMARY KEY, region varchar(8) NOT NULL, tier tier NOT NULL,
                                   balance numeric(12,2) NOT NULL CHECK (balance >= 0), profile jsonb, opened timestamptz NOT NULL,
                                   seq bigint GENERATED ALWAYS AS IDENTITY);
            CREATE TABLE entries (account_id uuid NOT NULL REFERENCES accounts (id), n integer NOT NULL, amount numeric(10,2) NOT NULL,
                                  at timestamptz NOT NULL DEFAULT now(), memo text, PRIMARY KEY (account_id, n));
            """)
        let config = try fixture.writeConfig(
            tables: [("accounts", "id"), ("entries", "account_id")], targets: fixture.freshTargets, sourceFunction: "hash")
        let before = try fixture.snapshot()
        let (outcome, report) = try rehearse(["--config", config, "--rows", "1200", "--writes-per-second", "80", "--catch-up-seconds", "3"])
        XCTAssertEqual(outcome.status, 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.suffix(2000))")
        XCTAssertEqual(report["verdict"] as? String, "pass")
        XCTAssertEqual(report["sources"] as? Int, 2)
        XCTAssertEqual(report["targets"] as? Int, 2)
        XCTAssertEqual(report["sharedTargets"] as? [String], [])
        let ledger = try XCTUnwrap(report["ledger"] as? [String: Any])
        XCTAssertGreaterThan(ledger["loaded"] as? Int ?? 0, 1000, "rows of both tables were accepted by the schema")
        XCTAssertGreaterThan(ledger["acknowledged"] as? Int ?? 0, 100)
        let layouts = try XCTUnwrap(report["layouts"] as? [[String: Any]])
        for layout in layouts {
            let totals = try XCTUnwrap(layout["totals"] as? [String: Any])
            XCTAssertEqual(totals["found"] as? Int, totals["expected"] as? Int, "\(layout)")
        }
        XCTAssertEqual(try fixture.snapshot(), before, "the user's servers are only read")
    }

    func testCutoverRollbackCutoverAndCleanupUnderWritesLoseNothingAndLeaveNothing() throws {
        guard try ReshardCLI.run(["help", "cutover"]).status == 0 else { throw XCTSkip("this reshard has no cutover yet") }
        let (outcome, report) = try rehearse([
            "--shared-targets", "0", "--rows", "1500", "--writes-per-second", "80", "--crashes", "2", "--seed", "11", "--catch-up-seconds", "4",
        ])
        XCTAssertEqual(outcome.status, 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.suffix(2000))")
        XCTAssertEqual(report["verdict"] as? String, "pass")
        XCTAssertEqual(report["cutover"] as? String, "cut over, rolled back and cut over again under writes")
        let stall = try XCTUnwrap(report["writeStallMs"] as? [String: Any])
        XCTAssertEqual(stall["samples"] as? Int, 3, "one stall per switch")
        let layouts = try XCTUnwrap(report["layouts"] as? [[String: Any]])
        XCTAssertEqual(layouts.map { $0["layout"] as? String }, ["new (live)"])
        let ledger = try XCTUnwrap(report["ledger"] as? [String: Any])
        XCTAssertGreaterThan(ledger["mapReloads"] as? Int ?? 0, 0, "the writers followed the switches through the router")
        XCTAssertEqual(report["leftovers"] as? [String], [], "cleanup leaves nothing of reshard on any database")
    }

    func testSIGTERMStopsTheStepTheWorkloadAndTheClustersAndExitsFour() throws {
        // A catch-up long enough that, unstopped, the run would end on its own well after the signal (exit 0).
        let running = try ReshardCLI.start([
            "rehearse", "--json", "--shared-targets", "0", "--rows", "600", "--writes-per-second", "20", "--catch-up-seconds", "60",
        ])
        var waited = false
        defer { if !waited { running.signal(SIGKILL); running.wait() } }
        // The signal lands while a step's child runs: the backfill's apply.
        let deadline = Date().addingTimeInterval(120)
        var apply: pid_t?
        while apply == nil, Date() < deadline, Self.isAlive(running.pid) {
            if running.stderr.contains("backfill: reshard apply") { apply = Self.children(of: running.pid).first { Self.arguments($0).contains("apply") } }
            if apply == nil { usleep(50_000) }
        }
        let child = try XCTUnwrap(apply, "the backfill's apply never ran: \(running.stderr.suffix(2000))")
        // Its clusters: those of the set whose password file the step's config names (other tests may run clusters too).
        let config = try XCTUnwrap(Self.arguments(child).drop { $0 != "-c" }.dropFirst().first, "\(Self.arguments(child))")
        let text = try String(contentsOfFile: config, encoding: .utf8)
        let passfile = try XCTUnwrap(text.firstMatch(of: /passfile='?([^ '"]+)/).map { String($0.1) }, text)
        let set = URL(fileURLWithPath: passfile).standardizedFileURL.deletingLastPathComponent().path + "/"
        let clusters = Set(Self.postmasterDirectories().filter { $0.hasPrefix(set) })
        XCTAssertEqual(clusters.count, 6, "2 sources, 3 targets and the metadata cluster run: \(clusters)")
        let signalled = Date()
        running.signal(SIGTERM)
        let status = running.wait()
        waited = true
        XCTAssertEqual(status, 4, "stopped before its goal: \(running.stderr.suffix(2000))")
        XCTAssertLessThan(Date().timeIntervalSince(signalled), 30, "it stopped, rather than running the 60 s catch-up")
        XCTAssertTrue(running.stderr.contains("stopped by a signal during backfill"), running.stderr.suffix(2000).description)
        XCTAssertFalse(Self.arguments(child).contains("apply"), "the step's reshard apply was stopped with it")
        XCTAssertEqual(Set(Self.postmasterDirectories()).intersection(clusters), [], "its clusters were stopped")
        for directory in clusters { XCTAssertFalse(FileManager.default.fileExists(atPath: directory), "\(directory) was removed") }
    }

    /// Data directories of the running postmasters (`postgres -D DIR`).
    static func postmasterDirectories() -> [String] {
        processes().compactMap { pid in
            let argv = arguments(pid)
            guard argv.first?.hasSuffix("postgres") == true, let d = argv.firstIndex(of: "-D"), d + 1 < argv.count else { return nil }
            return URL(fileURLWithPath: argv[d + 1]).standardizedFileURL.path
        }
    }

    /// Running, not a zombie (not yet waited for).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].split(separator: " ").first != "Z"
    }

    static func processes() -> [pid_t] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    }

    static func children(of parent: pid_t) -> [pid_t] {
        processes().filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == parent
        }
    }

    static func arguments(_ pid: pid_t) -> [String] {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return [] }
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }
}
