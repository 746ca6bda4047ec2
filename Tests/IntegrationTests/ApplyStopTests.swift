import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// How `apply` ends: the exit code scripts chain on, and the one line saying where it stopped.
final class ApplyStopTests: XCTestCase {
    private func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try ReshardCLI.run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }

    /// Issue 15.8: `apply --until caught-up` stopped by a signal during the backfill exits 4 (not 0,
    /// so `&& next-step` does not run) and says where it stopped; `--until backfilled` reaching its
    /// goal exits 0 and says so; a plain apply stopped by a signal exits 0.
    func testStoppedBeforeTheGoalExitsFourAndSaysWhere() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.02)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)

        let slow = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up", "--max-rows-per-second", "2000"])
        XCTAssertTrue(try eventually(timeout: 120) {
            guard let s = try status(config) else { return false }
            return s.phase == "backfilling" && s.rowsCopied > 0
        }, slow.stderr)
        slow.signal(SIGTERM)
        XCTAssertEqual(slow.wait(), ReshardError.Code.stoppedEarly.exitCode, slow.stdout + slow.stderr)
        let stopLine = slow.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(stopLine.contains("stopped in phase backfilling before reaching caught-up"), slow.stdout)
        XCTAssertTrue(stopLine.contains("--until caught-up"), "how to continue: \(stopLine)")
        XCTAssertFalse(slow.stderr.contains("error"), slow.stderr)
        XCTAssertNotEqual(try status(config)?.slices.allSatisfy(\.done), true, "the test must stop it before the end of the backfill")

        let backfilled = try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"])
        XCTAssertEqual(backfilled.status, 0, backfilled.stderr)
        XCTAssertTrue(backfilled.stdout.contains("reached backfilled"), backfilled.stdout)
        XCTAssertEqual(try status(config)?.slices.allSatisfy(\.done), true)

        let forever = try ReshardCLI.start(["apply", "-c", config])
        XCTAssertTrue(try eventually(timeout: 120) { try status(config)?.phase == "in-sync" }, forever.stderr)
        forever.signal(SIGINT)
        XCTAssertEqual(forever.wait(), 0, forever.stderr)
        XCTAssertTrue(forever.stdout.contains("stopped in phase in-sync"), forever.stdout)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }
}
