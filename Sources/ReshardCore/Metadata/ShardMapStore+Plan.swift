import Foundation
import PostgresClient

extension ShardMap {
    /// Which side of a migration a map describes.
    public enum Layout: String, Sendable, Codable {
        /// The sources, placed by `source.function`.
        case old
        /// The targets, placed by `target.function`.
        case new
    }

    /// A migration's old or new layout as a map (epoch 0 until `ShardMapStore.publish` numbers it).
    ///
    /// The old layout places rows by `source.function` and each table's `source_key`. A config
    /// without `source.function` does not say how rows are placed today; the map then assumes
    /// reshard's default, `hash` split evenly over the sources in their order (the same as a
    /// `source:` written like a `target:` without `function`), and `reshard map` says so.
    ///
    /// Connection strings carry no password: a `${VAR}` the plan kept is expanded from
    /// `environment` (as when the plan is run) and the password then dropped.
    public init(plan: Plan, layout: Layout, environment: [String: String] = ProcessInfo.processInfo.environment) {
        func shard(_ s: Plan.Shard) -> Shard {
            Shard(
                name: s.name, dsn: Self.withoutPassword(s.dsn, environment),
                replicas: (s.replicas ?? []).map { Self.withoutPassword($0, environment) })
        }
        switch layout {
        case .old:
            let function = plan.sourceFunction ?? Self.assumedSourceFunction(plan)
            self.init(
                migration: plan.migration, epoch: 0, function: function, shards: plan.sources.map(shard),
                tables: plan.tables.map {
                    Table(name: $0.name.description, key: $0.sourceKey ?? $0.key, keyType: $0.sourceKeyType ?? $0.keyType)
                })
        case .new:
            self.init(
                migration: plan.migration, epoch: 0, function: plan.function, shards: plan.targets.map(shard),
                tables: plan.tables.map { Table(name: $0.name.description, key: $0.key, keyType: $0.keyType) })
        }
    }

    /// What the old layout's map assumes when the config has no `source.function`.
    static func assumedSourceFunction(_ plan: Plan) -> ShardFunction {
        // An even hash split exists for any shard count >= 1, and a plan has at least one source.
        try! ShardFunction(kind: .hash, shardCount: max(plan.sources.count, 1))
    }

    /// The connection string with no secret left: neither `password` nor `sslpassword` (of a client key).
    private static func withoutPassword(_ written: String, _ environment: [String: String]) -> String {
        let expanded = (try? ReshardConfig.expandingEnvironment(written, environment)) ?? written
        guard var options = (try? ConnectionString(expanded))?.options else { return "" }
        options["password"] = nil
        options["sslpassword"] = nil
        return ConnectionString.keywordString(options)
    }
}
