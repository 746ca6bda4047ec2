import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// The coordinator's runtime: retries through servers restarting (prepare, metadata), nothing
/// failing silently, a rate limit that holds, and a catch-up trend that says when it falls behind.
final class RuntimeTests: XCTestCase {
    /// `items(id, payload)` on both sources, ids 1...rows split by id % 2 as today's router would.
    private func createItems(_ fixture: PlanFixture, rows: Int) throws {
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);
                INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, \(rows)) g WHERE g % 2 = \(k);
                ANALYZE items;
                """)
        }
    }

    private func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }

    private func statusText(_ config: String) throws -> String { try ReshardCLI.run(["status", "-c", config]).stdout }

    private func changelogIsEmpty(_ fixture: PlanFixture) throws -> Bool {
        try fixture.sources.allSatisfy { dsn in
            let conn = try PGConnection.connect(dsn)
            let logs = try conn.query(
                "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
            return try logs.rowCount > 0 && (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
        }
    }

    private func events(_ fixture: PlanFixture, like pattern: String, shard: String) throws -> Int {
        try PGConnection.connect(fixture.metadata).query(
            "SELECT count(*) FROM reshard.events WHERE message LIKE $1 AND shard = $2", [pattern, shard]
        ).get(0, 0, as: Int.self)
    }

    /// 15.11: a source restarted while the shim is being installed, and the metadata database
    /// restarted during the catch-up, are retried (with events naming the shard): apply goes on
    /// and converges instead of exiting 1.
    func testSourceRestartDuringPrepareAndMetadataRestartDuringCatchUpAreRetried() throws {
        let spare = try LocalClusterSet.start(count: 2)
        defer { spare.stop() }
        var fixture = try PlanFixture(self)
        fixture.sources[1] = try spare.clusters[0].createDatabase("s1")
        fixture.metadata = try spare.clusters[1].createDatabase("meta")
        try ReferenceData.load(fixture, scale: 0.02)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)

        // A writer on s1 holds a lock the shim's CREATE TRIGGER waits for: prepare is in progress
        // on s1 when the server restarts.
        let blocker = try PGConnection.connect(fixture.sources[1])
        try blocker.execute("BEGIN; LOCK TABLE users IN ROW EXCLUSIVE MODE")
        let apply = try ReshardCLI.start(["apply", "-c", config])
        let observer = try PGConnection.connect(fixture.sources[1])
        XCTAssertTrue(try eventually(timeout: 60) {
            try observer.query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'reshard apply' AND wait_event_type = 'Lock'").rowCount > 0
        }, apply.stderr)
        try spare.clusters[0].restart(mode: "immediate")
        XCTAssertTrue(try eventually(timeout: 120) { try status(config)?.phase == "in-sync" }, apply.stderr)
        XCTAssertGreaterThan(try events(fixture, like: "retrying prepare: %", shard: "s1"), 0)

        let load = WriteLoad(sources: fixture.sources, writers: 1, longTransactions: false)
        defer { load.stop() }
        XCTAssertTrue(eventually(timeout: 60) { load.committed > 50 })
        try spare.clusters[1].restart(mode: "immediate")
        let committed = load.committed
        XCTAssertTrue(eventually(timeout: 60) { load.committed > committed + 100 })
        XCTAssertEqual(kill(apply.pid, 0), 0, "apply must still be running: \(apply.stderr)")
        XCTAssertTrue(try eventually(timeout: 60) {
            guard let s = try status(config) else { return false }
            return s.lease?.alive == true && s.lease?.pid == Int(apply.pid)
        }, "the coordinator must take its lease again: \(apply.stderr)")
        XCTAssertGreaterThan(try events(fixture, like: "retrying metadata: %", shard: "metadata"), 0)
        load.stop()
        load.assertHealthy()
        XCTAssertTrue(try eventually(timeout: 120) { try changelogIsEmpty(fixture) }, "the changelog did not drain")
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }

    /// Issue 9: a source that goes away is not silent: its lag cannot be read, which pauses the
    /// backfill and says why, and the work retried shows in `status` with the shard, and as
    /// events, until the source is back; then the migration converges.
    func testASourceThatIsDownPausesTheBackfillAndShowsItsRetries() throws {
        let spare = try LocalClusterSet.start(count: 1)
        defer { spare.stop() }
        var fixture = try PlanFixture(self)
        fixture.sources[1] = try spare.clusters[0].createDatabase("s1")
        try ReferenceData.load(fixture, scale: 0.05)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let apply = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "4000"])
        XCTAssertTrue(try eventually(timeout: 120) {
            guard let s = try status(config) else { return false }
            return s.phase == "backfilling" && s.rowsCopied > 0
        }, apply.stderr)
        try spare.clusters[0].stop(mode: "immediate")
        var seen: MigrationStatus?
        XCTAssertTrue(try eventually(timeout: 60) {
            seen = try status(config)
            guard let runtime = seen?.runtime else { return false }
            return runtime.pausedReason?.contains("replication lag of s1 cannot be read") == true
                && runtime.retries.contains { $0.shard == "s1" && $0.failures >= 2 }
        }, "status: \(String(describing: seen?.runtime)) \(apply.stderr)")
        let text = try statusText(config)
        XCTAssertTrue(text.contains("backfill paused"), text)
        XCTAssertTrue(text.range(of: #"retrying [^\n]*s1[^\n]*\(\d+(st|nd|rd|th) attempt, since "#, options: .regularExpression) != nil, text)
        XCTAssertGreaterThan(try events(fixture, like: "retrying %", shard: "s1"), 0)
        XCTAssertGreaterThan(try events(fixture, like: "replication lag of s1 cannot be read%", shard: "s1"), 0)

        try spare.clusters[0].restart(mode: "fast")
        XCTAssertTrue(try eventually(timeout: 60) {
            guard let runtime = try status(config)?.runtime else { return false }
            return runtime.pausedReason == nil && runtime.retries.isEmpty
        }, apply.stderr)
        XCTAssertTrue(try eventually(timeout: 120) { try status(config)?.phase == "in-sync" }, apply.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        XCTAssertGreaterThan(try events(fixture, like: "% recovered after %", shard: "s1"), 0)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }

    /// Issue 14: the rows copied per 10 s stay within 10% of `--max-rows-per-second` (after the
    /// first seconds), `status` shows the limit and where it came from, and `throttle` mid-run
    /// changes the observed rate.
    func testTheRateLimitHoldsAndThrottleChangesItWhileRunning() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture, rows: 90000)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "1000"])
        let meta = try PGConnection.connect(fixture.metadata)
        var samples: [(at: Date, rows: Int64)] = []
        func sample() throws {
            // Every slice: the staying rows' local copy into reshard_build is rate-limited too.
            let copied = try meta.query(
                "SELECT coalesce(sum(rows_copied), 0)::bigint FROM reshard.slices WHERE migration = 'plan-test'")
            samples.append((Date(), try copied.get(0, 0, as: Int64.self)))
        }
        /// Rows copied over the 10 s starting at `start` (from the samples, 0.2 s apart).
        func rows(from start: Date) -> Int64 {
            let before = samples.last { $0.at <= start }?.rows ?? 0
            let after = samples.last { $0.at <= start.addingTimeInterval(10) }?.rows ?? 0
            return after - before
        }
        // Until apply created the metadata schema, there is nothing to sample.
        XCTAssertTrue(eventually(timeout: 120) { (try? sample()) != nil && samples.last!.rows > 0 }, apply.stderr)
        let started = Date()
        while Date().timeIntervalSince(started) < 24 {
            try sample()
            usleep(200_000)
        }
        let limited = try XCTUnwrap(try status(config)?.runtime)
        XCTAssertEqual(limited.maxRowsPerSecond, 1000)
        XCTAssertEqual(limited.maxRowsPerSecondSource, "apply --max-rows-per-second")
        for offset in stride(from: 3.0, through: 14, by: 1) {
            XCTAssertEqual(Double(rows(from: started.addingTimeInterval(offset))), 10_000, accuracy: 1_000, "10 s from +\(offset)s: \(samples)")
        }

        XCTAssertEqual(try ReshardCLI.run(["throttle", "-c", config, "--max-rows-per-second", "3000"]).status, 0)
        let changed = Date()
        while Date().timeIntervalSince(changed) < 13 {
            try sample()
            usleep(200_000)
        }
        XCTAssertEqual(Double(rows(from: changed.addingTimeInterval(2.5))), 30_000, accuracy: 3_000, "after throttle: \(samples)")
        let throttled = try XCTUnwrap(try status(config)?.runtime)
        XCTAssertEqual(throttled.maxRowsPerSecond, 3000)
        XCTAssertEqual(throttled.maxRowsPerSecondSource, "reshard throttle")
        XCTAssertTrue(try statusText(config).contains("backfill limit: 3,000 rows/s, set by reshard throttle"))
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
    }

    /// Issue 14: while the application writes faster than the catch-up applies, `status` says
    /// the changelog falls behind (with both rates); once the writes stop it says it drains,
    /// with an ETA to in-sync.
    func testStatusSaysWhenTheChangelogFallsBehindAndWhenItWillBeInSync() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture, rows: 200000)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 120) { try status(config)?.phase == "in-sync" }, apply.stderr)

        // Bulk updates: tens of thousands of changes a second, more than one catch-up round applies.
        let writer = try PGConnection.connect(fixture.sources[1])
        var behind: MigrationStatus.Runtime.Trend?
        var text = ""
        let deadline = Date().addingTimeInterval(60)
        var next: Int64 = 1
        while behind == nil && Date() < deadline {
            try writer.query("UPDATE items SET payload = md5(payload) WHERE id BETWEEN $1 AND $1 + 40000", [next])
            next = next > 150_000 ? 1 : next + 40_000
            if let s = try status(config), let trend = s.runtime?.trends.first(where: \.fallingBehind) {
                behind = trend
                text = try statusText(config)
            }
        }
        let trend = try XCTUnwrap(behind, "status never said the changelog falls behind: \(apply.stderr)")
        XCTAssertEqual(trend.source, "s1")
        XCTAssertGreaterThan(trend.producedPerSecond, trend.appliedPerSecond)
        XCTAssertTrue(text.contains("changelog s1: falling behind: "), text)
        // A backlog worth several seconds of draining, so the drain is seen however fast it is:
        // built with the coordinator stopped (a catch-up faster than the writer never lets it grow).
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        for _ in 0..<8 { try writer.query("UPDATE items SET payload = md5(payload)") }
        let resumed = try ReshardCLI.start(["apply", "-c", config])

        var draining: MigrationStatus.Runtime.Trend?
        XCTAssertTrue(try eventually(timeout: 60) {
            draining = try status(config)?.runtime?.trends.first { $0.source == "s1" && $0.etaSeconds != nil }
            return draining != nil
        }, resumed.stderr)
        let drain = try XCTUnwrap(draining)
        XCTAssertGreaterThan(drain.appliedPerSecond, drain.producedPerSecond)
        XCTAssertTrue(try eventually(timeout: 120) { try changelogIsEmpty(fixture) }, "the changelog did not drain")
        resumed.signal(SIGTERM)
        XCTAssertEqual(resumed.wait(), 0, resumed.stderr)
    }

    /// Issue 9: a stop is bounded. A backfill batch blocked on a target (a lock held there) does
    /// not keep `apply` from stopping: after the grace period its statement is cancelled and the
    /// coordinator exits cleanly, leaving no session behind.
    func testAStopCancelsAStatementThatDoesNotEnd() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture, rows: 40000)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "500"])
        XCTAssertTrue(try eventually(timeout: 120) {
            guard let s = try status(config) else { return false }
            return s.phase == "backfilling" && s.slices.contains { $0.target == "t1" && $0.rowsCopied > 0 }
        }, apply.stderr)
        let locker = try PGConnection.connect(fixture.targets[1])
        try locker.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        let observer = try PGConnection.connect(fixture.targets[1])
        let blocked = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reshard apply' AND wait_event_type = 'Lock'"
        XCTAssertTrue(try eventually(timeout: 60) { try observer.query(blocked).get(0, 0, as: Int.self) > 0 }, apply.stderr)

        let stopped = Date()
        apply.signal(SIGTERM)
        let exited = try eventually(timeout: 40) {
            let stat = (try? String(contentsOfFile: "/proc/\(apply.pid)/stat", encoding: .utf8)) ?? ""
            return stat.isEmpty || stat.contains(") Z ")
        }
        XCTAssertTrue(exited, "apply did not stop while a statement was blocked: \(apply.stderr)")
        if !exited { apply.signal(SIGKILL) }
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 30)
        XCTAssertEqual(try observer.query(blocked).get(0, 0, as: Int.self), 0, "a blocked session was left behind")
        try locker.execute("ROLLBACK")
    }
}
