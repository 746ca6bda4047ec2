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

    func testABacklogOrALagThatCannotBeReadPausesTheBackfillAndSaysWhy() {
        let state = ApplyState(slices: [:], sources: ["s0", "s1"])
        XCTAssertNil(state.pauseReason(maxBacklog: 100, maxLagSeconds: 30), "no lag read yet is no reason to pause")
        state.setLag("s0", .seconds(3))
        XCTAssertNil(state.pauseReason(maxBacklog: 100, maxLagSeconds: 30))
        state.setLag("s1", .unreadable("connection refused"))
        XCTAssertEqual(state.pauseReason(maxBacklog: 100, maxLagSeconds: 30), "replication lag of s1 cannot be read (connection refused)")
        state.setLag("s1", .seconds(45))
        state.recordCatchUp(source: "s0", applied: 0, drained: false, backlog: (150, nil))
        XCTAssertEqual(
            state.pauseReason(maxBacklog: 100, maxLagSeconds: 30),
            "changelog backlog 150 > --max-backlog 100; replicas of s1 lag 45s > --max-replica-lag 30s")
    }

    func testRetriesAreEventsAndShowUntilTheWorkRecovers() {
        let state = ApplyState(slices: [:], sources: [])
        let since = Date(timeIntervalSince1970: 43_201)
        state.noteRetry("catch-up s1", .init(failures: 2, since: since, delay: 0.4, error: "s1 (...): connection refused", shard: "s1"))
        state.noteRetry("catch-up s1", .init(failures: 3, since: since, delay: 0.8, error: "s1 (...): connection refused", shard: "s1"))
        XCTAssertEqual(state.retries["catch-up s1"]?.failures, 3)
        state.noteRecovered("catch-up s1")
        state.noteRecovered("catch-up s1")
        XCTAssertTrue(state.retries.isEmpty)
        XCTAssertEqual(state.takeEvents(), [
            // The 3rd failure is not an event of its own: only the 1st, 2nd, 4th, 8th...
            .init(level: "warning", message: "retrying catch-up s1: s1 (...): connection refused (3rd attempt in 0.4s, failing since 12:00:01 UTC)", shard: "s1"),
            .init(level: "info", message: "catch-up s1 recovered after 3 failure(s)", shard: "s1"),
        ])
        XCTAssertEqual(state.takeEvents(), [])
        XCTAssertEqual([1, 2, 3, 4, 11, 12, 13, 21, 22, 101].map(MigrationStatus.Runtime.ordinal),
                       ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st"])
    }

    func testAWaitEndsEarlyOnStop() {
        let state = ApplyState(slices: [:], sources: [])
        let started = Date()
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { state.stop() }
        XCTAssertFalse(state.wait(30))
        XCTAssertLessThan(Date().timeIntervalSince(started), 5)
        XCTAssertFalse(state.reserveRows(10))
    }
}
