import Foundation
import PostgresClient
import ReshardCore
import XCTest

final class PhaseTests: XCTestCase {
    /// A small migration backfilled 2 -> 3, its metadata then marked with a phase this binary
    /// does not know, as a newer reshard would leave it.
    private func migrationInUnknownPhase() throws -> (PlanFixture, config: String, planFile: String) {
        let fixture = try PlanFixture(self)
        // Each source holds its own rows (as `source.function: modulo` places them): a key on both would be refused.
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                "CREATE TABLE users (id bigint PRIMARY KEY, name text); INSERT INTO users SELECT g, 'u' FROM generate_series(1, 200) g WHERE g % 2 = \(k)")
        }
        let config = try fixture.writeConfig(sourceFunction: "modulo")
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        // A plan file goes straight to the coordinator, past the planner's own look at the phase.
        let planFile = fixture.directory + "/plan.json"
        XCTAssertEqual(try ReshardCLI.run(["plan", "-c", config, "--output", planFile]).status, 0)
        try PGConnection.connect(fixture.metadata).execute("UPDATE reshard.migrations SET phase = 'frozen'")
        return (fixture, config, planFile)
    }

    /// Acceptance: a phase the binary does not know is refused by every command (exit 1, "written
    /// by a newer reshard"), and nothing changes on any server; before, apply read it as
    /// `planned` and started over.
    func testUnknownPhaseIsRefusedEverywhereAndChangesNothing() throws {
        let (fixture, config, planFile) = try migrationInUnknownPhase()
        // Counters of the backends that just exited reach the statistics a moment later.
        var before = try fixture.snapshot()
        XCTAssertTrue(try eventually(timeout: 10) {
            let now = try fixture.snapshot()
            defer { before = now }
            return now == before
        })
        let expected = "migration plan-test: metadata written by a newer reshard (phase 'frozen')"
        for command in [["apply"], ["apply", "--until", "caught-up"], ["verify"], ["abort", "--drop-target-data"], ["plan"], ["status"],
                        ["throttle", "--unlimited"]] {
            let outcome = try ReshardCLI.run([command[0], "-c", config] + command.dropFirst())
            XCTAssertEqual(outcome.status, 1, "\(command): \(outcome.stdout) \(outcome.stderr)")
            XCTAssertTrue(outcome.stderr.contains(expected), "\(command): \(outcome.stderr)")
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, "\(command): \(outcome.stderr)")
        }
        for command in [["apply"], ["verify"], ["abort"]] {
            let outcome = try ReshardCLI.run([command[0], "--plan", planFile] + command.dropFirst())
            XCTAssertEqual(outcome.status, 1, "\(command): \(outcome.stdout) \(outcome.stderr)")
            XCTAssertTrue(outcome.stderr.contains(expected), "\(command): \(outcome.stderr)")
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, "\(command): \(outcome.stderr)")
        }
        XCTAssertEqual(try fixture.snapshot(), before, "nothing may change on any server")
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertEqual(try meta.query("SELECT phase FROM reshard.migrations")[0, 0], "frozen")
        for source in fixture.sources {
            let triggers = try PGConnection.connect(source).query("SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname LIKE 'reshard_capture_%'")
            XCTAssertEqual(try triggers.get(0, 0, as: Int.self), 1, "the shim stays")
        }
    }

    /// A phase is written as a compare-and-set: a transition from a phase the metadata no longer
    /// records fails and changes nothing.
    func testPhaseWriteIsACompareAndSet() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
        let config = try fixture.writeConfig()
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"]).status, 0)
        let meta = try PGConnection.connect(fixture.metadata)
        XCTAssertEqual(try PhaseStore.read("plan-test", on: meta), .catchingUp)
        XCTAssertNil(try PhaseStore.read("no-such-migration", on: meta))

        // Read in-sync, but it is catching-up now.
        var stale = MigrationStateMachine(migration: "plan-test", phase: .inSync)
        let abortFromInSync = try stale.abort()
        XCTAssertThrowsError(try PhaseStore.write(abortFromInSync, migration: "plan-test", on: meta)) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .failed)
            XCTAssertTrue("\(error)".contains("the metadata says phase 'catching-up' now"), "\(error)")
        }
        XCTAssertEqual(try meta.query("SELECT phase FROM reshard.migrations")[0, 0], "catching-up")

        var current = MigrationStateMachine(migration: "plan-test", phase: .catchingUp)
        try PhaseStore.write(try current.abort(), migration: "plan-test", on: meta)
        XCTAssertEqual(try meta.query("SELECT phase FROM reshard.migrations")[0, 0], "aborted")
    }

    /// `abort` goes through the state machine: after cutover it is refused before any shard is touched.
    func testAbortIsRefusedAfterCutover() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources("CREATE TABLE users (id bigint PRIMARY KEY, name text)")
        let config = try fixture.writeConfig()
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"]).status, 0)
        try PGConnection.connect(fixture.metadata).execute("UPDATE reshard.migrations SET phase = 'cut-over'")
        let outcome = try ReshardCLI.run(["abort", "-c", config])
        XCTAssertEqual(outcome.status, 2, outcome.stderr)
        XCTAssertTrue(outcome.stderr.contains("migration plan-test is in phase cut-over; abort is possible only before cutover"), outcome.stderr)
        for source in fixture.sources {
            let triggers = try PGConnection.connect(source).query("SELECT count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname LIKE 'reshard_capture_%'")
            XCTAssertEqual(try triggers.get(0, 0, as: Int.self), 1, "the shim stays")
        }
        XCTAssertEqual(try PGConnection.connect(fixture.metadata).query("SELECT phase FROM reshard.migrations")[0, 0], "cut-over")
    }
}
