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

    /// Column collations reach the targets (format_type does not print them), with the
    /// collations themselves when a target lacks them; a nondeterministic collation on the shard
    /// key or the unique key is refused by plan. Uses an ICU collation (the local PostgreSQL has ICU).
    func testColumnCollationsAreCarriedOverAndNondeterministicKeyCollationsRefused() throws {
        let fixture = try PlanFixture(self)
        XCTAssertGreaterThan(
            Int(try PlanFixture.rowTexts("SELECT count(*)::text FROM pg_collation WHERE collprovider = 'i'", on: fixture.sources[0])[0])!, 0)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
                CREATE TABLE people (id bigint PRIMARY KEY, email text COLLATE ci, code text COLLATE "C", name text);
                INSERT INTO people SELECT g, 'U' || g || '@Example.com', 'c' || g, 'n' || g FROM generate_series(1, 100) g WHERE g % 2 = \(k);
                CREATE TABLE handles (handle text COLLATE ci PRIMARY KEY, user_id bigint NOT NULL);
                """)
        }
        let refused = try ReshardCLI.run(["plan", "-c", try fixture.writeTwoTargetConfig(tables: [("handles", "user_id")])])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(
            refused.stderr.contains("table handles on source s0: unique key column handle has the nondeterministic collation public.ci"),
            refused.stderr)

        let config = try fixture.writeTwoTargetConfig(tables: [("people", "id")])
        let apply = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(apply.status, 0, apply.stderr)
        try fixture.assertTwoTargetsMatchSources("people", hash: "hashint8(id)")
        for target in fixture.freshTargets {
            XCTAssertEqual(
                try PlanFixture.rowTexts(
                    "SELECT attname || ' ' || attcollation::regcollation::text FROM pg_attribute WHERE attrelid = 'people'::regclass AND attname IN ('email', 'code', 'name')",
                    on: target),
                ["code \"C\"", "email ci", "name \"default\""])
        }
        // The collation works as on the sources: case-insensitive equality.
        let matches = try fixture.freshTargets.map {
            Int(try PlanFixture.rowTexts("SELECT count(*)::text FROM people WHERE email = 'u7@example.COM'", on: $0)[0])!
        }
        XCTAssertEqual(matches.reduce(0, +), 1)
    }

    /// A target the user created with another collation than the sources' is refused by plan,
    /// naming the column and both collations, as a different type is.
    func testPlanRefusesATargetColumnWithAnotherCollation() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE people (id bigint PRIMARY KEY, code text COLLATE "C", name text);
                INSERT INTO people SELECT g, 'c' || g, 'n' || g FROM generate_series(1, 10) g WHERE g % 2 = \(k);
                """)
        }
        try PGConnection.connect(fixture.freshTargets[1]).execute(
            "CREATE TABLE people (id bigint PRIMARY KEY, code text COLLATE \"POSIX\", name text)")
        let outcome = try ReshardCLI.run(["plan", "-c", try fixture.writeTwoTargetConfig(tables: [("people", "id")])])
        XCTAssertEqual(outcome.status, 2, outcome.stderr)
        XCTAssertTrue(
            outcome.stderr.contains("table people: column code has collation pg_catalog.\"POSIX\" on target t1 but pg_catalog.\"C\" on source s0"),
            outcome.stderr)
    }
}
