import Foundation
import PostgresClient
import ReshardCore
import XCTest

extension PlanFixture {
    /// Where target `t`'s copy of `table` is read: the fixture's t0 is s0's database, so its copy
    /// is built beside the live table in `reshard_build` (the design, written out here).
    func targetTable(_ table: String, _ t: Int) -> String { t == 0 ? "reshard_build.\(table)" : table }
}

/// Issue 10: databases that are both source and target. The application's tables there must
/// never show a copied row, or any change it did not make, before cutover; the copies are built
/// in `reshard_build` and swapped in at cutover. Every check is independent SQL: the application
/// writes each change to `posts` and to an unmigrated `posts_mirror` in one transaction, so the
/// live table must equal its mirror at any moment; the built tables are compared with the rows
/// the sources hold, placed by Citus ranges written out here.
final class SharedDatabaseTests: XCTestCase {
    /// Citus hash ranges of 3 and 4 shards.
    private static let ranges3: [(Int64, Int64)] = [(-2_147_483_648, -715_827_884), (-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]
    private static let ranges4: [(Int64, Int64)] = [
        (-2_147_483_648, -1_073_741_825), (-1_073_741_824, -1), (0, 1_073_741_823), (1_073_741_824, 2_147_483_647),
    ]

    /// `posts` (keyed by user_id, not part of the primary key) and its mirror on both sources:
    /// ids 1...rows, user_id = id, each on source id % 2, `home` naming it.
    private func createPosts(_ sources: [ConnectionString], rows: Int) throws {
        for (k, source) in sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, home int NOT NULL);
                CREATE INDEX posts_user ON posts (user_id);
                INSERT INTO posts SELECT g, g, 'post ' || g, \(k) FROM generate_series(1, \(rows)) g WHERE g % 2 = \(k);
                CREATE TABLE posts_mirror AS SELECT * FROM posts;
                ANALYZE;
                """)
        }
    }

    /// Rows of the live `posts` on `dsn` that differ from its mirror (both ways), in one snapshot.
    private func liveDiffersFromMirror(_ dsn: ConnectionString) throws -> Int {
        try PGConnection.connect(dsn).query(
            "SELECT count(*) FROM ((TABLE posts EXCEPT ALL TABLE posts_mirror) UNION ALL (TABLE posts_mirror EXCEPT ALL TABLE posts)) d"
        ).get(0, 0, as: Int.self)
    }

    /// Asserts that each target's copy (`names[t]` on `targets[t]`) holds exactly the sources'
    /// rows whose hashint8(user_id) falls in its range.
    private func assertBuiltTablesHoldSourceRows(
        sources: [ConnectionString], targets: [ConnectionString], names: [String], ranges: [(Int64, Int64)],
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        for (t, (lo, hi)) in ranges.enumerated() {
            let inRange = "hashint8(user_id) BETWEEN \(lo) AND \(hi)"
            var expected: [String] = []
            for source in sources { expected += try PlanFixture.rowTexts("SELECT x::text FROM posts x WHERE \(inRange)", on: source) }
            let held = try PlanFixture.rowTexts("SELECT x::text FROM \(names[t]) x", on: targets[t])
            XCTAssertEqual(held.count, expected.count, "rows of \(names[t]) on target \(t)", file: file, line: line)
            XCTAssertEqual(held, expected.sorted(), "\(names[t]) on target \(t)", file: file, line: line)
        }
    }

    private func phase(_ config: String) throws -> String? { try ReshardCLI.status(config)?.phase }

    private func changelogIsEmpty(_ source: ConnectionString) throws -> Bool {
        let conn = try PGConnection.connect(source)
        let logs = try conn.query(
            "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = to_regnamespace('reshard_shim') AND c.relkind = 'r'")
        return try logs.rowCount > 0 && (0..<logs.rowCount).allSatisfy { try conn.query(logs[$0, 0]!).get(0, 0, as: Int.self) == 0 }
    }

    /// Acceptance (a): 2 -> 3 with t0 = s0's database under a load that also sends statements
    /// to every shard, and a `kill -9` of the coordinator mid-backfill. After the kill, once
    /// caught up and after verify, s0's live `posts` is exactly what the application made it;
    /// the built t0 holds exactly the sources' rows for t0; verify is clean without `source.function`.
    func testSharedTargetIsBuiltApartUnderScatterWritesAndAKill() throws {
        let fixture = try PlanFixture(self)
        try createPosts(fixture.sources, rows: 6000)
        let config = try fixture.writeConfig(tables: [("posts", "user_id")])
        let load = ScatterLoad(sources: fixture.sources)
        defer { load.stop() }

        // Slow enough to be killed mid-backfill.
        let first = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "1500"])
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertTrue(
            try eventually(timeout: 60) {
                guard try meta.query("SELECT to_regclass('reshard.slices') IS NOT NULL").get(0, 0, as: Bool.self) else { return false }
                let row = try meta.query(
                    "SELECT count(*) FILTER (WHERE rows_copied > 0 AND stays_in_place), count(*) FILTER (WHERE NOT done) FROM reshard.slices")
                return try row.get(0, 0, as: Int.self) > 0 && row.get(0, 1, as: Int.self) > 0
            }, first.stderr)
        first.signal(SIGKILL)
        XCTAssertEqual(first.wait(), 128 + SIGKILL)
        XCTAssertEqual(try liveDiffersFromMirror(fixture.sources[0]), 0, "s0's live posts after the kill")
        XCTAssertEqual(try liveDiffersFromMirror(fixture.sources[1]), 0, "s1's live posts after the kill")

        let second = try ReshardCLI.start(["apply", "-c", config, "--max-rows-per-second", "1000000"])
        XCTAssertTrue(try eventually(timeout: 120) { try phase(config) == "in-sync" }, second.stderr)
        XCTAssertEqual(try liveDiffersFromMirror(fixture.sources[0]), 0, "s0's live posts once caught up, the load running")
        // Small chunks: a chunk is settled once no change is pending for its keys, which under a
        // steady load happens sooner for a small key range than for the whole table.
        let verifiedUnderLoad = try ReshardCLI.run(["verify", "-c", config, "--chunk-rows", "500"])
        XCTAssertEqual(verifiedUnderLoad.status, 0, verifiedUnderLoad.stdout + verifiedUnderLoad.stderr)
        load.stop()
        load.assertHealthy(minimumCommits: 50)
        // Every change logged is applied (entries leave the log only once applied).
        XCTAssertTrue(try eventually(timeout: 60) { try fixture.sources.allSatisfy(changelogIsEmpty) }, second.stderr)
        second.signal(SIGTERM)
        XCTAssertEqual(second.wait(), 0, second.stderr)

        for source in fixture.sources { XCTAssertEqual(try liveDiffersFromMirror(source), 0, "live posts once caught up") }
        let stray = try PGConnection.connect(fixture.sources[0]).query("SELECT count(*) FROM posts WHERE home <> 0 OR user_id % 2 <> 0")
        XCTAssertEqual(try stray.get(0, 0, as: Int.self), 0, "no row of s1 in s0's live table")
        try assertBuiltTablesHoldSourceRows(
            sources: fixture.sources, targets: fixture.targets, names: (0..<3).map { fixture.targetTable("posts", $0) }, ranges: Self.ranges3)

        let verified = try ReshardCLI.run(["verify", "-c", config, "--restart"])
        XCTAssertEqual(verified.status, 0, verified.stdout + verified.stderr)
        for source in fixture.sources { XCTAssertEqual(try liveDiffersFromMirror(source), 0, "live posts after verify") }

        // The staying rows' local copy counts in the progress: nothing is "0 to do".
        let status = try XCTUnwrap(try ReshardCLI.status(config))
        let staying = status.slices.filter(\.staysInPlace)
        XCTAssertEqual(staying.count, 1)
        XCTAssertTrue(staying.allSatisfy { $0.done && $0.rowsCopied > 0 }, "\(staying)")
        XCTAssertEqual(status.rowsCopied, status.slices.reduce(0) { $0 + $1.rowsCopied })
    }

    /// Acceptance (b): doubling 2 -> 4 with both old shards as targets: their live tables are
    /// unchanged (rows and a hash of every row, and no write counted) until cutover.
    func testDoublingLeavesBothOldShardsLiveTablesUnchanged() throws {
        let fixture = try PlanFixture(self)
        try createPosts(fixture.sources, rows: 4000)
        let targets = [fixture.sources[0], fixture.sources[1], fixture.targets[1], fixture.targets[2]]
        let config = try fixture.writeConfig(tables: [("posts", "user_id")], targets: targets)
        func live(_ dsn: ConnectionString) throws -> String {
            let conn = try PGConnection.connect(dsn)
            return try conn.query(
                """
                SELECT count(*)::text || '/' || coalesce(sum(hashtextextended(x::text, 0)), 0)::text || '/'
                       || (SELECT n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables WHERE relid = 'posts'::regclass)
                FROM posts x
                """)[0, 0]!
        }
        let before = try fixture.sources.map(live)

        // plan and status say per target whether it is shared and where its tables are built.
        let planned = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(planned.status, 0, planned.stderr)
        for line in [
            "target t0: the database of source s0; tables built in reshard_build, swapped in at cutover",
            "target t1: the database of source s1; tables built in reshard_build, swapped in at cutover",
            "target t2: tables built under their own names",
        ] { XCTAssertTrue(planned.stdout.contains(line), planned.stdout) }
        let plannedJSON = try ReshardCLI.run(["plan", "-c", config, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(plannedJSON.stdout.utf8)) as? [String: Any]
        let placements = try XCTUnwrap(object?["placements"] as? [[String: Any]], plannedJSON.stdout)
        XCTAssertEqual(placements.map { $0["shared"] as? Bool }, [true, true, false, false])
        XCTAssertEqual(placements.map { $0["buildSchema"] as? String }, ["reshard_build", "reshard_build", nil, nil])
        XCTAssertEqual(placements.map { $0["sameAsSource"] as? String }, ["s0", "s1", nil, nil])

        let applied = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(applied.status, 0, applied.stderr)
        XCTAssertEqual(try fixture.sources.map(live), before, "the old shards' live tables after apply")
        let status = try XCTUnwrap(try ReshardCLI.status(config))
        XCTAssertEqual(status.targets.map(\.buildSchema), ["reshard_build", "reshard_build", nil, nil])
        XCTAssertEqual(status.targets.map(\.shared), [true, true, false, false])
        XCTAssertTrue(
            status.text.contains("target t1: the database of source s1; tables built in reshard_build, swapped in at cutover"), status.text)
        try assertBuiltTablesHoldSourceRows(
            sources: fixture.sources, targets: targets, names: ["reshard_build.posts", "reshard_build.posts", "posts", "posts"],
            ranges: Self.ranges4)
        let verified = try ReshardCLI.run(["verify", "-c", config])
        XCTAssertEqual(verified.status, 0, verified.stdout + verified.stderr)
        XCTAssertEqual(try fixture.sources.map(live), before, "the old shards' live tables after verify")
    }

    /// Item 5: the statements cutover runs behind its fence (`SwapSQL.swapIn`) and rollback's
    /// (`swapBack`), on a real shared database after apply: the table the application names holds
    /// exactly t0's rows, then exactly s0's old rows again; the `serial` sequence stays in the
    /// table's schema, owned by whichever table is live, so dropping the other never drops it.
    func testSwapInThenSwapBackOnASharedDatabase() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigserial PRIMARY KEY, user_id bigint NOT NULL, note text);
                INSERT INTO items SELECT g, g, 'item ' || g FROM generate_series(1, 3000) g WHERE g % 2 = \(k);
                SELECT setval('items_id_seq', 3000);
                """)
        }
        let config = try fixture.writeConfig(tables: [("items", "user_id")])
        XCTAssertEqual(try fixture.applyUntilCaughtUp(config).status, 0)
        let (lo, hi) = Self.ranges3[0]
        let forT0 = "SELECT x::text FROM items x WHERE hashint8(user_id) BETWEEN \(lo) AND \(hi)"
        let expected = try (fixture.sources.flatMap { try PlanFixture.rowTexts(forT0, on: $0) }).sorted()
        let s0Rows = try PlanFixture.rowTexts("SELECT x::text FROM items x", on: fixture.sources[0])
        XCTAssertNotEqual(expected, s0Rows)

        let conn = try PGConnection.connect(fixture.sources[0])
        let quoted = try conn.quote(QualifiedName("items"))
        let schema = try conn.query(SwapSQL.liveSchemaQuery, [quoted]).get(0, 0, as: String.self)
        let live = QualifiedName(schema: schema, "items")
        let owned = try conn.query(SwapSQL.ownedSequencesQuery, [try conn.quote(live)])
        let table = SwapSQL.Table(
            live: live, ownedSequences: (0..<owned.rowCount).map { (QualifiedName(schema: owned[$0, 0]!, owned[$0, 1]!), owned[$0, 2]!) })
        XCTAssertEqual(table.ownedSequences.map(\.sequence.description), ["public.items_id_seq"])
        func run(_ statements: [String]) throws {
            try conn.transaction { c in
                try c.execute("SET LOCAL lock_timeout = '2s'")
                for statement in statements { try c.execute(statement) }
            }
        }
        func sequenceOwner() throws -> String? {
            try conn.query(
                """
                SELECT format('%s.%s', n.nspname, c.relname) FROM pg_depend d JOIN pg_class c ON c.oid = d.refobjid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE d.objid = to_regclass('public.items_id_seq') AND d.deptype = 'a'
                """)[0, 0]
        }

        try run(SwapSQL.swapIn([table]))
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT x::text FROM items x", on: fixture.sources[0]), expected, "after swapIn: t0's rows")
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT x::text FROM reshard_old.items x", on: fixture.sources[0]), s0Rows)
        XCTAssertEqual(try sequenceOwner(), "public.items", "the sequence stays in public, owned by the table swapped in")

        try run(SwapSQL.swapBack([table]))
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT x::text FROM items x", on: fixture.sources[0]), s0Rows, "after swapBack: s0's rows")
        XCTAssertEqual(
            try PlanFixture.rowTexts("SELECT x::text FROM reshard_build.items x", on: fixture.sources[0]), expected, "the built table is parked again")
        XCTAssertEqual(try sequenceOwner(), "public.items")
        try conn.execute("DROP TABLE reshard_build.items")
        XCTAssertEqual(try conn.query("INSERT INTO items (user_id) VALUES (2) RETURNING id").get(0, 0, as: Int64.self), 3001)
    }

    /// Item 4: what the build schema needs. Two moving tables of the same name in different
    /// schemas would meet in reshard_build: refused (exit 2) naming both, nothing changed. A
    /// table left built by an aborted migration is refused until dropped.
    func testPlanRefusesWhatWouldMeetInTheBuildSchema() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(
            """
            CREATE SCHEMA app;
            CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL);
            CREATE TABLE app.posts (id bigint PRIMARY KEY, user_id bigint NOT NULL);
            """)
        // On one source: the same keys on both would be refused as colliding (issue 10).
        try PGConnection.connect(fixture.sources[0]).execute("INSERT INTO posts SELECT g, g FROM generate_series(1, 50) g")
        let both = try fixture.writeConfig(tables: [("posts", "user_id"), ("app.posts", "user_id")])
        let before = try fixture.snapshot()
        let refused = try ReshardCLI.run(["plan", "-c", both])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(
            refused.stderr.contains(
                "tables posts (line 14) and app.posts (line 16) would both be built as reshard_build.posts on t0 (the database of source s0): move them in separate migrations"),
            refused.stderr)
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", both, "--until", "backfilled"]).status, 2)
        XCTAssertEqual(try fixture.snapshot(), before)
        // Without a shared target there is no build schema: the same tables are fine.
        XCTAssertEqual(try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(
            tables: [("posts", "user_id"), ("app.posts", "user_id")], targets: fixture.freshTargets)]).status, 0)

        let config = try fixture.writeConfig(tables: [("posts", "user_id")])
        XCTAssertEqual(try fixture.applyUntilCaughtUp(config).status, 0)
        XCTAssertEqual(try ReshardCLI.run(["abort", "-c", config]).status, 0)
        let leftover = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(leftover.status, 2, leftover.stderr)
        XCTAssertTrue(leftover.stderr.contains("table posts on target t0: reshard_build.posts already holds rows"), leftover.stderr)
        XCTAssertEqual(try ReshardCLI.run(["abort", "-c", config, "--drop-target-data"]).status, 0)
        XCTAssertEqual(try ReshardCLI.run(["plan", "-c", config]).status, 0)
    }
}

