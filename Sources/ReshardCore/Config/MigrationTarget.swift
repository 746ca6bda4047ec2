import Foundation
import PostgresClient

/// What a command that acts on a migration needs: its plan and how to reach every shard.
/// Built from `reshard.yml` (validated by the planner), or from a plan file whose connection
/// strings carry no password: `${VAR}` references the config had are kept and expanded from the
/// environment here, as for the config; otherwise libpq finds it in `PGPASSWORD`, `.pgpass` or
/// a `passfile`.
public struct MigrationTarget: Sendable {
    public var plan: Plan
    public var shards: [String: ConnectionString]
    public var metadata: ConnectionString
    /// Streaming replicas listed per source (`replicas:`), by shard name.
    public var replicas: [String: [ConnectionString]] = [:]

    /// - Parameter sampleRows: rows sampled per table and source for the slice estimates; a
    ///   command that does not use the estimates (`verify`) asks for few.
    public static func fromConfig(
        _ config: ReshardConfig, sampleRows: Int = 100_000, allowances: Planner.Allowances = .init()
    ) throws -> MigrationTarget {
        var planner = Planner(config: config)
        planner.sampleRows = sampleRows
        planner.allowances = allowances
        let plan = try planner.run()
        var shards: [String: ConnectionString] = [:]
        for shard in config.sources + config.targets { shards[shard.name] = shard.dsn }
        var replicas: [String: [ConnectionString]] = [:]
        for shard in config.sources where !shard.replicas.isEmpty { replicas[shard.name] = shard.replicas }
        return MigrationTarget(plan: plan, shards: shards, metadata: config.metadata, replicas: replicas)
    }

    /// Reads a plan file and checks it still fits the sources' schemas.
    public static func fromPlanFile(_ path: String) throws -> MigrationTarget {
        let target = try readPlanFile(path)
        try checkFingerprints(target.plan, shards: target.shards, file: path)
        return target
    }

    /// Reads a plan file without touching any shard (`status`, `throttle`: metadata only).
    public static func readPlanFile(
        _ path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> MigrationTarget {
        guard let data = FileManager.default.contents(atPath: path) else { throw ReshardError.badInput("\(path): cannot read the plan file") }
        let plan: Plan
        do { plan = try JSONDecoder().decode(Plan.self, from: data) } catch {
            throw ReshardError.badInput("\(path): not a reshard plan file (\(error.localizedDescription))")
        }
        func connectionString(_ written: String, _ label: String) throws -> ConnectionString {
            do {
                var dsn = try ConnectionString(try ReshardConfig.expandingEnvironment(written, environment), label: label)
                if written.contains("${") { dsn.template = written }
                return dsn
            } catch let error as ReshardError {
                throw ReshardError.badInput("\(path): \(error.message) (connection string of \(label))")
            }
        }
        var shards: [String: ConnectionString] = [:]
        for shard in plan.sources + plan.targets { shards[shard.name] = try connectionString(shard.dsn, shard.name) }
        var replicas: [String: [ConnectionString]] = [:]
        for shard in plan.sources where !(shard.replicas ?? []).isEmpty {
            replicas[shard.name] = try shard.replicas!.enumerated().map { try connectionString($0.element, "replica of \(shard.name)") }
        }
        return MigrationTarget(
            plan: plan, shards: shards, metadata: try connectionString(plan.metadata, "metadata"), replicas: replicas)
    }

    /// A plan file is only good for the schemas it was made for: every table on every source must
    /// still have the fingerprint recorded in the plan (columns, types, nullability, key).
    static func checkFingerprints(_ plan: Plan, shards: [String: ConnectionString], file: String) throws {
        var problems: [String] = []
        for source in plan.sources {
            let conn = try PGConnection.connect(
                shards[source.name]!, applicationName: "reshard", settings: ["default_transaction_read_only": "on"])
            for table in plan.tables {
                guard let schema = try TableSchema.read(table.name, on: conn) else {
                    problems.append("\(file): table \(table.name) no longer exists on source \(source.name)")
                    continue
                }
                if schema.fingerprint != table.fingerprint {
                    problems.append(
                        "\(file): table \(table.name) on source \(source.name) changed since the plan was made (run 'reshard plan' again)")
                }
            }
        }
        guard problems.isEmpty else { throw ReshardError.refused(problems.joined(separator: "\n")) }
    }
}
