import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `reshard`: online resharding for PostgreSQL.
///
/// Exit codes, everywhere: 0 success, 1 runtime failure, 2 bad input or refused (nothing was
/// changed), 3 verification found differences, 4 stopped (Ctrl-C, SIGTERM) before the goal.
@main
struct Reshard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reshard",
        abstract: "Move PostgreSQL data from N shards to M shards while the application keeps running.",
        discussion: """
            Exit codes: 0 success; 1 runtime failure; 2 bad input or refused, nothing changed; 3 verify found \
            differences; 4 stopped (Ctrl-C, SIGTERM) before reaching the goal (apply --until, verify).
            Output: results on stdout (one JSON object with --json), progress and errors on stderr.
            """,
        version: ReshardVersion.string,
        subcommands: [
            InitCommand.self, PlanCommand.self, ApplyCommand.self, StatusCommand.self, ThrottleCommand.self, AbortCommand.self,
            VerifyCommand.self, MapCommand.self, RouteCommand.self, CutoverCommand.self, RollbackCommand.self, CleanupCommand.self,
            SandboxCommand.self, DemoCommand.self, RehearseCommand.self,
        ])

    /// Parses, runs, and maps every failure to one line on stderr and the documented exit code
    /// (ArgumentParser's own usage errors would otherwise exit 64).
    static func main() {
        LogFormat.bootstrap()
        do {
            try checkHelpTopic(Array(CommandLine.arguments.dropFirst()))
            var command = try parseAsRoot()
            try command.run()
        } catch {
            Foundation.exit(report(error))
        }
    }

    /// `reshard help nosuch` would print the overview and exit 0: a script asking for help on a
    /// command that does not exist gets a usage error instead.
    static func checkHelpTopic(_ arguments: [String]) throws {
        guard arguments.first == "help" else { return }
        var command: ParsableCommand.Type = Reshard.self
        for name in arguments.dropFirst() where !name.hasPrefix("-") {
            guard let sub = command.configuration.subcommands.first(where: { $0.configuration.commandName == name }) else {
                throw ValidationError("unknown command '\(name)'")
            }
            command = sub
        }
    }

    static func report(_ error: Error) -> Int32 {
        switch error {
        case let error as ReshardError:
            // One line per problem (plan reports every problem it finds).
            for line in error.description.split(separator: "\n") { Console.error(String(line)) }
            return error.exitCode
        case let error as PostgresError:
            Console.error(error.summary)
            return error.code == .connectionFailed || error.code == .invalidConnectionString ? 2 : 1
        case let code as ExitCode:
            return code.rawValue
        default:
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { print(message) }
                return 0
            }
            if code == .validationFailure {
                var line = message.split(separator: "\n").first.map(String.init) ?? message
                if line.hasPrefix("Error: ") { line.removeFirst("Error: ".count) }
                Console.error("\(line) (see 'reshard help')")
                return 2
            }
            Console.error(message.isEmpty ? "\(error)" : message)
            return code.rawValue
        }
    }
}
