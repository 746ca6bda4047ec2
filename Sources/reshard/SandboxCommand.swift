import ArgumentParser
import Foundation
import LocalCluster

/// `reshard sandbox`: throwaway local PostgreSQL clusters to try reshard on, removed on Ctrl-C
/// (or, should this process be killed, by the harness's watchdog).
struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Start throwaway local PostgreSQL clusters until interrupted, then remove them.")

    @Option(name: .long, parsing: .unconditional, help: "How many clusters to start.")
    var clusters = 2

    @Flag(name: .long, help: "Keep durability settings (fsync on), as a rehearsal would.")
    var durable = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...16).contains(clusters) else { throw ValidationError("--clusters must be between 1 and 16") }
    }

    func run() throws {
        TerminationSignal.install()
        let set = try LocalClusterSet.start(count: clusters, options: .init(forTests: !durable))
        defer { set.stop() }
        let info = SandboxInfo(
            directory: set.directory,
            clusters: set.clusters.map {
                .init(name: $0.name, port: $0.port, dsn: $0.connectionString().unsafeRawValue)
            })
        if output.json {
            try Console.json(info)
        } else {
            Console.out("started \(clusters) local cluster(s) in \(set.directory); Ctrl-C stops and removes them")
            for cluster in info.clusters { Console.out("\(cluster.name): \(cluster.dsn)") }
        }
        _ = TerminationSignal.wait()
        Console.plain("stopping and removing \(set.directory)")
    }
}

/// Printed by `reshard sandbox`. The connection strings name a password file, never a password.
struct SandboxInfo: Codable {
    struct Cluster: Codable {
        var name: String
        var port: Int
        var dsn: String
    }
    var directory: String
    var clusters: [Cluster]
}
