import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Unique constraints other than the migration's key hold on each source alone; where rows of
/// several sources meet on a target, their values can collide. Nothing may be dropped silently.
final class UniqueConstraintTests: XCTestCase {
    /// users on both sources with `email UNIQUE`; on s1 the emails of `s1Emails` ids (s0's are `e<id/2>@x`).
    private func load(_ fixture: PlanFixture, s1Emails: String) throws {
        for (k, source) in fixture.sources.enumerated() {
            let email = k == 0 ? "'e' || (g / 2) || '@x'" : s1Emails
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE users (id bigint PRIMARY KEY, email text UNIQUE, name text);
                INSERT INTO users SELECT g, \(email), 'user ' || g FROM generate_series(1, 2000) g WHERE g % 2 = \(k);
                """)
        }
    }

    /// The same emails on s0 and s1, meeting on one target: plan refuses, naming the index, the
    /// sources, the target and (up to 10 of) the values.
    func testPlanRefusesValuesThatWouldCollideOnATarget() throws {
        let fixture = try PlanFixture(self)
        try load(fixture, s1Emails: "'e' || (g / 2) || '@x'")
        let config = try fixture.writeConfig(tables: [("users", "id")], targets: [fixture.targets[1]])
        let outcome = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(outcome.status, 2, outcome.stdout + outcome.stderr)
        XCTAssertTrue(
            outcome.stderr.contains(
                "table users: unique index users_email_key (email) would be violated on target t0: on both s0 and s1: (e100@x), (e101@x), (e102@x)"),
            outcome.stderr)
        XCTAssertEqual(outcome.stderr.components(separatedBy: "@x)").count - 1, 10, outcome.stderr)

        // Distinct emails: plan passes, with a warning about values written later.
        let fresh = try PlanFixture(self)
        try load(fresh, s1Emails: "'odd' || g || '@x'")
        let passing = try ReshardCLI.run(["plan", "-c", try fresh.writeConfig(tables: [("users", "id")], targets: [fresh.targets[1]])])
        XCTAssertEqual(passing.status, 0, passing.stderr)
        XCTAssertTrue(passing.stdout.contains("warning: table users: unique index users_email_key (email) holds on each source alone"), passing.stdout)
    }

    /// A colliding value written after plan: apply stops (exit 1) naming the constraint and the
    /// value, instead of dropping the row and reporting in-sync.
    func testApplyStopsOnAValueCollidingAfterPlanInsteadOfDroppingTheRow() throws {
        let fixture = try PlanFixture(self)
        try load(fixture, s1Emails: "'odd' || g || '@x'")
        let config = try fixture.writeConfig(tables: [("users", "id")], targets: [fixture.targets[1]])
        let planFile = fixture.directory + "/plan.json"
        let plan = try ReshardCLI.run(["plan", "-c", config, "--output", planFile])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        try PGConnection.connect(fixture.sources[1]).execute("UPDATE users SET email = 'e300@x' WHERE id = 1501")

        let apply = try ReshardCLI.run(["apply", "--plan", planFile, "--until", "caught-up"])
        XCTAssertEqual(apply.status, 1, apply.stderr)
        XCTAssertTrue(apply.stderr.contains("users_email_key"), apply.stderr)
        XCTAssertTrue(apply.stderr.contains("Key (email)=(e300@x) already exists"), apply.stderr)
        XCTAssertTrue(apply.stderr.contains("migration plan-test: the sources keep the shim (once installed) and log every write"), apply.stderr)
        XCTAssertTrue(apply.stderr.contains("'reshard abort' to remove it"), apply.stderr)
        let status = try ReshardCLI.run(["status", "-c", config, "--json"])
        XCTAssertNotEqual(try JSONDecoder().decode(MigrationStatus.self, from: Data(status.stdout.utf8)).phase, "in-sync")
        // Both rows are on the sources; the target could take only one (whichever slice came
        // first), and apply said so rather than claiming success without the other.
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT id::text FROM users WHERE email = 'e300@x'", on: fixture.sources[0]), ["600"])
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT id::text FROM users WHERE email = 'e300@x'", on: fixture.sources[1]), ["1501"])
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT count(*)::text FROM users WHERE id IN (600, 1501)", on: fixture.targets[1]), ["1"])
    }

    /// The same once the backfill is done: the catch-up's upsert conflicts on the migration's key
    /// only, so a colliding value written later stops apply naming the constraint and the value.
    func testTheCatchUpStopsOnAValueCollidingAfterTheBackfill() throws {
        let fixture = try PlanFixture(self)
        try load(fixture, s1Emails: "'odd' || g || '@x'")
        let config = try fixture.writeConfig(tables: [("users", "id")], targets: [fixture.targets[1]])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)
        try PGConnection.connect(fixture.sources[1]).execute("UPDATE users SET email = 'e42@x' WHERE id = 1777")

        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 1, second.stderr)
        XCTAssertTrue(second.stderr.contains("users_email_key"), second.stderr)
        XCTAssertTrue(second.stderr.contains("Key (email)=(e42@x) already exists"), second.stderr)
        XCTAssertTrue(second.stderr.contains("'reshard abort' to remove it"), second.stderr)
        // The target still has s0's row and the old version of s1's: nothing applied half-way.
        XCTAssertEqual(
            try PlanFixture.rowTexts("SELECT id || ' ' || email FROM users WHERE id IN (84, 1777)", on: fixture.targets[1]),
            ["1777 odd1777@x", "84 e42@x"])
    }
}
