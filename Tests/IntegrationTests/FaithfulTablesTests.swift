import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Issue 10: the tables reshard builds on the targets are the tables the application expects
/// after cutover, compared as `pg_dump --schema-only` prints them.
final class FaithfulTablesTests: XCTestCase {
    static let schema = """
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN score AS integer DEFAULT 0 NOT NULL CONSTRAINT score_range CHECK (VALUE BETWEEN 0 AND 100);
        CREATE TABLE audit (what text NOT NULL);
        CREATE FUNCTION audit_posts() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN INSERT INTO audit VALUES (TG_OP || ' ' || NEW.id); RETURN NEW; END$f$;
        CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000) PRIMARY KEY, name text NOT NULL);
        CREATE TABLE posts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id bigint NOT NULL CONSTRAINT posts_user_fk REFERENCES users (id),
            seq serial,
            title text NOT NULL,
            slug text NOT NULL,
            chars integer GENERATED ALWAYS AS (length(title)) STORED,
            mood mood NOT NULL DEFAULT 'ok',
            rating score,
            CONSTRAINT posts_title_check CHECK (title <> '')
        ) WITH (fillfactor = 80);
        CREATE UNIQUE INDEX posts_slug ON posts (slug);
        CREATE INDEX posts_user ON posts (user_id);
        CREATE TRIGGER posts_audit AFTER INSERT OR UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION audit_posts();
        ALTER TABLE posts ENABLE ROW LEVEL SECURITY;
        CREATE POLICY posts_visible ON posts FOR SELECT TO reshard_app_reader USING (mood <> 'sad');
        COMMENT ON TABLE posts IS 'what users wrote';
        COMMENT ON COLUMN posts.title IS 'shown in lists';
        GRANT SELECT ON posts TO reshard_app_reader;
        """

    /// `pg_dump --schema-only -t table` of `dsn`, normalised only as documented: the `\restrict`
    /// lines (a random key per run) go, and so do reshard's own triggers (`reshard_capture_*`,
    /// `reshard_fence_*`, `reshard_misrouted_*`, until cleanup) with the blank and bare `--` lines
    /// that separate blocks.
    static func dump(_ table: String, _ dsn: ConnectionString) throws -> String {
        let output = NSTemporaryDirectory() + "reshard-dump-\(UUID().uuidString).sql"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let arguments = [try PostgresBinaries.locate().path("pg_dump"), "--schema-only", "-t", table, "-f", output, "-d", dsn.unsafeRawValue]
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, arguments[0], nil, nil, argv, environ) == 0 else { throw NSError(domain: "pg_dump", code: 1) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        XCTAssertEqual(status, 0, "pg_dump \(table)")
        var text = try String(contentsOfFile: output, encoding: .utf8)
        // A trigger with a WHEN clause (the fence's) is dumped over several lines, up to its `;`.
        var inReshardTrigger = false
        text = text.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { line in
                if inReshardTrigger || ["reshard_capture_", "reshard_fence_", "reshard_misrouted_"].contains(where: line.contains) {
                    inReshardTrigger = !line.hasSuffix(";")
                    return false
                }
                return !line.hasPrefix("\\restrict") && !line.hasPrefix("\\unrestrict") && line != "--" && !line.isEmpty
            }
            .joined(separator: "\n")
        return text
    }

    /// The dumps are equal; otherwise the lines only one of them has.
    static func assertSameDump(_ table: String, _ dsn: ConnectionString, _ source: ConnectionString, _ what: String, line: UInt = #line) throws {
        let target = try dump(table, dsn), expected = try dump(table, source)
        let a = target.split(separator: "\n"), b = expected.split(separator: "\n")
        XCTAssertEqual(target, expected, "\(table) \(what): only on the target: \(a.filter { !b.contains($0) }); only on the source: \(b.filter { !a.contains($0) })", line: line)
    }

