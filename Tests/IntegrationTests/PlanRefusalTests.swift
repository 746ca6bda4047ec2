import Foundation
import PostgresClient
import XCTest

/// Issue 10: what cannot be carried over to the new layout is refused by `plan` (exit 2) naming
/// the object, unless an option says how to treat it; nothing changes on any server.
final class PlanRefusalTests: XCTestCase {
    func testObjectsThatCannotBeCarriedOverAreRefusedNamingThem() throws {
        let fixture = try PlanFixture(self)
        try fixture.onSources(
            """
            CREATE TABLE countries (code text PRIMARY KEY);
            CREATE TABLE users (id bigint PRIMARY KEY, country text REFERENCES countries (code));
            CREATE TABLE notes (id bigint PRIMARY KEY, user_id bigint NOT NULL);
            CREATE TABLE reports (id bigint PRIMARY KEY, user_id bigint CONSTRAINT reports_user REFERENCES users (id));
            CREATE VIEW active_users AS SELECT id FROM users;
            CREATE UNLOGGED TABLE sessions (id bigint PRIMARY KEY, user_id bigint NOT NULL);
            CREATE TABLE events (id bigint NOT NULL, user_id bigint NOT NULL, PRIMARY KEY (user_id, id)) PARTITION BY HASH (user_id);
            CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 1, REMAINDER 0);
            CREATE RULE notes_log AS ON DELETE TO notes DO ALSO NOTIFY notes;
            """)
        let config = try fixture.writeConfig(tables: [("users", "id"), ("notes", "user_id"), ("sessions", "user_id"), ("events", "user_id")])
        let before = try fixture.snapshot()
        let refused = try ReshardCLI.run(["plan", "-c", config])
        XCTAssertEqual(refused.status, 2, refused.stderr)
        for expected in [
            "table users on source s0: foreign key users_country_fkey to countries, a table outside the migration, cannot be carried over",
            "table users on source s1: foreign key reports_user from reports, a table outside the migration",
            "table users on source s0: view active_users reads it",
            "table notes on source s0: rule notes_log reads it",
            "table sessions on source s0 is unlogged",
            "table events on source s0 is partitioned",
        ] {
            XCTAssertTrue(refused.stderr.contains(expected), "«\(expected)» in «\(refused.stderr)»")
        }
        // With the options, the foreign keys and the unlogged table are accepted; the rest is not.
        let allowed = try ReshardCLI.run(["plan", "-c", config, "--ignore-foreign-keys-outside", "--allow-unlogged"])
        XCTAssertEqual(allowed.status, 2, allowed.stderr)
        XCTAssertFalse(allowed.stderr.contains("foreign key"), allowed.stderr)
        XCTAssertFalse(allowed.stderr.contains("unlogged"), allowed.stderr)
        XCTAssertTrue(allowed.stderr.contains("view active_users"), allowed.stderr)
        XCTAssertEqual(try fixture.snapshot(), before, "plan changed something")

        try fixture.onSources("DROP VIEW active_users; DROP RULE notes_log ON notes")
        let tables = [("users", "id"), ("notes", "user_id"), ("sessions", "user_id")]
        let passing = try ReshardCLI.run(
            ["plan", "-c", try fixture.writeConfig(tables: tables, targets: fixture.freshTargets), "--ignore-foreign-keys-outside", "--allow-unlogged"])
        XCTAssertEqual(passing.status, 0, passing.stderr)
    }
}
