import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// The fixtures' own guarantees: a check that cannot fail proves nothing.
final class FixtureTests: XCTestCase {
    /// A snapshot of a database that cannot be reached throws instead of comparing equal to
    /// another failed snapshot.
    func testSnapshotThrowsWhenADatabaseIsUnreachable() throws {
        let fixture = try PlanFixture(self)
        let admin = try PGConnection.connect(try TestClusters.shared.clusters()[0].connectionString())
        let name = try PGConnection.connect(fixture.targets[1]).query("SELECT current_database()")[0, 0]!
        try admin.execute("DROP DATABASE \(try admin.quoteIdentifier(name)) WITH (FORCE)")
        XCTAssertThrowsError(try fixture.snapshot())
        XCTAssertEqual(try fixture.snapshot(unreachable: [fixture.targets[1]]).count, fixture.sources.count + fixture.targets.count)
    }
}

final class WriteLoadTests: XCTestCase {
    /// A load that cannot write says so: no commits and the errors it met, by SQLSTATE.
    func testALoadThatCannotWriteFailsTheTest() throws {
        let fixture = try PlanFixture(self)  // no tables on the sources
        let load = WriteLoad(sources: fixture.sources, writers: 1, longTransactions: false)
        XCTAssertTrue(eventually(timeout: 30) { (load.failuresByState["42P01"] ?? 0) > 2 })
        load.stop()
        let problems = load.problems()
        XCTAssertTrue(problems.contains { $0.hasPrefix("unexpected write error: [42P01]") }, "\(problems)")
        XCTAssertTrue(problems.contains("the load committed only 0 write(s), fewer than 50"), "\(problems)")
    }

    /// Errors a test causes on purpose (a source restarting) are tolerated only when named, by
    /// SQLSTATE or class; the load goes on writing afterwards.
    func testOnlyTheErrorsOfADeliberateRestartAreTolerated() throws {
        let spare = try LocalClusterSet.start(count: 1)
        defer { spare.stop() }
        // Two loads, each on its own pair of databases (their new ids would collide), on one cluster.
        var pairs: [[ConnectionString]] = []
        for pair in ["a", "b"] {
            var fixture = try PlanFixture(self)
            fixture.sources = [try spare.clusters[0].createDatabase("s0\(pair)"), try spare.clusters[0].createDatabase("s1\(pair)")]
            try ReferenceData.load(fixture, scale: 0.001)
            pairs.append(fixture.sources)
        }
        let tolerant = WriteLoad(sources: pairs[0], writers: 1, longTransactions: false, tolerating: ["08", "57P01", "57P03"])
        let strict = WriteLoad(sources: pairs[1], writers: 1, longTransactions: false)
        XCTAssertTrue(eventually { tolerant.committed > 20 && strict.committed > 20 })
        try spare.clusters[0].restart(mode: "fast")
        let (before, strictBefore) = (tolerant.committed, strict.committed)
        XCTAssertTrue(eventually { tolerant.committed > before + 20 && strict.committed > strictBefore + 20 }, "writes resume after the restart")
        tolerant.stop()
        strict.stop()
        XCTAssertEqual(tolerant.problems(), [], "\(tolerant.failuresByState)")
        XCTAssertFalse(strict.problems().isEmpty, "the restart's errors are unexpected without tolerance: \(strict.failuresByState)")
        XCTAssertFalse(tolerant.failuresByState.isEmpty, "the restart must have cost writes")
    }
}
