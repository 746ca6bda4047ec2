import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

final class ApplyTests: XCTestCase {
    private func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }

    /// Whether every change logged on the sources has been applied (the logs are emptied only
    /// after the targets committed the change).
    private func changelogIsEmpty(_ fixture: PlanFixture) throws -> Bool {
        try fixture.sources.allSatisfy { dsn in
            let conn = try PGConnection.connect(dsn)
            let logs = try conn.query(
                "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
            XCTAssertEqual(logs.rowCount, ReferenceData.tables.count)
            return try (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
        }
    }

    /// Stops the load, waits until every change is applied, and stops the coordinator cleanly.
    private func drainAndStop(_ apply: ReshardCLI.Running, load: WriteLoad, fixture: PlanFixture, config: String) throws {
        // The application's writes never fail because of reshard, and there were plenty of them.
        load.assertHealthy(minimumCommits: 200)
        XCTAssertTrue(try eventually(timeout: 180) { try changelogIsEmpty(fixture) }, "the changelog did not drain")
        XCTAssertTrue(try eventually(timeout: 30) { try status(config)?.backlog == 0 }, "status never showed an empty backlog")
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
    }

    /// Acceptance: 2 -> 3 (one target is a source database) with inserts, updates, deletes,
    /// shard-key changes and long transactions running; every target ends with exactly the rows
    /// that map to it. A second apply refuses while the first runs; status shows progress that
    /// increases and a backlog that returns to zero.
    func testMoveUnderWriteLoadConvergesAndStatusShowsProgress() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let load = WriteLoad(sources: fixture.sources)
        let apply = try ReshardCLI.start(["apply", "-c", config])

        var copied: [Int64] = []
        var sawBacklog = false
        XCTAssertTrue(try eventually(timeout: 300) {
            guard let s = try status(config) else { return false }
            copied.append(s.rowsCopied)
            sawBacklog = sawBacklog || s.backlog > 0
            return s.phase == "in-sync"
        }, apply.stderr)
        XCTAssertEqual(copied, copied.sorted(), "progress must never go back")
        XCTAssertGreaterThan(Set(copied).count, 2, "progress must be seen increasing: \(copied)")

        let second = try ReshardCLI.run(["apply", "-c", config])
        XCTAssertEqual(second.status, 2, second.stderr)
        XCTAssertTrue(second.stderr.contains("already being applied by host"), second.stderr)
        XCTAssertTrue(second.stderr.contains("pid \(apply.pid)"), second.stderr)

        // Keep writing a while after the backfill, so the catch-up does real work.
        let committedAtSync = load.committed
        XCTAssertTrue(eventually(timeout: 60) { load.committed > committedAtSync + 300 })
        try drainAndStop(apply, load: load, fixture: fixture, config: config)
        let applied = try status(config)?.catchUp.contains { $0.appliedTotal > 0 } ?? false
        XCTAssertTrue(sawBacklog || applied, "the catch-up must have applied changes")
        try ReferenceData.assertTargetsMatchSources(fixture)

        // Secondary indexes are built after the copy.
        let t1 = try PGConnection.connect(fixture.targets[1])
        XCTAssertEqual(try t1.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email'").get(0, 0, as: Int.self), 1)
        XCTAssertEqual(try status(config)?.lease?.alive, false)
    }

    /// Acceptance: the same after at least 10 kill -9s of the coordinator at random moments.
    func testSurvivesTenKill9sOfTheCoordinator() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let load = WriteLoad(sources: fixture.sources)
        var phases: [String] = []
        for kill in 0..<10 {
            let before = try status(config)
            let apply = try ReshardCLI.start(["apply", "-c", config])
            // The first five runs die during the backfill, once they have copied something of
            // their own; the last five once the catch-up is running under the load.
            XCTAssertTrue(try eventually(timeout: 120) {
                guard let now = try status(config) else { return false }
                if kill >= 5 { return now.phase == "in-sync" && now.lease?.pid == Int(apply.pid) }
                guard let before else { return now.phase != "planned" }
                return now.rowsCopied > before.rowsCopied || now.phase != before.phase
            }, apply.stderr)
            // ...and then dies at a random moment: the point of the test, not a synchronisation.
            usleep(UInt32.random(in: 0...700_000))
            apply.signal(SIGKILL)
            XCTAssertEqual(apply.wait(), 128 + SIGKILL, apply.stderr)
            phases.append(try status(config)?.phase ?? "unregistered")
        }
        XCTAssertTrue(phases.contains("backfilling"), "no kill landed during the backfill: \(phases)")
        XCTAssertTrue(phases.contains("in-sync") || phases.contains("catching-up"), "no kill landed during the catch-up: \(phases)")
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 300) { try status(config)?.phase == "in-sync" }, apply.stderr)
        try drainAndStop(apply, load: load, fixture: fixture, config: config)
        try ReferenceData.assertTargetsMatchSources(fixture)
        // Work before a crash was kept: the copied counts add up to what the targets hold.
        let final = try XCTUnwrap(try status(config))
        XCTAssertTrue(final.slices.allSatisfy(\.done))
        print("phases seen at the kills: \(phases)")
    }

    /// Acceptance: a target restarted (`pg_ctl restart -m immediate`) during the backfill does
    /// not fail the migration. Also: `reshard throttle` changes a running apply's rate.
    func testTargetRestartDuringBackfillDoesNotFailTheMigration() throws {
        let spare = try LocalClusterSet.start(count: 1)
        defer { spare.stop() }
        var fixture = try PlanFixture(self)
        fixture.targets[2] = try spare.clusters[0].createDatabase("t2")
        try ReferenceData.load(fixture, scale: 0.5)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let load = WriteLoad(sources: fixture.sources, writers: 1, longTransactions: false)
        let apply = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "20000"])
        XCTAssertTrue(try eventually(timeout: 120) {
            guard let s = try status(config) else { return false }
            return s.phase == "backfilling" && s.slices.contains { $0.target == "t2" && $0.rowsCopied > 0 }
        }, apply.stderr)
        try spare.clusters[0].restart(mode: "immediate")
        let throttle = try ReshardCLI.run(["throttle", "-c", config, "--unlimited"])
        XCTAssertEqual(throttle.status, 0, throttle.stderr)
        XCTAssertTrue(try eventually(timeout: 300) { try status(config)?.phase == "in-sync" }, apply.stderr)
        XCTAssertEqual(kill(apply.pid, 0), 0, "apply must still be running: \(apply.stderr)")
        try drainAndStop(apply, load: load, fixture: fixture, config: config)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }

    func testAbortRemovesTheShimAndRefusesWhileApplyRuns() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.05)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 120) { try status(config)?.phase == "in-sync" }, apply.stderr)
        let refused = try ReshardCLI.run(["abort", "-c", config])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)

        let outcome = try ReshardCLI.run(["abort", "-c", config, "--drop-target-data"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        for source in fixture.sources {
            let conn = try PGConnection.connect(source)
            XCTAssertEqual(try conn.query("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'reshard_capture_%'").get(0, 0, as: Int.self), 0)
            XCTAssertEqual(try conn.query("SELECT to_regnamespace('reshard_shim') IS NULL").get(0, 0, as: Bool.self), true)
        }
        XCTAssertEqual(try PGConnection.connect(fixture.targets[1]).query("SELECT count(*) FROM users").get(0, 0, as: Int.self), 0)
        XCTAssertEqual(try status(config)?.phase, "aborted")
        let again = try ReshardCLI.run(["apply", "-c", config])
        XCTAssertEqual(again.status, 2)
        XCTAssertTrue(again.stderr.contains("aborted"), again.stderr)
    }
}

