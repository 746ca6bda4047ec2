import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// A backfill that stops making progress after restarts: every slice must end copied, whatever
/// the metadata database lost of its replies, never left pending with no worker able to take it.
final class SliceRecoveryTests: XCTestCase {
    /// The checkpoint that finishes a slice commits, but its reply is lost (the metadata database
    /// restarting at that moment; `RESHARD_TEST_LOSE_CHECKPOINT_REPLY` makes it happen on cue). The
    /// retry finds the slice done in the metadata and must take it as done: before, the claim was
    /// refused (the slice is not free: it is done) and the slice stayed pending for good, the backfill
    /// at 0 rows/s while the catch-up ran. `apply --until caught-up` must end, every row on its
    /// target (independent SQL counts per target, against the sources' rows by the shard function).
    func testASliceWhoseLastCheckpointReplyIsLostIsTakenAsDone() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
        try PGConnection.connect(fixture.sources[0]).execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 1000) g")
        try PGConnection.connect(fixture.sources[1]).execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1001, 2000) g")
        let config = try fixture.writeConfig(function: "modulo")
        let apply = try ReshardCLI.start(
            ["apply", "-c", config, "--until", "caught-up"], environment: ["RESHARD_TEST_LOSE_CHECKPOINT_REPLY": "public.users"])
        let code = apply.wait(timeout: 60)
        if code == nil { apply.signal(SIGKILL) }
        XCTAssertEqual(code, 0, "apply must finish the backfill: \(apply.stderr)")
        XCTAssertTrue(apply.stderr.contains("reply was lost"), "the planted fault must have happened: \(apply.stderr)")
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertEqual(try meta.query("SELECT count(*) FROM reshard.slices WHERE NOT done").get(0, 0, as: Int.self), 0)
        // modulo 3: ids 1...2000 on t0 (s0's database, built apart), t1, t2.
        for (t, target) in fixture.targets.enumerated() {
            let table = t == 0 ? "reshard_build.users" : "users"
            let conn = try PGConnection.connect(target)
            XCTAssertEqual(
                try conn.query("SELECT count(*) FROM \(table)").get(0, 0, as: Int.self), (1...2000).filter { $0 % 3 == t }.count, "t\(t)")
            XCTAssertEqual(try conn.query("SELECT count(*) FROM \(table) WHERE id % 3 <> \(t)").get(0, 0, as: Int.self), 0, "t\(t)")
        }
    }
}
