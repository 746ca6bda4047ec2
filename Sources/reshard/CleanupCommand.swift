import ArgumentParser
import Foundation
import ReshardCore

/// `reshard cleanup`: ends a cut-over migration for good.
struct CleanupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cleanup", abstract: "After cutover: remove the shims, changelogs, fences and reshard's schemas; mark the migration complete.",
        discussion: """
            Refuses before cutover. Rollback is impossible afterwards. The moved tables on sources that are not \
            targets are dropped only with --drop-sources. Idempotent and resumable: run it again after any failure.
            """)

    @OptionGroup var migration: MigrationOptions
    @Option(name: .long, help: "Refuse unless the cutover finished at least this long ago (e.g. 24h), keeping rollback possible until then.")
    var after: String?
    @Flag(name: .long, help: "Also drop the migrated tables on sources that are not targets.")
    var dropSources = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let report = try MigrationCleanup.run(
            migration: name, metadata: metadata, shards: try migration.shardConnections(),
            after: try after.map { try SwitchOptions.seconds($0, option: "--after") }, dropSources: dropSources)
        if output.json { return try Console.json(report) }
        for line in report.done { Console.out("removed \(line)") }
        for line in report.keptSources { Console.out(line) }
        Console.out("migration \(name) cleaned up")
    }
}
