@testable import ReshardCore
import XCTest

final class CutoverDrainTests: XCTestCase {
    /// The drain's appliers hold 1 + targets sessions each on their source through the stall:
    /// their number follows the session budget, so a wide migration does not take four times the
    /// sessions of one applier while the application runs.
    func testTheGroupsPerSourceFitTheSessionBudget() {
        XCTAssertEqual(CutoverDrain.groupCount(tables: 10, targets: 4, maxConnectionsPerShard: 4), 3)
        XCTAssertEqual(CutoverDrain.groupCount(tables: 10, targets: 16, maxConnectionsPerShard: 4), 1)
        XCTAssertEqual(CutoverDrain.groupCount(tables: 2, targets: 3, maxConnectionsPerShard: 4), 2)
        XCTAssertEqual(CutoverDrain.groupCount(tables: 10, targets: 3, maxConnectionsPerShard: 8), 4)
        XCTAssertEqual(CutoverDrain.groupCount(tables: 10, targets: 40, maxConnectionsPerShard: 1), 1)
        for targets in 1...32 {
            let groups = CutoverDrain.groupCount(tables: 10, targets: targets, maxConnectionsPerShard: 4)
            XCTAssertTrue(groups == 1 || groups * (1 + targets) <= 16, "\(targets) targets: \(groups) groups")
        }
    }
}
