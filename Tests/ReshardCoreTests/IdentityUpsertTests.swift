import PostgresClient
import XCTest

@testable import ReshardCore

/// Target tables keep identity `GENERATED ALWAYS` columns as they are (issue 10), and PostgreSQL
/// lets an UPDATE set such a column only to DEFAULT: the catch-up's upsert must leave it out, and
/// its inserts must override it.
final class IdentityUpsertTests: XCTestCase {
    func testTheUpsertLeavesIdentityAlwaysColumnsOutAndInsertsOverrideThem() {
        let table = Plan.Table(
            name: QualifiedName("tickets"), key: "user_id", keyType: .bigint,
            columns: [
                TableSchema.Column(name: "id", type: "bigint", notNull: true),
                TableSchema.Column(name: "number", type: "bigint", notNull: true, identity: "always"),
                TableSchema.Column(name: "user_id", type: "bigint", notNull: true),
            ],
            uniqueKey: ["id"], fingerprint: "f", estimateMethod: "exact", slices: [])
        let sql = TableSQL(table)
        XCTAssertEqual(sql.updateSet, "UPDATE SET \"user_id\" = EXCLUDED.\"user_id\"")
        XCTAssertTrue(sql.insertFromStaging("s").contains("OVERRIDING SYSTEM VALUE"))
    }
}
