import XCTest

@testable import ReshardCore

final class MigrationStateMachineTests: XCTestCase {
    func testFreshMigrationRunsThroughEveryPhase() {
        var machine = MigrationStateMachine(goal: .forever)
        XCTAssertEqual(machine.handle(.resumed(.planned)), [.prepare])
        XCTAssertEqual(machine.handle(.prepared), [.record(.backfilling), .runBackfillAndCatchUp])
        XCTAssertEqual(machine.handle(.backfillComplete), [.buildDeferredIndexes, .record(.catchingUp), .runCatchUp])
        XCTAssertEqual(machine.handle(.caughtUp), [.record(.inSync)])
        XCTAssertEqual(machine.phase, .inSync)
        XCTAssertEqual(machine.handle(.caughtUp), [])
        XCTAssertEqual(machine.handle(.stopRequested), [.stop])
    }

    func testGoalsStopAtTheirPhase() {
        var backfilled = MigrationStateMachine(goal: .backfilled)
        _ = backfilled.handle(.resumed(.planned))
        _ = backfilled.handle(.prepared)
        XCTAssertEqual(backfilled.handle(.backfillComplete), [.buildDeferredIndexes, .record(.catchingUp), .stop])

        var caughtUp = MigrationStateMachine(goal: .caughtUp)
        _ = caughtUp.handle(.resumed(.backfilling))
        _ = caughtUp.handle(.backfillComplete)
        XCTAssertEqual(caughtUp.handle(.caughtUp), [.record(.inSync), .stop])
    }

    func testResumingContinuesFromTheRecordedPhase() {
        var machine = MigrationStateMachine(goal: .forever)
        XCTAssertEqual(machine.handle(.resumed(.backfilling)), [.prepare, .runBackfillAndCatchUp])
        XCTAssertEqual(machine.handle(.prepared), [])
        XCTAssertEqual(machine.phase, .backfilling)

        // Writes went on since it was last in sync: catch up again before returning.
        var synced = MigrationStateMachine(goal: .caughtUp)
        XCTAssertEqual(synced.handle(.resumed(.inSync)), [.prepare, .runCatchUp])
        XCTAssertEqual(synced.handle(.prepared), [])
        XCTAssertEqual(synced.handle(.caughtUp), [.stop])

        var backfilled = MigrationStateMachine(goal: .backfilled)
        XCTAssertEqual(backfilled.handle(.resumed(.inSync)), [.stop])

        var aborted = MigrationStateMachine(goal: .forever)
        guard case .refuse = aborted.handle(.resumed(.aborted)).first else { return XCTFail("aborted must refuse") }
    }

    func testOutOfOrderEventsDoNothing() {
        var machine = MigrationStateMachine(goal: .forever)
        _ = machine.handle(.resumed(.planned))
        XCTAssertEqual(machine.handle(.caughtUp), [])
        XCTAssertEqual(machine.handle(.backfillComplete), [])
        XCTAssertEqual(machine.phase, .planned)
    }
}
