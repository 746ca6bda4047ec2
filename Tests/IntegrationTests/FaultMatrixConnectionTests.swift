import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// Issue 13: a shard behind a stalled network must not hold reshard's connections forever.
/// libpq sets no keepalives or `tcp_user_timeout` by default; reshard does, unless the
/// connection string says otherwise.
final class FaultMatrixConnectionTests: XCTestCase {
    func testConnectionsGetKeepalivesAndATCPUserTimeoutByDefault() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(cluster.connectionString())
        XCTAssertEqual(conn.option("keepalives"), "1")
        XCTAssertEqual(conn.option("keepalives_idle"), "30")
        XCTAssertEqual(conn.option("keepalives_interval"), "10")
        XCTAssertEqual(conn.option("keepalives_count"), "3")
        XCTAssertEqual(conn.option("tcp_user_timeout"), "60000")
        XCTAssertEqual(try conn.query("SELECT 1").get(0, 0, as: Int.self), 1)
    }

    func testTheConnectionStringsOwnSettingsWin() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let dsn = try ConnectionString(cluster.connectionString().unsafeRawValue + " keepalives_idle=5 tcp_user_timeout=2000")
        let conn = try PGConnection.connect(dsn)
        XCTAssertEqual(conn.option("keepalives_idle"), "5")
        XCTAssertEqual(conn.option("tcp_user_timeout"), "2000")
        XCTAssertEqual(conn.option("keepalives_count"), "3", "the settings it does not name keep reshard's defaults")
    }
}

extension FaultMatrixConnectionTests {
    /// The COPY relay to a target whose backend dies mid-stream (no error message, the socket
    /// just closes) and from a source whose backend does: a lost connection, which reshard
    /// retries, not a failed COPY.
    func testACopyCutOffByAVanishedServerIsALostConnection() throws {
        let set = try LocalClusterSet.start(count: 1)
        defer { set.stop() }
        let shared = try TestClusters.shared.clusters()[0].connectionString()
        let dying = set.clusters[0].connectionString()
        for killSource in [false, true] {
            let source = try PGConnection.connect(killSource ? dying : shared), target = try PGConnection.connect(killSource ? shared : dying)
            try target.execute("CREATE TEMP TABLE sink (n int, padding text)")
            let pid = (killSource ? source : target).backendPID
            let killer = Thread {
                usleep(500_000)
                kill(pid, SIGKILL)
            }
            killer.start()
            // generate_series in the select list streams its rows (in FROM they would all be made first).
            XCTAssertThrowsError(try PGConnection.relayCopy(
                from: source, "COPY (SELECT generate_series(1, 50000000), repeat('x', 200)) TO STDOUT", to: target,
                "COPY sink FROM STDIN")
            ) { error in
                XCTAssertEqual((error as? PostgresError)?.code, .connectionLost, "killing the \(killSource ? "source" : "target"): \(String(reflecting: error))")
                XCTAssertTrue(RetryPolicy.isTransient(error))
            }
            // The surviving side is usable again, out of COPY.
            XCTAssertEqual(try (killSource ? target : source).query("SELECT 1").get(0, 0, as: Int.self), 1)
            XCTAssertTrue(eventually(timeout: 30) { (try? PGConnection.connect(dying)) != nil }, "the killed cluster recovers")
        }
    }
}
