import Foundation
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
