@testable import ReshardCore
import XCTest

final class ReplicaLagEstimateTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)

    func testAnIdlePrimaryIsNoLagHoweverOldTheLastReplayedCommit() {
        var estimate = ReplicaLag.Estimate()
        for second in 0..<10 {
            estimate.sample(primaryLSN: 500, at: t0.addingTimeInterval(Double(second)))
            XCTAssertEqual(estimate.lag(replayed: 500, sinceLastReplay: 3600, at: t0.addingTimeInterval(Double(second))), 0)
        }
    }

    func testAReplicaBehindLagsByTheAgeOfTheOldestUnreplayedSample() {
        var estimate = ReplicaLag.Estimate()
        // The primary writes 100 bytes of WAL a second; the replica replays what it had 5 s earlier.
        var lag = 0.0
        for second in 0...20 {
            let now = t0.addingTimeInterval(Double(second))
            estimate.sample(primaryLSN: UInt64(1000 + 100 * second), at: now)
            lag = estimate.lag(replayed: UInt64(1000 + 100 * max(0, second - 5)), sinceLastReplay: 5, at: now)
        }
        // What the primary wrote after second 15 is missing: the oldest such sample is second 16's.
        // A lower bound, short of the true 5 s by less than one check interval.
        XCTAssertEqual(lag, 4, accuracy: 0.001)
        XCTAssertLessThanOrEqual(estimate.samples.count, 6, "replayed samples are dropped")
        // Caught up: no lag, although the last replayed commit is old (then idle).
        let later = t0.addingTimeInterval(60)
        estimate.sample(primaryLSN: 3000, at: later)
        XCTAssertEqual(estimate.lag(replayed: 3000, sinceLastReplay: 40, at: later), 0)
        // A first write after the quiet counts from when it was seen, not from the old commit.
        estimate.sample(primaryLSN: 3100, at: later.addingTimeInterval(1))
        XCTAssertEqual(estimate.lag(replayed: 3000, sinceLastReplay: 41, at: later.addingTimeInterval(1.5)), 0.5, accuracy: 0.001)
    }

    func testLSNText() {
        XCTAssertEqual(ReplicaLag.lsn("0/0"), 0)
        XCTAssertEqual(ReplicaLag.lsn("16/B374D848"), 0x16_B374_D848)
        XCTAssertNil(ReplicaLag.lsn("nope"))
    }
}
