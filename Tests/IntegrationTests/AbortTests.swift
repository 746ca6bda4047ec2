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
        let ownRows = try count("users", on: fixture.sources[0])
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        let copiedIntoT0 = try count("users", on: fixture.targets[0]) - ownRows
        XCTAssertGreaterThan(copiedIntoT0, 0, "t0 (s0's database) received copies")

        let plain = try ReshardCLI.run(["abort", "-c", config])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(
            plain.stdout.contains("rows copied into t0 (the database of source s0) were left in place: they cannot be told from its own rows"),
            plain.stdout)
        XCTAssertFalse(plain.stdout.contains("into t1"), "t1 is not a source: \(plain.stdout)")
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
        XCTAssertEqual(report.leftInPlace.count, 1)
        for (table, _) in ReferenceData.tables {
            XCTAssertEqual(try count(table, on: fixture.targets[1]), 0, table)
            XCTAssertEqual(try count(table, on: fixture.targets[2]), 0, table)
        }
        XCTAssertEqual(try count("users", on: fixture.targets[0]), ownRows + copiedIntoT0, "t0 is a source: nothing is deleted there")
        XCTAssertEqual(try ReshardCLI.status(config)?.phase, "aborted")
    }

    /// With today's placement described (`source.function`), --drop-target-data also deletes the
    /// copies from the target that is a source: it ends with exactly its own rows again.
    func testDropTargetDataWithTheSourceFunctionLeavesTheSharedTargetAsItWas() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.005)
        let config = try fixture.writeConfig(tables: ReferenceData.tables, sourceFunction: "modulo", sourceKeys: ["handles": "user_id"])
        let checksum = "SELECT count(*)::text || '/' || coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM %@ x"
        func contents(_ dsn: ConnectionString) throws -> [String] {
            let conn = try PGConnection.connect(dsn)
            return try ReferenceData.tables.map { try conn.query(checksum.replacingOccurrences(of: "%@", with: $0.name))[0, 0]! }
        }
        let before = try contents(fixture.sources[0])
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"]).status, 0)
        XCTAssertNotEqual(try contents(fixture.targets[0]), before, "t0 received copies")

        let drop = try ReshardCLI.run(["abort", "-c", config, "--drop-target-data"])
        XCTAssertEqual(drop.status, 0, drop.stderr)
        XCTAssertTrue(drop.stdout.contains("copied row(s) of users from t0: source.function places them on another source"), drop.stdout)
        XCTAssertFalse(drop.stdout.contains("left in place"), drop.stdout)
        XCTAssertEqual(try contents(fixture.targets[0]), before, "t0 holds exactly s0's own rows again")
        XCTAssertEqual(try count("users", on: fixture.targets[1]), 0)
    }
}
