import Foundation
import PostgresClient
@testable import ReshardCore
import XCTest

/// `reshard map` and `reshard route`, run as a user would.
final class MapCommandTests: XCTestCase {
    private func lines(_ text: String) -> [String] { text.split(separator: "\n").map(String.init) }

    func testMapPrintsTheCurrentEpochAndAnyOlderOne() throws {
        let (fixture, config) = try ShardMapStoreTests.startedMigration(self)
        let text = try ReshardCLI.run(["map", "-c", config])
        XCTAssertEqual(text.status, 0, text.stderr)
        let shown = lines(text.stdout)
        XCTAssertTrue(shown[0].hasPrefix("migration plan-test: epoch 1 (current), published 20"), text.stdout)
        XCTAssertEqual(shown[1], "function modulo, 2 shard(s)")
        XCTAssertTrue(shown[2].hasPrefix("  0 s0  ") && shown[3].hasPrefix("  1 s1  "), text.stdout)
        XCTAssertEqual(shown[4], "tables: items (id bigint)")
        XCTAssertFalse(text.stdout.contains("password"), text.stdout)
        XCTAssertFalse(text.stdout.contains("note:"), "source.function is set: nothing is assumed: \(text.stdout)")

        let meta = try PGConnection.connect(fixture.metadata)
        let target = try MigrationTarget.fromConfig(try ReshardConfig.load(path: config), sampleRows: 100)
        let new = try meta.transaction { try ShardMapStore.publish(ShardMap(plan: target.plan, layout: .new), on: $0) }

        let json = try ReshardCLI.run(["map", "-c", config, "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        XCTAssertEqual(try JSONDecoder().decode(ShardMap.self, from: Data(json.stdout.utf8)), new)
        // The same document as the view's map column.
        let viewed = try meta.query("SELECT map::text FROM reshard.shard_map WHERE migration = 'plan-test'")[0, 0]!
        XCTAssertEqual(try JSONDecoder().decode(ShardMap.self, from: Data(viewed.utf8)), new)

        let older = try ReshardCLI.run(["map", "-c", config, "--epoch", "1", "--json"])
        XCTAssertEqual(older.status, 0, older.stderr)
        let first = try JSONDecoder().decode(ShardMap.self, from: Data(older.stdout.utf8))
        XCTAssertEqual(first.epoch, 1)
        XCTAssertEqual(first.shards.map(\.name), ["s0", "s1"])

        let now = try ReshardCLI.run(["map", "-c", config])
        XCTAssertTrue(now.stdout.contains("epoch 2 (current)"), now.stdout)
        XCTAssertTrue(now.stdout.contains("function hash, 3 shard(s), split points \(ShardFunction.evenHashSplit(3).map(String.init).joined(separator: ", "))"), now.stdout)
        XCTAssertTrue(now.stdout.contains("epochs: 1, 2 (current)"), now.stdout)

        let missing = try ReshardCLI.run(["map", "-c", config, "--epoch", "9"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertEqual(lines(missing.stderr), ["reshard: error: migration plan-test has no epoch 9 (it has 1, 2)"])
    }

    func testRoutePrintsTheShardOfAKeyNow() throws {
        let (fixture, config) = try ShardMapStoreTests.startedMigration(self)
        // Epoch 1: today's placement, id % 2.
        let old = try ReshardCLI.run(["route", "-c", config, "--table", "items", "7"])
        XCTAssertEqual(old.status, 0, old.stderr)
        XCTAssertTrue(old.stdout.hasPrefix("items 7 -> s1 (shard 1 of epoch 1): "), old.stdout)

        let meta = try PGConnection.connect(fixture.metadata)
        let target = try MigrationTarget.fromConfig(try ReshardConfig.load(path: config), sampleRows: 100)
        try meta.transaction { try ShardMapStore.publish(ShardMap(plan: target.plan, layout: .new), on: $0) }
        // Epoch 2: the targets' Citus ranges of PostgreSQL's own hashint8, asked of the server.
        for id in [7, 8, 123_456_789, -5] {
            let hash = try meta.query("SELECT hashint8($1::bigint)", [id]).get(0, 0, as: Int64.self)
            let expected = hash <= -715_827_884 ? 0 : hash <= 715_827_881 ? 1 : 2
            let outcome = try ReshardCLI.run(["route", "-c", config, "--table", "ITEMS", "--json", "--", String(id)])
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
            let route = try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(route["shard"] as? String, "t\(expected)", "id \(id)")
            XCTAssertEqual(route["index"] as? Int, expected)
            XCTAssertEqual(route["epoch"] as? Int, 2)
            XCTAssertEqual(route["table"] as? String, "items")
            XCTAssertTrue(try ConnectionString(route["dsn"] as! String).sameDatabase(as: fixture.targets[expected]))
        }

        let badKey = try ReshardCLI.run(["route", "-c", config, "--table", "items", "abc"])
        XCTAssertEqual(badKey.status, 2)
        XCTAssertEqual(lines(badKey.stderr), ["reshard: error: 'abc' is not a bigint (the key id of items)"])
        let badTable = try ReshardCLI.run(["route", "-c", config, "--table", "nope", "1"])
        XCTAssertEqual(badTable.status, 2)
        XCTAssertEqual(lines(badTable.stderr), ["reshard: error: table nope is not in the shard map of migration plan-test (it has items)"])
    }

    /// Without source.function the old layout is an assumption, and `map` says so.
    func testMapSaysWhenTheOldLayoutIsAssumed() throws {
        let (_, config) = try ShardMapStoreTests.startedMigration(self, sourceFunction: nil)
        let text = try ReshardCLI.run(["map", "-c", config])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("function hash, 2 shard(s), split points 0\n"), text.stdout)
        XCTAssertTrue(text.stdout.hasSuffix("note: the config has no source.function: this epoch assumes the sources are split evenly by hash\n"), text.stdout)
    }

    func testMapAndRouteRefuseAMigrationWithoutAMap() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE items (id bigint PRIMARY KEY)")
        let config = try fixture.writeConfig(tables: [("items", "id")])
        for arguments in [["map", "-c", config], ["route", "-c", config, "--table", "items", "1"]] {
            let outcome = try ReshardCLI.run(arguments)
            XCTAssertEqual(outcome.status, 2, outcome.stderr)
            XCTAssertEqual(lines(outcome.stderr), ["reshard: error: migration plan-test is not registered; run 'reshard apply' first"])
        }
    }
}
