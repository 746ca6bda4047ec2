import Foundation
import XCTest

@testable import ReshardCore

final class WorkersTests: XCTestCase {
    func testStopWaitsForThreadsThatEndAndNamesThoseThatDoNot() {
        let workers = Workers()
        let state = ApplyState(slices: [:], sources: [])
        workers.start("waiter", count: 3) { _ in state.wait(60) }
        let stuck = DispatchSemaphore(value: 0)
        workers.start("stuck") { stuck.wait() }
        XCTAssertEqual(workers.runningNames, ["stuck", "waiter 0", "waiter 1", "waiter 2"])
        state.stop()
        let started = Date()
        XCTAssertEqual(workers.stop(grace: 0.5, afterCancel: 0.2), ["stuck"], "the waiters end on stop, the stuck one is named")
        XCTAssertLessThan(Date().timeIntervalSince(started), 5, "a stop is bounded")
        stuck.signal()
        XCTAssertEqual(workers.stop(grace: 5, afterCancel: 0), [])
        XCTAssertEqual(workers.runningNames, [])
    }
}
