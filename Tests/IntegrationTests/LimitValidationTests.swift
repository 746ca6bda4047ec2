import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 15.10: negative or absurd limits are refused up front (exit 2, one line naming the
/// option, nothing changed on any server) instead of pausing the backfill forever or failing
/// on the server.
final class LimitValidationTests: XCTestCase {
    func testBadLimitsAreRefusedNamingTheOptionAndChangeNothing() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.002)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let before = try fixture.snapshot()
        let cases: [([String], String)] = [
            (["apply", "-c", config, "--max-replica-lag=-1"], "--max-replica-lag"),
            (["apply", "-c", config, "--max-replica-lag", "10x"], "--max-replica-lag"),
            (["apply", "-c", config, "--max-backlog=-1"], "--max-backlog"),
            (["apply", "-c", config, "--max-backlog", "-1"], "--max-backlog"),
            (["apply", "-c", config, "--max-rows-per-second", "-5"], "--max-rows-per-second"),
            (["apply", "-c", config, "--max-rows-per-second", "99999999999"], "--max-rows-per-second"),
            (["throttle", "-c", config, "--max-rows-per-second", "99999999999"], "--max-rows-per-second"),
            (["throttle", "-c", config, "--max-rows-per-second", "-5"], "--max-rows-per-second"),
            (["throttle", "-c", config, "--max-rows-per-second", "100"], "migration plan-test is not registered"),
        ]
        for (arguments, named) in cases {
            // Before the fix some of these paused the backfill forever: bounded, not hung.
            let process = try ReshardCLI.start(arguments)
            let status = process.wait(timeout: 30)
            if status == nil { process.signal(SIGKILL) }
            let outcome = ReshardCLI.Outcome(status: status ?? -1, stdout: process.stdout, stderr: process.stderr)
            XCTAssertEqual(outcome.status, 2, "\(arguments): \(outcome.stderr)")
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains(named), "\(arguments): \(outcome.stderr)")
            XCTAssertFalse(outcome.stderr.contains("Missing value"), outcome.stderr)
        }
        XCTAssertEqual(try fixture.snapshot(), before, "nothing may change, not even the metadata schema")

        // The largest accepted limit is stored as it is.
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"]).status, 0)
        let throttle = try ReshardCLI.run(["throttle", "-c", config, "--max-rows-per-second", "2147483647", "--json"])
        XCTAssertEqual(throttle.status, 0, throttle.stderr)
        XCTAssertTrue(throttle.stdout.contains(#""maxRowsPerSecond":2147483647"#), throttle.stdout)
        XCTAssertEqual(
            try PGConnection.connect(fixture.metadata).query("SELECT max_rows_per_second FROM reshard.migrations").get(0, 0, as: Int.self),
            2_147_483_647)
    }
}
