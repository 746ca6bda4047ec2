import ArgumentParser
import PostgresClient
import ReshardCore

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
        _ = try PhaseStore.read(name, on: meta)  // refuses a migration of a newer reshard
        let updated = try meta.query(
            "UPDATE reshard.migrations SET max_rows_per_second = $2 WHERE name = $1", [name, maxRowsPerSecond.map { $0 as any PGBindable }])
        guard updated.affectedRows == 1 else { throw ReshardError.refused("migration \(name) is not registered") }
        Console.out("migration \(name): backfill limit \(maxRowsPerSecond.map { "\($0) rows/s" } ?? "removed")")
    }
}
