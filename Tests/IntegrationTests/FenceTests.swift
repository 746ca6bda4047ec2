import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import ReshardRouting
import XCTest

/// The write fence `apply` installs on every source and target: which layout takes the
/// application's writes, seen by every writer at once, whatever its isolation level.
final class FenceTests: XCTestCase {
    /// A migrated 2 -> 2 pair (fresh targets), caught up, with the fence installed by apply.
    private func caughtUpMigration() throws -> PlanFixture {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL); INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 100) g WHERE g % 2 = \(k)")
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("users", "id")])
        let apply = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(apply.status, 0, apply.stderr)
        return fixture
    }

    private func assertFenced(
        _ sqlState: String, mentioning text: String, _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            let error = error as? PostgresError
            XCTAssertEqual(error?.sqlState, sqlState, "\(String(describing: error))", file: file, line: line)
            XCTAssertTrue(error?.message.contains(text) ?? false, error?.message ?? "", file: file, line: line)
        }
    }

    /// A REPEATABLE READ or SERIALIZABLE writer whose snapshot was taken before the fence flipped
    /// is refused all the same (the state is a sequence, read without the writer's snapshot); a
    /// table flag read with that snapshot would have let it write into the old layout.
    func testWritersWhoseSnapshotPredatesTheFlipAreRefused() throws {
        let fixture = try caughtUpMigration()
        let flipper = try PGConnection.connect(fixture.sources[0])
        XCTAssertEqual(try Fence.state(migration: "plan-test", on: flipper), Fence.initial)
        for isolation in ["REPEATABLE READ", "SERIALIZABLE"] {
            let writer = try PGConnection.connect(fixture.sources[0])
            try writer.execute("BEGIN ISOLATION LEVEL \(isolation); SELECT count(*) FROM users")
            try writer.execute("UPDATE users SET name = 'before the flip' WHERE id = 2")
            try Fence.set(.init(epoch: 7, serving: .new), migration: "plan-test", on: flipper)
            assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 7") { try writer.execute("INSERT INTO users VALUES (1002, 'late')") }
            try writer.execute("ROLLBACK")
            try Fence.set(Fence.initial, migration: "plan-test", on: flipper)
        }
        // Every kind of write is fenced, not only inserts; reshard's own sessions pass.
        try Fence.set(.init(epoch: 7, serving: .new), migration: "plan-test", on: flipper)
        let app = try PGConnection.connect(fixture.sources[0])
        for statement in ["UPDATE users SET name = 'x' WHERE id = 2", "DELETE FROM users WHERE id = 4", "TRUNCATE users",
                          "INSERT INTO users VALUES (1004, 'y') ON CONFLICT (id) DO NOTHING"] {
            assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 7") { try app.execute(statement) }
        }
        try app.execute("BEGIN; SET LOCAL reshard.applying = on; UPDATE users SET name = 'reshard' WHERE id = 2; COMMIT")
        // The old layout serves again: the application writes as before.
        try Fence.set(Fence.initial, migration: "plan-test", on: flipper)
        try app.execute("INSERT INTO users VALUES (1006, 'after')")
        XCTAssertEqual(try app.query("SELECT count(*) FROM users WHERE id IN (2, 4, 1006)").get(0, 0, as: Int.self), 3)
    }

    /// A session that declares the epoch it routes by (`reshard.epoch`, as `ReshardRouter` does)
    /// is refused when that epoch is older than the fence's, on either layout, even where the
    /// table's layout serves (a database of both layouts); a REPEATABLE READ writer too, when the
    /// flip comes after its snapshot. A session that declares nothing is judged by layout only, and
    /// an application role with only its table grants writes through the fence.
    func testSessionsDeclaringAnOlderEpochAreRefusedOnEitherLayout() throws {
        let fixture = try caughtUpMigration()
        let t1 = try PGConnection.connect(fixture.freshTargets[0])
        let own = try t1.query("SELECT g FROM generate_series(2000, 2100) g WHERE hashint8(g) < 0 LIMIT 2")
        let (first, second) = (try own.get(0, 0, as: Int.self), try own.get(1, 0, as: Int.self))
        // After a cutover to epoch 2: the new layout serves it.
        try Fence.set(.init(epoch: 2, serving: .new), migration: "plan-test", on: t1)
        let stale = try PGConnection.connect(fixture.freshTargets[0])
        try stale.execute("SET reshard.epoch = 1")
        assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 2") { try stale.execute("INSERT INTO users VALUES (\(first), 'stale')") }
        let current = try PGConnection.connect(fixture.freshTargets[0])
        try current.execute("SET reshard.epoch = 2")
        try current.execute("INSERT INTO users VALUES (\(first), 'current')")
        // A REPEATABLE READ writer declaring 2 whose snapshot predates a flip to epoch 3.
        try current.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM users")
        try current.execute("UPDATE users SET name = 'before the flip' WHERE id = \(first)")
        try Fence.set(.init(epoch: 3, serving: .new), migration: "plan-test", on: t1)
        assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 3") { try current.execute("INSERT INTO users VALUES (\(second), 'late')") }
        try current.execute("ROLLBACK")
        // Undeclared: the layout alone decides; an application role needs only its table grants.
        try t1.execute("DROP ROLE IF EXISTS fence_app; CREATE ROLE fence_app; GRANT SELECT, INSERT, UPDATE, DELETE ON users TO fence_app")
        let app = try PGConnection.connect(fixture.freshTargets[0])
        try app.execute("SET ROLE fence_app; INSERT INTO users VALUES (\(second), 'undeclared')")
        try app.execute("SET reshard.epoch = 2")
        assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 3") { try app.execute("UPDATE users SET name = 'x' WHERE id = \(second)") }
        try app.execute("SET reshard.epoch = 3; UPDATE users SET name = 'declared 3' WHERE id = \(second)")
        // Something that is not an epoch is named.
        try app.execute("SET reshard.epoch = 'two'")
        assertFenced("22023", mentioning: "reshard.epoch") { try app.execute("DELETE FROM users WHERE id = \(second)") }
        let stored = try t1.query("SELECT string_agg(id || ' ' || name, ', ' ORDER BY name) FROM users WHERE id IN (\(first), \(second))")
        XCTAssertEqual(stored[0, 0], "\(first) current, \(second) declared 3")
        // The old layout, serving epoch 3 again (after a rollback): a session declaring 2 is refused there too.
        let s0 = try PGConnection.connect(fixture.sources[0])
        try Fence.set(.init(epoch: 3, serving: .old), migration: "plan-test", on: s0)
        try s0.execute("SET reshard.epoch = 2")
        assertFenced(FenceSQLState.staleEpoch, mentioning: "epoch 3") { try s0.execute("UPDATE users SET name = 'stale' WHERE id = 2") }
        try s0.execute("SET reshard.epoch = 3; UPDATE users SET name = 'current' WHERE id = 2")
    }

    /// The new layout refuses the application until it serves, and then refuses keys the new
    /// map gives another shard (RS002).
    func testTheNewLayoutRefusesWritesUntilItServesAndThenMisroutedKeys() throws {
        let fixture = try caughtUpMigration()
        let t1 = try PGConnection.connect(fixture.freshTargets[0])
        // hash over two shards: hashint8(id) < 0 is the first target's.
        let own = try t1.query("SELECT g FROM generate_series(2000, 2100) g WHERE hashint8(g) < 0 LIMIT 1").get(0, 0, as: Int.self)
        let other = try t1.query("SELECT g FROM generate_series(2000, 2100) g WHERE hashint8(g) >= 0 LIMIT 1").get(0, 0, as: Int.self)
        assertFenced(FenceSQLState.staleEpoch, mentioning: "reload the shard map") {
            try t1.execute("INSERT INTO users VALUES (\(own), 'too early')")
        }
        try Fence.set(.init(epoch: 2, serving: .new), migration: "plan-test", on: t1)
        try t1.execute("INSERT INTO users VALUES (\(own), 'mine')")
        assertFenced(FenceSQLState.misrouted, mentioning: "epoch 2") { try t1.execute("INSERT INTO users VALUES (\(other), 'not mine')") }
        assertFenced(FenceSQLState.misrouted, mentioning: "t0") { try t1.execute("UPDATE users SET id = \(other) WHERE id = \(own)") }
        XCTAssertEqual(try t1.query("SELECT count(*) FROM users WHERE id = \(other)").get(0, 0, as: Int.self), 0)
    }
}
