import PostgresClient
import ReshardRehearse
import ReshardRouting
import XCTest

final class RowGeneratorTests: XCTestCase {
    let users = TableModel(
        name: QualifiedName("users"),
        columns: [
            .init(name: "id", baseType: "int8", notNull: true),
            .init(name: "email", baseType: "varchar", length: 20, notNull: true),
            .init(name: "balance", baseType: "numeric", precision: 6, scale: 2, minimum: 0, maximum: 500),
            .init(name: "tier", baseType: "enum", enumLabels: ["free", "pro"], notNull: true),
            .init(name: "doc", baseType: "jsonb"),
            .init(name: "seen", baseType: "timestamptz", notNull: true),
            .init(name: "n", baseType: "int4", notNull: true, identity: "always"),
            .init(name: "total", baseType: "int4", isGenerated: true),
        ],
        uniqueKey: ["id"], uniqueSets: [["id"], ["email"]], shardKey: "id")
    lazy var posts = TableModel(
        name: QualifiedName("posts"),
        columns: [
            .init(name: "user_id", baseType: "int8", notNull: true),
            .init(name: "id", baseType: "uuid", notNull: true),
            .init(name: "body", baseType: "text"),
        ],
        uniqueKey: ["user_id", "id"],
        foreignKeys: [.init(columns: ["user_id"], parent: QualifiedName("users"), parentColumns: ["id"])], shardKey: "user_id")

    func generator(seed: UInt64 = 7) throws -> RowGenerator {
        RowGenerator(seed: seed, placement: try ShardFunction(kind: .modulo, shardCount: 2))
    }

    func testTheSameSeedGivesTheSameRowsAndAnotherSeedOthers() throws {
        let counts = [users.name: 50, posts.name: 200]
        let a = try generator().generate([posts, users], counts: counts)
        let b = try generator().generate([users, posts], counts: counts)
        XCTAssertEqual(a[posts.name], b[posts.name])
        XCTAssertEqual(a[users.name], b[users.name])
        let c = try generator(seed: 8).generate([users, posts], counts: counts)
        XCTAssertNotEqual(a[users.name]!.map(\.values), c[users.name]!.map(\.values))
    }

    func testValuesRespectTypesUniquenessBoundsAndNotNull() throws {
        let rows = try generator().generate([users], counts: [users.name: 500])[users.name]!
        let columns = users.writtenColumns.map(\.name)
        XCTAssertFalse(columns.contains("total"), "generated columns are never written")
        XCTAssertTrue(columns.contains("n"), "identity columns get explicit values")
        func column(_ name: String) -> [String?] { rows.map { $0.values[columns.firstIndex(of: name)!] } }
        XCTAssertEqual(Set(column("id")).count, 500)
        XCTAssertEqual(Set(column("email")).count, 500, "a unique column gets distinct values")
        XCTAssertTrue(column("email").allSatisfy { $0 != nil && $0!.count <= 20 })
        XCTAssertTrue(column("tier").allSatisfy { ["free", "pro"].contains($0 ?? "") })
        XCTAssertTrue(column("seen").allSatisfy { $0?.range(of: #"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00$"#, options: .regularExpression) != nil })
        let balances = column("balance").compactMap { $0.flatMap(Double.init) }
        XCTAssertFalse(balances.isEmpty)
        XCTAssertTrue(balances.allSatisfy { $0 >= 0 && $0 <= 500 }, "CHECK bounds hold: \(balances.filter { $0 > 500 })")
        XCTAssertTrue(column("balance").contains(nil), "nullable columns get some NULLs")
        XCTAssertFalse(column("doc").compactMap { $0 }.isEmpty)
    }

    func testRowsArePlacedByTheOldLayoutAndChildrenFollowTheirParent() throws {
        let rows = try generator().generate([users, posts], counts: [users.name: 40, posts.name: 300])
        for row in rows[users.name]! {
            XCTAssertEqual(row.shard, Int(Int64(row.values[0]!)! % 2))
        }
        let userIDs = Set(rows[users.name]!.map { $0.values[0]! })
        for row in rows[posts.name]! {
            XCTAssertTrue(userIDs.contains(row.values[0]!), "the foreign key points at a generated parent")
            XCTAssertEqual(row.shard, Int(Int64(row.values[0]!)! % 2), "a child lands on its parent's shard")
        }
        XCTAssertEqual(Set(rows[posts.name]!.map { $0.values[1]! }).count, 300, "uuid keys are distinct")
    }

    func testParentsComeFirstAndForeignKeysOutsideTheSetAreRefused() throws {
        XCTAssertEqual(try TableModel.parentsFirst([posts, users]).map(\.name.name), ["users", "posts"])
        XCTAssertThrowsError(try TableModel.parentsFirst([posts])) { error in
            XCTAssertTrue("\(error)".contains("posts") && "\(error)".contains("users"), "\(error)")
        }
    }

    func testTimestampsAreCivilDates() {
        XCTAssertEqual(RowGenerator.timestampText(0, zone: true), "1970-01-01 00:00:00+00")
        XCTAssertEqual(RowGenerator.timestampText(1_709_210_096, zone: false), "2024-02-29 12:34:56")
    }
}
