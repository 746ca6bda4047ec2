import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `reshard status`: a migration's progress, read from the metadata alone.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show a migration's phase, progress, backlog and last error from the metadata.")

    @OptionGroup var migration: MigrationOptions
    @Flag(name: .long, help: "Show it again every 2 seconds until interrupted (waits for the migration to be registered).")
    var watch = false
    @Flag(name: .long, help: "Count the changes waiting in the changelogs on the sources now, instead of the figure apply last stored.")
    var live = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        TerminationSignal.install()
        let (name, metadata) = try migration.metadataOnly()
        let shards = live ? try migration.shardConnections() : [:]
        let meta = try PGConnection.connect(metadata, applicationName: "reshard status", settings: ["default_transaction_read_only": "on"])
        var announcedWaiting = false
        repeat {
            if watch, !(try MigrationStatus.isRegistered(migration: name, on: meta)) {
                if !announcedWaiting { Console.plain("waiting for migration \(name) to be registered ('reshard apply' registers it)") }
                announcedWaiting = true
                for _ in 0..<20 where !TerminationSignal.received { usleep(100_000) }
                continue
            }
            var status = try MigrationStatus.read(migration: name, from: meta)
            if live { try status.readLiveBacklog(plan: try MigrationStatus.registeredPlan(migration: name, on: meta), shards: shards) }
            if live, status.phase == MigrationPhase.cutOver.rawValue {
                try status.switching?.readReverseBacklog(plan: try MigrationStatus.registeredPlan(migration: name, on: meta), shards: shards)
            }
            if output.json { try Console.json(status) } else { Console.out(status.text + (watch ? "\n" : "")) }
            if watch {
                for _ in 0..<20 where !TerminationSignal.received { usleep(100_000) }
            }
        } while watch && !TerminationSignal.received
    }
}