/// An application writing to both sources: statements routed by shard key, and statements sent
/// to every shard, as sharded applications do (an update by id, a delete by id, a shard-key
/// change by id, none knowing where the row lives), plus a transaction held open for seconds.
/// Each change is made to `posts` and to `posts_mirror` in one transaction.
final class ScatterLoad: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var commits = 0
    private var errors: [String] = []
    private var nextID: Int64 = 1_000_000
    private let done = DispatchGroup()

    init(sources: [ConnectionString]) {
        for name in ["scatter writer", "long transactions"] {
            done.enter()
            let thread = Thread { [self] in
                defer { done.leave() }
                do {
                    let conns = try sources.map { try PGConnection.connect($0) }
                    while isRunning { try name == "scatter writer" ? writeOnce(conns) : longTransaction(conns[0]) }
                } catch {
                    lock.withLock { errors.append((error as? PostgresError)?.summary ?? "\(error)") }
                }
            }
            thread.name = name
            thread.start()
        }
    }

    var isRunning: Bool { lock.withLock { running } }

    func stop() {
        lock.withLock { running = false }
        done.wait()
    }

    func assertHealthy(minimumCommits: Int, file: StaticString = #filePath, line: UInt = #line) {
        stop()
        lock.withLock {
            for error in errors { XCTFail("load error: \(error)", file: file, line: line) }
            XCTAssertGreaterThanOrEqual(commits, minimumCommits, "the load committed too little", file: file, line: line)
        }
    }

    /// The same statement on `posts` and its mirror, in one transaction.
    private func both(_ conn: PGConnection, _ sql: String, _ parameters: [String]) throws {
        try conn.transaction { c in
            try c.query(sql.replacingOccurrences(of: "%T", with: "posts"), parameters)
            try c.query(sql.replacingOccurrences(of: "%T", with: "posts_mirror"), parameters)
        }
        lock.withLock { commits += 1 }
    }

    private func writeOnce(_ conns: [PGConnection]) throws {
        let id = Int64.random(in: 1...6000)
        switch Int.random(in: 0..<5) {
        case 0:
            // Sent to every shard: an update by a column that is not the shard key.
            for conn in conns { try both(conn, "UPDATE %T SET body = body || '+' WHERE id = $1", [String(id)]) }
        case 1:
            for conn in conns { try both(conn, "DELETE FROM %T WHERE id = $1", [String(id)]) }
        case 2:
            // The shard key changes (within the source: the same parity), sent to every shard.
            for conn in conns { try both(conn, "UPDATE %T SET user_id = user_id + 2 WHERE id = $1", [String(id)]) }
        default:
            let user = Int64.random(in: 1...6000)
            let new = lock.withLock { nextID += 1; return nextID }
            let s = Int(user % 2)
            try both(conns[s], "INSERT INTO %T VALUES ($1, $2, 'new', $3)", [String(new), String(user), String(s)])
        }
        usleep(10_000)
    }

    /// Writes early, holds the transaction open for two seconds, then writes again and commits.
    private func longTransaction(_ conn: PGConnection) throws {
        let id = String(2 * Int64.random(in: 1...3000))
        try conn.transaction { c in
            for table in ["posts", "posts_mirror"] { try c.query("UPDATE \(table) SET body = 'slow ' || body WHERE id = $1", [id]) }
            try c.query("SELECT pg_sleep(2)")
            for table in ["posts", "posts_mirror"] { try c.query("UPDATE \(table) SET body = body || ' committed' WHERE id = $1", [id]) }
        }
        lock.withLock { commits += 1 }
    }
}
