import Foundation
import PostgresClient
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `apply` plans the migration when it starts; a session lost then (terminated, its server
/// restarting) is a transient failure like any later one, not bad input: `apply` plans again.
final class ApplyStartupTests: XCTestCase {
    /// The planning session is caught waiting on a lock (an application transaction holding
    /// `users` exclusively), terminated there, and the lock released: `apply` must retry the plan
    /// and reach its goal, where it used to exit 2 ("bad input") with nothing wrong in the input.
    func testPlanningSessionTerminatedAtStartupIsRetried() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.01)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let holder = try PGConnection.connect(fixture.sources[0])
        try holder.execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        let apply = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up"])
        defer { if apply.wait(timeout: 0.01) == nil { apply.signal(SIGKILL) } }

        let admin = try PGConnection.connect(fixture.sources[0])
        var terminated = 0
        XCTAssertTrue(try eventually(timeout: 60) {
            let ended = try admin.query(
                """
                SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE application_name = 'reshard plan' AND wait_event_type = 'Lock' AND datname = current_database()
                """)
            terminated = Int(ended[0, 0] ?? "0") ?? 0
            return terminated > 0 || apply.wait(timeout: 0.01) != nil
        }, "apply's planning session never waited on the lock: \(apply.stderr)")
        XCTAssertEqual(terminated, 1, "the planning session was terminated while it waited: \(apply.stderr)")
        try holder.execute("COMMIT")

        let exit = apply.wait(timeout: 120)
        XCTAssertEqual(exit, 0, apply.stdout + apply.stderr)
        XCTAssertTrue(apply.stderr.contains("retrying plan:"), "the retry is an event: \(apply.stderr)")
        try ReferenceData.assertTargetsMatchSources(fixture)
    }
}
