import Foundation
@testable import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

final class PlanCommandTests: XCTestCase {
    let usersDDL = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, created timestamptz NOT NULL DEFAULT now())"

    /// Acceptance: on the reference set (users 1M, posts 2M) on 2 sources planned to 3 targets,
    /// one a source database, every slice estimate is within 10% of the true count, computed here
    /// with independent SQL. Also: plan is read-only, and writes a plan file.
    func testEstimatesOnTheReferenceSetAreWithinTenPercentAndPlanIsReadOnly() throws {
        let fixture = try PlanFixture(self)
        // Today's layout: user_id % 2 picks the source, as in the seeds' `userId % 2`.
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                \(usersDDL);
                CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, posted timestamptz NOT NULL);
                INSERT INTO users (id, name, email, created)
                  SELECT g, 'user ' || g, 'user' || g || '@example.com', timestamptz '2024-01-01' + g * interval '1 minute'
                  FROM generate_series(1, 1000000) g WHERE g % 2 = \(k);
                INSERT INTO posts
                  SELECT p, u, 'post ' || p || ' ' || md5(p::text), timestamptz '2024-01-01' + p * interval '1 second'
                  FROM (SELECT p, 1 + (hashint8(p)::bigint & 2147483647) % 1000000 AS u FROM generate_series(1, 4000000) p) x
                  WHERE u % 2 = \(k) LIMIT 1000000;
                ANALYZE users; ANALYZE posts;
                """)
        }
        let config = try fixture.writeConfig(tables: [("users", "id"), ("posts", "user_id")])
        let before = try fixture.snapshot()
        let planFile = fixture.directory + "/plan.json"
        let outcome = try ReshardCLI.run(["plan", "-c", config, "--json", "--output", planFile])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertEqual(try fixture.snapshot(), before, "plan must not change anything on any server")

        let plan = try JSONDecoder().decode(Plan.self, from: Data(outcome.stdout.utf8))
        let fromFile = try JSONDecoder().decode(Plan.self, from: Data(contentsOf: URL(fileURLWithPath: planFile)))
        XCTAssertEqual(plan, fromFile)
        XCTAssertEqual(plan.targets.map(\.sameAsSource), ["s0", nil, nil])
        let planText = try String(contentsOfFile: planFile, encoding: .utf8)
        XCTAssertFalse(planText.contains("password="))

        // True counts, computed independently with Citus's ranges written out by hand.
        let ranges: [(Int64, Int64)] = [(-2_147_483_648, -715_827_884), (-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]
        var checked = 0
        for (tableName, key) in [("users", "id"), ("posts", "user_id")] {
            let table = try XCTUnwrap(plan.tables.first { $0.name.name == tableName })
            XCTAssertEqual(table.fingerprint.count, 16)
            for (s, source) in fixture.sources.enumerated() {
                let conn = try PGConnection.connect(source)
                for (t, (lo, hi)) in ranges.enumerated() {
                    let truth = try conn.query(
                        "SELECT count(*) FROM \(tableName) WHERE hashint8(\(key)) BETWEEN \(lo) AND \(hi)"
                    ).get(0, 0, as: Int64.self)
                    let slice = try XCTUnwrap(table.slices.first { $0.source == "s\(s)" && $0.target == "t\(t)" })
                    let error = abs(Double(slice.estimatedRows - truth)) / Double(truth)
                    XCTAssertLessThan(error, 0.10, "\(tableName) s\(s)->t\(t): estimated \(slice.estimatedRows), true \(truth)")
                    XCTAssertEqual(slice.staysInPlace, s == 0 && t == 0)
                    XCTAssertGreaterThan(slice.estimatedBytes, slice.estimatedRows * 20)
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 12)
        XCTAssertEqual(Double(plan.movingRows) / Double(plan.estimatedRows), plan.movingFraction, accuracy: 1e-9)
        XCTAssertEqual(plan.movingFraction, 5.0 / 6.0, accuracy: 0.03)

        // The human form names every slice.
        let text = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("s0 -> t0"), text.stdout)
        XCTAssertTrue(text.stdout.contains("stays in place"), text.stdout)
        XCTAssertTrue(text.stdout.contains("moving ~"), text.stdout)
    }

    func testSmallTablesAreCountedExactlyWithCompositeAndTextKeys() throws {
        let fixture = try PlanFixture(self)
        // Each source its own keys: the same key on both would be refused (issue 10).
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE likes (user_id int NOT NULL, id int NOT NULL, PRIMARY KEY (user_id, id));
                INSERT INTO likes SELECT g % 100, g + \(k) * 3000 FROM generate_series(1, 3000) g;
                CREATE TABLE handles (handle text PRIMARY KEY, user_id int NOT NULL);
                INSERT INTO handles SELECT 'h' || g || 'é', g FROM generate_series(1, 1000) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeConfig(tables: [("likes", "user_id"), ("handles", "handle")])
        let outcome = try ReshardCLI.run(["plan", "-c", config, "--json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let plan = try JSONDecoder().decode(Plan.self, from: Data(outcome.stdout.utf8))
        let likes = try XCTUnwrap(plan.tables.first { $0.name.name == "likes" })
        XCTAssertEqual(likes.uniqueKey, ["user_id", "id"])
        XCTAssertEqual(likes.estimateMethod, "exact")
        XCTAssertEqual(likes.estimatedRows, 6000)
        let handles = try XCTUnwrap(plan.tables.first { $0.name.name == "handles" })
        XCTAssertEqual(handles.keyType, .text)
        // Exact: compare each slice with the Swift shard function over the same keys.
        let function = try ShardFunction(kind: .hash, shardCount: 3)
        var expected = [Int64](repeating: 0, count: 3)
        for g in 1...1000 { expected[try function.shard(for: .text("h\(g)é"))] += 1 }
        for t in 0..<3 {
            XCTAssertEqual(handles.slices.filter { $0.target == "t\(t)" }.reduce(0) { $0 + $1.estimatedRows }, expected[t])
        }
    }

    // MARK: Refusals: exit code 2, every problem on its own line, nothing changed.

    private func assertRefused(
        _ fixture: PlanFixture, config: String, contains expected: [String], unreachable: [ConnectionString] = [],
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let before = try fixture.snapshot(unreachable: unreachable)
        let outcome = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(outcome.status, 2, outcome.stderr, file: file, line: line)
        for fragment in expected {
            XCTAssertTrue(outcome.stderr.contains(fragment), "expected «\(fragment)» in «\(outcome.stderr)»", file: file, line: line)
        }
        for errorLine in outcome.stderr.split(separator: "\n") {
            XCTAssertTrue(errorLine.hasPrefix("reshard: error: "), String(errorLine), file: file, line: line)
        }
        XCTAssertEqual(outcome.stdout, "", file: file, line: line)
        XCTAssertEqual(try fixture.snapshot(unreachable: unreachable), before, "a refused plan changed something", file: file, line: line)
    }

    func testRefusesAnUnreachableShard() throws {
        var fixture = try PlanFixture(self)
        try fixture.onSources(usersDDL)
        let port = try LocalClusterSet.freeLoopbackPort()
        fixture.targets[2] = try ConnectionString("host=127.0.0.1 port=\(port) dbname=gone user=postgres password=Sup3rS3cret")
        let config = try fixture.writeConfig()
        try assertRefused(
            fixture, config: config, contains: ["target shard t2: cannot connect to t2 (127.0.0.1:\(port) database \"gone\")", "Connection refused"],
            unreachable: [fixture.targets[2]])
        XCTAssertFalse(try ReshardCLI.run(["plan", "-c", config]).stderr.contains("Sup3rS3cret"))
    }

    func testRefusesTheSameDatabaseTwiceInOneList() throws {
        var fixture = try PlanFixture(self)
        try fixture.onSources(usersDDL)
        fixture.targets[2] = fixture.targets[1]
        try assertRefused(fixture, config: try fixture.writeConfig(), contains: ["target shards t1 and t2 are the same database"])
    }

    /// Acceptance: a target cloned from a source (as the harness clones one initdb with `cp -a`:
    /// same system_identifier) with the same database name, on the same port (another address)
    /// is a database of its own, not the source's; the real source database under another
    /// connection string is still recognised, and a clone is no duplicate in a list.
    func testAPhysicalCloneOfASourceIsNotTakenForIt() throws {
        let set = try LocalClusterSet.start(count: 2)
        defer { set.stop() }
        let (original, clone) = (set.clusters[0], set.clusters[1])
        for cluster in set.clusters {
            try cluster.createDatabase("app")
            try PGConnection.connect(cluster.connectionString(database: "app")).execute(usersDDL)
        }
        let identifiers = try set.clusters.map {
            try PGConnection.connect($0.connectionString()).query("SELECT system_identifier::text FROM pg_control_system()")[0, 0]
        }
        XCTAssertEqual(identifiers[0], identifiers[1], "the clusters must be clones of one initdb")
        // The clone listens on the original's port, on another loopback address.
        let directory = NSTemporaryDirectory() + "reshard-clone-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = try FileHandle(forWritingTo: URL(fileURLWithPath: clone.dataDirectory + "/postgresql.conf"))
        try config.seekToEnd()
        try config.write(contentsOf: Data(
            "listen_addresses = '127.0.0.2'\nport = \(original.port)\nunix_socket_directories = '\(clone.dataDirectory)'\n".utf8))
        try config.close()
        let hba = try FileHandle(forWritingTo: URL(fileURLWithPath: clone.dataDirectory + "/pg_hba.conf"))
        try hba.seekToEnd()
        try hba.write(contentsOf: Data("host all all 127.0.0.2/32 scram-sha-256\n".utf8))
        try hba.close()
        try clone.restart(mode: "fast")
        let password = try String(contentsOfFile: original.passwordFile, encoding: .utf8).replacingOccurrences(of: "127.0.0.1:", with: "127.0.0.2:")
        let passwordFile = directory + "/pgpass"
        XCTAssertTrue(FileManager.default.createFile(atPath: passwordFile, contents: Data(password.utf8), attributes: [.posixPermissions: 0o600]))
        let cloneDSN = try ConnectionString(ConnectionString.keywordString([
            "host": "127.0.0.2", "port": String(original.port), "dbname": "app", "user": "postgres", "passfile": passwordFile,
        ]))
        let source = original.connectionString(database: "app")
        let sameDatabaseOtherwise = try ConnectionString(ConnectionString.keywordString([
            "host": "127.0.0.1", "port": String(original.port), "dbname": "app", "user": "postgres", "passfile": original.passwordFile,
            "application_name": "another client",
        ]))
        let place = "SELECT inet_server_port(), current_database()"
        XCTAssertEqual(try PGConnection.connect(cloneDSN).query(place)[0, 0], try PGConnection.connect(source).query(place)[0, 0])

        let fixture = try PlanFixture(self)
        func plan(sources: [ConnectionString], targets: [ConnectionString]) throws -> Plan? {
            let outcome = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(sources: sources, targets: targets), "--json"])
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
            return try? JSONDecoder().decode(Plan.self, from: Data(outcome.stdout.utf8))
        }
        XCTAssertEqual(try plan(sources: [source], targets: [cloneDSN, fixture.targets[1]])?.targets.map(\.sameAsSource), [nil, nil])
        XCTAssertEqual(try plan(sources: [source], targets: [sameDatabaseOtherwise, cloneDSN])?.targets.map(\.sameAsSource), ["s0", nil])
        XCTAssertEqual(try plan(sources: [source, cloneDSN], targets: [fixture.targets[1]])?.sources.count, 2)
    }

    /// When the databases cannot be asked whether they are one (here the role may not read
    /// pg_locks in s0's database), plan refuses naming both shards rather than guess.
    func testRefusesWhenItCannotTellWhetherATargetIsASourceDatabase() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(usersDDL)
        let clusters = try TestClusters.shared.clusters()
        let role = "plan_\(UUID().uuidString.prefix(8).lowercased())"
        // The clusters' password file serves every role; the new role gets the same password.
        let line = try String(contentsOfFile: clusters[0].passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let password = String(line.split(separator: ":", maxSplits: 4)[4])
        for cluster in clusters {
            let admin = try PGConnection.connect(cluster.connectionString())
            try admin.execute("CREATE ROLE \(role) LOGIN PASSWORD \(try admin.quoteLiteral(password))")
            addTeardownBlock { try? PGConnection.connect(cluster.connectionString()).execute("DROP ROLE IF EXISTS \(role)") }
        }
        try PGConnection.connect(fixture.sources[0]).execute("REVOKE SELECT ON pg_catalog.pg_locks FROM PUBLIC")
        func asRole(_ dsn: ConnectionString) -> ConnectionString {
            let cluster = clusters.first { String($0.port) == dsn.endpoint.port }!
            return cluster.connectionString(database: dsn.endpoint.database, user: role)
        }
        let config = try fixture.writeConfig(
            sources: fixture.sources.map(asRole), targets: fixture.targets.map(asRole))
        try assertRefused(
            fixture, config: config,
            contains: ["cannot tell whether source shard s0 and target shard t0 are the same database: ", "[42501] permission denied for view pg_locks"])
    }

    func testRefusesATableMissingOnASource() throws {
        let fixture = try PlanFixture(self)
        try PGConnection.connect(fixture.sources[0]).execute(usersDDL)
        try assertRefused(fixture, config: try fixture.writeConfig(), contains: ["table users is missing on source s1"])
    }

    func testRefusesATableWithoutAUsableKey() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint NOT NULL, email text); CREATE UNIQUE INDEX ON users (email)")
        try assertRefused(
            fixture, config: try fixture.writeConfig(),
            contains: ["table users on source s0 has no primary key or unique index over non-null columns", "source s1 has no primary key"])
    }

    func testRefusesAMissingNullableOrUnsupportedShardKey() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(
            """
            CREATE TABLE a (id bigint PRIMARY KEY);
            CREATE TABLE b (id bigint PRIMARY KEY, user_id bigint);
            CREATE TABLE c (id bigint PRIMARY KEY, user_id numeric NOT NULL);
            """)
        let config = try fixture.writeConfig(tables: [("a", "user_id"), ("b", "user_id"), ("c", "user_id")])
        try assertRefused(fixture, config: config, contains: [
            "table a on source s0: shard key column user_id does not exist",
            "table b on source s0: shard key column user_id is nullable",
            "table c on source s1: shard key column user_id is numeric, which hash sharding does not support",
        ])
        let modulo = try fixture.writeConfig(tables: [("users", "email")], function: "modulo")
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
        try assertRefused(fixture, config: modulo, contains: ["shard key column email is text, which modulo sharding does not support"])
    }

    func testRefusesColumnsThatDifferBetweenSourcesOrOnATarget() throws {
        let fixture = try PlanFixture(self)
        try PGConnection.connect(fixture.sources[0]).execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, age int)")
        try PGConnection.connect(fixture.sources[1]).execute("CREATE TABLE users (id bigint PRIMARY KEY, email varchar(20))")
        try PGConnection.connect(fixture.targets[1]).execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, age bigint)")
        try assertRefused(fixture, config: try fixture.writeConfig(), contains: [
            "table users: column email is character varying(20) on source s1 but text on source s0",
            "table users: column age is missing on source s1 but exists on source s0",
            "table users: column age is bigint on target t1 but integer on source s0",
        ])
    }

    func testRefusesANonEmptyTargetTableThatIsNotASourceUnlessTheMigrationIsUnderWay() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(usersDDL + "; INSERT INTO users (id, name) VALUES (1, 'a'), (2, 'b')")
        try PGConnection.connect(fixture.targets[2]).execute(usersDDL + "; INSERT INTO users (id, name) VALUES (99, 'z')")
        let config = try fixture.writeConfig()
        try assertRefused(fixture, config: config, contains: ["table users on target t2 already holds rows"])

        // Recorded as under way in the metadata: plan shows the recorded state instead.
        XCTAssertEqual(try ReshardCLI.run(["init", "--metadata", fixture.metadata.unsafeRawValue]).status, 0)
        try PGConnection.connect(fixture.metadata).execute(
            "INSERT INTO reshard.migrations (name, phase, plan) VALUES ('plan-test', 'backfilling', '{}')")
        let outcome = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("migration is under way: phase backfilling"), outcome.stdout)
    }

    func testRefusesBadSplitPointsAndBoundariesWithFileAndLine() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(usersDDL)
        for (function, extra, expected) in [
            ("hash", "  split_points: [5, -5]\n", "reshard.yml:9: target: split_points must be strictly ascending"),
            ("hash", "  split_points: [5]\n", "reshard.yml:9: target: split_points must have 2 values for 3 shards"),
            ("range", "  boundaries: [100]\n", "reshard.yml:9: target: boundaries must have 2 values"),
            ("range", "  boundaries: [100, 100]\n", "strictly ascending"),
            ("range", "", "range needs boundaries"),
        ] {
            try assertRefused(fixture, config: try fixture.writeConfig(function: function, extraTarget: extra), contains: [expected])
        }
    }
}
