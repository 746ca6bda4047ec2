import ArgumentParser
import PostgresClient
import ReshardCore

/// `reshard init`: creates or upgrades the metadata schema. Safe to run any number of times.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create or upgrade reshard's metadata schema (idempotent).")

    @OptionGroup var metadata: MetadataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        let target = try metadata.connectionString()
        let connection = try PGConnection.connect(target)
        let report = try MetadataSchema.current.apply(to: connection)
        if output.json {
            try Console.json(InitResult(metadata: target.description, report: report))
        } else if report.applied.isEmpty {
            Console.out("metadata schema on \(target) is already at version \(report.versionAfter); nothing changed")
        } else {
            Console.out(
                "metadata schema on \(target): applied \(report.applied.joined(separator: ", ")) (version \(report.versionBefore) -> \(report.versionAfter))")
        }
    }
}

struct InitResult: Encodable {
    var metadata: String
    var report: MetadataSchemaReport
}
