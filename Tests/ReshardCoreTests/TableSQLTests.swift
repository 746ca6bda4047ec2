import PostgresClient
import XCTest

@testable import ReshardCore

/// The SQL one table needs, read as text: built from the plan alone, so no database is needed to
/// see what reshard will run.
final class TableSQLTests: XCTestCase {
    private func table(generated: Bool = false, key: [String] = ["id"]) -> Plan.Table {
        var columns = [
            TableSchema.Column(name: "id", type: "bigint", notNull: true),
            TableSchema.Column(name: "we\"ird", type: "text", notNull: false),
            TableSchema.Column(name: "region", type: "integer", notNull: true),
        ]
        if generated { columns.append(.init(name: "total", type: "numeric", notNull: false, isGenerated: true)) }
        return Plan.Table(
            name: QualifiedName(schema: "app", "sel\"ect"), key: "id", keyType: .bigint, columns: columns, uniqueKey: key,
            fingerprint: "f", estimateMethod: "exact", slices: [])
    }

    func testIdentifiersAndLiteralsAreQuotedAsLibpqQuotesUTF8() {
        XCTAssertEqual(SQLText.identifier("we\"ird; x"), "\"we\"\"ird; x\"")
        XCTAssertEqual(SQLText.name(QualifiedName(schema: "a b", "c")), "\"a b\".\"c\"")
        XCTAssertEqual(SQLText.literal("it's"), "'it''s'")
        XCTAssertEqual(SQLText.literal("a\\b'"), " E'a\\\\b'''")
        XCTAssertEqual(SQLText.literal("café"), "'café'")
    }

    func testGeneratedColumnsAreReadButNeverWritten() {
        let sql = TableSQL(table(generated: true))
        XCTAssertEqual(sql.columns, "\"id\", \"we\"\"ird\", \"region\", \"total\"")
        XCTAssertEqual(sql.writableColumns, "\"id\", \"we\"\"ird\", \"region\"")
        XCTAssertEqual(sql.copyIn, "COPY \"app\".\"sel\"\"ect\" (\"id\", \"we\"\"ird\", \"region\") FROM STDIN (FORMAT binary)")
        XCTAssertFalse(sql.updateSet.contains("total"))
        XCTAssertEqual(sql.updateSet, "UPDATE SET \"we\"\"ird\" = EXCLUDED.\"we\"\"ird\", \"region\" = EXCLUDED.\"region\"")
    }

    /// Thousands of keys go as one array literal per key column, whatever the values hold.
    func testKeySetsAreArraysNotListsOfRows() {
        let sql = TableSQL(table(key: ["region", "id"]))
        XCTAssertEqual(
            sql.keySet([["1", "10"], ["2", "a\"b\\c'd,{e}"]]),
            "SELECT k1::integer, k2::bigint FROM unnest('{\"1\",\"2\"}'::text[],  E'{\"10\",\"a\\\\\"b\\\\\\\\c''d,{e}\"}'::text[]) AS k (k1, k2)")
        let many = sql.keySet((0..<8000).map { ["\($0)", "\($0)"] })
        XCTAssertEqual(many.components(separatedBy: "::text[]").count, 3, "one array per key column")
    }

    func testStagedRowsConflictOnlyOnTheKeyAndOverrideIdentityAlwaysWhenATargetHasIt() {
        var plain = table(generated: true, key: ["region", "id"])
        let sql = TableSQL(plain)
        XCTAssertEqual(
            sql.insertFromStaging("reshard_staging"),
            "INSERT INTO \"app\".\"sel\"\"ect\" (\"id\", \"we\"\"ird\", \"region\") SELECT \"id\", \"we\"\"ird\", \"region\" FROM reshard_staging")
        XCTAssertEqual(sql.onKeyConflictDoNothing, "ON CONFLICT (\"region\", \"id\") DO NOTHING")
        XCTAssertEqual(sql.onKeyConflictUpdate, "ON CONFLICT (\"region\", \"id\") DO UPDATE SET \"we\"\"ird\" = EXCLUDED.\"we\"\"ird\"")
        plain.identityAlways = true
        XCTAssertEqual(
            TableSQL(plain).insertFromStaging("s"),
            "INSERT INTO \"app\".\"sel\"\"ect\" (\"id\", \"we\"\"ird\", \"region\") OVERRIDING SYSTEM VALUE SELECT \"id\", \"we\"\"ird\", \"region\" FROM s")
        // Plans made before the field existed: a source identity ALWAYS column decides.
        var old = table()
        old.columns[0].identity = "always"
        XCTAssertTrue(TableSQL(old).insertFromStaging("s").contains("OVERRIDING SYSTEM VALUE"))
        old.identityAlways = false
        XCTAssertFalse(TableSQL(old).insertFromStaging("s").contains("OVERRIDING SYSTEM VALUE"))
    }

    func testBatchesTakeKeysAsParametersOrTypedLiterals() throws {
        let sql = TableSQL(table(key: ["region", "id"]))
        XCTAssertEqual(sql.keyParameters(from: 3), "($3::integer, $4::bigint)")
        let end = sql.batchEndQuery(after: true)
        XCTAssertEqual(end.offsetParameter, 3)
        XCTAssertEqual(
            end.sql,
            "SELECT \"region\"::text, \"id\"::text FROM \"app\".\"sel\"\"ect\" WHERE (\"region\", \"id\") > ($1::integer, $2::bigint) ORDER BY \"region\", \"id\" OFFSET $3 LIMIT 1")
        XCTAssertEqual(sql.batchEndQuery(after: false).offsetParameter, 1)
        let function = try ShardFunction(kind: .modulo, shardCount: 2)
        XCTAssertEqual(
            sql.batchSelect(after: ["1", "o'k"], upTo: nil, function: function, target: 1),
            "SELECT \"id\", \"we\"\"ird\", \"region\" FROM \"app\".\"sel\"\"ect\" WHERE (\"region\", \"id\") > ('1'::integer, 'o''k'::bigint) AND (((\"id\")::bigint % 2 + 2) % 2)::int = 1")
    }

    /// On a target that is a source's database, rows are written under the built name and read
    /// from the live table: a staying batch is one INSERT ... SELECT on the server.
    func testABuiltTableIsWrittenAndTheLiveOneRead() {
        let sql = TableSQL(table(generated: true), writingTo: QualifiedName(schema: "reshard_build", "sel\"ect"))
        XCTAssertEqual(sql.copyIn, #"COPY "reshard_build"."sel""ect" ("id", "we""ird", "region") FROM STDIN (FORMAT binary)"#)
        let batch = sql.batchSelect(after: ["5"], upTo: ["9"], function: try! ShardFunction(kind: .hash, shardCount: 2), target: 0)
        XCTAssertEqual(
            sql.insert(batch),
            #"INSERT INTO "reshard_build"."sel""ect" ("id", "we""ird", "region") SELECT "id", "we""ird", "region" FROM "app"."sel""ect" WHERE ("id") > ('5'::bigint) AND ("id") <= ('9'::bigint) AND (hashint8("id") < 0)"#)
        XCTAssertTrue(sql.insertFromStaging("s").hasPrefix(#"INSERT INTO "reshard_build"."sel""ect" "#))
    }
}
