import Foundation
import PostgresClient
@testable import ReshardCore
import XCTest

/// The shard map's epochs in the metadata database, and the view applications read.
final class ShardMapStoreTests: XCTestCase {
    /// A tiny `items` table on both sources (split by id % 2 today), moved to the three targets.
    static func startedMigration(_ test: XCTestCase, sourceFunction: String? = "modulo") throws -> (PlanFixture, String) {
        let fixture = try PlanFixture(test)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL);
                INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("items", "id")], sourceFunction: sourceFunction)
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        return (fixture, config)
    }

    /// apply publishes the old layout as epoch 1 when the migration starts, once: a second apply
    /// (a resume) publishes nothing more.
    func testApplyPublishesTheOldLayoutAsEpochOneOnce() throws {
        let (fixture, config) = try Self.startedMigration(self)
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        let meta = try PGConnection.connect(fixture.metadata)
        let epochs = try ShardMapStore.epochs(migration: "plan-test", on: meta)
        XCTAssertEqual(epochs.map(\.map.epoch), [1])
        XCTAssertEqual(epochs.map(\.isCurrent), [true])

        // The view, read with plain SQL as any language would.
        let row = try meta.query(
            """
            SELECT epoch, function, shard_count, array_to_json(boundaries)::text,
                   (SELECT string_agg(s ->> 'name', ',' ORDER BY i) FROM jsonb_array_elements(shards) WITH ORDINALITY AS x (s, i)),
                   (SELECT string_agg(s ->> 'dsn', ',' ORDER BY i) FROM jsonb_array_elements(shards) WITH ORDINALITY AS x (s, i)),
                   tables -> 0 ->> 'name', tables -> 0 ->> 'key', tables -> 0 ->> 'keyType'
              FROM reshard.shard_map WHERE migration = 'plan-test'
            """)
        guard row.rowCount == 1 else { return XCTFail("the view shows \(row.rowCount) rows for the migration") }
        XCTAssertEqual((0..<9).map { row[0, $0] }, ["1", "modulo", "2", "[]", "s0,s1", row[0, 5], "items", "id", "bigint"])
        let dsns = row[0, 5]!.split(separator: ",").map(String.init)
        for (dsn, source) in zip(dsns, fixture.sources) {
            XCTAssertTrue(try ConnectionString(dsn).sameDatabase(as: source), dsn)
            XCTAssertNil(try ConnectionString(dsn).options["password"])
        }
    }

    /// Each publish takes the next epoch and becomes the only current one; a publish whose
    /// transaction rolls back leaves nothing.
    func testPublishNumbersEpochsAndKeepsOneCurrent() throws {
        let (fixture, config) = try Self.startedMigration(self)
        let target = try MigrationTarget.fromConfig(try ReshardConfig.load(path: config), sampleRows: 100)
        let meta = try PGConnection.connect(fixture.metadata)

        let new = try meta.transaction { try ShardMapStore.publish(ShardMap(plan: target.plan, layout: .new), on: $0) }
        XCTAssertEqual(new.epoch, 2)
        XCTAssertEqual(try ShardMapStore.current(migration: "plan-test", on: meta), new)
        let hashView = try meta.query("SELECT function, shard_count, array_to_json(boundaries)::text FROM reshard.shard_map")
        guard hashView.rowCount == 1 else { return XCTFail("the view shows \(hashView.rowCount) rows") }
        XCTAssertEqual(
            [hashView[0, 0], hashView[0, 1], hashView[0, 2]],
            ["hash", "3", "[\(ShardFunction.evenHashSplit(3).map(String.init).joined(separator: ","))]"])
        struct Undo: Error {}
        XCTAssertThrowsError(try meta.transaction { conn -> Void in
            try ShardMapStore.publish(ShardMap(plan: target.plan, layout: .old), on: conn)
            throw Undo()
        })
        let old = try meta.transaction { try ShardMapStore.publish(ShardMap(plan: target.plan, layout: .old), on: $0) }
        XCTAssertEqual(old.epoch, 3)

        let epochs = try ShardMapStore.epochs(migration: "plan-test", on: meta)
        XCTAssertEqual(epochs.map(\.map.epoch), [1, 2, 3])
        XCTAssertEqual(epochs.map(\.isCurrent), [false, false, true])
        XCTAssertEqual(epochs[1].map.shards.map(\.name), ["t0", "t1", "t2"])
        XCTAssertEqual(epochs[2].map.shards.map(\.name), ["s0", "s1"])
        let view = try meta.query("SELECT epoch, function, shard_count, array_length(boundaries, 1) FROM reshard.shard_map")
        guard view.rowCount == 1 else { return XCTFail("the view shows \(view.rowCount) rows") }
        XCTAssertEqual([view[0, 0], view[0, 1], view[0, 2], view[0, 3]], ["3", "modulo", "2", nil])

        // An unknown migration gets no epoch and no current map.
        XCTAssertThrowsError(try meta.transaction { conn in
            var other = new
            other.migration = "no-such-migration"
            try ShardMapStore.publish(other, on: conn)
        }) { XCTAssertEqual(($0 as? ReshardError)?.code, .refused) }
        XCTAssertNil(try ShardMapStore.current(migration: "no-such-migration", on: meta))
    }
}
