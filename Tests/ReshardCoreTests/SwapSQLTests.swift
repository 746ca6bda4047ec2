import PostgresClient
import XCTest

@testable import ReshardCore

final class SwapSQLTests: XCTestCase {
    func testSwapInParksTheLiveTableAndMovesTheBuiltOneIntoItsSchema() {
        let table = SwapSQL.Table(
            live: QualifiedName(schema: "app", "we\"ird"), ownedSequences: [(QualifiedName(schema: "app", "we_id_seq"), "id")])
        XCTAssertEqual(
            SwapSQL.swapIn([table]),
            [
                "CREATE SCHEMA IF NOT EXISTS \"reshard_old\"",
                // Let go first: SET SCHEMA would take the sequence along into reshard_old.
                "ALTER SEQUENCE \"app\".\"we_id_seq\" OWNED BY NONE",
                "ALTER TABLE \"app\".\"we\"\"ird\" SET SCHEMA \"reshard_old\"",
                "ALTER TABLE \"reshard_build\".\"we\"\"ird\" SET SCHEMA \"app\"",
                "ALTER SEQUENCE \"app\".\"we_id_seq\" OWNED BY \"app\".\"we\"\"ird\".\"id\"",
            ])
    }

    func testSwapBackIsTheMirrorImage() {
        let statements = SwapSQL.swapBack([SwapSQL.Table(live: QualifiedName(schema: "public", "posts"))])
        XCTAssertEqual(
            statements,
            [
                "CREATE SCHEMA IF NOT EXISTS \"reshard_build\"",
                "ALTER TABLE \"public\".\"posts\" SET SCHEMA \"reshard_build\"",
                "ALTER TABLE \"reshard_old\".\"posts\" SET SCHEMA \"public\"",
            ])
    }
}
