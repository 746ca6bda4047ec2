import ArgumentParser
import PostgresClient

/// `--json`, shared by every command with output worth scripting.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false
}

/// `--metadata DSN`: where reshard keeps its state.
struct MetadataOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Connection string (URI or key=value) of the metadata database.",
            discussion: "libpq's rules apply: PG* variables, ~/.pgpass, sslmode.",
            valueName: "dsn"))
    var metadata: String

    func connectionString() throws -> ConnectionString {
        try ConnectionString(metadata, label: "metadata")
    }
}
