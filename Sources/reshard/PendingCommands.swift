import ArgumentParser
import ReshardCore

/// Commands whose issues have not landed yet. They refuse with exit code 2 and change nothing.
protocol PendingCommand: ParsableCommand {}

extension PendingCommand {
    func run() throws {
        throw ReshardError.refused("'reshard \(Self.configuration.commandName ?? "")' is not yet implemented")
    }
}



struct VerifyCommand: PendingCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Compare row checksums between old and new layout (not yet implemented).")
}
