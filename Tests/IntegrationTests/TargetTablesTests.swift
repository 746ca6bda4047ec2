import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Tables whose definitions need care on the targets: generated columns, keys that are only a
/// unique index, identity columns on targets the user created, collations.
final class TargetTablesTests: XCTestCase {
    /// A `GENERATED ALWAYS AS (...) STORED` column is never written by the backfill's COPY nor
    /// the catch-up's INSERT: each target computes it.
    func testGeneratedColumnsAreComputedByTheTargetsInBackfillAndCatchUp() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE orders (id bigint PRIMARY KEY, price numeric NOT NULL, qty int NOT NULL,
                                     total numeric GENERATED ALWAYS AS (price * qty) STORED, note text);
                INSERT INTO orders (id, price, qty) SELECT g, g / 4.0, g % 7 FROM generate_series(1, 300) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("orders", "id")])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        try fixture.assertTwoTargetsMatchSources("orders", hash: "hashint8(id)")
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                UPDATE orders SET qty = qty + 10, note = 'more' WHERE id % 3 = 0;
                INSERT INTO orders (id, price, qty) SELECT g, 2.5, 3 FROM generate_series(1001, 1040) g WHERE g % 2 = \(k);
                """)
        }
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("orders", hash: "hashint8(id)")
        XCTAssertEqual(
            try PlanFixture.rowTexts("SELECT attgenerated::text FROM pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'total'", on: fixture.freshTargets[0]),
            ["s"])
    }

    /// A key that is only a unique index (here with INCLUDE columns, which are not part of the
    /// key) is the migration's key, and its index is on the target from the start, before the
    /// copy, so the catch-up's ON CONFLICT works while other slices still copy.
    func testAKeyThatIsOnlyAUniqueIndexWithIncludeColumnsIsCreatedWithTheTable() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint NOT NULL, user_id bigint NOT NULL, name text NOT NULL);
                CREATE UNIQUE INDEX items_id ON items (id) INCLUDE (name);
                CREATE INDEX items_user ON items (user_id);
                INSERT INTO items SELECT g, g % 50, 'item ' || g FROM generate_series(1, 300) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("items", "user_id")])
        let planned = try ReshardCLI.run(["plan", "-c", config, "--json"])
        XCTAssertEqual(planned.status, 0, planned.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(planned.stdout.utf8))
        XCTAssertEqual(plan.tables[0].uniqueKey, ["id"])

        // Created as apply creates it, before any copy: the key's index is there, the others wait.
        let source = try PGConnection.connect(fixture.sources[0])
        let target = try PGConnection.connect(fixture.freshTargets[0])
        XCTAssertTrue(try TargetTables.create(plan.tables[0], from: source, on: target, withIndexes: false))
        XCTAssertEqual(
            try PlanFixture.rowTexts("SELECT indexdef FROM pg_indexes WHERE tablename = 'items'", on: fixture.freshTargets[0]),
            ["CREATE UNIQUE INDEX items_id ON public.items USING btree (id) INCLUDE (name)"])
        try target.execute("INSERT INTO items VALUES (1, 1, 'a') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name; TRUNCATE items")

        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                UPDATE items SET name = name || ' renamed' WHERE id % 3 = 0;
                UPDATE items SET user_id = user_id + 2 WHERE id % 5 = 0;
                INSERT INTO items SELECT g, g % 50, 'new ' || g FROM generate_series(1001, 1040) g WHERE g % 2 = \(k);
                """)
        }
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("items", hash: "hashint8(user_id)")
    }

    /// Targets the user created (as `pg_dump -s` would) with an identity `GENERATED ALWAYS`
    /// column: the catch-up's inserts there override the identity with the source's values.
    func testTargetsCreatedByTheUserWithIdentityAlwaysTakeCatchUpInserts() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE tickets (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, title text NOT NULL);
                INSERT INTO tickets SELECT g, 'ticket ' || g FROM generate_series(1, 200) g WHERE g % 2 = \(k);
                """)
        }
        for target in fixture.freshTargets {
            try PGConnection.connect(target).execute(
                "CREATE TABLE tickets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL)")
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("tickets", "id")])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                INSERT INTO tickets SELECT g, 'new ' || g FROM generate_series(1001, 1040) g WHERE g % 2 = \(k);
                UPDATE tickets SET title = title || ' (edited)' WHERE id % 3 = 0;
                """)
        }
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("tickets", hash: "hashint8(id)")
    }
}
