import XCTest

@testable import ReshardRouting

final class ShardFunctionTests: XCTestCase {
    func testEvenHashSplitMatchesCitus() {
        XCTAssertEqual(ShardFunction.evenHashSplit(3), [-715_827_883, 715_827_882])
        XCTAssertEqual(ShardFunction.evenHashSplit(2), [0])
        XCTAssertEqual(ShardFunction.evenHashSplit(1), [])
    }

    func testBucketsCountBoundariesAtOrBelow() throws {
        let f = try ShardFunction(kind: .range, shardCount: 3, boundaries: [10, 20])
        XCTAssertEqual(try f.shard(for: .int(9, .bigint)), 0)
        XCTAssertEqual(try f.shard(for: .int(10, .bigint)), 1)
        XCTAssertEqual(try f.shard(for: .int(19, .bigint)), 1)
        XCTAssertEqual(try f.shard(for: .int(20, .bigint)), 2)
        XCTAssertEqual(try f.shard(for: .int(Int64.max, .bigint)), 2)
    }

    func testModuloIsNonNegative() throws {
        let f = try ShardFunction(kind: .modulo, shardCount: 2)
        XCTAssertEqual(try f.shard(for: .int(123, .bigint)), 1)
        XCTAssertEqual(try f.shard(for: .int(-3, .integer)), 1)
        XCTAssertEqual(try f.shard(for: .int(-4, .integer)), 0)
        XCTAssertThrowsError(try f.shard(for: .text("x")))
    }

    func testKnownPostgresHashes() {
        // Values printed by PostgreSQL 15: SELECT hashint4(0), hashint4(1), hashint8(0), hashtext('').
        XCTAssertEqual(PostgresHash.int4(0), -272_711_505)
        XCTAssertEqual(PostgresHash.int4(1), -1_905_060_026)
        XCTAssertEqual(PostgresHash.int8(0), -272_711_505)
        XCTAssertEqual(PostgresHash.int8(1), PostgresHash.int4(1))
        XCTAssertEqual(PostgresHash.int2(-1), PostgresHash.int4(-1))
    }

    func testRejectsBadBoundaries() {
        XCTAssertThrowsError(try ShardFunction(kind: .hash, shardCount: 3, boundaries: [5]))
        XCTAssertThrowsError(try ShardFunction(kind: .hash, shardCount: 3, boundaries: [5, 5]))
        XCTAssertThrowsError(try ShardFunction(kind: .range, shardCount: 3, boundaries: [9, 2]))
        XCTAssertThrowsError(try ShardFunction(kind: .range, shardCount: 2))
        XCTAssertThrowsError(try ShardFunction(kind: .hash, shardCount: 2, boundaries: [Int64(Int32.max) + 1]))
    }

    func testParsesUUIDText() {
        let key = ShardKey(text: "00112233-4455-6677-8899-aabbccddeeff", type: .uuid)
        XCTAssertEqual(key, .uuid([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]))
        XCTAssertNil(ShardKey(text: "nope", type: .uuid))
        XCTAssertEqual(KeyType(formatType: "character varying(40)"), .varchar)
    }
}
