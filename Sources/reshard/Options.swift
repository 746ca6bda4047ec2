import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `--json`, shared by every command with output worth scripting.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    @Option(
        name: .long,
        help: "Events (phase changes, retries, errors) on stderr as text lines or JSON objects (default: json with --json, else text).")
    var logFormat: LogFormat?

    /// With `--json` every line on stderr is a JSON object: progress lines, and events (those
    /// carry `level` and `message`).
    func validate() throws { LogFormat.current = logFormat ?? (json ? .json : .text) }
}

/// The backfill rate limit's bounds, shared by `apply` and `throttle` (the metadata stores it as
/// `integer`, so a larger value would fail on the server instead of here).
enum RateLimit {
    static let range = 1...Int(Int32.max)

    static func validate(_ value: Int?) throws {
        if let value, !range.contains(value) {
            throw ValidationError("--max-rows-per-second must be between 1 and \(range.upperBound), not \(value)")
        }
    }
}

/// Where reshard keeps its state: `--metadata DSN`, else the `--config` file's `metadata`, else
/// `$RESHARD_METADATA`, else `./reshard.yml`'s. A password in argv is visible to every user in `ps` for the life of the
/// process, so the other two keep it out of the command line.
struct MetadataOptions: ParsableArguments {
    static let environmentVariable = ReshardConfig.metadataVariable

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Connection string (URI or key=value) of the metadata database.",
            discussion: """
                Default: 'metadata' in the --config file, else $RESHARD_METADATA, else reshard.yml's. A password given here is visible in \
                'ps' to every user of the machine: use the variable, the config file (${VAR}), ~/.pgpass or PGPASSWORD. \
                libpq's rules apply: PG* variables, ~/.pgpass, sslmode.
                """,
            valueName: "dsn"))
    var metadata: String?

    @Option(name: [.customShort("c"), .long], help: "A config file to take 'metadata' from (default reshard.yml, if present).")
    var config: String?

    func connectionString() throws -> ConnectionString {
        if let metadata { return try ConnectionString(metadata, label: "metadata") }
        if let config { return try ReshardConfig.load(path: config).metadata }
        if let fromEnvironment = ProcessInfo.processInfo.environment[Self.environmentVariable], !fromEnvironment.isEmpty {
            return try ConnectionString(fromEnvironment, label: "metadata")
        }
        if FileManager.default.fileExists(atPath: "reshard.yml") { return try ReshardConfig.load(path: "reshard.yml").metadata }
        throw ReshardError.badInput("no metadata database: give --metadata DSN, set \(Self.environmentVariable), or --config FILE")
    }
}
