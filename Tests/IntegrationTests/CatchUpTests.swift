import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// The catch-up on its own: keys that only bytes tell apart, rows the application moves between
/// sources, and a composite key under a write load. Every table here has a `home` column naming
/// the source the application wrote the row to, so the expected layout is computed by independent
/// SQL: target t holds exactly the rows each source s holds with `home = s` whose shard key hashes
/// into t's Citus range.
final class CatchUpTests: XCTestCase {
    /// The three targets' hash ranges (Citus), written out rather than taken from reshard.
    private static let ranges: [(Int64, Int64)] = [(-2_147_483_648, -715_827_884), (-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]

    /// Asserts that every target holds exactly the source rows that map to it (count and a hash
    /// of every row's text), and that no pure target holds rows of another.
    private func assertTargetsHoldSourceRows(
        _ fixture: PlanFixture, table: String, hash: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let sources = try fixture.sources.map { try PGConnection.connect($0) }
        let targets = try fixture.targets.map { try PGConnection.connect($0) }
        for (t, (lo, hi)) in Self.ranges.enumerated() {
            let inRange = "\(hash) BETWEEN \(lo) AND \(hi)"
            var expectedCount = 0, expectedSum = Decimal(0)
            for (s, source) in sources.enumerated() {
                let row = try source.query(
                    "SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM \(table) x WHERE \(inRange) AND home = \(s)")
                expectedCount += try row.get(0, 0, as: Int.self)
                expectedSum += Decimal(string: row[0, 1]!)!
            }
            let built = fixture.targetTable(table, t)
            let actual = try targets[t].query(
                "SELECT count(*)::text || '/' || coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM \(built) x WHERE \(inRange)")[0, 0]!
            if actual != "\(expectedCount)/\(expectedSum)" {
                // Which rows, to say what went wrong (the sets are small).
                func rows(_ conn: PGConnection, _ filter: String, from name: String = table) throws -> Set<String> {
                    let r = try conn.query("SELECT x::text FROM \(name) x WHERE \(inRange)\(filter)")
                    return Set((0..<r.rowCount).map { r[$0, 0]! })
                }
                var expected = Set<String>()
                for (s, source) in sources.enumerated() { expected.formUnion(try rows(source, " AND home = \(s)")) }
                let held = try rows(targets[t], "", from: built)
                XCTFail(
                    "\(table) on t\(t): missing \(expected.subtracting(held).sorted().prefix(5)), unexpected \(held.subtracting(expected).sorted().prefix(5))",
                    file: file, line: line)
            }
            let stray = try targets[t].query("SELECT count(*) FROM \(built) x WHERE NOT (\(inRange))").get(0, 0, as: Int.self)
            XCTAssertEqual(stray, 0, "\(table) on t\(t) holds rows of other targets", file: file, line: line)
        }
    }

    /// Whether `source`'s changelogs exist and are empty: every change logged there is applied.
    private func changelogIsEmpty(_ source: ConnectionString) throws -> Bool {
        let conn = try PGConnection.connect(source)
        let logs = try conn.query(
            "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = to_regnamespace('reshard_shim') AND c.relkind = 'r'")
        return try logs.rowCount > 0 && (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
    }

    private func phase(_ config: String) throws -> String? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8)).phase
    }

    private func catchUp(_ config: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let outcome = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr, file: file, line: line)
    }

    /// 15.2: keys that are canonically equivalent in Unicode but different bytes (NFC and NFD
    /// `café`, U+212B and U+00C5) are different keys to PostgreSQL; each must reach its target,
    /// and verify must see a missing one.
    func testKeysThatDifferOnlyInUnicodeNormalisationAreAllApplied() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE words (w text PRIMARY KEY, home int NOT NULL, n int NOT NULL);
                INSERT INTO words SELECT 'w' || g, \(k), g FROM generate_series(1, 300) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("words", "w")], sourceFunction: "modulo", sourceKeys: ["words": "home"])
        try catchUp(config)
        let pairs = [
            (#"U&'caf\00E9'"#, #"U&'cafe\0301'"#), (#"U&'\212B'"#, #"U&'\00C5'"#), (#"U&'A\030A'"#, #"U&'\00C5x'"#),
            (#"U&'na\00EFve'"#, #"U&'nai\0308ve'"#), (#"U&'\00F1o'"#, #"U&'n\0303o'"#), (#"U&'\1E9B\0323'"#, #"U&'\017F\0323\0307'"#),
        ]
        for (k, source) in fixture.sources.enumerated() {
            let values = pairs.enumerated().flatMap { i, pair in ["(\(pair.0), \(k), \(i))", "(\(pair.1), \(k), \(i + 100))"] }
            // Suffixed per source so the keys of the two sources differ too.
            try PGConnection.connect(source).execute(
                "INSERT INTO words SELECT w || '\(k)', home, n FROM (VALUES \(values.joined(separator: ", "))) v(w, home, n)")
        }
        try catchUp(config)
        try assertTargetsHoldSourceRows(fixture, table: "words", hash: "hashtext(w)")
        // Updates and a delete of one of each pair only.
        try fixture.onSources(#"UPDATE words SET n = n + 1000 WHERE w LIKE U&'cafe\0301%' OR w LIKE U&'\212B%'"#)
        try fixture.onSources(#"DELETE FROM words WHERE w LIKE U&'nai\0308ve%'"#)
        try catchUp(config)
        try assertTargetsHoldSourceRows(fixture, table: "words", hash: "hashtext(w)")
        let verified = try ReshardCLI.run(["verify", "-c", config])
        XCTAssertEqual(verified.status, 0, verified.stderr + verified.stdout)

        // A row missing on its target is found by verify although a canonically equal key is there.
        var removed = 0
        for (t, target) in fixture.targets.enumerated() {
            // Past the fence, which refuses the application's writes on a target before cutover.
            removed += try PGConnection.connect(target, settings: ["reshard.applying": "on"]).query(
                #"DELETE FROM \#(fixture.targetTable("words", t)) WHERE w = U&'cafe\03011'"#).affectedRows
        }
        XCTAssertEqual(removed, 1)
        let found = try ReshardCLI.run(["verify", "-c", config, "--json", "--restart"])
        XCTAssertEqual(found.status, 3, found.stderr + found.stdout)
        let result = try JSONDecoder().decode(VerifyResult.self, from: Data(found.stdout.utf8))
        let differences = result.tables.flatMap(\.rows)
        XCTAssertEqual(differences.map(\.kind), [.missing], "\(differences)")
        XCTAssertEqual(differences.first.map { Array($0.key[0].utf8) }, Array("cafe\u{0301}1".utf8))
    }

    /// 15.3: the application moves rows between sources keeping their key (insert on s1, then
    /// delete on s0): the delete logged on s0 must not remove the row s1 now holds, for a single
    /// bigint key and a 3-column composite key, with and without `source.function`. While both
    /// sources hold a key (issue 10: two rows for one key) s1's entries wait in its log.
    func testRowsMovedBetweenSourcesAreNotLost() throws {
        for withSourceFunction in [false, true] {
            let fixture = try PlanFixture(self)
            for (k, source) in fixture.sources.enumerated() {
                try PGConnection.connect(source).execute(
                    """
                    CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                    CREATE TABLE lines (customer_id bigint, order_no int, line int, home int NOT NULL, qty int NOT NULL,
                                        PRIMARY KEY (customer_id, order_no, line));
                    INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, 400) g WHERE g % 2 = \(k);
                    INSERT INTO lines SELECT c, o, l, \(k), c + o + l FROM generate_series(1, 40) c, generate_series(1, 3) o,
                      generate_series(1, 2) l WHERE c % 2 = \(k);
                    """)
            }
            let tables = [("items", "id"), ("lines", "customer_id")]
            let config = withSourceFunction
                ? try fixture.writeConfig(tables: tables, sourceFunction: "modulo", sourceKeys: ["items": "home", "lines": "home"])
                : try fixture.writeConfig(tables: tables)
            // The coordinator runs throughout: s1's inserts are held back while s0 holds the keys too
            // (`KeyCollisionGuard`), then applied; s0's deletes never remove them.
            let apply = try ReshardCLI.start(["apply", "-c", config])
            XCTAssertTrue(try eventually(timeout: 60) { try phase(config) == "in-sync" }, apply.stderr)
            let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])
            // 30 items and 24 lines (every target gets some) move from s0 to s1: inserted on s1, then deleted on s0.
            let movedItems = Array(stride(from: Int64(2), through: 60, by: 2)), movedCustomers = Array(stride(from: Int64(2), through: 8, by: 2))
            for id in movedItems {
                try s1.query("INSERT INTO items VALUES ($1, 1, $2)", [id, "item \(id) moved"])
            }
            for customer in movedCustomers {
                let rows = try s0.query("SELECT order_no, line, qty FROM lines WHERE customer_id = $1", [customer])
                for r in 0..<rows.rowCount {
                    try s1.query("INSERT INTO lines VALUES ($1, $2, $3, 1, $4)", [customer, rows[r, 0]!, rows[r, 1]!, rows[r, 2]!])
                }
            }
            try s0.query("DELETE FROM items WHERE id = ANY($1::bigint[])", [movedItems.map(String.init)])
            try s0.query("DELETE FROM lines WHERE customer_id = ANY($1::bigint[])", [movedCustomers.map(String.init)])
            XCTAssertTrue(try eventually(timeout: 60) { try fixture.sources.allSatisfy(changelogIsEmpty) }, apply.stderr)
            apply.signal(SIGTERM)
            XCTAssertEqual(apply.wait(), 0, apply.stderr)
            try assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
            try assertTargetsHoldSourceRows(fixture, table: "lines", hash: "hashint8(customer_id)")
            let moved = try fixture.targets.enumerated().reduce(0) {
                $0 + (try PGConnection.connect($1.element).query(
                    "SELECT count(*) FROM \(fixture.targetTable("items", $1.offset)) WHERE note LIKE '% moved'").get(0, 0, as: Int.self))
            }
            XCTAssertEqual(moved, 30, "source.function: \(withSourceFunction)")
        }
    }

    /// A key both sources hold before apply (the application mid-move before the shim was
    /// there) is two rows for one key (issue 10): apply refuses, naming them. Once the
    /// application has deleted it on s0, apply runs and the target ends with s1's row.
    func testRowHeldByTwoSourcesAtBackfillSurvivesItsDeleteOnOne() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE lines (customer_id bigint, order_no int, line int, home int NOT NULL, qty int NOT NULL,
                                    PRIMARY KEY (customer_id, order_no, line));
                INSERT INTO lines SELECT c, o, l, \(k), c * 10 + \(k) FROM generate_series(1, 200) c, generate_series(1, 2) o,
                  generate_series(1, 2) l WHERE c % 2 = \(k) OR c <= 30;
                """)
        }
        let config = try fixture.writeConfig(tables: [("lines", "customer_id")])
        let refused = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"], environment: KeyCollisionTests.shortGrace)
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("table lines: key (customer_id, order_no, line) is held by both s0 and s1"), refused.stderr)
        try PGConnection.connect(fixture.sources[0]).execute("DELETE FROM lines WHERE customer_id <= 30")
        try catchUp(config)
        try assertTargetsHoldSourceRows(fixture, table: "lines", hash: "hashint8(customer_id)")
    }

    /// A 3-column composite key under inserts, updates, deletes, unique-key changes, shard-key
    /// changes and moves between sources, applied while `apply` runs: every target converges.
    func testCompositeKeyUnderWriteLoadConverges() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE lines (customer_id bigint, order_no int, line int, home int NOT NULL, qty int NOT NULL, note text,
                                    PRIMARY KEY (customer_id, order_no, line));
                INSERT INTO lines SELECT c, o, l, \(k), l, 'n' FROM generate_series(1, 600) c, generate_series(1, 4) o,
                  generate_series(1, 3) l WHERE c % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("lines", "customer_id")])
        let apply = try ReshardCLI.start(["apply", "-c", config])
        let conns = try fixture.sources.map { try PGConnection.connect($0) }
        var moves = 0
        let deadline = Date().addingTimeInterval(8)
        var step = 0
        while Date() < deadline {
            step += 1
            let c = Int64.random(in: 1...600), s = Int(c % 2)
            let conn = conns[s]
            switch step % 6 {
            case 0: try conn.query("UPDATE lines SET qty = qty + 1, note = note || '+' WHERE customer_id = $1 AND home = $2", [c, s])
            case 1: try conn.query("DELETE FROM lines WHERE customer_id = $1 AND line = 3 AND home = $2", [c, s])
            case 2: try conn.query("INSERT INTO lines VALUES ($1, 9, $2, $3, 1, 'new') ON CONFLICT DO NOTHING", [c, step, s])
            case 3:
                // The unique key changes (order_no), the shard key does not.
                try conn.query(
                    "UPDATE lines SET order_no = order_no + 100 WHERE customer_id = $1 AND order_no = 1 AND home = $2", [c, s])
            case 4:
                // The shard key changes within a source (to another customer of the same parity).
                let other = c + 2 <= 600 ? c + 2 : c - 2
                try conn.query(
                    "UPDATE lines SET customer_id = $2 WHERE customer_id = $1 AND order_no = 2 AND home = $3 AND NOT EXISTS (SELECT 1 FROM lines WHERE customer_id = $2 AND order_no = 2)",
                    [c, other, s])
            default:
                // The application moves a customer's order to the other source, keeping the key:
                // inserted there first, then deleted here.
                let rows = try conn.query("SELECT line, qty, note FROM lines WHERE customer_id = $1 AND order_no = 3 AND home = $2", [c, s])
                for r in 0..<rows.rowCount {
                    try conns[1 - s].query(
                        "INSERT INTO lines VALUES ($1, 3, $2, $3, $4, $5) ON CONFLICT DO NOTHING", [c, rows[r, 0]!, 1 - s, rows[r, 1]!, rows[r, 2]!])
                }
                try conn.query("DELETE FROM lines WHERE customer_id = $1 AND order_no = 3 AND home = $2", [c, s])
                moves += rows.rowCount
            }
        }
        XCTAssertGreaterThan(moves, 0)
        XCTAssertTrue(try eventually(timeout: 120) { try fixture.sources.allSatisfy(changelogIsEmpty) }, apply.stderr)
        apply.signal(SIGTERM)
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        try assertTargetsHoldSourceRows(fixture, table: "lines", hash: "hashint8(customer_id)")
    }
}
