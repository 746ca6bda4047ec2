import Foundation
import XCTest

/// The README's main job must work as written; it also covers `apply --until caught-up` resuming
/// a migration that was in sync while the application kept writing.
final class DemoTests: XCTestCase {
    func testDemoMovesTwoToThreeAndVerifiesUnderWrites() throws {
        let outcome = try ReshardCLI.run(["demo", "--users", "3000"])
        XCTAssertEqual(outcome.status, 0, outcome.stdout + outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains("verify: identical,"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("verify demo-2-to-3: all 3 table(s) identical"), outcome.stdout)
        XCTAssertFalse(outcome.stdout.contains("DIFFERENT"), outcome.stdout)
        XCTAssertTrue(outcome.stdout.contains("removed the clusters"), outcome.stdout)
    }
}
