import ReshardRehearse
import XCTest

final class FaultScheduleTests: XCTestCase {
    let kinds = FaultSchedule.Kind.allCases

    func testTheSameSeedGivesTheSameFaultsAtTheSamePoints() {
        let a = FaultSchedule.make(seed: 42, crashes: 9, kinds: kinds, sources: 2, targets: 3)
        let b = FaultSchedule.make(seed: 42, crashes: 9, kinds: kinds.reversed(), sources: 2, targets: 3)
        XCTAssertEqual(a, b, "the order kinds are offered in does not matter")
        XCTAssertEqual(a.faults.count, 9)
        let c = FaultSchedule.make(seed: 43, crashes: 9, kinds: kinds, sources: 2, targets: 3)
        XCTAssertNotEqual(a, c)
    }

    func testEveryKindComesOnceBeforeAnyKindTwice() {
        for seed in UInt64(0)..<50 {
            let schedule = FaultSchedule.make(seed: seed, crashes: kinds.count, kinds: kinds, sources: 2, targets: 3)
            XCTAssertEqual(Set(schedule.faults.map(\.kind)), Set(kinds), "seed \(seed)")
        }
        let twice = FaultSchedule.make(seed: 1, crashes: kinds.count + 2, kinds: kinds, sources: 2, targets: 3)
        XCTAssertEqual(Set(twice.faults.map(\.kind)), Set(kinds))
    }

    func testPointsAreInsideTheStepsInPlanOrderAndShardsInRange() {
        let schedule = FaultSchedule.make(seed: 7, crashes: 12, kinds: kinds, sources: 2, targets: 3)
        XCTAssertEqual(schedule.faults.map(\.point), schedule.faults.map(\.point).sorted())
        for fault in schedule.faults {
            XCTAssertTrue(fault.point.at >= 0.1 && fault.point.at < 0.95, "\(fault.point)")
            XCTAssertTrue(fault.shard >= 0 && fault.shard < 5)
            if fault.kind == .restartTarget { XCTAssertLessThan(fault.shard, 3) }
            if fault.kind == .restartSource { XCTAssertLessThan(fault.shard, 2) }
        }
        XCTAssertTrue(Set(schedule.faults.map(\.point.step)).count == 2, "faults land in both the backfill and the catch-up")
    }

    func testNoCrashesNoFaults() {
        XCTAssertTrue(FaultSchedule.make(seed: 1, crashes: 0, kinds: kinds, sources: 2, targets: 3).faults.isEmpty)
        XCTAssertTrue(FaultSchedule.make(seed: 1, crashes: 3, kinds: [], sources: 2, targets: 3).faults.isEmpty)
    }
}
