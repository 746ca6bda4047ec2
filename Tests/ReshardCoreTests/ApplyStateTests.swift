import XCTest

@testable import ReshardCore

final class ApplyStateTests: XCTestCase {
    private func slices(_ keys: [(String, String, String)], done: Bool = false) -> [ApplyState.SliceKey: ApplyState.Slice] {
        Dictionary(uniqueKeysWithValues: keys.map {
            (ApplyState.SliceKey(table: $0.0, source: $0.1, target: $0.2),
             ApplyState.Slice(estimated: 10, copied: 0, lastKey: nil, done: done, staysInPlace: false))
        })
    }

    func testClaimsRespectTheConnectionLimitPerShard() {
        let state = ApplyState(slices: slices([("users", "s0", "t1"), ("users", "s0", "t2"), ("posts", "s1", "t1")]), sources: ["s0", "s1"])
        let first = state.claimSlice(limitPerShard: 1)
        XCTAssertEqual(first, .init(table: "posts", source: "s1", target: "t1"))
        // s1 and t1 are busy: only a slice using neither may start.
        let second = state.claimSlice(limitPerShard: 1)
        XCTAssertEqual(second, .init(table: "users", source: "s0", target: "t2"))
        XCTAssertNil(state.claimSlice(limitPerShard: 1))
        // A slice released unfinished (its worker hit an error) is taken again first...
        state.release(first!)
        XCTAssertEqual(state.claimSlice(limitPerShard: 1), first)
        // ...and once it is finished, t1 is free, but s0 still busy with the other slice.
        state.recordBatch(first!, rows: 10, lastKey: nil, done: true)
        state.release(first!)
        XCTAssertNil(state.claimSlice(limitPerShard: 1))
        state.release(second!)
        XCTAssertEqual(state.claimSlice(limitPerShard: 1), .init(table: "users", source: "s0", target: "t1"))
    }

    func testChangesOfATableAreAppliedOnlyOnceItsSlicesFromThatSourceAreCopied() {
        let state = ApplyState(slices: slices([("users", "s0", "t1"), ("users", "s0", "t2"), ("posts", "s0", "t1")]), sources: ["s0"])
        XCTAssertEqual(state.copiedTables(from: "s0"), [])
        state.recordBatch(.init(table: "users", source: "s0", target: "t1"), rows: 10, lastKey: ["9"], done: true)
        XCTAssertEqual(state.copiedTables(from: "s0"), [])
        state.recordBatch(.init(table: "users", source: "s0", target: "t2"), rows: 10, lastKey: ["9"], done: true)
        XCTAssertEqual(state.copiedTables(from: "s0"), ["users"])
        XCTAssertEqual(state.copiedRows, 20)
        XCTAssertFalse(state.caughtUp)
    }

    func testThrottleSpreadsRowsOverTime() {
        let state = ApplyState(slices: [:], sources: [])
        XCTAssertEqual(state.throttleDelay(rows: 1_000_000), 0, "no limit, no wait")
        state.setThrottle(maxRowsPerSecond: 1000, paused: false)
        XCTAssertEqual(state.throttleDelay(rows: 500), 0.5, accuracy: 0.05)
        XCTAssertEqual(state.throttleDelay(rows: 500), 1.0, accuracy: 0.05)
        state.setThrottle(maxRowsPerSecond: nil, paused: true)
        XCTAssertTrue(state.isPaused)
        XCTAssertEqual(state.throttleDelay(rows: 500), 0)
    }
}
