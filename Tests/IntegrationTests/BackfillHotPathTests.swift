import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// What the backfill does per batch, and what it leaves until the copy is done (issue 10's
/// backfill figure): the targets carry no row-level trigger while rows are copied into them (any
/// BEFORE ROW trigger makes `COPY FROM` insert row by row), and the slice claim costs no round trip
/// of its own per batch yet still stops a process whose slice was taken over.
final class BackfillHotPathTests: XCTestCase {
    /// `items` on both sources (each its own rows, `home` naming it), `rows` in all; with
    /// `applicationTrigger`, a BEFORE ROW trigger of the application's on it (`items_stamp`).
    private func createItems(_ fixture: PlanFixture, rows: Int, applicationTrigger: Bool = false) throws {
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, \(rows)) g WHERE g % 2 = \(k);
                ANALYZE items;
                """ + (applicationTrigger ? """
                CREATE FUNCTION items_stamp() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN NEW.note := coalesce(NEW.note, 'stamped'); RETURN NEW; END$f$;
                CREATE TRIGGER items_stamp BEFORE INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION items_stamp();
                """ : ""))
        }
    }

    /// The application's triggers on every target's copy of `items`: name and `tgenabled`.
    private func applicationTriggers(_ fixture: PlanFixture) throws -> [String] {
        try triggers(fixture, "tgname || ' ' || tgenabled::text", "NOT tgisinternal AND tgname NOT LIKE 'reshard%'")
    }

    /// BEFORE ROW triggers on every target's copy of `items` (tgtype bit 0: row, bit 1: before).
    private func rowTriggers(_ fixture: PlanFixture) throws -> [String] {
        try triggers(fixture, "tgname", "tgtype & 3 = 3")
    }

    /// `column` of the triggers on every target's copy of `items` that match `condition`, sorted.
    private func triggers(_ fixture: PlanFixture, _ column: String, _ condition: String) throws -> [String] {
        try fixture.targets.flatMap { dsn -> [String] in
            let conn = try PGConnection.connect(dsn)
            let r = try conn.query(
                "SELECT \(column) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND \(condition) ORDER BY 1",
                [try OperateChecks.copy(of: "items", on: conn)])
            return (0..<r.rowCount).map { r[$0, 0]! }
        }
    }

    /// The application's own BEFORE ROW trigger too: it is created (disabled) on the targets only
    /// once the copy is done, since even a disabled one makes `COPY FROM` insert row by row.
    func testTargetsCarryNoRowTriggerWhileRowsAreCopiedAndTheMisroutedCheckOnceCopied() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture, rows: 3000, applicationTrigger: true)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up", "--max-rows-per-second", "1000"])
        let meta = try PGConnection.connect(fixture.metadata)
        func copying() throws -> Bool {
            try meta.query("SELECT to_regclass('reshard.slices') IS NOT NULL").get(0, 0, as: Bool.self)
                && meta.query("SELECT count(*) FILTER (WHERE rows_copied > 0) > 0 AND bool_or(NOT done) FROM reshard.slices").get(0, 0, as: Bool.self)
        }
        XCTAssertTrue(try eventually(timeout: 60, copying), apply.stderr)
        XCTAssertEqual(try rowTriggers(fixture), [], "a row trigger on a target while the backfill copies into it")
        XCTAssertTrue(try copying(), "the backfill ended before the check: it proves nothing")

        XCTAssertEqual(try applicationTriggers(fixture), [], "the application's trigger on a target while the backfill copies into it")

        XCTAssertEqual(apply.wait(timeout: 120), 0, apply.stderr)
        // Once copied, every target's copy has the fence's misrouted-key check (one per target)
        // and the application's trigger, disabled until cutover.
        let triggers = try rowTriggers(fixture)
        XCTAssertEqual(triggers.count, 6, "\(triggers)")
        XCTAssertEqual(triggers.filter { $0.hasPrefix("reshard_misrouted_") }.count, 3, "\(triggers)")
        XCTAssertEqual(try applicationTriggers(fixture), Array(repeating: "items_stamp D", count: 3))
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
    }

    /// Another process takes a slice over while this one copies it: this one writes no
    /// checkpoint over the new holder's (its batch under way is refused at the checkpoint, with an
    /// event), leaves the slice, and finishes it correctly once the slice is free again.
    func testASliceTakenOverWhileCopyingKeepsItsNewHoldersCheckpoint() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture, rows: 5000)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(
            ["apply", "-c", config, "--until", "caught-up", "--max-rows-per-second", "1000", "--max-connections-per-shard", "1"])
        let meta = try PGConnection.connect(fixture.metadata)
        // The new holder: a live session (this one) with a fresh heartbeat, on a slice being copied.
        var taken: (slice: String, rowsCopied: String?, lastKey: String?, name: String)?
        _ = try eventually(timeout: 60) {
            // apply creates the metadata schema meanwhile, migration by migration.
            guard try meta.query("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('reshard.slices') AND attname = 'claimed_session'")
                .get(0, 0, as: Int.self) == 1 else { return false }
            let r = try meta.query(
                """
                UPDATE reshard.slices SET claimed_by = 'test pid 0 run takeover', claimed_session = pg_backend_pid(), heartbeat_at = now()
                WHERE ctid = (SELECT ctid FROM reshard.slices WHERE rows_copied > 0 AND NOT done AND NOT stays_in_place AND claimed_by IS NOT NULL LIMIT 1)
                RETURNING format('table_name = %L AND source = %L AND target = %L', table_name, source, target), rows_copied, last_key::text,
                          table_name || ' ' || source || ' -> ' || target
                """)
            if r.rowCount == 1 { taken = (r[0, 0]!, r[0, 1], r[0, 2], r[0, 3]!) }
            return taken != nil
        }
        guard let taken else { return XCTFail("no slice was being copied\n\(apply.stderr)") }
        let slice = taken.slice
        XCTAssertTrue(try eventually(timeout: 30) {
            // A live holder heartbeats (a claim 10 s old is taken over again).
            try meta.execute("UPDATE reshard.slices SET heartbeat_at = now() WHERE \(slice)")
            return try meta.query("SELECT count(*) FROM reshard.events WHERE message = $1", ["slice \(taken.name) was taken over by another process; left to it"])
                .get(0, 0, as: Int.self) == 1
        }, apply.stderr)
        let after = try meta.query("SELECT rows_copied, last_key::text, claimed_by FROM reshard.slices WHERE \(slice)")
        XCTAssertEqual(after[0, 0], taken.rowsCopied, "the process that lost the slice moved its checkpoint")
        XCTAssertEqual(after[0, 1], taken.lastKey, "the process that lost the slice moved its checkpoint")
        XCTAssertEqual(after[0, 2], "test pid 0 run takeover")

        // The holder lets go: apply takes the slice again and completes it, every row once.
        try meta.execute("UPDATE reshard.slices SET claimed_by = NULL, claimed_session = NULL WHERE \(slice)")
        XCTAssertEqual(apply.wait(timeout: 120), 0, apply.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        let (lo, hi) = OperateChecks.ranges[0]
        let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])
        let moving = try s0.query("SELECT count(*) FROM items WHERE NOT hashint8(id) BETWEEN \(lo) AND \(hi)").get(0, 0, as: Int.self)
            + (try s1.query("SELECT count(*) FROM items").get(0, 0, as: Int.self))
        XCTAssertEqual(try meta.query("SELECT sum(rows_copied) FROM reshard.slices WHERE NOT stays_in_place").get(0, 0, as: Int.self), moving)
    }
}
