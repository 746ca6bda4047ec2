import ArgumentParser
import PostgresClient
import ReshardCore

/// `reshard throttle`: changes a running apply's rate limit through the metadata.
struct ThrottleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throttle", abstract: "Change the backfill rate limit of a running (or later) apply.")

    @OptionGroup var migration: MigrationOptions
    @Option(name: .long, parsing: .unconditional, help: "Rows per second across all backfill workers.")
    var maxRowsPerSecond: Int?
    @Flag(name: .long, help: "Remove the limit.")
    var unlimited = false
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (maxRowsPerSecond != nil) != unlimited else { throw ValidationError("give --max-rows-per-second N or --unlimited") }
        try RateLimit.validate(maxRowsPerSecond)
    }

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let meta = try PGConnection.connect(metadata, applicationName: "reshard throttle")
        // Refuses a migration of a newer reshard; nil when not registered (also before 'reshard init').
        guard try PhaseStore.read(name, on: meta) != nil else {
            throw ReshardError.refused("migration \(name) is not registered on \(metadata); run 'reshard apply' first")
        }
        // The limit's source column came with schema version 8 (a migration registered by an older reshard).
        _ = try MetadataSchema.current.apply(to: meta)
        let updated = try meta.query(
            """
            UPDATE reshard.migrations SET max_rows_per_second = $2, max_rows_per_second_source = 'reshard throttle',
                max_rows_per_second_at = now() WHERE name = $1
            """, [name, maxRowsPerSecond.map { $0 as any PGBindable }])
        guard updated.affectedRows == 1 else { throw ReshardError.refused("migration \(name) is not registered") }
        if output.json {
            try Console.json(ThrottleResult(migration: name, maxRowsPerSecond: maxRowsPerSecond))
        } else {
            Console.out("migration \(name): backfill limit \(maxRowsPerSecond.map { "\($0) rows/s" } ?? "removed")")
        }
    }
}

/// Printed by `reshard throttle --json`; `maxRowsPerSecond` is null when the limit was removed.
struct ThrottleResult: Codable {
    var migration: String
    var maxRowsPerSecond: Int?
}
