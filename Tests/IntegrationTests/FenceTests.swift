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