final class ApplyFromPlanFileTests: XCTestCase {
    /// `apply --plan` runs the plan `plan --output` wrote (its connection strings carry no
    /// password; the local clusters' password file is named in them), refuses one whose schema
    /// changed since, and Ctrl-C (SIGINT) stops a running apply cleanly.
    func testApplyFromAPlanFileRefusesAStalePlanAndStopsOnCtrlC() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.02)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let planFile = fixture.directory + "/plan.json"
        XCTAssertEqual(try ReshardCLI.run(["plan", "-c", config, "--output", planFile]).status, 0)

        try PGConnection.connect(fixture.sources[1]).execute("ALTER TABLE posts ADD COLUMN extra int")
        let stale = try ReshardCLI.run(["apply", "--plan", planFile])
        XCTAssertEqual(stale.status, 2, stale.stderr)
        XCTAssertTrue(stale.stderr.contains("table posts on source s1 changed since the plan was made"), stale.stderr)
        try PGConnection.connect(fixture.sources[1]).execute("ALTER TABLE posts DROP COLUMN extra")
        // Dropping the column leaves the catalog as it was for the fingerprint: the plan is good again.

        let apply = try ReshardCLI.start(["apply", "--plan", planFile])
        XCTAssertTrue(try eventually(timeout: 120) {
            let outcome = try ReshardCLI.run(["status", "--plan", planFile, "--json"])
            guard outcome.status == 0 else { return false }
            return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8)).phase == "in-sync"
        }, apply.stderr)
        apply.signal(SIGINT)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }
}
