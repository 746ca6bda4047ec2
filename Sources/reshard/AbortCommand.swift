import ArgumentParser
import ReshardCore

/// `reshard abort`: undoes the shim and marks the migration aborted. Safe to run again (for
/// example with --drop-target-data after a plain abort).
struct AbortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "abort", abstract: "Remove the shim and changelog from the sources and mark the migration aborted.")

    @OptionGroup var migration: MigrationOptions
    @Flag(name: .long, help: "Also empty the copied tables on targets that are not sources (also after an earlier abort).")
    var dropTargetData = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let report = try MigrationAbort.run(
            migration: name, metadata: metadata, shards: try migration.shardConnections(), dropTargetData: dropTargetData)
        if output.json { return try Console.json(report) }
        for line in report.done + report.leftInPlace { Console.out(line) }
        Console.out("migration \(name) aborted")
    }
}
