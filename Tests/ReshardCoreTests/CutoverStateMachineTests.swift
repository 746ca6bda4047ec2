import XCTest

@testable import ReshardCore

final class CutoverStateMachineTests: XCTestCase {
    typealias Machine = CutoverStateMachine

    private func actions(_ command: Machine.Direction, _ phase: MigrationPhase, _ unfinished: Machine.Unfinished? = nil) throws -> [Machine.Action] {
        try Machine.actions(for: command, migration: "m", phase: phase, unfinished: unfinished)
    }

    private func assertRefused(_ body: @autoclosure () throws -> Any, line: UInt = #line) {
        XCTAssertThrowsError(try body(), line: line) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .refused, "\(error)", line: line)
        }
    }

    func testASwitchRunsOnlyFromTheLayoutThatServes() throws {
        XCTAssertEqual(try actions(.cutover, .inSync), [.run(.cutover)])
        XCTAssertEqual(try actions(.cutover, .rolledBack), [.run(.cutover)])
        XCTAssertEqual(try actions(.rollback, .cutOver), [.run(.rollback)])
        assertRefused(try actions(.rollback, .inSync))
        assertRefused(try actions(.rollback, .rolledBack))
        assertRefused(try actions(.cutover, .cutOver))
        for phase in [MigrationPhase.planned, .prepared, .backfilling, .catchingUp, .cleanedUp, .aborted] {
            assertRefused(try actions(.cutover, phase))
            assertRefused(try actions(.rollback, phase))
        }
    }

    /// A switch killed before its epoch was published is undone (then run again if the command
    /// asks for that direction); one killed after is completed (then switched back if asked).
    func testAnUnfinishedSwitchIsUndoneBeforeItsPublishAndCompletedAfter() throws {
        let barrier = Machine.Unfinished(direction: .cutover, published: false, reached: .barrier)
        let fenceOnly = Machine.Undo(restoreFence: true, swapBack: false)
        XCTAssertEqual(try actions(.cutover, .cuttingOver, barrier), [.undo(.cutover, fenceOnly), .run(.cutover)])
        XCTAssertEqual(try actions(.rollback, .cuttingOver, barrier), [.undo(.cutover, fenceOnly)])

        let published = Machine.Unfinished(direction: .cutover, published: true, reached: .release)
        XCTAssertEqual(try actions(.cutover, .cuttingOver, published), [.complete(.cutover)])
        XCTAssertEqual(try actions(.rollback, .cuttingOver, published), [.complete(.cutover), .run(.rollback)])

        let rollback = Machine.Unfinished(direction: .rollback, published: false, reached: .swap)
        let all = Machine.Undo(restoreFence: true, swapBack: true)
        XCTAssertEqual(try actions(.rollback, .rollingBack, rollback), [.undo(.rollback, all), .run(.rollback)])
        XCTAssertEqual(try actions(.cutover, .rollingBack, rollback), [.undo(.rollback, all)])
        // No record of the attempt at all: assume the worst (everything may have been reached).
        XCTAssertEqual(try actions(.cutover, .cuttingOver), [.undo(.cutover, all), .run(.cutover)])
    }

    func testAnUndoneSwitchReturnsToThePhaseItStartedFrom() throws {
        var phases = MigrationStateMachine(migration: "m", phase: .inSync)
        XCTAssertEqual("\(try phases.startCutover())", "in-sync -> cutting-over")
        XCTAssertEqual("\(try phases.cutoverUndone())", "cutting-over -> in-sync")
        _ = try phases.startCutover()
        XCTAssertEqual("\(try phases.cutoverComplete())", "cutting-over -> cut-over")
        XCTAssertThrowsError(try phases.cutoverUndone())
        XCTAssertEqual("\(try phases.startRollback())", "cut-over -> rolling-back")
        XCTAssertEqual("\(try phases.rollbackUndone())", "rolling-back -> cut-over")
        XCTAssertThrowsError(try phases.rollbackUndone())
    }

    func testUndoRestoresTheFenceFromTheBarrierOnAndSwapsBackFromTheSwapOn() {
        XCTAssertEqual(Machine.undo(reached: .checks), .init(restoreFence: false, swapBack: false))
        XCTAssertEqual(Machine.undo(reached: .catchUp), .init(restoreFence: false, swapBack: false))
        XCTAssertEqual(Machine.undo(reached: .barrier), .init(restoreFence: true, swapBack: false))
        XCTAssertEqual(Machine.undo(reached: .drain), .init(restoreFence: true, swapBack: false))
        XCTAssertEqual(Machine.undo(reached: .swap), .init(restoreFence: true, swapBack: true))
        XCTAssertEqual(Machine.steps(dryRun: true), [.checks])
        XCTAssertEqual(Machine.Step.allCases.filter(\.stalls), [.barrier, .drain, .sequenceCheck, .swap, .publish, .release])
    }

    func testFenceStatesRoundTripAndDurationsParse() throws {
        for serving in Fence.Serving.allCases {
            let state = Fence.State(epoch: 41, serving: serving)
            XCTAssertEqual(Fence.State(raw: state.raw), state)
        }
        XCTAssertEqual(try SwitchOptions.seconds("2s", option: "--max-stall"), 2)
        XCTAssertEqual(try SwitchOptions.seconds("500ms", option: "--max-stall"), 0.5)
        XCTAssertEqual(try SwitchOptions.seconds("10m", option: "--after"), 600)
        XCTAssertEqual(try SwitchOptions.seconds("1.5", option: "--after"), 1.5)
        XCTAssertThrowsError(try SwitchOptions.seconds("soon", option: "--after")) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .badInput)
            XCTAssertTrue("\(error)".contains("--after"), "\(error)")
        }
        XCTAssertThrowsError(try SwitchOptions.seconds("-1s", option: "--max-stall"))
    }

    /// The reversed plan feeds the old layout: targets become sources, placement by source.function on the old key.
    func testTheReversedPlanPlacesRowsByTheOldLayout() throws {
        let plan = Plan(
            migration: "m", metadata: "", function: try .init(kind: .hash, shardCount: 3), sourceFunction: try .init(kind: .modulo, shardCount: 2),
            sources: [.init(name: "s0", endpoint: "", dsn: "", sameAsSource: nil), .init(name: "s1", endpoint: "", dsn: "", sameAsSource: nil)],
            targets: (0..<3).map { .init(name: "t\($0)", endpoint: "", dsn: "", sameAsSource: nil) },
            tables: [.init(name: .init(schema: nil, "handles"), key: "handle", keyType: .text, columns: [], uniqueKey: ["handle"], fingerprint: "",
                           estimateMethod: "exact", slices: [.init(source: "s0", target: "t2", estimatedRows: 5, estimatedBytes: 50, staysInPlace: false)],
                           sourceKey: "user_id", sourceKeyType: .bigint)],
            recordedPhase: nil)
        XCTAssertNil(ReverseCapture.missing(plan))
        let reversed = plan.reversed()
        XCTAssertEqual(reversed.migration, "m~reverse")
        XCTAssertEqual(reversed.function, plan.sourceFunction)
        XCTAssertEqual(reversed.sources.map(\.name), ["t0", "t1", "t2"])
        XCTAssertEqual(reversed.targets.map(\.name), ["s0", "s1"])
        XCTAssertEqual(reversed.tables[0].key, "user_id")
        XCTAssertEqual(reversed.tables[0].keyType, .bigint)
        XCTAssertEqual(reversed.tables[0].slices.map { "\($0.source)->\($0.target)" }, ["t2->s0"])
        var noFunction = plan
        noFunction.sourceFunction = nil
        XCTAssertEqual(ReverseCapture.missing(noFunction), "source.function is not in the config")
    }
}
