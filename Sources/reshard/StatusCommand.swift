import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `reshard status`: a migration's progress, read from the metadata alone.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a migration's phase, progress, backlog and last error from the metadata.")

    @OptionGroup var migration: MigrationOptions
    @Flag(name: .long, help: "Show it again every 2 seconds until interrupted.")
    var watch = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        TerminationSignal.install()
        let (name, metadata) = try migration.metadataOnly()
        let meta = try PGConnection.connect(metadata, applicationName: "reshard status", settings: ["default_transaction_read_only": "on"])
        repeat {
            let status = try MigrationStatus.read(migration: name, from: meta)
            if output.json { try Console.json(status) } else { Console.out(status.text + (watch ? "\n" : "")) }
            if watch {
                for _ in 0..<20 where !TerminationSignal.received { usleep(100_000) }
            }
        } while watch && !TerminationSignal.received
    }
}
