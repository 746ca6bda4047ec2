import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 13: `ALTER TABLE` on the sources while `apply` runs. An added nullable column (or one
/// with a constant default) reaches the targets with its values, including rows written before
/// reshard noticed it; a dropped column stops `apply` (exit 1) naming the table and the column,
/// and `apply` goes on, with nothing lost, once the targets match.
final class SchemaDriftTests: XCTestCase {
    private func createItems(_ fixture: PlanFixture) throws {
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, 2000) g WHERE g % 2 = \(k);
                """)
        }
    }

    private func drained(_ fixture: PlanFixture) throws -> Bool { try fixture.sources.allSatisfy(OperateChecks.changelogIsEmpty) }

    func testAddedColumnsAreCarriedOverWithTheirValues() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 90) { try OperateChecks.status(config)?.phase == "in-sync" }, apply.stderr)
        let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])

        // s0 first: its writes with the new columns are applied while s1 does not have them yet.
        try s0.execute(
            """
            ALTER TABLE items ADD COLUMN tag text, ADD COLUMN level int DEFAULT 7;
            UPDATE items SET tag = 'early ' || id, level = 1 WHERE id % 10 = 0;
            INSERT INTO items (id, home, note, tag) VALUES (5000, 0, 'new', 'fresh');
            """)
        XCTAssertTrue(try eventually(timeout: 60) { try OperateChecks.changelogIsEmpty(fixture.sources[0]) }, apply.stderr)
        try s1.execute(
            """
            ALTER TABLE items ADD COLUMN tag text, ADD COLUMN level int DEFAULT 7;
            UPDATE items SET level = NULL WHERE id % 7 = 0;
            """)
        let t1 = try PGConnection.connect(fixture.targets[1])
        XCTAssertTrue(try eventually(timeout: 60) {
            try t1.query("SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname IN ('tag', 'level')").get(0, 0, as: Int.self) == 2
        }, apply.stderr)
        // Written after the switch: copied as any change.
        try s0.execute("UPDATE items SET tag = 'late' WHERE id % 13 = 0")
        try s1.execute("UPDATE items SET tag = 'late', level = 3 WHERE id % 13 = 0; INSERT INTO items VALUES (5001, 1, 'new', 'fresh', 9)")
        XCTAssertTrue(try eventually(timeout: 60) { try drained(fixture) }, apply.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        var carried = 0
        for (t, (lo, hi)) in OperateChecks.ranges.enumerated() {
            let conn = try PGConnection.connect(fixture.targets[t])
            carried += try conn.query(
                "SELECT count(*) FROM \(try OperateChecks.copy(of: "items", on: conn)) WHERE tag LIKE 'early %' AND level = 1 AND hashint8(id) BETWEEN \(lo) AND \(hi)"
            ).get(0, 0, as: Int.self)
        }
        let early = try s0.query("SELECT count(*) FROM items WHERE tag LIKE 'early %' AND level = 1").get(0, 0, as: Int.self)
        XCTAssertGreaterThan(early, 100)
        XCTAssertEqual(carried, early, "s0's rows changed before s1 had the columns must carry their values")
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertEqual(
            try meta.query("SELECT count(*) FROM reshard.events WHERE message LIKE 'table items: column(s) tag, level added to the targets%'").get(0, 0, as: Int.self), 1)

        // One event per source saying what it added: an unchanged table is never taken for a changed one.
        XCTAssertEqual(
            try meta.query("SELECT count(*) FROM reshard.events WHERE message LIKE 'table items on source %'").get(0, 0, as: Int.self), 2)

        // A later apply accepts the table as it is now and stays correct.
        let again = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(again.status, 0, again.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
    }

    func testDroppedColumnStopsApplyNamingTableAndColumnAndApplyGoesOnOnceTargetsMatch() throws {
        let fixture = try PlanFixture(self)
        try createItems(fixture)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 90) { try OperateChecks.status(config)?.phase == "in-sync" }, apply.stderr)
        let s1 = try PGConnection.connect(fixture.sources[1])
        try s1.execute("ALTER TABLE items DROP COLUMN note")
        XCTAssertEqual(apply.wait(timeout: 60), 1, apply.stderr)
        XCTAssertTrue(apply.stderr.contains("table items changed on source s1 during the migration: column note was dropped"), apply.stderr)
        // Written while apply is stopped: logged by the shim, applied later.
        try s1.execute("INSERT INTO items (id, home) SELECT g, 1 FROM generate_series(3001, 3101, 2) g; DELETE FROM items WHERE id BETWEEN 1 AND 99")

        // Refused while the targets do not match yet (the planner names them), nothing changed.
        let early = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(early.status, 2, early.stderr)
        XCTAssertTrue(early.stderr.contains("note"), early.stderr)

        try PGConnection.connect(fixture.sources[0]).execute("ALTER TABLE items DROP COLUMN note")
        // Every target's copy: on t0, a source's database, the one reshard builds beside the live table.
        for dsn in fixture.targets {
            let conn = try PGConnection.connect(dsn)
            try conn.execute("ALTER TABLE \(try OperateChecks.copy(of: "items", on: conn)) DROP COLUMN IF EXISTS note")
        }
        let resumed = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(try drained(fixture))
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        let arrived = try fixture.targets.map { try PGConnection.connect($0) }.reduce(0) { sum, conn in
            sum + (try conn.query("SELECT count(*) FROM \(try OperateChecks.copy(of: "items", on: conn)) WHERE id > 3000").get(0, 0, as: Int.self))
        }
        XCTAssertEqual(arrived, 51)
    }
}
