import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 13: a TRUNCATE of a source table while `apply` runs is carried to the targets for that
/// source's rows (never silently ignored), on pure targets and on the target that is a source's
/// database, and rows written after it arrive as any others.
final class TruncateTests: XCTestCase {
    func testTruncateOnASourceDeletesThatSourcesRowsOnTheTargets() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, 600) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 90) { try OperateChecks.status(config)?.phase == "in-sync" }, apply.stderr)
        let t1 = try PGConnection.connect(fixture.targets[1])
        let before = try t1.query("SELECT count(*) FROM items WHERE home = 1").get(0, 0, as: Int.self)
        XCTAssertGreaterThan(before, 0, "t1 must hold rows of s1 before the truncate")

        // s1 truncates; its rows leave every target, s0's stay; rows written after it arrive.
        let s1 = try PGConnection.connect(fixture.sources[1])
        try s1.execute("TRUNCATE items; INSERT INTO items SELECT g, 1, 'after ' || g FROM generate_series(1001, 1100) g WHERE g % 2 = 1")
        XCTAssertTrue(try eventually(timeout: 60) { try fixture.sources.allSatisfy(OperateChecks.changelogIsEmpty) }, apply.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        XCTAssertEqual(try t1.query("SELECT count(*) FROM items WHERE home = 1 AND id <= 600").get(0, 0, as: Int.self), 0)

        // s0 (also target t0) truncates too: its rows leave t1 and t2, s1's copies on t0 stay.
        let s0 = try PGConnection.connect(fixture.sources[0])
        try s0.execute("TRUNCATE items; INSERT INTO items SELECT g, 0, 'after ' || g FROM generate_series(1001, 1100) g WHERE g % 2 = 0")
        XCTAssertTrue(try eventually(timeout: 60) { try fixture.sources.allSatisfy(OperateChecks.changelogIsEmpty) }, apply.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        let total = try fixture.targets.map { try PGConnection.connect($0) }.reduce(0) { sum, conn in
            sum + (try conn.query("SELECT count(*) FROM \(try OperateChecks.copy(of: "items", on: conn)) WHERE id <= 600").get(0, 0, as: Int.self))
        }
        XCTAssertEqual(total, 0, "no row of before the truncates may be left on any target")
    }
}
