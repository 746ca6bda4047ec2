import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// The shim on the sources: every application write is captured, whoever writes it, however
/// the writer's session is set up, and whatever statement removes rows.
final class ShimTests: XCTestCase {
    private let usersDDL = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL)"

    private func loadUsers(_ fixture: PlanFixture, rows: Int = 200) throws {
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                "\(usersDDL); INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, \(rows)) g WHERE g % 2 = \(k)")
        }
    }

    /// An application role that only has table grants (not the shim's owner, not a superuser)
    /// keeps writing while the shim is installed by the role reshard connects as, also a
    /// non-superuser; the writes reach the targets.
    func testApplicationRoleWithTableGrantsOnlyKeepsWritingUnderTheShim() throws {
        let suffix = UUID().uuidString.prefix(6).lowercased()
        let reshardRole = "reshard_\(suffix)", appRole = "app_\(suffix)"
        try TestRoles.create(reshardRole, self)
        try TestRoles.create(appRole, self)
        let fixture = try PlanFixture(self)
        try TestRoles.giveDatabases(of: fixture, to: reshardRole)
        var asReshard = fixture
        asReshard.sources = try fixture.sources.map { try TestRoles.dsn($0, as: reshardRole) }
        asReshard.targets = try fixture.targets.map { try TestRoles.dsn($0, as: reshardRole) }
        asReshard.metadata = try TestRoles.dsn(fixture.metadata, as: reshardRole)
        try loadUsers(asReshard)
        try asReshard.onSources("GRANT SELECT, INSERT, UPDATE, DELETE ON users TO \(appRole)")

        let config = try asReshard.writeTwoTargetConfig(tables: [("users", "id")])
        let plan = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        let first = try asReshard.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)

        for (k, source) in fixture.sources.enumerated() {
            let app = try PGConnection.connect(try TestRoles.dsn(source, as: appRole))
            XCTAssertEqual(try app.query("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user")[0, 1], "f")
            try app.execute(
                """
                INSERT INTO users SELECT g, 'new ' || g FROM generate_series(1001, 1100) g WHERE g % 2 = \(k);
                UPDATE users SET name = name || ' (edited by app)' WHERE id % 5 = 0;
                DELETE FROM users WHERE id % 7 = 0;
                """)
        }
        let second = try asReshard.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("users", hash: "hashint8(id)")
    }

    /// plan says what the role reshard connects as lacks to install the shim, and changes nothing.
    func testPlanRefusesARoleThatCannotInstallTheShim() throws {
        let reshardRole = "reshard_\(UUID().uuidString.prefix(6).lowercased())"
        try TestRoles.create(reshardRole, self)
        let fixture = try PlanFixture(self)
        try loadUsers(fixture, rows: 20)
        // The role may read the table (as PUBLIC may connect), nothing more.
        try fixture.onSources("GRANT SELECT ON users TO \(reshardRole)")
        var asReshard = fixture
        asReshard.sources = try fixture.sources.map { try TestRoles.dsn($0, as: reshardRole) }
        let config = try asReshard.writeTwoTargetConfig(tables: [("users", "id")])
        let before = try fixture.snapshot()
        let outcome = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(outcome.status, 2, outcome.stderr)
        for source in ["s0", "s1"] {
            XCTAssertTrue(
                outcome.stderr.contains("table users on source \(source): role \(reshardRole) cannot install the shim: it must own the table"),
                outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains("source \(source): role \(reshardRole) cannot install the shim: it needs CREATE on database"), outcome.stderr)
        }
        XCTAssertEqual(try fixture.snapshot(), before)
    }

    /// Keys are logged in one text form whatever the writer's DateStyle, TimeZone and
    /// extra_float_digits: a timestamptz key with a day above 12 written under `SQL, DMY` far from
    /// UTC, and a float8 key written with `extra_float_digits = 0`, both reach the targets.
    func testKeysAreLoggedInOneFormWhateverTheWritersSessionSays() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE events (at timestamptz PRIMARY KEY, user_id bigint NOT NULL, note text);
                INSERT INTO events SELECT timestamptz '2026-01-01 10:30:00+00' + g * interval '1 day 1 hour', g, 'event ' || g
                  FROM generate_series(1, 60) g WHERE g % 2 = \(k);
                CREATE TABLE readings (x float8 PRIMARY KEY, user_id bigint NOT NULL, note text);
                INSERT INTO readings SELECT g / 10.0 + 0.2, g, 'reading ' || g FROM generate_series(1, 60) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("events", "user_id"), ("readings", "user_id")])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)

        for (k, source) in fixture.sources.enumerated() {
            let app = try PGConnection.connect(
                source, settings: ["DateStyle": "SQL, DMY", "TimeZone": "Pacific/Kiritimati", "extra_float_digits": "0"])
            try app.execute(
                """
                UPDATE events SET note = note || ' changed';
                INSERT INTO events SELECT timestamptz '2026-03-20 23:45:00.25+00' + g * interval '1 day', g, 'late ' || g
                  FROM generate_series(101, 120) g WHERE g % 2 = \(k);
                DELETE FROM events WHERE user_id % 7 = 0;
                UPDATE readings SET note = note || ' changed';
                INSERT INTO readings SELECT g / 10.0 + 0.2, g, 'new ' || g FROM generate_series(101, 120) g WHERE g % 2 = \(k);
                DELETE FROM readings WHERE user_id % 7 = 0;
                """)
            // The session's text form really is ambiguous: the same keys read differently in ISO.
            XCTAssertTrue(try app.query("SELECT min(at)::text FROM events")[0, 0]!.contains("/"))
        }
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("events", hash: "hashint8(user_id)")
        try fixture.assertTwoTargetsMatchSources("readings", hash: "hashint8(user_id)")
    }

    /// Writes from sessions with `session_replication_role = replica` (which skip ordinary
    /// triggers) and TRUNCATE (which fires no row trigger) reach the targets too; the truncated
    /// table has a hostile name.
    func testReplicaSessionsAndTruncateAreCaptured() throws {
        let fixture = try PlanFixture(self)
        let visits = "\"Vis\"\"its; x\""
        try loadUsers(fixture)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE \(visits) (id bigint PRIMARY KEY, user_id bigint NOT NULL);
                INSERT INTO \(visits) SELECT g, g FROM generate_series(1, 100) g WHERE g % 2 = \(k);
                """)
        }
        let config = try fixture.writeTwoTargetConfig(tables: [("users", "id"), (visits, "user_id")])
        let first = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(first.status, 0, first.stderr)

        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                SET session_replication_role = replica;
                INSERT INTO users SELECT g, 'replica ' || g FROM generate_series(1001, 1050) g WHERE g % 2 = \(k);
                UPDATE users SET name = name || ' (replica)' WHERE id % 3 = 0;
                DELETE FROM users WHERE id % 11 = 0;
                """)
        }
        try PGConnection.connect(fixture.sources[1]).execute(
            "TRUNCATE \(visits); INSERT INTO \(visits) VALUES (1001, 1001), (1003, 1003)")
        try PGConnection.connect(fixture.sources[0]).execute("BEGIN; TRUNCATE \(visits); ROLLBACK")
        let second = try fixture.applyUntilCaughtUp(config)
        XCTAssertEqual(second.status, 0, second.stderr)
        try fixture.assertTwoTargetsMatchSources("users", hash: "hashint8(id)")
        try fixture.assertTwoTargetsMatchSources(visits, hash: "hashint8(user_id)")
        XCTAssertEqual(try PlanFixture.rowTexts("SELECT count(*)::text FROM \(visits)", on: fixture.sources[1]), ["2"])
    }
}
