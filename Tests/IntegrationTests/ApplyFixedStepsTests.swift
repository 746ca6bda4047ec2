import Foundation
import PostgresClient
import XCTest

@testable import ReshardCore

/// apply's fixed steps install the write fence inside their per-database parallel jobs (prepare:
/// with each target's tables and each source's shim; finishing the targets: one job per target),
/// not with `Fence.installAll` one database after another: the state they leave on every database
/// must be the one `installAll` leaves. Checked on `PlanFixture`'s 2 -> 3, whose t0 is s0's
/// database (its copies built in `reshard_build`), by running `installAll` after each step: it is
/// idempotent, so anything the step missed or did differently shows as a change.
final class ApplyFixedStepsTests: XCTestCase {
    /// Triggers, the shim schema's functions, relations and sequences, per database.
    private func fenceState(_ databases: [ConnectionString]) throws -> [[String]] {
        try databases.map { dsn in
            let conn = try PGConnection.connect(dsn)
            var lines: [String] = []
            for sql in [
                "SELECT concat_ws(' | ', tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled::text) FROM pg_trigger WHERE NOT tgisinternal",
                """
                SELECT concat_ws(' | ', p.oid::regprocedure::text, md5(p.prosrc), p.prosecdef::text, p.proconfig::text)
                FROM pg_proc p WHERE p.pronamespace = to_regnamespace('reshard_shim')
                """,
                "SELECT concat_ws(' | ', c.relname, c.relkind::text, c.relacl::text) FROM pg_class c WHERE c.relnamespace = to_regnamespace('reshard_shim')",
                "SELECT concat_ws(' | ', sequencename, last_value::text) FROM pg_sequences WHERE schemaname = 'reshard_shim'",
            ] {
                let rows = try conn.query(sql)
                lines += (0..<rows.rowCount).map { rows[$0, 0] ?? "" }
            }
            return lines.sorted()
        }
    }

    func testPrepareAndFinishLeaveTheFenceInstallAllLeaves() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
                CREATE INDEX users_name ON users (name);
                CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL);
                INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 200) g WHERE g % 2 = \(k);
                INSERT INTO posts SELECT g, g, 'post ' || g FROM generate_series(1, 200) g WHERE g % 2 = \(k);
                ANALYZE;
                """)
        }
        let config = try fixture.writeConfig(tables: [("users", "id"), ("posts", "user_id")])
        let target = try MigrationTarget.fromConfig(try ReshardConfig.load(path: config))
        XCTAssertEqual(target.plan.sharedTargets.map(\.name), [target.plan.targets[0].name], "t0 is s0's database")
        let coordinator = Coordinator(plan: target.plan, shards: target.shards, metadata: target.metadata, options: ApplyOptions())
        let connect = { (shard: String) in try PGConnection.connect(target.shards[shard]!) }
        // s0 (also t0), s1, t1, t2.
        let databases = fixture.sources + fixture.targets.dropFirst()

        try coordinator.prepare()
        let prepared = try fenceState(databases)
        let fence = Fence.trigger(target.plan.migration), misrouted = Fence.misroutedTrigger(target.plan.migration)
        XCTAssertEqual(prepared[0].filter { $0.hasPrefix("reshard_build.") && $0.contains(fence) }.count, 2, "the shared target's built tables are fenced")
        XCTAssertFalse(prepared.joined().contains { $0.contains(misrouted) }, "no row check before the copy")
        try Fence.installAll(plan: target.plan, misroutedChecks: false, connect: connect)
        XCTAssertEqual(try fenceState(databases), prepared, "after prepare")

        try coordinator.finishTargets()
        let finished = try fenceState(databases)
        XCTAssertEqual(finished.joined().filter { $0.contains(misrouted) }.count, 3 * 2, "each target's 2 tables get the row check")
        try Fence.installAll(plan: target.plan, connect: connect)
        XCTAssertEqual(try fenceState(databases), finished, "after finishing the targets")
    }
}
