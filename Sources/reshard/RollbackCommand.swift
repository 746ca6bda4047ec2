import ArgumentParser
import Foundation
import ReshardCore

/// `reshard rollback`: a cutover the other way, possible until cleanup.
struct RollbackCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rollback", abstract: "Switch writes back to the old layout (epoch + 1), with the same bounds as cutover.",
        discussion: """
            The old layout was kept current by reverse capture since the cutover. The sources' sequences are advanced \
            past what the targets handed out first. Also finishes or undoes a cutover a crash left half-done.
            """)

    @OptionGroup var migration: MigrationOptions
    @OptionGroup var switching: SwitchArguments
    @OptionGroup var output: OutputOptions

    func run() throws {
        try SwitchArguments.run(.rollback, migration, try switching.options(), output)
    }
}
