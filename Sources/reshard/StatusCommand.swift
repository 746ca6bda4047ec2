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

/// `reshard throttle`: changes a running apply's rate limit through the metadata.
struct ThrottleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throttle", abstract: "Change the backfill rate limit of a running (or later) apply.")

    @OptionGroup var migration: MigrationOptions
    @Option(name: .long, help: "Rows per second across all backfill workers.")
    var maxRowsPerSecond: Int?
    @Flag(name: .long, help: "Remove the limit.")
    var unlimited = false

    func validate() throws {
        guard (maxRowsPerSecond != nil) != unlimited else { throw ValidationError("give --max-rows-per-second N or --unlimited") }
        if let maxRowsPerSecond, maxRowsPerSecond < 1 { throw ValidationError("--max-rows-per-second must be positive") }
    }

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let meta = try PGConnection.connect(metadata, applicationName: "reshard throttle")
        let updated = try meta.query(
            "UPDATE reshard.migrations SET max_rows_per_second = $2 WHERE name = $1", [name, maxRowsPerSecond.map { $0 as any PGBindable }])
        guard updated.affectedRows == 1 else { throw ReshardError.refused("migration \(name) is not registered") }
        Console.out("migration \(name): backfill limit \(maxRowsPerSecond.map { "\($0) rows/s" } ?? "removed")")
    }
}

/// `reshard abort`: undoes the shim and marks the migration aborted.
struct AbortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abort", abstract: "Remove the shim and changelog from the sources and mark the migration aborted.")

    @OptionGroup var migration: MigrationOptions
    @Flag(name: .long, help: "Also empty the copied tables on targets that are not sources.")
    var dropTargetData = false

    func run() throws {
        for line in try MigrationAbort.run(try migration.resolve(), dropTargetData: dropTargetData) { Console.out(line) }
        Console.out("migration aborted")
    }
}
