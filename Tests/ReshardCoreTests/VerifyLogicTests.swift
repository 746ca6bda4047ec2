import PostgresClient
import XCTest

@testable import ReshardCore

final class VerifyLogicTests: XCTestCase {
    func testHashSumsWrapAndReadNegativeServerRemainders() {
        XCTAssertEqual(RowSet.hashSum(fromServer: "5"), 5)
        XCTAssertEqual(RowSet.hashSum(fromServer: "-1"), UInt64.max)
        XCTAssertEqual(RowSet.hashSum(fromServer: "18446744073709551615"), UInt64.max)
        XCTAssertNil(RowSet.hashSum(fromServer: "1.5"))
        // Sums from two sources add up to the same total as the rows on one target, in any order.
        var sources = RowSet(rows: 2, hashSum: UInt64.max)
        sources += RowSet(rows: 1, hashSum: 3)
        XCTAssertEqual(sources, RowSet(rows: 3, hashSum: 2))
    }

    func testRowComparisonNamesEveryKindOfDifference() {
        let sources: [RowComparison.SourceRow] = [
            .init(source: "s0", key: ["1"], hash: 10), .init(source: "s1", key: ["2"], hash: 20),
            .init(source: "s0", key: ["3"], hash: 30), .init(source: "s1", key: ["4"], hash: 40),
            .init(source: "s0", key: ["5"], hash: 50), .init(source: "s1", key: ["5"], hash: 50),
        ]
        let target: [(key: [String], hash: Int64)] = [(["1"], 10), (["3"], 31), (["4"], 40), (["5"], 50), (["9"], 90)]
        let found = RowComparison.differences(table: "t", target: "t1", sourceRows: sources, targetRows: target)
        XCTAssertEqual(found, [
            RowDifference(table: "t", kind: .missing, key: ["2"], source: "s1", target: "t1"),
            RowDifference(table: "t", kind: .extra, key: ["9"], source: nil, target: "t1"),
            RowDifference(table: "t", kind: .different, key: ["3"], source: "s0", target: "t1"),
            RowDifference(table: "t", kind: .duplicate, key: ["5"], source: "s0,s1", target: "t1"),
        ])
        XCTAssertEqual(RowComparison.differences(table: "t", target: "t1", sourceRows: [], targetRows: []), [])
    }

    /// Keys are compared as bytes: NFC and NFD spellings, or U+212B and U+00C5, are different keys
    /// to PostgreSQL, though Swift's `String ==` calls them equal.
    func testRowComparisonTellsCanonicallyEquivalentKeysApart() {
        let nfc = "caf\u{E9}", nfd = "cafe\u{301}", angstrom = "\u{212B}", ring = "\u{C5}"
        let sources: [RowComparison.SourceRow] = [
            .init(source: "s0", key: [nfc], hash: 1), .init(source: "s0", key: [nfd], hash: 2), .init(source: "s1", key: [ring], hash: 3),
        ]
        let target: [(key: [String], hash: Int64)] = [([nfd], 2), ([angstrom], 3)]
        let found = RowComparison.differences(table: "t", target: "t1", sourceRows: sources, targetRows: target)
        XCTAssertEqual(found.map(\.kind), [.missing, .missing, .extra])
        XCTAssertEqual(Set(found.filter { $0.kind == .missing }.map { Array($0.key[0].utf8) }), [Array(nfc.utf8), Array(ring.utf8)])
        XCTAssertEqual(found.last.map { Array($0.key[0].utf8) }, Array(angstrom.utf8))
        XCTAssertEqual(found.first?.source, "s0")
    }

    func testChunkBoundariesAreEvenAndDistinct() {
        let sample = (0..<100).map { [String($0)] }
        XCTAssertEqual(ChunkBoundaries.pick(sortedSample: sample, chunks: 4), [["25"], ["50"], ["75"]])
        XCTAssertEqual(ChunkBoundaries.pick(sortedSample: sample, chunks: 1), [])
        XCTAssertEqual(ChunkBoundaries.pick(sortedSample: [], chunks: 4), [])
        // Repeated keys (a small sample) never make an empty chunk.
        XCTAssertEqual(ChunkBoundaries.pick(sortedSample: [["a"], ["a"], ["a"], ["b"]], chunks: 4), [["b"]])
        let ranges = ChunkBoundaries.ranges([["25"], ["50"]])
        XCTAssertEqual(ranges.map(\.lower), [nil, ["25"], ["50"]])
        XCTAssertEqual(ranges.map(\.upper), [["25"], ["50"], nil])
    }

