import ArgumentParser
import Foundation
import LocalCluster
import PostgresClient
import ReshardCore

/// `reshard demo`: the README's main job. Runs reshard end to end on throwaway local clusters
/// and removes them afterwards. It grows with the product: today it sets up the metadata schema.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run reshard end to end on throwaway local PostgreSQL clusters, then remove them.")

    func run() throws {
        let started = Date()
        Console.out("starting a throwaway local PostgreSQL cluster...")
        try LocalClusterSet.with(count: 1) { set in
            let cluster = set.clusters[0]
            let metadata = try cluster.createDatabase("reshard")
            Console.out("cluster \(cluster.name) is up on 127.0.0.1:\(cluster.port) (data in \(set.directory))")
            let connection = try PGConnection.connect(metadata)
            for attempt in 1...2 {
                let report = try MetadataSchema.current.apply(to: connection)
                let what = report.applied.isEmpty
                    ? "nothing to do, already at version \(report.versionAfter)"
                    : "applied \(report.applied.joined(separator: ", ")), now at version \(report.versionAfter)"
                Console.out("reshard init #\(attempt) on \(metadata): \(what)")
            }
            let tables = try connection.query(
                "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'reshard'")
            Console.out("metadata tables: \(tables[0, 0] ?? "none")")
        }
        Console.out(String(format: "removed the cluster; demo finished in %.1f s", Date().timeIntervalSince(started)))
    }
}
