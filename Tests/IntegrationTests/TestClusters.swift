import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// Two local clusters shared by the integration tests of one test process, started on first use
/// and removed at process exit (and by the harness's watchdog if the process dies).
final class TestClusters: @unchecked Sendable {
    static let shared = TestClusters()
    private let lock = NSLock()
    private var set: LocalClusterSet?

    func clusters() throws -> [LocalCluster] {
        try lock.withLock {
            if let set { return set.clusters }
            let started = try LocalClusterSet.start(count: 2)
            set = started
            atexit { TestClusters.shared.stop() }
            return started.clusters
        }
    }

    func stop() {
        lock.withLock {
            set?.stop()
            set = nil
        }
    }
}

/// A fresh database on a shared cluster, dropped by the test's teardown.
extension XCTestCase {
    func freshDatabase(on cluster: LocalCluster, _ prefix: String = "t") throws -> ConnectionString {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let dsn = try cluster.createDatabase(name)
        addTeardownBlock {
            let admin = try PGConnection.connect(cluster.connectionString())
            try admin.execute("DROP DATABASE IF EXISTS \(try admin.quoteIdentifier(name)) WITH (FORCE)")
        }
        return dsn
    }
}
