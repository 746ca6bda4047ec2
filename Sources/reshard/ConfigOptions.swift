import ArgumentParser
import PostgresClient
import Foundation
import ReshardCore

/// `--config/-c FILE`, shared by every command that reads `reshard.yml`.
struct ConfigOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "The migration's config file.")
    var config = "reshard.yml"

    func load() throws -> ReshardConfig { try ReshardConfig.load(path: config) }
}

/// `--config FILE` or `--plan FILE`: which migration a command acts on.
struct MigrationOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "The migration's config file (default reshard.yml).")
    var config: String?

    @Option(name: .long, help: "A plan file written by 'reshard plan --output' (instead of --config).")
    var plan: String?

    func validate() throws {
        if config != nil && plan != nil { throw ValidationError("give --config or --plan, not both") }
    }

    /// Validates against the shards and returns the plan with its connections.
    func resolve(sampleRows: Int = 100_000, allowances: Planner.Allowances = .init()) throws -> MigrationTarget {
        if let plan { return try MigrationTarget.fromPlanFile(plan) }
        return try MigrationTarget.fromConfig(try ReshardConfig.load(path: config ?? "reshard.yml"), sampleRows: sampleRows, allowances: allowances)
    }

    /// Connection strings by shard name, without validating anything against the shards.
    func shardConnections() throws -> [String: ConnectionString] {
        if let plan { return try MigrationTarget.readPlanFile(plan).shards }
        let config = try ReshardConfig.load(path: config ?? "reshard.yml")
        var shards: [String: ConnectionString] = [:]
        for shard in config.sources + config.targets { shards[shard.name] = shard.dsn }
        return shards
    }

    /// The migration's name and metadata database, reading nothing from the shards.
    func metadataOnly() throws -> (name: String, metadata: ConnectionString) {
        if let plan {
            let target = try MigrationTarget.readPlanFile(plan)
            return (target.plan.migration, target.metadata)
        }
        let config = try ReshardConfig.load(path: config ?? "reshard.yml")
        return (config.migration, config.metadata)
    }
}
