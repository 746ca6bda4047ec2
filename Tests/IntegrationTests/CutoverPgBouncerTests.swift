import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// `--pgbouncer ADMIN_DSN` on cutover, with a real PgBouncer in front of a source.
extension CutoverTests {
    func testCutoverPausesTheSourcesDatabaseOnPgBouncerAndItsClientsWorkAfter() throws {
        guard PgBouncer.executable != nil else { throw XCTSkip("pgbouncer is not installed (apt-get install pgbouncer)") }
        let setup = try migrated(rows: 40)
        let source = setup.layouts.old[0]
        let cluster = try XCTUnwrap(try TestClusters.shared.clusters().first { String($0.port) == source.endpoint.port })
        let bouncer = try PgBouncer.start(in: cluster)
        addTeardownBlock { bouncer.stop() }
        let database = try XCTUnwrap(source.options["dbname"])
        let client = try PGConnection.connect(bouncer.connectionString(database: database))
        XCTAssertEqual(try client.execute("SELECT count(*) > 0 FROM users")[0, 0], "t")
        let admin = PgBouncerAdmin(admin: bouncer.adminConnectionString)

        // A PgBouncer that cannot be reached: the attempt is undone, the old layout serves.
        let unreachable = try ReshardCLI.run(["cutover", "-c", setup.config, "--skip-verify", "--pgbouncer", "host=127.0.0.1 port=1 dbname=pgbouncer"])
        XCTAssertEqual(unreachable.status, 1, unreachable.stderr)
        XCTAssertTrue(unreachable.stderr.contains("step barrier: cannot reach the admin console of pgbouncer 1 (127.0.0.1:1"), unreachable.stderr)
        XCTAssertEqual(try PGConnection.connect(setup.fixture.metadata).query("SELECT phase FROM reshard.migrations").get(0, 0, as: String.self), "in-sync")
        XCTAssertEqual(try client.execute("SELECT count(*) > 0 FROM users")[0, 0], "t")

        let cutover = try ReshardCLI.run(
            ["cutover", "-c", setup.config, "--skip-verify", "--pgbouncer", ConnectionString.keywordString(bouncer.adminConnectionString.options)])
        XCTAssertEqual(cutover.status, 0, cutover.stderr)
        XCTAssertTrue(cutover.stdout.contains("paused \(database) on pgbouncer"), cutover.stdout)
        XCTAssertFalse(cutover.stdout.contains("password"), cutover.stdout)
        XCTAssertEqual(try admin.isPaused(database), false)
        // The client through PgBouncer keeps working: it reads, and its write to the old layout
        // meets the fence (it reloads the map and writes to the new layout).
        XCTAssertEqual(try client.execute("SELECT count(*) > 0 FROM users")[0, 0], "t")
        XCTAssertThrowsError(try client.execute("INSERT INTO users VALUES (999999, 'stale')")) { error in
            XCTAssertEqual((error as? PostgresError)?.sqlState, "RS001", "\(error)")
        }
        XCTAssertEqual(try client.execute("SELECT 1")[0, 0], "1")
    }
}
