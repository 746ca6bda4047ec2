import Foundation
import XCTest

@testable import ReshardCore

final class BacklogTrendTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    func testProducedIsWhatTheBacklogGrewByPlusWhatWasApplied() throws {
        var trend = BacklogTrend()
        trend.add(at: t0, backlog: 1000, applied: 0)
        XCTAssertNil(trend.rates, "one sample says nothing")
        for second in 1...8 { trend.add(at: t0 + Double(second), backlog: 1000 + Int64(second) * 600, applied: Int64(second) * 400) }
        let rates = try XCTUnwrap(trend.rates)
        XCTAssertEqual(rates.produced, 1000, accuracy: 0.001)
        XCTAssertEqual(rates.applied, 400, accuracy: 0.001)
        XCTAssertLessThanOrEqual(trend.samples.count, 7, "only the last few seconds are kept")
        let behind = MigrationStatus.Runtime.trend(source: "s1", produced: rates.produced, applied: rates.applied, backlog: 5800)
        XCTAssertTrue(behind.fallingBehind)
        XCTAssertNil(behind.etaSeconds)
        XCTAssertEqual(behind.text, "falling behind: 1,000 changes/s produced, 400 applied")
    }

    func testADrainingBacklogHasAnETA() {
        let draining = MigrationStatus.Runtime.trend(source: "s1", produced: 100, applied: 600, backlog: 5000)
        XCTAssertFalse(draining.fallingBehind)
        XCTAssertEqual(draining.etaSeconds ?? 0, 10, accuracy: 0.001)
        XCTAssertEqual(draining.text, "draining: 100 changes/s produced, 600 applied, in sync in ~10s")
        let empty = MigrationStatus.Runtime.trend(source: "s1", produced: 50, applied: 50, backlog: 0)
        XCTAssertFalse(empty.fallingBehind)
        XCTAssertNil(empty.etaSeconds)
        XCTAssertEqual(empty.text, "keeping up: 50 changes/s produced, 50 applied")
    }
}
