import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// The options `cutover` and `rollback` share: both are a switch between the layouts.
struct SwitchArguments: ParsableArguments {
    @Flag(name: .long, help: "Run the checks and print every step it would take; change nothing.")
    var dryRun = false

    @Option(name: .long, help: "The longest the application's writes may be held up (half of it waiting for locks), e.g. 2s, 500ms.")
    var maxStall = "2s"

    @Option(name: .long, help: "Refuse when a transaction on the serving layout has been open longer than this.")
    var maxTransactionAge = "60s"

    @Option(name: .long, parsing: .unconditional, help: "Added to the highest value handed out when sequences are advanced.")
    var sequenceMargin: Int64 = 10_000

    @Option(name: .customLong("pgbouncer"), help: ArgumentHelp(
        "A PgBouncer admin console (database pgbouncer); the shards' databases are paused on it for the stall. Repeatable.",
        valueName: "ADMIN_DSN"))
    var pgbouncer: [String] = []

    func options() throws -> SwitchOptions {
        var options = SwitchOptions()
        options.pgBouncers = try pgbouncer.enumerated().map { i, raw in
            do { return try ConnectionString(raw, label: "pgbouncer \(i + 1)") } catch {
                throw ReshardError.badInput("--pgbouncer #\(i + 1): not a connection string")
            }
        }
        options.dryRun = dryRun
        options.maxStallSeconds = try SwitchOptions.seconds(maxStall, option: "--max-stall")
        options.maxTransactionAgeSeconds = try SwitchOptions.seconds(maxTransactionAge, option: "--max-transaction-age")
        guard options.maxStallSeconds >= 0.05 else { throw ReshardError.badInput("--max-stall: at least 50ms") }
        guard sequenceMargin >= 0 else { throw ReshardError.badInput("--sequence-margin: must not be negative") }
        options.sequenceMargin = sequenceMargin
        return options
    }

    static func run(_ direction: CutoverStateMachine.Direction, _ migration: MigrationOptions, _ options: SwitchOptions, _ output: OutputOptions) throws {
        let (name, metadata) = try migration.metadataOnly()
        let runner = LayoutSwitch(shards: try migration.shardConnections(), metadata: metadata, options: options) { Console.plain($0) }
        let report = try runner.run(direction, migration: name)
        if output.json { return try Console.json(report) }
        for line in report.lines { Console.out(line) }
        for step in report.steps where !options.dryRun {
            Console.out(String(format: "  %-16@ %8.1f ms%@", step.step, step.milliseconds, step.detail.map { "  \($0)" } ?? ""))
        }
    }
}

/// `reshard cutover`: switches the application's writes to the new layout.
struct CutoverCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cutover", abstract: "Switch writes to the new layout (epoch + 1), in a stall bounded by --max-stall.",
        discussion: """
            Refuses (exit 2, nothing changed) unless every slice is copied, a verify found every table identical after \
            the backfill (or --skip-verify), the write fence is installed, and no transaction on a source is older \
            than --max-transaction-age. It holds the apply lease: stop 'reshard apply' first, cutover catches up itself. \
            On a timeout or error the attempt is undone, the old layout serves, and it exits 1 naming the step and \
            shard; run it again. After a crash, cutover finishes or undoes what was left; so does rollback.
            """)

    @OptionGroup var migration: MigrationOptions
    @OptionGroup var switching: SwitchArguments
    @Flag(name: .long, help: "Cut over without a clean verify.")
    var skipVerify = false
    @OptionGroup var output: OutputOptions

    func run() throws {
        var options = try switching.options()
        options.skipVerify = skipVerify
        try SwitchArguments.run(.cutover, migration, options, output)
    }
}
