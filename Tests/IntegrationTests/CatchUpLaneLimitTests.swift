import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// Issue 14: the catch-up's lanes run side by side, but never more than
/// `--max-connections-per-shard` of them at once on a shard.
final class CatchUpLaneLimitTests: XCTestCase {
    /// One source, three pure targets, a limit of 1: while a backlog drains, sampled
    /// `pg_stat_activity` never shows two of reshard's sessions running a catch-up statement on
    /// the source at once (the lag check's query aside), and the targets agree with the source.
    func testLanesStayWithinTheConnectionLimit() throws {
        var fixture = try PlanFixture(self)
        let clusters = try TestClusters.shared.clusters()
        fixture.sources = [fixture.sources[1]]
        fixture.targets[0] = try freshDatabase(on: clusters[0], "t0")
        let source = try PGConnection.connect(fixture.sources[0])
        try source.execute(
            """
            CREATE TABLE items (id bigint PRIMARY KEY, payload text NOT NULL);
            INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 60000) g;
            ANALYZE items;
            """)
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let first = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(first.status, 0, first.stderr)
        // A backlog of 120,000 changes, built with the coordinator stopped.
        try source.execute("UPDATE items SET payload = md5(payload); UPDATE items SET payload = md5(payload)")

        let apply = try ReshardCLI.start(["apply", "-c", config, "--until", "caught-up", "--max-connections-per-shard", "1"])
        let database = try source.query("SELECT current_database()").get(0, 0, as: String.self)
        var most = 0, samples = 0
        while apply.wait(timeout: 0.01) == nil {
            let active = try source.query(
                """
                SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'reshard apply'
                AND state = 'active' AND query NOT LIKE '%pg_stat_replication%'
                """, [database]).get(0, 0, as: Int.self)
            most = max(most, active)
            samples += 1
            usleep(5_000)
        }
        XCTAssertEqual(apply.wait(), 0, apply.stderr)
        XCTAssertGreaterThan(samples, 20, "the drain was too short to sample")
        XCTAssertGreaterThanOrEqual(most, 1, "no catch-up statement was ever seen running")
        XCTAssertLessThanOrEqual(most, 1, "more catch-up sessions ran at once on the source than --max-connections-per-shard")
        let expected = try source.query("SELECT count(*), sum(hashtextextended(i::text, 0))::text FROM items i")
        var count = 0, sum = Decimal(0)
        for target in fixture.targets {
            let r = try PGConnection.connect(target).query("SELECT count(*), coalesce(sum(hashtextextended(i::text, 0)), 0)::text FROM items i")
            count += try r.get(0, 0, as: Int.self)
            sum += Decimal(string: r[0, 1]!)!
        }
        XCTAssertEqual("\(count)/\(sum)", "\(try expected.get(0, 0, as: Int.self))/\(expected[0, 1]!)")
    }
}
