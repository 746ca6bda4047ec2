import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 14: `status` tells the truth about how old its figures are.
final class StatusTests: XCTestCase {
    private func status(_ arguments: [String]) throws -> (ReshardCLI.Outcome, MigrationStatus?) {
        let outcome = try ReshardCLI.run(["status"] + arguments + ["--json"])
        guard outcome.status == 0 else { return (outcome, nil) }
        return (outcome, try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8)))
    }

    /// Changelog rows waiting on one source, counted with independent SQL.
    private func waiting(on dsn: ConnectionString) throws -> Int64 {
        let conn = try PGConnection.connect(dsn)
        let logs = try conn.query(
            "SELECT format('SELECT count(*) FROM %s', c.oid::regclass) FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
        return try (0..<logs.rowCount).reduce(0) { $0 + (try conn.query(logs[$1, 0]!).get(0, 0, as: Int64.self)) }
    }

    /// After apply stopped in sync, writes go on: the stored "0 waiting" is marked as old and the
    /// coordinator as not running; `--live` counts what waits on the sources now.
    func testAfterApplyStoppedStatusSaysSoAndLiveCountsTheChangelog() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.01)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                "UPDATE users SET name = name || '!' WHERE id IN (SELECT id FROM users ORDER BY id LIMIT \(20 + 10 * k))")
        }
        let expected = try fixture.sources.map { try waiting(on: $0) }
        XCTAssertEqual(expected, [20, 30])

        let (_, stored) = try status(["-c", config])
        let recorded = try XCTUnwrap(stored)
        XCTAssertEqual(recorded.phase, "in-sync")
        XCTAssertFalse(recorded.coordinatorRunning)
        XCTAssertEqual(recorded.backlog, 0, "the stored figure, as apply left it")
        XCTAssertFalse(recorded.backlogLive)
        let text = try ReshardCLI.run(["status", "-c", config])
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("phase in-sync when the coordinator stopped"), text.stdout)
        XCTAssertTrue(text.stdout.contains("coordinator not running since \(recorded.lease?.heartbeatAt ?? "?")"), text.stdout)
        XCTAssertTrue(text.stdout.contains("writes since are not applied"), text.stdout)
        XCTAssertTrue(text.stdout.contains("changelog s0: 0 waiting, "), text.stdout)
        XCTAssertTrue(text.stdout.contains("ago)"), "every figure carries its age: \(text.stdout)")
        XCTAssertTrue(text.stdout.contains("rows copied: \(recorded.rowsCopied.grouped)/\(recorded.rowsCopied.grouped)"), text.stdout)
        XCTAssertTrue(text.stdout.contains("(100%)"), text.stdout)

        let (_, current) = try status(["-c", config, "--live"])
        let live = try XCTUnwrap(current)
        XCTAssertTrue(live.backlogLive)
        XCTAssertEqual(live.backlog, expected.reduce(0, +))
        XCTAssertEqual(live.catchUp.map(\.source), ["s0", "s1"])
        XCTAssertEqual(live.catchUp.map(\.backlog), expected)
        let liveText = try ReshardCLI.run(["status", "-c", config, "--live"])
        XCTAssertTrue(liveText.stdout.contains("changelog s1: 30 waiting"), liveText.stdout)
        XCTAssertTrue(liveText.stdout.contains("counted on the source now"), liveText.stdout)
    }

    /// `status --watch` started before `apply` waits for the migration instead of exiting 2;
    /// without --watch an unregistered migration is still refused.
    func testWatchBeforeApplyWaitsForTheMigration() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.005)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let once = try ReshardCLI.run(["status", "-c", config])
        XCTAssertEqual(once.status, 2, once.stderr)

        let watch = try ReshardCLI.start(["status", "-c", config, "--watch"])
        XCTAssertTrue(eventually { watch.stderr.contains("waiting for migration plan-test to be registered") }, watch.stderr)
        XCTAssertEqual(kill(watch.pid, 0), 0, "status --watch must keep waiting: \(watch.stderr)")
        XCTAssertEqual(try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled"]).status, 0)
        XCTAssertTrue(eventually { watch.stdout.contains("migration plan-test: phase catching-up") }, watch.stdout + watch.stderr)
        watch.signal(SIGTERM)
        XCTAssertEqual(watch.wait(), 0, watch.stderr)
        XCTAssertEqual(watch.stderr.components(separatedBy: "waiting for migration").count, 2, "announced once: \(watch.stderr)")
    }
}
