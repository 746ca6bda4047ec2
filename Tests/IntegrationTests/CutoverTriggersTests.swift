import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// The application's own triggers at the switch: silent on the targets while reshard copies and
/// catches up (the rows already carry their effect), firing there once the new layout serves,
/// silent again after rollback.
extension CutoverTests {
    func testTheApplicationsTriggerFiresOnTheTargetsAfterCutoverAndNotBefore() throws {
        let setup = try migrated(rows: 40, sourceSQL: """
            CREATE FUNCTION "tag name"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := NEW.name || ' +t'; RETURN NEW; END $$;
            CREATE TRIGGER "tag it" BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION "tag name"();
            ALTER TABLE posts ADD CONSTRAINT "posts' user" FOREIGN KEY (user_id) REFERENCES users (id);
            """)
        let layouts = setup.layouts
        func foreignKeys() throws -> [String?] {
            try layouts.new.map {
                try PGConnection.connect($0).query(
                    "SELECT (SELECT convalidated::text FROM pg_constraint WHERE conname = 'posts'' user' AND conrelid = 'posts'::regclass)").get(0, 0, as: String?.self)
            }
        }
        func triggerStates() throws -> [String?] {
            try layouts.new.map {
                try PGConnection.connect($0).query("SELECT (SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'tag it')").get(0, 0, as: String?.self)
            }
        }
        // Written on the source before cutover: the source's trigger tags it once; the catch-up
        // brings it over as it is, the target's trigger does not tag it again.
        let before: Int64 = 1001
        try PGConnection.connect(layouts.old[try layouts.shard(of: before, new: false)])
            .query("INSERT INTO users VALUES ($1, 'before')", [String(before)])
        let apply = try setup.fixture.applyUntilCaughtUp(setup.config)
        XCTAssertEqual(apply.status, 0, apply.stderr)
        XCTAssertEqual(try triggerStates(), ["D", "D", "D"])
        XCTAssertEqual(try foreignKeys(), [nil, nil, nil], "the catch-up writes the tables in no order until the cutover")

        let cutover = try ReshardCLI.run(["cutover", "-c", setup.config, "--skip-verify"])
        XCTAssertEqual(cutover.status, 0, cutover.stderr)
        XCTAssertEqual(try triggerStates(), ["O", "O", "O"])
        XCTAssertEqual(try foreignKeys(), ["true", "true", "true"], "added and validated at cutover")
        let names = { (id: Int64) throws -> String? in
            try PGConnection.connect(layouts.new[try layouts.shard(of: id, new: true)])
                .query("SELECT name FROM users WHERE id = $1", [String(id)]).get(0, 0, as: String?.self)
        }
        XCTAssertEqual(try names(before), "before +t")
        // Written on the target the new map gives it, after cutover: the trigger fires there.
        let after: Int64 = 1002
        try PGConnection.connect(layouts.new[try layouts.shard(of: after, new: true)])
            .query("INSERT INTO users VALUES ($1, 'after')", [String(after)])
        XCTAssertEqual(try names(after), "after +t")

        let rollback = try ReshardCLI.run(["rollback", "-c", setup.config])
        XCTAssertEqual(rollback.status, 0, rollback.stderr)
        XCTAssertEqual(try triggerStates(), ["D", "D", "D"], "the catch-up feeds the targets again after rollback")
        XCTAssertEqual(try foreignKeys(), [nil, nil, nil])
        let abort = try ReshardCLI.run(["abort", "-c", setup.config])
        XCTAssertEqual(abort.status, 0, abort.stderr)
    }
}
