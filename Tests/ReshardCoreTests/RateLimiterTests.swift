import Foundation
import XCTest

@testable import ReshardCore

final class RateLimiterTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    func testNoLimitNeverWaits() {
        var limiter = RateLimiter(at: t0)
        XCTAssertEqual(limiter.reserve(1_000_000, at: t0), 0)
        XCTAssertNil(limiter.maxBatchRows)
    }

    /// The whole debt is waited for: nothing like a cap of a few seconds per batch.
    func testTheFullDebtIsWaitedForAndBatchesHoldASecondOfTheLimit() {
        var limiter = RateLimiter(limit: 2000, at: t0)
        XCTAssertEqual(limiter.maxBatchRows, 2000)
        XCTAssertEqual(limiter.reserve(20_000, at: t0), 0, "a bucket not in debt lets one batch start")
        XCTAssertEqual(limiter.reserve(1, at: t0), 10, accuracy: 0.001, "20,000 rows at 2,000/s: 10 s of debt")
        XCTAssertEqual(limiter.reserve(1, at: t0 + 9), 1, accuracy: 0.001)
        XCTAssertEqual(limiter.reserve(2000, at: t0 + 10), 0)
    }

    /// Simulated workers copying as fast as the limiter lets them: the rows per 10 s stay within
    /// 10% of the limit, also across a change of the limit.
    func testSimulatedWorkersStayWithinTenPercentOverAnyTenSeconds() {
        var limiter = RateLimiter(limit: 1000, at: t0)
        var copiedAt: [(Date, Int)] = []
        // Four workers, each batch takes 50 ms and copies a third of the keys it reserved.
        var ready = [t0, t0, t0, t0]
        while let next = ready.min(), next < t0 + 60 {
            let worker = ready.firstIndex(of: next)!
            let now = next
            if now >= t0 + 30 { limiter.setLimit(3000, at: now) }
            let rows = limiter.maxBatchRows!
            let wait = limiter.reserve(rows, at: now)
            if wait > 0 {
                ready[worker] = now + max(min(wait, 0.5), 0.001)
                continue
            }
            let done = now + 0.05
            limiter.settle(unused: rows - rows / 3, at: done)
            copiedAt.append((done, rows / 3))
            ready[worker] = done
        }
        func rows(from start: Double) -> Int {
            copiedAt.filter { $0.0 >= t0 + start && $0.0 < t0 + start + 10 }.reduce(0) { $0 + $1.1 }
        }
        for start in stride(from: 1.0, through: 20, by: 0.5) {
            XCTAssertEqual(Double(rows(from: start)), 10_000, accuracy: 1_000, "window at \(start)s")
        }
        for start in stride(from: 32.0, through: 50, by: 0.5) {
            XCTAssertEqual(Double(rows(from: start)), 30_000, accuracy: 3_000, "window at \(start)s")
        }
    }

    func testALowerLimitSlowsAWaitingWorkerAndRemovingItFreesIt() {
        var limiter = RateLimiter(limit: 1000, at: t0)
        XCTAssertEqual(limiter.reserve(1000, at: t0), 0)
        limiter.setLimit(100, at: t0)
        XCTAssertEqual(limiter.reserve(1, at: t0), 10, accuracy: 0.001, "the debt is paid at the new rate")
        XCTAssertEqual(limiter.maxBatchRows, 100)
        limiter.setLimit(nil, at: t0)
        XCTAssertEqual(limiter.reserve(1_000_000, at: t0), 0)
    }
}
