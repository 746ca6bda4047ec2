import Foundation
import XCTest

@testable import ReshardCore

/// The catch-up's pure parts: the per-shard lane limit and the (table, target) locks of
/// `CatchUpGate`, and the batch size adapting to the round's duration.
final class CatchUpLaneTests: XCTestCase {
    /// Records how many bodies run at once per shard, and the most ever seen.
    private final class Occupancy: @unchecked Sendable {
        private let lock = NSLock()
        private var now: [String: Int] = [:]
        private(set) var most: [String: Int] = [:]
        func enter(_ shards: [String]) {
            lock.withLock { for s in Set(shards) { now[s, default: 0] += 1; most[s] = max(most[s] ?? 0, now[s]!) } }
        }
        func leave(_ shards: [String]) { lock.withLock { for s in Set(shards) { now[s, default: 0] -= 1 } } }
        var peak: [String: Int] { lock.withLock { most } }
    }

    /// Runs `lanes` (shards per lane) on threads at once through `gate`, each holding its slots ~20 ms.
    private func run(_ lanes: [[String]], gate: CatchUpGate, rounds: Int = 3) -> [String: Int] {
        let occupancy = Occupancy()
        let done = DispatchGroup()
        for shards in lanes {
            done.enter()
            Thread {
                for _ in 0..<rounds {
                    try? gate.withSlots(shards) {
                        occupancy.enter(shards)
                        usleep(20_000)
                        occupancy.leave(shards)
                    }
                }
                done.leave()
            }.start()
        }
        done.wait()
        return occupancy.peak
    }

    /// One source, three targets: at most the limit of lanes run on the source at once, and the
    /// limit is reached (the lanes do run side by side).
    func testLanesOnAShardStayWithinTheLimitAndUseIt() {
        let lanes = ["t0", "t1", "t2"].map { ["s0", $0] }
        XCTAssertEqual(run(lanes, gate: CatchUpGate(limitPerShard: 1))["s0"], 1)
        let two = run(lanes, gate: CatchUpGate(limitPerShard: 2))
        XCTAssertEqual(two["s0"], 2)
        XCTAssertEqual(two["t0"], 1)
    }

    /// Two sources into shared targets: the limit holds on every shard, sources and targets.
    func testTheLimitHoldsOnTargetsFedBySeveralSources() {
        let lanes = ["s0", "s1", "s2"].flatMap { s in ["t0", "t1"].map { [s, $0] } }
        let peak = run(lanes, gate: CatchUpGate(limitPerShard: 2))
        for (shard, most) in peak { XCTAssertLessThanOrEqual(most, 2, shard) }
        XCTAssertEqual(peak["t0"], 2)
    }

    /// A lane naming one shard twice (a target that is its source's database) takes one slot, so
    /// it can run under a limit of 1 instead of waiting for itself forever.
    func testALaneOnItsOwnSourceDatabaseTakesOneSlot() {
        XCTAssertEqual(run([["s0", "s0"]], gate: CatchUpGate(limitPerShard: 1), rounds: 1)["s0"], 1)
    }

    /// A limit below one would stop every lane: it counts as one.
    func testALimitBelowOneCountsAsOne() {
        XCTAssertEqual(CatchUpGate(limitPerShard: 0).limitPerShard, 1)
    }

    /// Work for one (table, target) never overlaps, whatever the slots allow; other pairs do.
    func testOneTableAndTargetAtATime() {
        let gate = CatchUpGate(limitPerShard: 8)
        let occupancy = Occupancy()
        let done = DispatchGroup()
        for i in 0..<6 {
            let target = i % 2 == 0 ? "t0" : "t1"
            done.enter()
            Thread {
                try? gate.exclusively(table: "users", target: target) {
                    occupancy.enter([target])
                    usleep(20_000)
                    occupancy.leave([target])
                }
                done.leave()
            }.start()
        }
        done.wait()
        XCTAssertEqual(occupancy.peak, ["t0": 1, "t1": 1])
    }

    /// Full batches double while a round is quick, halve when it is slow, within the range.
    func testTheBatchSizeFollowsTheRoundsDuration() {
        XCTAssertEqual(CatchUpApplier.adapted(10_000, took: 0.2), 20_000)
        XCTAssertEqual(CatchUpApplier.adapted(10_000, took: 1.0), 10_000)
        XCTAssertEqual(CatchUpApplier.adapted(10_000, took: 3.0), 5_000)
        XCTAssertEqual(CatchUpApplier.adapted(40_000, took: 0.1), CatchUpApplier.batchRange.upperBound)
        XCTAssertEqual(CatchUpApplier.adapted(300, took: 9), CatchUpApplier.batchRange.lowerBound)
        var limit = 10_000
        for _ in 0..<10 { limit = CatchUpApplier.adapted(limit, took: 0.1) }
        XCTAssertEqual(limit, 50_000, "quick rounds reach the top and stay there")
        for _ in 0..<20 { limit = CatchUpApplier.adapted(limit, took: 5) }
        XCTAssertEqual(limit, 200, "slow rounds reach the floor and stay there")
    }
}
