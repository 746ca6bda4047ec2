import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// PAUSE and RESUME through a real PgBouncer (the apt package) in front of a local cluster.
final class PgBouncerTests: XCTestCase {
    /// A fresh database behind a fresh PgBouncer; its name, and the admin.
    private func bouncer() throws -> (PgBouncer, String, PgBouncerAdmin) {
        guard PgBouncer.executable != nil else { throw XCTSkip("pgbouncer is not installed (apt-get install pgbouncer)") }
        let cluster = try TestClusters.shared.clusters()[0]
        let database = try XCTUnwrap(try freshDatabase(on: cluster, "pgb").options["dbname"])
        let bouncer = try PgBouncer.start(in: cluster)
        addTeardownBlock { bouncer.stop() }
        return (bouncer, database, PgBouncerAdmin(admin: bouncer.adminConnectionString))
    }

    /// Clients of `database` that PgBouncer holds waiting for a server connection (`SHOW POOLS`).
    private func waiting(_ bouncer: PgBouncer, _ database: String) throws -> Int {
        let pools = try PGConnection.connect(bouncer.adminConnectionString).execute("SHOW POOLS")
        let name = try XCTUnwrap(pools.columnIndex("database")), waiting = try XCTUnwrap(pools.columnIndex("cl_waiting"))
        return (0..<pools.rowCount).filter { pools[$0, name] == database }.reduce(0) { $0 + (Int(pools[$1, waiting] ?? "") ?? 0) }
    }

    /// Runs one query on its own thread; `result` is set when the server answered.
    private final class Pending: @unchecked Sendable {
        private let lock = NSLock()
        private var value: String??
        init(_ conn: PGConnection, _ sql: String) {
            Thread { [self] in
                let answer = try? conn.execute(sql)[0, 0]
                lock.withLock { value = .some(answer ?? nil) }
            }.start()
        }
        var result: String?? { lock.withLock { value } }
    }

    func testAClientsQueriesAreHeldDuringPauseAndServedAfterResume() throws {
        let (bouncer, database, admin) = try bouncer()
        let client = try PGConnection.connect(bouncer.connectionString(database: database))
        XCTAssertEqual(try client.execute("SELECT current_database()")[0, 0], database)

        try admin.pause(database, timeout: 5)
        XCTAssertTrue(try admin.isPaused(database))
        let query = Pending(client, "SELECT current_database()")
        XCTAssertTrue(try eventually(timeout: 10) { try waiting(bouncer, database) == 1 }, "the query is held by PgBouncer")
        XCTAssertTrue(query.result == nil, "no answer while paused")

        try admin.resume(database, timeout: 5)
        XCTAssertTrue(eventually(timeout: 10) { query.result != nil })
        XCTAssertEqual(query.result, .some(database))
        XCTAssertFalse(try admin.isPaused(database))
        // Resuming what is not paused changes nothing and is no error.
        try admin.resume(database, timeout: 5)
    }

    /// A transaction that holds on makes PAUSE give up within its bound, and the database is
    /// resumed: clients are served as before, and the transaction can still commit.
    func testPauseTimesOutCleanlyWhileATransactionHoldsOn() throws {
        let (bouncer, database, admin) = try bouncer()
        let holder = try PGConnection.connect(bouncer.connectionString(database: database))
        try holder.execute("BEGIN; CREATE TABLE held (id int)")

        let started = Date()
        XCTAssertThrowsError(try admin.pause(database, timeout: 1)) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .failed)
            let message = "\(error)"
            XCTAssertTrue(message.contains("PAUSE \(database) did not finish within 1.0 s") && message.contains("resumed"), message)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3, "bounded by the timeout, plus the RESUME")
        XCTAssertFalse(try admin.isPaused(database))

        let other = try PGConnection.connect(bouncer.connectionString(database: database))
        XCTAssertEqual(try other.execute("SELECT 1")[0, 0], "1")
        try holder.execute("COMMIT")
        XCTAssertEqual(try other.execute("SELECT count(*) FROM held")[0, 0], "0")

        // With the transaction gone, PAUSE succeeds quickly.
        XCTAssertLessThan(try admin.pause(database, timeout: 5), 5)
        try admin.resume(database, timeout: 5)
    }

    func testAnUnreachablePgBouncerOrABadNameIsAClearError() throws {
        let (bouncer, _, _) = try bouncer()
        let port = bouncer.port
        bouncer.stop()
        let gone = PgBouncerAdmin(admin: try ConnectionString("host=127.0.0.1 port=\(port) dbname=pgbouncer user=postgres"))
        XCTAssertThrowsError(try gone.pause("app", timeout: 1)) { XCTAssertEqual(($0 as? ReshardError)?.code, .failed) }
        XCTAssertThrowsError(try gone.pause("app; SHUTDOWN", timeout: 1)) { XCTAssertEqual(($0 as? ReshardError)?.code, .badInput) }
    }
}
