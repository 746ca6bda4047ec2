import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// Small migrations of hand-made tables from the fixture's two sources to two fresh targets
/// (`t1`, `t2` of `PlanFixture`) under `hash`, and an independent check of where rows ended up.
extension PlanFixture {
    /// The two fresh targets: hash over two shards puts `hash < 0` on the first and the rest on
    /// the second (Citus's ranges, written out here rather than asked of reshard).
    var freshTargets: [ConnectionString] { [targets[1], targets[2]] }

    func writeTwoTargetConfig(tables: [(String, String)]) throws -> String {
        try writeConfig(tables: tables, targets: freshTargets)
    }

    /// Runs `apply --until caught-up` and fails the test if it does not end within `timeout`.
    @discardableResult
    func applyUntilCaughtUp(_ config: String, timeout: TimeInterval = 120, file: StaticString = #filePath, line: UInt = #line) throws
        -> ReshardCLI.Outcome
    {
        let apply = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up"])
        var status: Int32 = 0
        let ended = eventually(timeout: timeout) {
            var raw: Int32 = 0
            guard waitpid(apply.pid, &raw, WNOHANG) == apply.pid else { return false }
            status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return true
        }
        if !ended {
            apply.signal(SIGKILL)
            XCTFail("apply did not catch up within \(Int(timeout)) s: \(apply.stderr)", file: file, line: line)
        }
        return ReshardCLI.Outcome(status: ended ? status : -1, stdout: apply.stdout, stderr: apply.stderr)
    }

    /// Checks with independent SQL that each fresh target holds exactly the source rows whose
    /// `hash` (e.g. `hashint8(user_id)`) falls in its range, comparing every row's text.
    func assertTwoTargetsMatchSources(
        _ table: String, hash: String, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        for (t, condition) in ["\(hash) < 0", "\(hash) >= 0"].enumerated() {
            var expected: [String] = []
            for source in sources {
                expected += try Self.rowTexts("SELECT x::text FROM \(table) x WHERE \(condition)", on: source)
            }
            let actual = try Self.rowTexts("SELECT x::text FROM \(table) x", on: freshTargets[t])
            XCTAssertEqual(actual, expected.sorted(), "\(table) on target \(t)", file: file, line: line)
        }
    }

    /// Row texts, sorted, under fixed settings (so both sides print values alike).
    static func rowTexts(_ sql: String, on dsn: ConnectionString) throws -> [String] {
        let conn = try PGConnection.connect(
            dsn, settings: ["TimeZone": "UTC", "DateStyle": "ISO, YMD", "extra_float_digits": "1"])
        let result = try conn.query(sql)
        return (0..<result.rowCount).map { result[$0, 0] ?? "NULL" }.sorted()
    }
}

/// Login roles on the shared clusters, for tests of what reshard and applications may do
/// without superuser rights.
enum TestRoles {
    /// Creates `name` as a login role (non-superuser) on both shared clusters, with the
    /// superuser's SCRAM verifier as its password, so the clusters' password file serves it too.
    /// Dropped when the test ends, after the databases of a fixture made later are dropped:
    /// create roles before the fixture.
    static func create(_ name: String, _ test: XCTestCase) throws {
        let clusters = try TestClusters.shared.clusters()
        for cluster in clusters {
            let admin = try PGConnection.connect(cluster.connectionString())
            let statement = try admin.query(
                "SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER PASSWORD %L', $1::text, rolpassword) FROM pg_authid WHERE rolname = 'postgres'",
                [name])
            try admin.execute(statement[0, 0]!)
        }
        test.addTeardownBlock {
            for cluster in clusters {
                let admin = try PGConnection.connect(cluster.connectionString())
                try admin.execute("DROP ROLE IF EXISTS \(try admin.quoteIdentifier(name))")
            }
        }
    }

    /// `dsn` with another user.
    static func dsn(_ dsn: ConnectionString, as user: String) throws -> ConnectionString {
        var options = dsn.options
        options["user"] = user
        return try ConnectionString(ConnectionString.keywordString(options))
    }

    /// Makes `role` the owner of every database of `fixture`.
    static func giveDatabases(of fixture: PlanFixture, to role: String) throws {
        for dsn in fixture.sources + fixture.targets + [fixture.metadata] {
            let conn = try PGConnection.connect(dsn)
            try conn.execute("ALTER DATABASE \(try conn.quoteIdentifier(dsn.endpoint.database)) OWNER TO \(try conn.quoteIdentifier(role))")
        }
    }
}
