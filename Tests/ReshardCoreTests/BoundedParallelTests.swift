import Foundation
@testable import ReshardCore
import XCTest

final class BoundedParallelTests: XCTestCase {
    /// Counts the jobs running at once. Each job stays until one more than `atOnce` are running
    /// (which a bounded runner never allows) or 50 ms have passed, so a runner that started more
    /// jobs at once is seen doing so.
    private final class Gauge: @unchecked Sendable {
        let lock = NSCondition()
        var running = 0, most = 0, ran = 0

        func job(atOnce: Int) {
            lock.lock()
            running += 1; most = max(most, running); ran += 1
            lock.broadcast()
            let deadline = Date().addingTimeInterval(0.05)
            while running <= atOnce, lock.wait(until: deadline) {}
            running -= 1
            lock.unlock()
        }
    }

    func testNoMoreThanAtOnceJobsRunTogetherAndEveryJobRuns() throws {
        let gauge = Gauge(), total = 12
        let jobs: [@Sendable () throws -> Void] = (0..<total).map { _ in { gauge.job(atOnce: 3) } }
        let took = try BoundedParallel.run("test", atOnce: 3, jobs)
        XCTAssertEqual(took.count, total)
        XCTAssertEqual(gauge.ran, total)
        XCTAssertLessThanOrEqual(gauge.most, 3, "jobs running at once")
    }

    func testTheFirstFailureIsThrownAndNoJobStartsAfterIt() {
        struct Failed: Error, Equatable { let index: Int }
        let gauge = Gauge()
        var jobs: [@Sendable () throws -> Void] = [{ throw Failed(index: 0) }]
        jobs += (1..<8).map { _ in { gauge.job(atOnce: 1) } }
        XCTAssertThrowsError(try BoundedParallel.run("test", atOnce: 1, jobs)) { XCTAssertEqual($0 as? Failed, Failed(index: 0)) }
        XCTAssertEqual(gauge.ran, 0)
    }

    func testMapReturnsEachItemsValueInTheItemsOrderWhileRunningThemTogether() throws {
        let gauge = Gauge()
        let values = try BoundedParallel.map("test", Array(0..<6), atOnce: 3) { (item: Int) -> Int in
            gauge.job(atOnce: 3)
            return item * 10
        }
        XCTAssertEqual(values, [0, 10, 20, 30, 40, 50])
        XCTAssertGreaterThan(gauge.most, 1, "items running at once")
        XCTAssertLessThanOrEqual(gauge.most, 3, "items running at once")
    }

    func testMapThrowsTheFirstItemsFailure() {
        struct Failed: Error, Equatable { let item: Int }
        XCTAssertThrowsError(try BoundedParallel.map("test", [1, 2], atOnce: 2) { (item: Int) -> Int in
            if item == 2 { throw Failed(item: item) }
            return item
        }) { XCTAssertEqual($0 as? Failed, Failed(item: 2)) }
    }
}
