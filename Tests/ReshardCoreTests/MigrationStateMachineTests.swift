import XCTest

@testable import ReshardCore

final class MigrationStateMachineTests: XCTestCase {
    typealias Machine = MigrationStateMachine

    /// Actions as text, transitions included: `Transition` can only be made by the machine.
    private func names(_ actions: [Machine.Action]) -> [String] {
        actions.map {
            switch $0 {
            case .prepare: "prepare"
            case .record(let t): "record \(t)"
            case .runBackfillAndCatchUp: "backfill+catch-up"
            case .runCatchUp: "catch-up"
            case .buildDeferredIndexes: "indexes"
            case .stop: "stop"
            }
        }
    }

    private func machine(_ phase: MigrationPhase, _ goal: Machine.Goal = .forever) -> Machine {
        Machine(migration: "m", phase: phase, goal: goal)
    }

    private func assertRefused(_ body: @autoclosure () throws -> Any, _ message: String, line: UInt = #line) {
        XCTAssertThrowsError(try body(), message, line: line) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .refused, "\(error)", line: line)
        }
    }

    func testFreshMigrationRunsThroughEveryPhase() throws {
        var m = machine(.planned)
        XCTAssertEqual(names(try m.resume()), ["prepare"])
        XCTAssertEqual(names(try m.prepared()), ["record planned -> backfilling", "backfill+catch-up"])
        XCTAssertEqual(names(try m.backfillComplete()), ["indexes", "record backfilling -> catching-up", "catch-up"])
        XCTAssertEqual(names(try m.caughtUp()), ["record catching-up -> in-sync"])
        XCTAssertEqual(m.phase, .inSync)
        XCTAssertEqual(names(try m.caughtUp()), [])
        XCTAssertEqual(names(m.stopRequested()), ["stop"])
    }

    func testGoalsStopAtTheirPhase() throws {
        var backfilled = machine(.planned, .backfilled)
        _ = try backfilled.resume()
        _ = try backfilled.prepared()
        XCTAssertEqual(names(try backfilled.backfillComplete()), ["indexes", "record backfilling -> catching-up", "stop"])

        var caughtUp = machine(.backfilling, .caughtUp)
        _ = try caughtUp.resume()
        _ = try caughtUp.prepared()
        _ = try caughtUp.backfillComplete()
        XCTAssertEqual(names(try caughtUp.caughtUp()), ["record catching-up -> in-sync", "stop"])
    }

    func testResumingContinuesFromTheRecordedPhase() throws {
        var m = machine(.backfilling)
        XCTAssertEqual(names(try m.resume()), ["prepare", "backfill+catch-up"])
        XCTAssertEqual(names(try m.prepared()), [])
        XCTAssertEqual(m.phase, .backfilling)

        var prepared = machine(.prepared)
        XCTAssertEqual(names(try prepared.resume()), ["prepare"])
        XCTAssertEqual(names(try prepared.prepared()), ["record prepared -> backfilling", "backfill+catch-up"])

        // Writes went on since it was last in sync: catch up again before returning.
        var synced = machine(.inSync, .caughtUp)
        XCTAssertEqual(names(try synced.resume()), ["prepare", "catch-up"])
        XCTAssertEqual(names(try synced.prepared()), [])
        XCTAssertEqual(names(try synced.caughtUp()), ["stop"])

        var catching = machine(.catchingUp, .caughtUp)
        XCTAssertEqual(names(try catching.resume()), ["prepare", "catch-up"])
        _ = try catching.prepared()
        XCTAssertEqual(names(try catching.caughtUp()), ["record catching-up -> in-sync", "stop"])

        for phase in [MigrationPhase.catchingUp, .inSync, .rolledBack] {
            var backfilled = machine(phase, .backfilled)
            XCTAssertEqual(names(try backfilled.resume()), ["stop"], "\(phase)")
        }

        // After a rollback apply keeps the targets caught up for the next cutover; the phase stays.
        var rolledBack = machine(.rolledBack, .caughtUp)
        XCTAssertEqual(names(try rolledBack.resume()), ["prepare", "catch-up"])
        _ = try rolledBack.prepared()
        XCTAssertEqual(names(try rolledBack.caughtUp()), ["stop"])
        XCTAssertEqual(rolledBack.phase, .rolledBack)
    }

    func testApplyRefusesPhasesItCannotContinue() {
        for phase in [MigrationPhase.aborted, .cuttingOver, .cutOver, .rollingBack, .cleanedUp] {
            var m = machine(phase)
            assertRefused(try m.resume(), "\(phase)")
        }
        var twice = machine(.planned)
        _ = try? twice.resume()
        assertRefused(try twice.resume(), "resumed twice")
    }

    /// Events out of order are refused, never dropped: each only in the phases listed.
    func testImpossibleEventsAreRefused() throws {
        // Before resuming, nothing but a stop is possible.
        for phase in MigrationPhase.allCases {
            var m = machine(phase)
            assertRefused(try m.prepared(), "prepared before resume in \(phase)")
            assertRefused(try m.caughtUp(), "caught up before resume in \(phase)")
            if phase != .backfilling { assertRefused(try m.backfillComplete(), "backfill complete in \(phase)") }
            XCTAssertEqual(m.phase, phase)
        }
        // While preparing, the work has not started.
        var preparing = machine(.backfilling)
        _ = try preparing.resume()
        assertRefused(try preparing.backfillComplete(), "backfill complete while preparing")
        assertRefused(try preparing.caughtUp(), "caught up while preparing")
        _ = try preparing.prepared()
        assertRefused(try preparing.prepared(), "prepared twice")
        assertRefused(try preparing.caughtUp(), "caught up while backfilling")
        XCTAssertEqual(names(try preparing.backfillComplete()), ["indexes", "record backfilling -> catching-up", "catch-up"])
        assertRefused(try preparing.backfillComplete(), "backfill complete twice")
        XCTAssertEqual(preparing.phase, .catchingUp)
    }

    /// Every phase change outside `apply`, from every phase: the allowed ones and the refusals.
    func testAbortCutoverAndRollbackTransitions() throws {
        typealias Event = (name: String, run: (inout Machine) throws -> Machine.Transition, from: Set<MigrationPhase>, to: MigrationPhase)
        let events: [Event] = [
            ("abort", { try $0.abort() }, [.planned, .prepared, .backfilling, .catchingUp, .inSync, .rolledBack], .aborted),
            ("start cutover", { try $0.startCutover() }, [.inSync, .rolledBack], .cuttingOver),
            ("complete cutover", { try $0.cutoverComplete() }, [.cuttingOver], .cutOver),
            ("start rollback", { try $0.startRollback() }, [.cutOver], .rollingBack),
            ("complete rollback", { try $0.rollbackComplete() }, [.rollingBack], .rolledBack),
            ("clean up", { try $0.cleanup() }, [.cutOver], .cleanedUp),
        ]
        for event in events {
            for phase in MigrationPhase.allCases {
                var m = machine(phase)
                if event.from.contains(phase) {
                    let transition = try event.run(&m)
                    XCTAssertEqual("\(transition)", "\(phase.rawValue) -> \(event.to.rawValue)", event.name)
                    XCTAssertEqual(m.phase, event.to, event.name)
                } else {
                    assertRefused(try event.run(&m), "\(event.name) in \(phase)")
                    XCTAssertEqual(m.phase, phase, "a refusal changes nothing")
                }
            }
        }

        // The cutover cycle the coming cutover issue needs.
        var m = machine(.inSync)
        var path = [try m.startCutover(), try m.cutoverComplete(), try m.startRollback(), try m.rollbackComplete()]
        path += [try m.startCutover(), try m.cutoverComplete(), try m.cleanup()]
        XCTAssertEqual(
            path.map(\.description),
            ["in-sync -> cutting-over", "cutting-over -> cut-over", "cut-over -> rolling-back", "rolling-back -> rolled-back",
             "rolled-back -> cutting-over", "cutting-over -> cut-over", "cut-over -> cleaned-up"])
    }

    func testUnknownPhaseIsNewerMetadata() throws {
        for phase in MigrationPhase.allCases { XCTAssertEqual(try MigrationPhase.recorded(phase.rawValue, migration: "m"), phase) }
        XCTAssertThrowsError(try MigrationPhase.recorded("frozen", migration: "m") as MigrationPhase) { error in
            let error = error as? ReshardError
            XCTAssertEqual(error?.code, .newerMetadata)
            XCTAssertEqual(error?.exitCode, 1)
            XCTAssertEqual(error?.description, "migration m: metadata written by a newer reshard (phase 'frozen')")
        }
    }
}
