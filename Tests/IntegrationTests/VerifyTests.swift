import Foundation
import PostgresClient
@testable import ReshardCore
import XCTest

final class VerifyTests: XCTestCase {
    /// The hash layout of the three targets, to pick keys that land on a given target.
    private let targets = try! ShardFunction(kind: .hash, shardCount: 3)

    private func target(of id: Int64) -> Int { try! targets.shard(for: .int(id, .bigint)) }

    /// The first id of `parity` (0: on s0, 1: on s1) in 1...4000 that lands on `target`, not yet used.
    private func pick(parity: Int64, target t: Int, _ used: inout Set<Int64>) -> Int64 {
        let id = (1...4000).first { Int64($0) % 2 == parity && target(of: Int64($0)) == t && !used.contains(Int64($0)) }.map(Int64.init)!
        used.insert(id)
        return id
    }

    private func verify(_ config: String, _ extra: [String] = []) throws -> (ReshardCLI.Outcome, VerifyResult?) {
        let outcome = try ReshardCLI.run(["verify", "-c", config, "--json"] + extra)
        return (outcome, try? JSONDecoder().decode(VerifyResult.self, from: Data(outcome.stdout.utf8)))
    }

    /// Items on two sources (split by id % 2 today), moved to three hash targets, the first being
    /// s0's database; `--chunk-rows` small enough for several chunks.
    private func movedItems() throws -> (PlanFixture, String) {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL, note text, at timestamptz NOT NULL,
                                    price numeric NOT NULL, tags text[] NOT NULL, doc jsonb NOT NULL);
                INSERT INTO items SELECT g, repeat(md5(g::text), 300), CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END,
                       timestamptz '2026-01-01 00:00:00.5+00' + g * interval '1 minute', round(g / 7.0, 1),
                       ARRAY['a' || g, 'b' || g, 'c'], jsonb_build_object('g', g, 'list', jsonb_build_array(1, 2, 3))
                  FROM generate_series(1, 4000) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        return (fixture, config)
    }

    /// Acceptance: every kind of difference is found and reported with its key, source and target:
    /// a missing row, an extra row, one byte deep in a long text, a
    /// timestamp off by 1 µs, NULL against '', 1.0 against 1.00, an array element, a jsonb element,
    /// and a copy in the target that is also a source database. Exit code 3; status shows it.
    func testFindsEveryKindOfDifferenceDownToTheRow() throws {
        let (fixture, config) = try movedItems()
        let clean = try verify(config, ["--chunk-rows", "500"])
        XCTAssertEqual(clean.0.status, 0, clean.0.stderr + clean.0.stdout)
        XCTAssertEqual(clean.1?.tables.first?.sourceRows, 4000)
        XCTAssertGreaterThan(clean.1?.tables.first?.chunks ?? 0, 4)

        var used = Set<Int64>()
        // Behind reshard's back: the write fence refuses the application on the targets before cutover.
        let t1 = try PGConnection.connect(fixture.targets[1], settings: ["reshard.applying": "on"])
        let t2 = try PGConnection.connect(fixture.targets[2], settings: ["reshard.applying": "on"])
        var expected: [RowDifference] = []
        func expect(_ kind: RowDifference.Kind, _ id: Int64, _ source: String?, _ target: Int) {
            expected.append(RowDifference(table: "items", kind: kind, key: ["\(id)"], source: source, target: "t\(target)"))
        }
        let missing = pick(parity: 1, target: 1, &used)
        try t1.query("DELETE FROM items WHERE id = $1", [missing])
        expect(.missing, missing, "s1", 1)
        let extra = (100_001...200_000).first { target(of: Int64($0)) == 2 }.map(Int64.init)!
        try t2.query("INSERT INTO items SELECT $1, body, note, at, price, tags, doc FROM items LIMIT 1", [extra])
        expect(.extra, extra, nil, 2)
        // A key written on two sources for one target is no longer a difference verify finds: the
        // catch-up its drain runs stops on it first (KeyCollisionTests).
        let longText = pick(parity: 0, target: 1, &used)
        try t1.query("UPDATE items SET body = overlay(body PLACING 'X' FROM 7000 FOR 1) WHERE id = $1", [longText])
        expect(.different, longText, "s0", 1)
        let microsecond = pick(parity: 1, target: 2, &used)
        try t2.query("UPDATE items SET at = at + interval '1 microsecond' WHERE id = $1", [microsecond])
        expect(.different, microsecond, "s1", 2)
        var nullID: Int64 = 6
        while nullID % 6 != 0 || target(of: nullID) != 2 || used.contains(nullID) { nullID += 1 }
        used.insert(nullID)
        try t2.query("UPDATE items SET note = '' WHERE id = $1 AND note IS NULL", [nullID])
        expect(.different, nullID, "s0", 2)
        let scale = pick(parity: 1, target: 1, &used)
        try t1.query("UPDATE items SET price = round(price, 2) WHERE id = $1", [scale])
        expect(.different, scale, "s1", 1)
        let array = pick(parity: 0, target: 1, &used)
        try t1.query("UPDATE items SET tags[2] = 'B' WHERE id = $1", [array])
        expect(.different, array, "s0", 1)
        let json = pick(parity: 1, target: 2, &used)
        try t2.query("UPDATE items SET doc = jsonb_set(doc, '{list,1}', '20') WHERE id = $1", [json])
        expect(.different, json, "s1", 2)
        // A row copied from s1 into s0's database (target t0, built in reshard_build), changed there.
        let copy = pick(parity: 1, target: 0, &used)
        try PGConnection.connect(fixture.sources[0], settings: ["reshard.applying": "on"]).query(
            "UPDATE \(fixture.targetTable("items", 0)) SET note = 'changed' WHERE id = $1", [copy])
        expect(.different, copy, "s1", 0)
        // Values that print differently but are equal are not differences: s0's own rows that
        // stay are compared with themselves, and rows leaving s0 are not extra rows on t0.

        let (outcome, result) = try verify(config, ["--chunk-rows", "500"])
        XCTAssertEqual(outcome.status, 3, outcome.stderr)
        let found = try XCTUnwrap(result, outcome.stdout + outcome.stderr).tables.flatMap(\.rows)
        XCTAssertEqual(Set(found), Set(expected), "found: \(found)")
        XCTAssertEqual(found.count, expected.count)
        XCTAssertEqual(result?.tables.first?.differences, Int64(expected.count))
        XCTAssertEqual(result?.tables.first?.outcome, "different")

        let text = try ReshardCLI.run(["verify", "-c", config, "--chunk-rows", "500"])
        XCTAssertEqual(text.status, 3)
        XCTAssertTrue(text.stdout.contains("missing   key (\(missing)) source s1 -> target t1"), text.stdout)
        XCTAssertTrue(text.stdout.contains("extra     key (\(extra)) target t2"), text.stdout)

        let status = try ReshardCLI.run(["status", "-c", config, "--json"])
        let verification = try JSONDecoder().decode(MigrationStatus.self, from: Data(status.stdout.utf8)).verification
        XCTAssertEqual(verification.map(\.outcome), ["different"])
        XCTAssertEqual(verification.first?.differences, Int64(expected.count))
        XCTAssertNotNil(verification.first?.finishedAt)
    }

    /// An `apply` started while verify applies pending changes itself (no coordinator running)
    /// is not refused: it waits for verify to let go of the catch-up, then catches up; both
    /// succeed. Before, verify held the apply lease while draining, and the `apply` was refused
    /// naming the last coordinator (here on another host) as the holder.
    func testApplyStartedWhileVerifyDrainsSucceeds() throws {
        let (fixture, config) = try movedItems()
        let meta = try PGConnection.connect(fixture.metadata)
        try meta.execute("UPDATE reshard.leases SET holder_host = 'elsewhere.example'")
        // Every upsert of the changelog on t1 takes seconds, so verify is seen in the middle of it.
        let t1 = try PGConnection.connect(fixture.targets[1])
        try t1.execute(
            """
            CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$;
            CREATE TRIGGER slow AFTER INSERT ON items FOR EACH STATEMENT EXECUTE FUNCTION slow();
            """)
        try fixture.onSources("UPDATE items SET note = 'changed' WHERE id <= 200")
        let verify = try ReshardCLI.start(["verify", "-c", config, "--chunk-rows", "500", "--json"])
        XCTAssertTrue(try eventually(timeout: 60) {
            try t1.query("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'reshard verify' AND wait_event = 'PgSleep')")
                .get(0, 0, as: Bool.self)
        }, verify.stderr)
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        XCTAssertEqual(verify.wait(), 0, verify.stdout + verify.stderr)
        let result = try? JSONDecoder().decode(VerifyResult.self, from: Data(verify.stdout.utf8))
        XCTAssertEqual(result?.identical, true, verify.stdout)
        print("apply started while verify drained: \(apply.stderr.split(separator: "\n").filter { $0.contains("waiting") })")

        // Independently: each pure target holds exactly the changed rows that map to it.
        let ranges: [(Int64, Int64)] = [(-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]
        for (t, (lo, hi)) in zip([1, 2], ranges) {
            let changed = "SELECT count(*)::int FROM items WHERE note = 'changed' AND hashint8(id) BETWEEN \(lo) AND \(hi)"
            var expected = 0
            for source in fixture.sources { expected += try PGConnection.connect(source).query(changed).get(0, 0, as: Int.self) }
            XCTAssertGreaterThan(expected, 0)
            XCTAssertEqual(try PGConnection.connect(fixture.targets[t]).query(changed).get(0, 0, as: Int.self), expected, "t\(t)")
        }
    }

    /// Verify's drainer stops reading the changelog once a round leaves it empty. Before, it read
    /// every source's log 20 times per drain whatever it found (`for ... where` is no `while`).
    func testVerifyDrainsOnlyAsManyRoundsAsThereAreChanges() throws {
        let (fixture, config) = try movedItems()
        let s1 = try PGConnection.connect(fixture.sources[1])
        let log = "SELECT coalesce(sum(seq_scan), 0)::int FROM pg_stat_user_tables WHERE schemaname = 'reshard_shim'"
        try s1.execute("SELECT pg_stat_reset()")
        try s1.execute("UPDATE items SET note = 'changed' WHERE id = 1")
        let outcome = try ReshardCLI.run(["verify", "-c", config, "--chunk-rows", "500"])
        XCTAssertEqual(outcome.status, 0, outcome.stdout + outcome.stderr)
        XCTAssertEqual(try s1.query("SELECT count(*)::int FROM items WHERE note = 'changed'").get(0, 0, as: Int.self), 1)
        // Verify's sessions report their scans as they exit.
        XCTAssertTrue(try eventually {
            try s1.query("SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'reshard verify'").get(0, 0, as: Bool.self)
        })
        XCTAssertTrue(try eventually { try s1.query(log).get(0, 0, as: Int.self) > 0 }, "verify must have applied the change")
        XCTAssertLessThan(try s1.query(log).get(0, 0, as: Int.self), 10)
    }

    /// A chunk of a table the run does not verify is an error, never recorded as a clean chunk.
    func testAChunkOfAnUnknownTableIsAnError() throws {
        let (_, config) = try movedItems()
        let target = try MigrationTarget.fromConfig(try ReshardConfig.load(path: config))
        let verifier = try Verifier(plan: target.plan, shards: target.shards, metadata: target.metadata, options: VerifyOptions())
        let connections = try ChunkConnections(verifier: verifier, workers: Workers())
        let drainer = PendingDrainer(plan: target.plan, shards: target.shards, metadata: target.metadata)
        let whole = try verifier.verify(.init(table: "items", index: 0, lower: nil, upper: nil), with: connections, drainer: drainer)
        XCTAssertEqual(whole.sources.rows, 4000)
        XCTAssertEqual(whole.targets.rows, 4000)
        XCTAssertThrowsError(
            try verifier.verify(.init(table: "gone", index: 3, lower: nil, upper: nil), with: connections, drainer: drainer)
        ) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .failed, "\(error)")
            XCTAssertTrue("\(error)".contains("chunk 3 is of table gone"), "\(error)")
        }
    }

    /// Issue 14: thousands of rows differing in one chunk are reported (exit 3), where the
    /// re-check of their keys used to fail with `stack depth limit exceeded`.
    func testThousandsOfDifferingRowsInOneChunkAreReported() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE many (id bigint NOT NULL, part int NOT NULL, v int NOT NULL, PRIMARY KEY (id, part));
                INSERT INTO many SELECT g, g % 3, g FROM generate_series(1, 24000) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("many", "id")], sourceFunction: "modulo")
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        // Behind the shim's back, on the targets that are not sources.
        var changed = 0
        for target in fixture.targets[1...] {
            // (the write fence refuses the application on the targets before cutover)
            changed += try PGConnection.connect(target, settings: ["reshard.applying": "on"]).query("UPDATE many SET v = -v WHERE id % 4 <> 0").affectedRows
        }
        XCTAssertGreaterThan(changed, 8000)
        let (outcome, result) = try verify(config, ["--chunk-rows", "1000000"])
        XCTAssertEqual(outcome.status, 3, outcome.stderr)
        XCTAssertEqual(result?.tables.first?.chunks, 1)
        XCTAssertEqual(result?.tables.first?.differences, Int64(changed))
        XCTAssertEqual(result?.tables.first?.rows.count, 1000, "up to --max-differences are listed")
        XCTAssertTrue(result?.tables.first?.rows.allSatisfy { $0.kind == .different && Int($0.key[0])! % 4 != 0 } ?? false)
    }

    /// A run interrupted under one config is not continued under another (here: the target
    /// function mistyped, then corrected): its finished chunks stood for another comparison.
    /// Before, the second run continued the first and reported its stale differences (exit 3).
    func testARunInterruptedUnderAnotherConfigStartsANewRun() throws {
        let (fixture, config) = try movedItems()
        // The rows were placed by hash; compared as if by modulo, they are in the wrong places.
        _ = try fixture.writeConfig(tables: [("items", "id")], function: "modulo")
        let (wrong, wrongResult) = try verify(config, ["--chunk-rows", "500"])
        XCTAssertEqual(wrong.status, 3, wrong.stderr)
        // As a verifier killed mid-way leaves it: the run unfinished, one chunk to go.
        try PGConnection.connect(fixture.metadata).execute(
            """
            UPDATE reshard.verify_runs SET finished_at = NULL;
            UPDATE reshard.verify_tables SET outcome = 'running', finished_at = NULL;
            UPDATE reshard.verify_chunks SET done = false WHERE chunk = (SELECT max(chunk) FROM reshard.verify_chunks);
            """)
        _ = try fixture.writeConfig(tables: [("items", "id")])
        let (right, result) = try verify(config, ["--chunk-rows", "500"])
        XCTAssertEqual(right.status, 0, right.stdout + right.stderr)
        XCTAssertEqual(result?.run, (wrongResult?.run ?? 0) + 1)
        XCTAssertEqual(result?.tables.first?.sourceRows, 4000)

        // The same config continues an interrupted run.
        try PGConnection.connect(fixture.metadata).execute(
            """
            UPDATE reshard.verify_runs SET finished_at = NULL;
            UPDATE reshard.verify_tables SET outcome = 'running', finished_at = NULL;
            UPDATE reshard.verify_chunks SET done = false WHERE chunk = (SELECT max(chunk) FROM reshard.verify_chunks);
            """)
        let (again, continued) = try verify(config, ["--chunk-rows", "500"])
        XCTAssertEqual(again.status, 0, again.stdout + again.stderr)
        XCTAssertEqual(continued?.run, result?.run)
    }

    /// Acceptance: identical data hashed through sessions whose TimeZone, DateStyle and other
    /// output settings differ (set per database here) is identical.
    func testSessionSettingsDoNotChangeTheOutcome() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE "Ev""ents; x" ("I d" bigint PRIMARY KEY, at timestamptz NOT NULL, day date NOT NULL, span interval NOT NULL,
                                     ratio float8 NOT NULL, raw bytea NOT NULL, local timestamp NOT NULL);
                INSERT INTO "Ev""ents; x" SELECT g, timestamptz '2026-03-29 00:30:00+00' + g * interval '17 minutes 0.25 seconds',
                       date '2026-01-01' + g, g * interval '1 day 2 hours 3.5 seconds', g / 3.0, decode(md5(g::text), 'hex'),
                       timestamp '2026-01-01' + g * interval '1 hour'
                  FROM generate_series(1, 2000) g WHERE g % 2 = \(k);
                """)
        }
        let settings: [(ConnectionString, [String])] = [
            (fixture.sources[1], ["TimeZone = 'Asia/Kolkata'", "DateStyle = 'SQL, DMY'", "IntervalStyle = 'sql_standard'",
                                  "extra_float_digits = 0", "bytea_output = 'escape'"]),
            (fixture.targets[1], ["TimeZone = 'America/New_York'", "DateStyle = 'German'", "IntervalStyle = 'iso_8601'"]),
            (fixture.targets[2], ["TimeZone = 'Pacific/Chatham'", "DateStyle = 'Postgres, MDY'", "extra_float_digits = -3"]),
        ]
        let config = try fixture.writeConfig(tables: [(#""Ev""ents; x""#, #""I d""#)], sourceFunction: "modulo")
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        for (dsn, assignments) in settings {
            let conn = try PGConnection.connect(dsn)
            let database = try conn.quoteIdentifier(try conn.query("SELECT current_database()")[0, 0]!)
            for assignment in assignments { try conn.execute("ALTER DATABASE \(database) SET \(assignment)") }
        }
        // The settings do change what a server prints for the same row.
        let s1 = try PGConnection.connect(fixture.sources[1])
        let row = #"SELECT ROW(at, day, span, ratio, raw)::text FROM "Ev""ents; x" WHERE "I d" = 1"#
        let asConfigured = try s1.query(row)[0, 0]
        try s1.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'")
        XCTAssertNotEqual(asConfigured, try s1.query(row)[0, 0])

        let (outcome, result) = try verify(config, ["--chunk-rows", "300"])
        XCTAssertEqual(outcome.status, 0, outcome.stdout + outcome.stderr)
        XCTAssertEqual(result?.identical, true)
        XCTAssertEqual(result?.tables.first?.sourceRows, 2000)
        XCTAssertEqual(result?.tables.first?.targetRows, 2000)
    }

    /// Bad input and wrong moments are refused with one line and exit code 2, changing nothing.
    func testRefusalsNameTheProblem() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
        let config = try fixture.writeConfig(sourceFunction: "modulo")
        let before = try fixture.snapshot()
        let notYet = try ReshardCLI.run(["verify", "-c", config])
        XCTAssertEqual(notYet.status, 2, notYet.stderr)
        XCTAssertTrue(notYet.stderr.contains("migration plan-test is not registered; run 'reshard apply' first"), notYet.stderr)
        XCTAssertEqual(try fixture.snapshot(), before, "nothing may change, not even the metadata schema")

        let unknown = try ReshardCLI.run(["verify", "-c", config, "--table", "nope"])
        XCTAssertEqual(unknown.status, 2)
        XCTAssertTrue(unknown.stderr.contains("table nope is not part of migration plan-test"), unknown.stderr)
        for outcome in [notYet, unknown] {
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
        }
        XCTAssertEqual(try fixture.snapshot(), before)

        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        // As a coordinator killed mid-backfill leaves it.
        try PGConnection.connect(fixture.metadata).execute("UPDATE reshard.migrations SET phase = 'backfilling'")
        let early = try ReshardCLI.run(["verify", "-c", config])
        XCTAssertEqual(early.status, 2, early.stderr)
        XCTAssertTrue(early.stderr.contains("verify needs the backfill done"), early.stderr)
    }

    /// The reference data moved 2 -> 3 by `apply` (t0 = s0), today's placement described.
    private func movedReferenceData(scale: Double, load: Bool) throws -> (PlanFixture, String, WriteLoad?, ReshardCLI.Running?) {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: scale)
        let config = try fixture.writeConfig(
            tables: ReferenceData.tables, sourceFunction: "modulo", sourceKeys: ["handles": "user_id"])
        guard load else {
            let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
            XCTAssertEqual(apply.status, 0, apply.stderr)
            return (fixture, config, nil, nil)
        }
        let writes = WriteLoad(sources: fixture.sources)
        let apply = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 300) {
            let status = try ReshardCLI.run(["status", "-c", config, "--json"])
            return status.status == 0 && (try? JSONDecoder().decode(MigrationStatus.self, from: Data(status.stdout.utf8)))?.phase == "in-sync"
        }, apply.stderr)
        return (fixture, config, writes, apply)
    }

    /// Acceptance: zero differences after a clean 2 -> 3 migration while the application keeps
    /// writing (inserts, updates, deletes, shard-key moves, long transactions): first with the
    /// coordinator catching up, then with it stopped, verify applying the pending changes itself.
    func testNoDifferencesWhileTheApplicationKeepsWriting() throws {
        let (_, config, load, apply) = try movedReferenceData(scale: 0.1, load: true)
        let writes = try XCTUnwrap(load), coordinator = try XCTUnwrap(apply)
        defer { writes.stop() }
        let before = writes.committed
        let (outcome, result) = try verify(config, ["--chunk-rows", "5000"])
        XCTAssertEqual(outcome.status, 0, outcome.stdout + outcome.stderr)
        XCTAssertEqual(result?.identical, true)
        XCTAssertEqual(result?.tables.count, ReferenceData.tables.count)
        XCTAssertGreaterThan(writes.committed, before, "the application must have written during verification")
        print("verify under load: \(result?.tables.map { "\($0.name) \($0.rechecks) re-check(s)" } ?? [])")

        coordinator.signal(SIGTERM)
        XCTAssertEqual(coordinator.wait(), 0, coordinator.stderr)
        let stopped = writes.committed
        let (again, secondResult) = try verify(config, ["--chunk-rows", "5000"])
        XCTAssertEqual(again.status, 0, again.stdout + again.stderr)
        XCTAssertEqual(secondResult?.identical, true)
        XCTAssertEqual(secondResult?.run, (result?.run ?? 0) + 1, "a finished verification is followed by a new run")
        XCTAssertGreaterThan(writes.committed, stopped)
        writes.assertHealthy()
    }

    /// Acceptance: `kill -9` during verification, then `verify` again continues with the chunks
    /// not yet verified (same run, same chunks, finished chunks left alone).
    func testKill9DuringVerifyThenVerifyContinues() throws {
        let (fixture, config, _, _) = try movedReferenceData(scale: 0.1, load: false)
        let meta = try PGConnection.connect(fixture.metadata)
        func chunks() throws -> (done: Int, total: Int) {
            guard try meta.query("SELECT to_regclass('reshard.verify_chunks') IS NOT NULL").get(0, 0, as: Bool.self) else { return (0, 0) }
            let row = try meta.query("SELECT count(*) FILTER (WHERE done)::int, count(*)::int FROM reshard.verify_chunks")
            return (try row.get(0, 0), try row.get(0, 1))
        }
        let first = try ReshardCLI.start(["verify", "-c", config, "--chunk-rows", "500", "--jobs", "1"])
        XCTAssertTrue(try eventually(timeout: 120) { try chunks().done >= 5 }, first.stderr)
        first.signal(SIGKILL)
        XCTAssertEqual(first.wait(), 128 + SIGKILL)
        let (doneBefore, total) = try chunks()
        XCTAssertLessThan(doneBefore, total, "the kill must land mid-way")
        let snapshot = "SELECT table_name, chunk, lower_key::text, upper_key::text, verified_at::text FROM reshard.verify_chunks WHERE done ORDER BY 1, 2"
        let finishedBefore = try meta.query(snapshot)
        let boundaries = "SELECT string_agg(table_name || chunk || coalesce(lower_key::text, '-'), ',' ORDER BY table_name, chunk) FROM reshard.verify_chunks"
        let chunkingBefore = try meta.query(boundaries)[0, 0]

        let second = try ReshardCLI.run(["verify", "-c", config, "--chunk-rows", "500", "--json"])
        XCTAssertEqual(second.status, 0, second.stdout + second.stderr)
        let result = try JSONDecoder().decode(VerifyResult.self, from: Data(second.stdout.utf8))
        XCTAssertEqual(result.run, 1, "the interrupted run continues")
        XCTAssertEqual(try chunks().done, total)
        XCTAssertEqual(try meta.query(boundaries)[0, 0], chunkingBefore, "the same chunks")
        let finishedAfter = try meta.query(snapshot)
        // Every chunk finished before the kill is still there, untouched (same verified_at).
        var after = Set<String>()
        for r in 0..<finishedAfter.rowCount { after.insert((0..<5).map { finishedAfter[r, $0] ?? "" }.joined(separator: "|")) }
        for r in 0..<finishedBefore.rowCount {
            XCTAssertTrue(after.contains((0..<5).map { finishedBefore[r, $0] ?? "" }.joined(separator: "|")), "chunk \(r) was verified again")
        }
        // The progress of the second run starts from the chunks already done.
        let firstProgress = second.stderr.split(separator: "\n").first.flatMap { try? JSONDecoder().decode(VerifyProgress.self, from: Data($0.utf8)) }
        XCTAssertGreaterThanOrEqual(firstProgress?.chunksDone ?? 0, doneBefore, second.stderr)
        XCTAssertEqual(result.tables.map(\.outcome), Array(repeating: "identical", count: ReferenceData.tables.count))
    }

    /// Ctrl-C stops verify within its bound and exits 4 (stopped before the goal), so a script's
    /// `verify && cutover` does not go on; the chunks done so far are kept.
    func testInterruptedVerifyExitsFourAndKeepsItsChunks() throws {
        let (fixture, config, _, _) = try movedReferenceData(scale: 0.1, load: false)
        let meta = try PGConnection.connect(fixture.metadata)
        func done() throws -> Int {
            guard try meta.query("SELECT to_regclass('reshard.verify_chunks') IS NOT NULL").get(0, 0, as: Bool.self) else { return 0 }
            return try meta.query("SELECT count(*) FILTER (WHERE done)::int FROM reshard.verify_chunks").get(0, 0)
        }
        let verify = try ReshardCLI.start(["verify", "-c", config, "--chunk-rows", "500", "--jobs", "1"])
        XCTAssertTrue(try eventually(timeout: 120) { try done() >= 3 }, verify.stderr)
        verify.signal(SIGINT)
        XCTAssertEqual(verify.wait(), 4, verify.stderr)
        XCTAssertTrue(verify.stderr.contains("interrupted after"), verify.stderr)
        let total: Int = try meta.query("SELECT count(*)::int FROM reshard.verify_chunks").get(0, 0)
        XCTAssertLessThan(try done(), total, "the stop must land mid-way")
        XCTAssertGreaterThanOrEqual(try done(), 3)
    }
}
