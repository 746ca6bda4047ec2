import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 10: two sources holding the same value of the migration's unique key that map to one
/// target (each shard numbered its rows with its own sequence) are refused, never merged into
/// one silent survivor.
final class KeyCollisionTests: XCTestCase {
    /// `posts (id PK, user_id, body)` sharded by user_id: s0 holds ids 1...`s0Rows` of even users,
    /// s1 ids from 1001 of odd users, plus `extra` on s1.
    /// s0's 200 rows loaded, moving to t0 alone, applied until caught up.
    private func caughtUp() throws -> (PlanFixture, String) {
        let fixture = try PlanFixture(self)
        try load(fixture)
        let config = try fixture.writeConfig(tables: [("posts", "user_id")], targets: [fixture.targets[1]])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        return (fixture, config)
    }

    /// Makes every changelog entry on `source` a minute old, as if the catch-up had been away a while.
    private func ageChangelogs(on source: PGConnection) throws {
        let logs = try source.query("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
        for r in 0..<logs.rowCount { try source.execute("UPDATE \(logs[r, 0]!) SET at = at - interval '1 minute'") }
    }

    private func load(_ fixture: PlanFixture, s0Rows: Int = 200, extra: String = "") throws {
        try fixture.onSources("CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text)")
        try PGConnection.connect(fixture.sources[0]).execute(
            "INSERT INTO posts SELECT g, 2 * g, 's0 post ' || g FROM generate_series(1, \(s0Rows)) g")
        try PGConnection.connect(fixture.sources[1]).execute(
            "INSERT INTO posts SELECT 1000 + g, 2 * g + 1, 's1 post ' || g FROM generate_series(1, 200) g; \(extra)")
    }

    /// How long both sources must hold a key before apply calls it a collision (10 s by default).
    static let shortGrace = ["RESHARD_KEY_COLLISION_GRACE_SECONDS": "1"]

    private func rows(_ sql: String, _ dsn: ConnectionString) throws -> [String] { try PlanFixture.rowTexts(sql, on: dsn) }

    /// `id = 5` on both sources, one target: plan refuses (exit 2) naming the key value and both
    /// sources; `apply -c` refuses the same way, and so does `apply --plan` with a plan made
    /// before the second row 5 was written; both rows stay, and nothing reaches the target.
    func testTheSameKeyOnTwoSourcesIsRefusedByPlanAndApply() throws {
        let fixture = try PlanFixture(self)
        try load(fixture)
        let config = try fixture.writeConfig(tables: [("posts", "user_id")], targets: [fixture.targets[1]])
        let planFile = fixture.directory + "/plan.json"
        let before = try ReshardCLI.run(["plan", "-c", config, "--output", planFile])
        XCTAssertEqual(before.status, 0, before.stderr)
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO posts VALUES (5, 77, 's1 post five')")

        let expected = "table posts: key (id) is held by both s0 and s1 for target t0: (5)"
        let plan = try ReshardCLI.run(["plan", "-c", config], environment: Self.shortGrace)
        XCTAssertEqual(plan.status, 2, plan.stdout + plan.stderr)
        XCTAssertTrue(plan.stderr.contains(expected), plan.stderr)
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"], environment: Self.shortGrace)
        XCTAssertEqual(apply.status, 2, apply.stdout + apply.stderr)
        XCTAssertTrue(apply.stderr.contains(expected), apply.stderr)
        let fromFile = try ReshardCLI.run(["apply", "--plan", planFile, "--until", "caught-up"], environment: Self.shortGrace)
        XCTAssertEqual(fromFile.status, 2, fromFile.stdout + fromFile.stderr)
        XCTAssertTrue(fromFile.stderr.contains(expected), fromFile.stderr)

        XCTAssertEqual(try rows("SELECT body FROM posts WHERE id = 5", fixture.sources[0]), ["s0 post 5"])
        XCTAssertEqual(try rows("SELECT body FROM posts WHERE id = 5", fixture.sources[1]), ["s1 post five"])
        XCTAssertEqual(try rows("SELECT count(*)::text FROM pg_class WHERE relname = 'posts'", fixture.targets[1]), ["0"], "nothing created on the target")
    }

    /// Up to 10 keys are listed, with the sources holding them.
    func testPlanListsAtMostTenCollidingKeys() throws {
        let fixture = try PlanFixture(self)
        try load(fixture, extra: "INSERT INTO posts SELECT g, 2 * g + 1, 'dup' FROM generate_series(101, 130) g")
        let config = try fixture.writeConfig(tables: [("posts", "user_id")], targets: [fixture.targets[1]])
        let plan = try ReshardCLI.run(["plan", "-c", config], environment: Self.shortGrace)
        XCTAssertEqual(plan.status, 2, plan.stderr)
        XCTAssertTrue(
            plan.stderr.contains("table posts: key (id) is held by both s0 and s1 for target t0: (101), (102), (103)"), plan.stderr)
        XCTAssertFalse(plan.stderr.contains("(111)"), plan.stderr)
        XCTAssertTrue(plan.stderr.contains("(110)"), plan.stderr)
    }

    /// A row whose key s0 holds, written on s1 while the backfill runs: apply stops (exit 1)
    /// naming the key and both sources instead of keeping one of the two rows.
    func testAKeyCollidingDuringTheBackfillStopsApply() throws {
        let fixture = try PlanFixture(self)
        try load(fixture, s0Rows: 1000)
        try PGConnection.connect(fixture.sources[0]).execute("INSERT INTO posts VALUES (5000, 10000, 's0 late')")
        let config = try fixture.writeConfig(tables: [("posts", "user_id")], targets: [fixture.targets[1]])
        let apply = try ReshardCLI.start(
            ["apply", "-c", config, "--until", "caught-up", "--max-rows-per-second", "200"], environment: Self.shortGrace)
        XCTAssertTrue(try eventually(timeout: 60) {
            (try? rows("SELECT count(*)::text FROM reshard.slices WHERE rows_copied > 0", fixture.metadata)) ?? ["0"] != ["0"]
        }, apply.stderr)
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO posts VALUES (5000, 10001, 's1 late')")
        XCTAssertEqual(apply.wait(timeout: 90), 1, apply.stdout + apply.stderr)
        XCTAssertTrue(apply.stderr.contains("table posts: key (id) is held by both s0 and s1 for target t0: (5000)"), apply.stderr)
        XCTAssertEqual(try rows("SELECT body FROM posts WHERE id = 5000", fixture.sources[0]), ["s0 late"])
        XCTAssertEqual(try rows("SELECT body FROM posts WHERE id = 5000", fixture.sources[1]), ["s1 late"])
    }

    /// A colliding row written once the targets are caught up: the catch-up stops (exit 1) naming
    /// it, and the target still holds s0's row 10 unchanged (s1's row did not replace it).
    func testAKeyCollidingAfterTheBackfillStopsTheCatchUp() throws {
        let (fixture, config) = try caughtUp()
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO posts VALUES (10, 99, 's1 ten')")

        let second = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"], environment: Self.shortGrace)
        XCTAssertEqual(second.status, 1, second.stderr)
        XCTAssertTrue(second.stderr.contains("table posts: key (id) is held by both s0 and s1 for target t0: (10)"), second.stderr)
        XCTAssertEqual(try rows("SELECT user_id || ' ' || body FROM posts WHERE id = 10", fixture.targets[1]), ["20 s0 post 10"])
        XCTAssertEqual(try rows("SELECT body FROM posts WHERE id = 10", fixture.sources[1]), ["s1 ten"])
    }

    /// The application moves row 1100 from s1 to s0 (delete on s1, then insert on s0) while the
    /// catch-up of s1's old entry for it runs: the lane has read s1's row, and its guard's read of
    /// s0 waits (the test holds s0's table locked) until the move is done, so it sees the key on
    /// s0 too, with an entry older than the grace. The key was never on both at once: before,
    /// apply stopped with "held by both s0 and s1"; now the guard proves a collision by seeing both
    /// at one moment, finds none, and applies the move later. The target ends with s0's row.
    func testAKeyMovedBetweenSourcesWhileTheGuardReadsIsNotACollision() throws {
        let (fixture, config) = try caughtUp()
        let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])
        // An entry of s1's for 1100, older than the grace: the catch-up was away a while.
        try s1.execute("UPDATE posts SET body = 'moving' WHERE id = 1100")
        try ageChangelogs(on: s1)
        // A plan file: `apply -c` would plan again, which reads s0's table.
        let planFile = fixture.directory + "/plan.json"
        XCTAssertEqual(try ReshardCLI.run(["plan", "-c", config, "--output", planFile]).status, 0)
        let locker = try PGConnection.connect(fixture.sources[0])
        try locker.execute("BEGIN; LOCK TABLE posts IN ACCESS EXCLUSIVE MODE")
        let apply = try ReshardCLI.start(["apply", "--plan", planFile, "--until", "caught-up"], environment: Self.shortGrace)
        defer { if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) } }
        // The guard's look-up of s1's staged keys on s0, waiting for the lock.
        let waiting = try eventually(timeout: 30) {
            try s0.query(
                """
                SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE 'reshard%'
                  AND query LIKE '%CROSS JOIN LATERAL%'
                """).rowCount > 0 || apply.wait(timeout: 0.01) != nil
        }
        let seen = try s0.query("SELECT string_agg(wait_event_type || ': ' || left(query, 150), E'\\n') FROM pg_stat_activity WHERE application_name LIKE 'reshard%'")
        XCTAssertTrue(waiting, "\(seen[0, 0] ?? "")\n\(apply.stderr)")
        try s1.execute("DELETE FROM posts WHERE id = 1100")
        try locker.execute("INSERT INTO posts VALUES (1100, 2200, 's0 moved'); COMMIT")
        XCTAssertEqual(apply.wait(timeout: 60), 0, apply.stdout + apply.stderr)
        XCTAssertFalse(apply.stderr.contains("held by both"), apply.stderr)
        XCTAssertEqual(try rows("SELECT user_id || ' ' || body FROM posts WHERE id = 1100", fixture.targets[1]), ["2200 s0 moved"])
        let sourceRows = try s0.query("SELECT count(*) FROM posts").get(0, 0, as: Int.self) + (try s1.query("SELECT count(*) FROM posts").get(0, 0, as: Int.self))
        XCTAssertEqual(try PGConnection.connect(fixture.targets[1]).query("SELECT count(*) FROM posts").get(0, 0, as: Int.self), sourceRows)
    }

    /// The application moves row 10 from s0 to s1 (insert on s1, then delete on s0: two
    /// transactions, so both truly hold 10 for a moment), and s1's entries for it are a minute old
    /// (they waited for a long backfill). The lane proves 10 held by both at one moment and holds
    /// it back; the move then completes. Before, apply stopped at once (exit 1, "held by both"),
    /// the entries being older than the grace; now a key is refused only when proven again the
    /// grace after its first proof (20 s here), and the target ends with s1's row.
    func testAKeyProvenDuringAMoveWithOldEntriesIsNotRefused() throws {
        let (fixture, config) = try caughtUp()
        let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])
        // The move's first half, then an entry after it: applied by the round that holds 10 back.
        try s1.execute("INSERT INTO posts VALUES (10, 21, 's1 ten')")
        try s1.execute("UPDATE posts SET body = 'after the move began' WHERE id = 1101")
        try ageChangelogs(on: s1)
        let apply = try ReshardCLI.start(
            ["apply", "-c", config, "--until", "caught-up"], environment: ["RESHARD_KEY_COLLISION_GRACE_SECONDS": "20"])
        defer { if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) } }
        let roundDone = try eventually(timeout: 30) {
            (try? rows("SELECT body FROM posts WHERE id = 1101", fixture.targets[1])) == ["after the move began"] || apply.wait(timeout: 0.01) != nil
        }
        XCTAssertTrue(roundDone, apply.stderr)
        XCTAssertNil(apply.wait(timeout: 0.01), "apply stopped while the move was under way: " + apply.stderr)
        XCTAssertEqual(try rows("SELECT user_id || ' ' || body FROM posts WHERE id = 10", fixture.targets[1]), ["20 s0 post 10"], "held back")
        try s0.execute("DELETE FROM posts WHERE id = 10")
        XCTAssertEqual(apply.wait(timeout: 60), 0, apply.stdout + apply.stderr)
        XCTAssertFalse(apply.stderr.contains("held by both"), apply.stderr)
        XCTAssertEqual(try rows("SELECT user_id || ' ' || body FROM posts WHERE id = 10", fixture.targets[1]), ["21 s1 ten"])
    }

    /// A real collision (s1 writes row 10, which s0 holds) whose s0 row an application updates
    /// without pause from another thread: the guard's proof (s0's row version read before and
    /// after s1's row) keeps missing. Before, the entries were held back every round without end
    /// and without a word; now the catch-up stops (exit 1, as `check` does) naming the key and
    /// both sources once the key has been seen on both for the grace and `confirmSeconds` (6 s).
    func testACollisionWhoseOtherRowKeepsChangingStillStopsTheCatchUp() throws {
        let (fixture, config) = try caughtUp()
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO posts VALUES (10, 99, 's1 ten')")
        // The application's updates, a committed one after another on the server (a client's
        // round trips leave the guard's three reads a quiet moment now and then), for at most 25 s.
        let updater = try PGConnection.connect(fixture.sources[0])
        let pid = try updater.query("SELECT pg_backend_pid()").get(0, 0, as: Int.self)
        try updater.execute("SET synchronous_commit = off")
        let done = DispatchSemaphore(value: 0)
        let failure = FailureBox()
        Thread {
            do { try updater.execute(
                """
                DO $$ DECLARE bound timestamptz := clock_timestamp() + interval '25 seconds'; n int := 0; BEGIN
                  WHILE clock_timestamp() < bound LOOP
                    n := n + 1; UPDATE posts SET body = 's0 post 10 v' || n WHERE id = 10; COMMIT;
                  END LOOP;
                END $$
                """) } catch { failure.set("\(error)") }
            done.signal()
        }.start()
        defer {
            _ = try? PGConnection.connect(fixture.sources[0]).query("SELECT pg_cancel_backend($1::int)", [String(pid)])
            done.wait()
        }
        let apply = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up"], environment: Self.shortGrace)
        defer { if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) } }
        XCTAssertEqual(apply.wait(timeout: 30), 1, apply.stdout + apply.stderr)
        XCTAssertTrue(apply.stderr.contains("table posts: key (id) is held by both s0 and s1 for target t0: (10)"), apply.stderr)
        XCTAssertEqual(try rows("SELECT user_id::text FROM posts WHERE id = 10", fixture.targets[1]), ["20"], "s1's row replaced nothing")
        XCTAssertEqual(try rows("SELECT (body > 's0 post 10 v1')::text FROM posts WHERE id = 10", fixture.sources[0]), ["true"], failure.value ?? "")
    }

    /// A unique value other than the key on a source's row that leaves its database, and on
    /// another source's row that arrives there, never meet: the database's built table holds only
    /// the rows that map to it. Not refused (it was while copies went into the live table).
    func testUniqueValuesOfRowsLeavingASharedDatabaseDoNotCollideWithArrivingOnes() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, email text UNIQUE)")
        // modulo over t0 (s0's database), t1, t2: id 1 leaves s0 for t1, id 3 comes from s1 to t0.
        try PGConnection.connect(fixture.sources[0]).execute("INSERT INTO users VALUES (1, 'same@x'), (2, 'a@x')")
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO users VALUES (3, 'same@x'), (5, 'b@x')")
        let plan = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("users", "id")], function: "modulo")])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        // The same value arriving on t0 from both sources is still refused.
        try PGConnection.connect(fixture.sources[0]).execute("UPDATE users SET email = 'b@x' WHERE id = 2")
        let refused = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("users", "id")], function: "modulo")])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("unique index users_email_key (email) would be violated on target t2: on both s0 and s1: (b@x)"), refused.stderr)
    }
}

/// Why `@unchecked Sendable`: the value is only touched under `lock`.
private final class FailureBox: @unchecked Sendable {
    private let lock = NSLock()
    private var text: String?
    var value: String? { lock.withLock { text } }
    func set(_ value: String) { lock.withLock { text = value } }
}
