import Foundation
import XCTest

/// The README's main job must work as written; it also covers `apply --until caught-up` resuming
/// a migration that was in sync while the application kept writing.
final class DemoTests: XCTestCase {
    func testDemoMovesTwoToThreeVerifiesCutsOverAndCleansUpUnderWrites() throws {
        let outcome = try ReshardCLI.run(["demo", "--users", "3000"])
        XCTAssertEqual(outcome.status, 0, outcome.stdout + outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("verify: identical,"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("verify demo-2-to-3: all 3 table(s) identical"), outcome.stdout)
        XCTAssertFalse(outcome.stdout.contains("DIFFERENT"), outcome.stdout)
        // Cutover, rollback and cutover again under the application's writes, then cleanup.
        XCTAssertTrue(outcome.stdout.contains("switch 3 (cutover): writes held"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("write stall seen by the application over 3 switches: p50"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("removed the write fence on every shard"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("removed the clusters"), outcome.stdout)
    }
}