    /// A source whose database is also target t0 is two places: its live table counts for the
    /// sources, the table built beside it (reshard_build) for t0 only; no placement of today is needed.
    func testWhichSideARowCountsFor() throws {
        let shard = { (name: String, same: String?) in Plan.Shard(name: name, endpoint: "", dsn: "", sameAsSource: same) }
        let plan = Plan(
            migration: "m", metadata: "", function: try ShardFunction(kind: .hash, shardCount: 3),
            sources: [shard("s0", nil), shard("s1", nil)], targets: [shard("t0", "s0"), shard("t1", nil), shard("t2", nil)], tables: [])
        let places = VerifyPlace.all(plan)
        XCTAssertEqual(places.map(\.shard), ["s0", "s1", "t0", "t1", "t2"])
        let live = places[0], built = places[2], target = places[3]
        XCTAssertTrue(live.countsForSources && !live.countsForTarget(0), "the live table of a shared database is a source only")
        XCTAssertTrue(!built.countsForSources && built.countsForTarget(0) && !built.countsForTarget(1))
        XCTAssertTrue(target.countsForTarget(1) && !target.countsForSources)
        XCTAssertFalse(target.countsForTarget(2))
        let table = Plan.Table(
            name: QualifiedName(schema: "app", "users"), key: "id", keyType: .bigint,
            columns: [TableSchema.Column(name: "id", type: "bigint", notNull: true)], uniqueKey: ["id"], fingerprint: "f",
            estimateMethod: "exact", slices: [])
        XCTAssertEqual(places.map { $0.table(table).description }, ["app.users", "app.users", "reshard_build.users", "app.users", "app.users"])
    }

    /// A run is continued only under the same comparison: estimates and the recorded phase do not
    /// change it; shards, functions and tables do.
    func testRunFingerprintCoversWhatIsComparedOnly() throws {
        let shard = { (name: String, endpoint: String, same: String?) in Plan.Shard(name: name, endpoint: endpoint, dsn: "", sameAsSource: same) }
        let table = Plan.Table(
            name: QualifiedName("users"), key: "id", keyType: .bigint,
            columns: [TableSchema.Column(name: "id", type: "bigint", notNull: true)], uniqueKey: ["id"], fingerprint: "f1",
            estimateMethod: "exact", slices: [Plan.Slice(source: "s0", target: "t0", estimatedRows: 10, estimatedBytes: 100, staysInPlace: true)])
        let plan = Plan(
            migration: "m", metadata: "", function: try ShardFunction(kind: .hash, shardCount: 2),
            sourceFunction: try ShardFunction(kind: .modulo, shardCount: 1),
            sources: [shard("s0", "a:1/db", nil)], targets: [shard("t0", "a:1/db", "s0"), shard("t1", "b:1/db", nil)], tables: [table])
        let base = try Verifier.fingerprint(plan)

        var estimated = plan
        estimated.tables[0].slices[0].estimatedRows = 99
        estimated.tables[0].estimateMethod = "sample"
        estimated.recordedPhase = "in-sync"
        XCTAssertEqual(try Verifier.fingerprint(estimated), base)

        // Today's placement is not compared (verify reads built tables apart from the live ones).
        var placement = plan
        placement.sourceFunction = try ShardFunction(kind: .hash, shardCount: 1)
        placement.tables[0].sourceKey = "id"
        XCTAssertEqual(try Verifier.fingerprint(placement), base)
        var moved = plan
        moved.targets[1].endpoint = "c:1/db"
        var changed = plan
        changed.tables[0].fingerprint = "f2"
        for other in [moved, changed] { XCTAssertNotEqual(try Verifier.fingerprint(other), base) }
    }
}
