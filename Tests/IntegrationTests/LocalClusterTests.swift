import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// Acceptance: the harness leaves no cluster process or temp directory behind, also after a
/// failing test or a killed process.
final class LocalClusterTests: XCTestCase {
    func testClustersAreIndependentAndRemovedWhenTheBodyThrows() throws {
        struct TestFailure: Error {}
        var directory = ""
        var pids: [Int32] = []
        XCTAssertThrowsError(try LocalClusterSet.with(count: 2) { set in
            directory = set.directory
            XCTAssertNotEqual(set.clusters[0].port, set.clusters[1].port)
            for cluster in set.clusters {
                let conn = try PGConnection.connect(cluster.connectionString())
                XCTAssertEqual(try conn.query("SHOW fsync")[0, 0], "off")
                XCTAssertEqual(try conn.query("SELECT inet_server_addr()::text")[0, 0], "127.0.0.1/32")
                pids.append(try XCTUnwrap(cluster.postmasterPID))
            }
            throw TestFailure()
        }) { XCTAssertTrue($0 is TestFailure) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory))
        XCTAssertEqual(pids.count, 2)
        for pid in pids { XCTAssertTrue(eventually { kill(pid, 0) != 0 }, "postmaster \(pid) still running") }
    }

    func testRestartKeepsDataAndPort() throws {
        try LocalClusterSet.with(count: 1) { set in
            let cluster = set.clusters[0]
            let port = cluster.port
            try PGConnection.connect(cluster.connectionString()).execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
            try cluster.restart(mode: "immediate")
            XCTAssertEqual(cluster.port, port)
            let count = try PGConnection.connect(cluster.connectionString()).query("SELECT count(*) FROM kept")
            XCTAssertEqual(count[0, 0], "1")
        }
    }

    func testSandboxKilledWithSigkillIsCleanedUpByTheWatchdog() throws {
        let sandbox = try ReshardCLI.start(["sandbox", "--clusters", "1", "--json"])
        let info = try XCTUnwrap(try waitForSandbox(sandbox))
        let dsn = try ConnectionString(info.clusters[0].dsn)
        XCTAssertNil(dsn.options["password"], "sandbox output must not carry a password")
        let conn = try PGConnection.connect(dsn)
        let postmaster = try conn.query("SELECT pg_postmaster_start_time() IS NOT NULL, (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer')")
        XCTAssertEqual(postmaster[0, 0], "t")
        sandbox.signal(SIGKILL)
        XCTAssertEqual(sandbox.wait(), 128 + SIGKILL)
        XCTAssertTrue(eventually { !FileManager.default.fileExists(atPath: info.directory) }, "\(info.directory) left behind")
        XCTAssertThrowsError(try PGConnection.connect(dsn))
    }

    func testSandboxStopsCleanlyOnSigterm() throws {
        let sandbox = try ReshardCLI.start(["sandbox", "--clusters", "2", "--json"])
        let info = try XCTUnwrap(try waitForSandbox(sandbox))
        XCTAssertEqual(info.clusters.count, 2)
        sandbox.signal(SIGTERM)
        XCTAssertEqual(sandbox.wait(), 0, sandbox.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: info.directory))
    }

    private struct SandboxJSON: Decodable {
        struct Cluster: Decodable {
            var name: String
            var port: Int
            var dsn: String
        }
        var directory: String
        var clusters: [Cluster]
    }

    private func waitForSandbox(_ sandbox: ReshardCLI.Running) throws -> SandboxJSON? {
        var info: SandboxJSON?
        _ = eventually(timeout: 60) {
            info = try? JSONDecoder().decode(SandboxJSON.self, from: Data(sandbox.stdout.utf8))
            return info != nil
        }
        return info
    }

    /// A streaming replica (for the replica-lag throttle): it replays the primary's writes, and
    /// `recovery_min_apply_delay` makes it lag on purpose, visibly from both sides.
    func testStreamingReplicaReplaysAndCanBeMadeToLag() throws {
        try LocalClusterSet.with(count: 1) { set in
            let primary = set.clusters[0]
            let replica = try set.startReplica(of: primary)
            let lagging = try set.startReplica(of: primary, settings: ["recovery_min_apply_delay": "'15s'"])
            let p = try PGConnection.connect(primary.connectionString())
            try p.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
            let r = try PGConnection.connect(replica.connectionString())
            XCTAssertEqual(try r.query("SELECT pg_is_in_recovery()")[0, 0], "t")
            XCTAssertTrue(try eventually { (try? r.query("SELECT count(*) FROM t")[0, 0]) == "1" })
            let l = try PGConnection.connect(lagging.connectionString())
            // Behind by the delay: the table is not there yet while the primary says it streams.
            XCTAssertEqual(try l.query("SELECT to_regclass('t') IS NULL")[0, 0], "t")
            XCTAssertEqual(try p.query("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0, 0], "2")
            XCTAssertTrue(try eventually(timeout: 90) { (try? l.query("SELECT count(*) FROM t")[0, 0]) == "1" })
        }
    }
}
