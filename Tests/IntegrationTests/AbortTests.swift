import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 14: abort is idempotent, says what it leaves behind, and refuses a mistyped name.
final class AbortTests: XCTestCase {
    private func count(_ table: String, on dsn: ConnectionString) throws -> Int {
        try PGConnection.connect(dsn).query("SELECT count(*) FROM \(table)").get(0, 0, as: Int.self)
    }

    func testDropTargetDataAfterAPlainAbortAndWhatStaysBehind() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.005)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let checksum = "SELECT count(*)::text || '/' || coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM %@ x"
        func contents(_ dsn: ConnectionString, _ name: (String) -> String = { $0 }) throws -> [String] {
            let conn = try PGConnection.connect(dsn)
            return try ReferenceData.tables.map { try conn.query(checksum.replacingOccurrences(of: "%@", with: name($0.name)))[0, 0]! }
        }
        let own = try contents(fixture.sources[0])
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        XCTAssertEqual(try contents(fixture.targets[0]), own, "t0's live tables (s0's) hold s0's rows only")
        XCTAssertGreaterThan(try count(fixture.targetTable("users", 0), on: fixture.targets[0]), 0, "t0 is built in reshard_build")

        let plain = try ReshardCLI.run(["abort", "-c", config])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(
            plain.stdout.contains(
                "copies for t0 (the database of source s0) are kept in reshard_build, apart from its live tables; abort --drop-target-data drops them"),
            plain.stdout)
        XCTAssertFalse(plain.stdout.contains("for t1"), "t1 is not a source: \(plain.stdout)")
        for source in fixture.sources {
            XCTAssertEqual(try PGConnection.connect(source).query("SELECT to_regnamespace('reshard_shim') IS NULL").get(0, 0, as: Bool.self), true)
        }
        XCTAssertGreaterThan(try count("users", on: fixture.targets[1]), 0, "a plain abort keeps the copies")

        // Mistyped name: refused as unregistered, nothing changed anywhere.
        let mistyped = fixture.directory + "/mistyped.yml"
        try (try String(contentsOfFile: config, encoding: .utf8)).replacingOccurrences(of: "migration: plan-test", with: "migration: plan-tset")
            .write(toFile: mistyped, atomically: true, encoding: .utf8)
        let before = try fixture.snapshot()
        let wrong = try ReshardCLI.run(["abort", "-c", mistyped, "--drop-target-data"])
        XCTAssertEqual(wrong.status, 2, wrong.stderr)
        XCTAssertEqual(wrong.stderr, "reshard: error: migration plan-tset is not registered; nothing to abort\n")
        XCTAssertEqual(try fixture.snapshot(), before)

        let drop = try ReshardCLI.run(["abort", "-c", config, "--drop-target-data", "--json"])
        XCTAssertEqual(drop.status, 0, drop.stderr)
        let report = try JSONDecoder().decode(MigrationAbort.Report.self, from: Data(drop.stdout.utf8))
        XCTAssertTrue(report.done.contains("emptied users on t1"), "\(report.done)")
        XCTAssertTrue(report.done.contains("dropped reshard_build.users on t0"), "\(report.done)")
        XCTAssertEqual(report.leftInPlace, [])
        for (table, _) in ReferenceData.tables {
            XCTAssertEqual(try count(table, on: fixture.targets[1]), 0, table)
            XCTAssertEqual(try count(table, on: fixture.targets[2]), 0, table)
        }
        XCTAssertEqual(try contents(fixture.targets[0]), own, "t0's live tables are never touched")
        XCTAssertEqual(
            try PGConnection.connect(fixture.targets[0]).query("SELECT to_regnamespace('reshard_build') IS NULL").get(0, 0, as: Bool.self), true,
            "the emptied build schema is gone")
        XCTAssertEqual(try ReshardCLI.status(config)?.phase, "aborted")
    }
}
