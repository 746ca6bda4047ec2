import Foundation
import XCTest

@testable import ReshardCore

/// The control loop's wake-up: a worker ending a slice ends the loop's wait at once. The bounds
/// below are far from any timing goal: a wait that a signal did not end would run its full 30 s.
final class ControlLoopSignalTests: XCTestCase {
    func testASignalFromAnotherThreadEndsTheWait() {
        let signal = ControlLoopSignal()
        let waiting = Date()
        let thread = Thread { signal.signal() }
        thread.start()
        signal.wait(30)
        XCTAssertLessThan(Date().timeIntervalSince(waiting), 10)
    }

    /// A slice that ends while the loop is busy (not waiting) still wakes its next wait, once.
    func testASignalGivenBeforeTheWaitEndsItAndIsUsedUp() {
        let signal = ControlLoopSignal()
        signal.signal()
        let first = Date()
        signal.wait(30)
        XCTAssertLessThan(Date().timeIntervalSince(first), 10)
        let second = Date()
        signal.wait(0.2)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(second), 0.19, "the signal was used up by the first wait")
    }
}
