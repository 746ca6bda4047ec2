import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Independent SQL checks shared by the operate tests (truncate, schema drift, replica lag,
/// scale-out). Every table they use has a `home` column naming the source the application wrote
/// the row to, so what each target must hold is computed from the sources alone: target t holds
/// exactly the rows each source s holds with `home = s` whose shard key hashes into t's Citus range.
enum OperateChecks {
    /// The three targets' hash ranges (Citus), written out rather than taken from reshard.
    static let ranges: [(Int64, Int64)] = [(-2_147_483_648, -715_827_884), (-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]

    /// Where a target's copy of `table` is: `reshard_build.<table>` when reshard built it beside
    /// the live table (a target that is a source's database), else the table itself.
    static func copy(of table: String, on conn: PGConnection) throws -> String {
        try conn.query("SELECT to_regclass($1) IS NOT NULL", ["reshard_build.\(table)"]).get(0, 0, as: Bool.self)
            ? "reshard_build.\(table)" : table
    }

    /// Asserts every target holds exactly the source rows that map to it, compared row by row as
    /// text (`columns` on both sides), and that no pure target holds rows of another.
    static func assertTargetsHoldSourceRows(
        _ fixture: PlanFixture, table: String, hash: String, columns: String = "*", file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let sources = try fixture.sources.map { try PGConnection.connect($0) }
        let targets = try fixture.targets.map { try PGConnection.connect($0) }
        func rows(_ conn: PGConnection, _ from: String, _ filter: String) throws -> [String] {
            let r = try conn.query("SELECT x::text FROM (SELECT \(columns) FROM \(from)) x WHERE \(filter) ORDER BY 1")
            return (0..<r.rowCount).map { r[$0, 0]! }
        }
        for (t, (lo, hi)) in ranges.enumerated() {
            let inRange = "\(hash) BETWEEN \(lo) AND \(hi)"
            var expected: [String] = []
            for (s, source) in sources.enumerated() { expected += try rows(source, table, "\(inRange) AND home = \(s)") }
            let held = try rows(targets[t], try copy(of: table, on: targets[t]), inRange)
            if held != expected.sorted() {
                let missing = Set(expected).subtracting(held), extra = Set(held).subtracting(expected)
                XCTFail(
                    "\(table) on t\(t): \(held.count) rows, expected \(expected.count); missing \(missing.sorted().prefix(5)), unexpected \(extra.sorted().prefix(5))",
                    file: file, line: line)
            }
            if t > 0 {
                let stray = try targets[t].query("SELECT count(*) FROM \(table) x WHERE NOT (\(inRange))").get(0, 0, as: Int.self)
                XCTAssertEqual(stray, 0, "\(table) on t\(t) holds rows of other targets", file: file, line: line)
            }
        }
    }

    /// Whether every changelog on `source` exists and is empty: every change logged there is applied.
    static func changelogIsEmpty(_ source: ConnectionString) throws -> Bool {
        let conn = try PGConnection.connect(source)
        let logs = try conn.query(
            "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = to_regnamespace('reshard_shim') AND c.relkind = 'r'")
        return try logs.rowCount > 0 && (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
    }

    static func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }
}
