import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 13: `apply --workers-only` processes copy backfill slices beside the lease holder,
/// claimed in the metadata; one killed with SIGKILL midway loses its slice to the others, and the
/// backfill completes with every row copied exactly once in effect.
final class ScaleOutTests: XCTestCase {
    func testThreeProcessesFinishTheBackfillWithOneKilledMidway() throws {
        let fixture = try PlanFixture(self)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE items (id bigint PRIMARY KEY, home int NOT NULL, note text);
                INSERT INTO items SELECT g, \(k), 'item ' || g FROM generate_series(1, 36000) g WHERE g % 2 = \(k);
                ANALYZE items;
                """)
        }
        let config = try fixture.writeConfig(tables: [("items", "id")])
        let limits = ["--max-connections-per-shard", "1", "--max-rows-per-second", "2500"]
        // The lease holder registers the migration; the workers wait for its shim, then claim.
        let holder = try ReshardCLI.start(["apply", "-c", config] + limits)
        XCTAssertTrue(try eventually(timeout: 60) { try OperateChecks.status(config) != nil }, holder.stderr)
        let workers = try (0..<2).map { _ in try ReshardCLI.start(["apply", "-c", config, "--workers-only"] + limits) }
        let meta = try PGConnection.connect(fixture.metadata)
        func copying(_ process: ReshardCLI.Running) throws -> Int {
            try meta.query(
                "SELECT count(*) FROM reshard.slices WHERE claimed_by LIKE $1 AND NOT done AND rows_copied > 0", ["% pid \(process.pid) run %"]
            ).get(0, 0, as: Int.self)
        }
        // Every process copies a slice of its own at some moment; the first worker dies mid-slice.
        func slices() throws -> String {
            let r = try meta.query("SELECT format('%s %s->%s %s %s %s', table_name, source, target, rows_copied, done, claimed_by) FROM reshard.slices ORDER BY 1")
            return (0..<r.rowCount).map { r[$0, 0]! }.joined(separator: "\n")
        }
        guard try eventually(timeout: 60, { try copying(workers[0]) > 0 && copying(workers[1]) > 0 }) else {
            return XCTFail("\(try slices())\n\(holder.stderr)\n\(workers[0].stderr)\n\(workers[1].stderr)")
        }
        let killed = try XCTUnwrap(try meta.query(
            "SELECT table_name || ' ' || source || ' -> ' || target FROM reshard.slices WHERE claimed_by LIKE $1 AND NOT done",
            ["% pid \(workers[0].pid) run %"])[0, 0])
        workers[0].signal(SIGKILL)
        XCTAssertEqual(workers[0].wait(), 128 + SIGKILL)

        XCTAssertEqual(workers[1].wait(timeout: 120), 0, workers[1].stderr)
        XCTAssertTrue(try eventually(timeout: 120) { try OperateChecks.status(config)?.phase == "in-sync" }, holder.stderr)
        holder.signal(SIGTERM)
        XCTAssertEqual(holder.wait(), 0, holder.stderr)

        // The killed worker's slice was finished by another process.
        let finisher = try meta.query(
            "SELECT claimed_by, done FROM reshard.slices WHERE table_name || ' ' || source || ' -> ' || target = $1", [killed])
        XCTAssertEqual(finisher[0, 1], "t")
        XCTAssertFalse(finisher[0, 0]?.contains("pid \(workers[0].pid) ") ?? true, "\(killed) still claimed by the killed worker")
        // Rows by independent SQL, and the checkpoints count every moved row once: no batch was
        // counted twice across the takeover, none left out.
        try OperateChecks.assertTargetsHoldSourceRows(fixture, table: "items", hash: "hashint8(id)")
        let s0 = try PGConnection.connect(fixture.sources[0]), s1 = try PGConnection.connect(fixture.sources[1])
        let (lo, hi) = OperateChecks.ranges[0]
        let moving = try s0.query("SELECT count(*) FROM items WHERE NOT hashint8(id) BETWEEN \(lo) AND \(hi)").get(0, 0, as: Int.self)
            + (try s1.query("SELECT count(*) FROM items").get(0, 0, as: Int.self))
        let counted = try meta.query("SELECT sum(rows_copied) FROM reshard.slices WHERE NOT stays_in_place").get(0, 0, as: Int.self)
        XCTAssertEqual(counted, moving)
        let claimers = try meta.query("SELECT count(DISTINCT claimed_by) FROM reshard.slices WHERE NOT stays_in_place").get(0, 0, as: Int.self)
        XCTAssertGreaterThanOrEqual(claimers, 2, "slices must have been copied by several processes")
    }
}
