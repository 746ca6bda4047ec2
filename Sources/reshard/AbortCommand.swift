import ArgumentParser
import ReshardCore

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