    private func load(_ fixture: PlanFixture) throws {
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                Self.schema + """
                    ;
                    INSERT INTO users (id, name) OVERRIDING SYSTEM VALUE SELECT g, 'user ' || g FROM generate_series(1, 100) g WHERE g % 2 = \(k);
                    INSERT INTO posts (id, user_id, title, slug, mood, rating) OVERRIDING SYSTEM VALUE
                      SELECT g + \(k) * 1000, 2 * (g % 50) + 2 - \(k), 'title ' || g, 's' || (g + \(k) * 1000), (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, g % 101
                      FROM generate_series(1, 300) g;
                    """)
        }
        for target in fixture.freshTargets { try PGConnection.connect(target).execute("CREATE TABLE audit (what text NOT NULL)") }
    }

    func testTargetTablesDumpLikeTheSourceAndTheApplicationsTriggerDoesNotFireDuringTheCopy() throws {
        try TestRoles.create("reshard_app_reader", self)
        let fixture = try PlanFixture(self)
        try load(fixture)
        let config = try fixture.writeTwoTargetConfig(tables: [("users", "id"), ("posts", "user_id")])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                INSERT INTO posts (id, user_id, title, slug) OVERRIDING SYSTEM VALUE VALUES (\(5000 + k), \(2 - k), 'new', 'new\(k)');
                UPDATE posts SET title = title || ' (edited)', mood = 'happy' WHERE id % 7 = 0;
                """)
        }
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("users", hash: "hashint8(id)")
        try fixture.assertTwoTargetsMatchSources("posts", hash: "hashint8(user_id)")
        for target in fixture.freshTargets {
            XCTAssertEqual(try PlanFixture.rowTexts("SELECT count(*)::text FROM audit", on: target), ["0"], "the trigger fired during copy or catch-up")
        }

        let planned = try ReshardCLI.run(["plan", "-c", config, "--json"])
        XCTAssertEqual(planned.status, 0, planned.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(planned.stdout.utf8))
        let source = try PGConnection.connect(fixture.sources[0])
        for (t, dsn) in fixture.freshTargets.enumerated() {
            let target = try PGConnection.connect(dsn)
            // What the cutover does once reshard no longer writes.
            for table in plan.tables {
                try TargetTables.addForeignKeys(table, of: plan, names: { plan.builtName(of: $0, on: plan.targets[t]) }, from: source, on: target)
                try TargetTables.enableTriggers(table, from: source, on: target)
            }
            for table in ["public.users", "public.posts"] {
                try Self.assertSameDump(table, dsn, fixture.sources[0], "on target \(t)")
            }
            XCTAssertEqual(try PlanFixture.rowTexts("SELECT enum_range(NULL::mood)::text", on: dsn), ["{sad,ok,happy}"])
            XCTAssertEqual(
                try PlanFixture.rowTexts(
                    "SELECT format_type(typbasetype, NULL) || ' ' || typnotnull || ' ' || typdefault || ' ' || (SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contypid = t.oid) FROM pg_type t WHERE typname = 'score'",
                    on: dsn),
                ["integer true 0 CHECK (((VALUE >= 0) AND (VALUE <= 100)))"])
            let sequences = try TargetTables.sequences(of: plan.tables[1], on: target)
            XCTAssertEqual(sequences.map { "\($0.column) \($0.sequence) \($0.isIdentity)" }, ["id public.posts_id_seq true", "seq public.posts_seq_seq false"])
        }
        // Enabled as on the source (the targets' fence refuses the application's writes until cutover).
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'posts_audit'", on: fixture.freshTargets[0]), ["O"])
    }

    /// The same definitions under another name (`reshard_build`, where a database that is also a
    /// source builds its copy), on a database that has none of the types, sequences or functions:
    /// once swapped into `public` they dump like the source's.
    func testATableBuiltUnderAnotherNameDumpsLikeTheSourceOnceRenamed() throws {
        try TestRoles.create("reshard_app_reader", self)
        let fixture = try PlanFixture(self)
        try load(fixture)
        let config = try fixture.writeTwoTargetConfig(tables: [("users", "id"), ("posts", "user_id")])
        let planned = try ReshardCLI.run(["plan", "-c", config, "--json"])
        XCTAssertEqual(planned.status, 0, planned.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(planned.stdout.utf8))
        let dsn = try freshDatabase(on: try TestClusters.shared.clusters()[1], "built")
        let source = try PGConnection.connect(fixture.sources[0]), target = try PGConnection.connect(dsn)
        try target.execute("CREATE TABLE audit (what text NOT NULL)")
        let built = { (table: Plan.Table) in QualifiedName(schema: Plan.buildSchema, table.name.name) }
        for table in plan.tables {
            XCTAssertTrue(try TargetTables.create(table, named: built(table), from: source, on: target, withIndexes: true))
        }
        // What apply adds once the copy is done (`Coordinator.finishTargets`), then the cutover.
        for table in plan.tables { try TargetTables.createTriggers(table, named: built(table), from: source, on: target) }
        for table in plan.tables {
            try TargetTables.addForeignKeys(table, of: plan, names: built, from: source, on: target)
            try TargetTables.enableTriggers(table, named: built(table), from: source, on: target)
        }
        // The swap as the cutover makes it (no live table here to park): into `public`, the serial
        // sequence re-owned (an owned sequence lives in its table's schema, so it cannot be before).
        XCTAssertEqual(
            try PlanFixture.rowTexts("SELECT count(*)::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' WHERE d.refobjid = 'reshard_build.posts'::regclass AND d.deptype = 'a'", on: dsn), ["0"])
        try target.execute(
            """
            ALTER TABLE reshard_build.users SET SCHEMA public; ALTER TABLE reshard_build.posts SET SCHEMA public;
            ALTER SEQUENCE public.posts_seq_seq OWNED BY public.posts.seq
            """)
        for table in ["public.users", "public.posts"] {
            try Self.assertSameDump(table, dsn, fixture.sources[0], "built under reshard_build")
        }
    }

    /// On a target that is a source's database (t0 = s0): built under `reshard_build` by apply,
    /// the application's trigger silent throughout (its audit rows on s0 are the application's own
    /// writes only), and once swapped in as the cutover swaps it, the table dumps like the source's.
    func testASharedTargetsBuiltTableDumpsLikeTheSourceOnceSwappedIn() throws {
        try TestRoles.create("reshard_app_reader", self)
        let fixture = try PlanFixture(self)
        try load(fixture)
        let config = try fixture.writeConfig(tables: [("users", "id"), ("posts", "user_id")])
        let s0 = try PGConnection.connect(fixture.sources[0])
        func audited() throws -> Int { try s0.query("SELECT count(*) FROM audit").get(0, 0, as: Int.self) }
        let loaded = try audited()
        XCTAssertEqual(try fixture.applyUntilCaughtUp(config).status, 0)
        XCTAssertEqual(try audited(), loaded, "the trigger fired for the local copy")
        try s0.execute("UPDATE posts SET title = title || ' (edited)' WHERE id % 7 = 0")
        try PGConnection.connect(fixture.sources[1]).execute("UPDATE posts SET mood = 'happy' WHERE id % 5 = 0")
        let written = try audited()
        XCTAssertGreaterThan(written, loaded)
        XCTAssertEqual(try fixture.applyUntilCaughtUp(config).status, 0)
        XCTAssertEqual(try audited(), written, "the trigger fired for the catch-up")

        let planned = try ReshardCLI.run(["plan", "-c", config, "--json"])
        XCTAssertEqual(planned.status, 0, planned.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(planned.stdout.utf8))
        let shared = plan.targets[0]
        XCTAssertTrue(shared.isShared)
        for table in plan.tables {
            try TargetTables.addForeignKeys(table, of: plan, names: { plan.builtName(of: $0, on: shared) }, from: s0, on: s0)
        }
        // The swap, as the cutover runs it (the shim's triggers stay with the old table).
        let tables = try plan.tables.map { table -> SwapSQL.Table in
            let live = QualifiedName(schema: "public", table.name.name)
            let owned = try s0.query(SwapSQL.ownedSequencesQuery, [try s0.quote(live)])
            return SwapSQL.Table(live: live, ownedSequences: (0..<owned.rowCount).map { (QualifiedName(schema: owned[$0, 0]!, owned[$0, 1]!), owned[$0, 2]!) })
        }
        try s0.transaction { conn in for statement in SwapSQL.swapIn(tables) { try conn.execute(statement) } }
        for table in plan.tables { try TargetTables.enableTriggers(table, from: PGConnection.connect(fixture.sources[1]), on: s0) }
        for table in ["public.users", "public.posts"] {
            try Self.assertSameDump(table, fixture.sources[0], fixture.sources[1], "on the shared database, swapped in")
        }
    }
}
