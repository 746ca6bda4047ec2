import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `reshard map`: the shard map applications route by, as the metadata database publishes it.
struct MapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map", abstract: "Print the migration's current shard map epoch (or an older one).",
        discussion: """
            The shard map is the contract with applications: every layout of the migration is a numbered epoch \
            (apply publishes the old layout as epoch 1, cutover the new one, rollback the old one again), readable \
            from the view reshard.shard_map in the metadata database. --json prints the map exactly as that view's \
            map column holds it. Connection strings never hold a password. Reads only the metadata database.
            """)

    @OptionGroup var migration: MigrationOptions
    @Option(name: .long, parsing: .unconditional, help: "Print this epoch instead of the current one.")
    var epoch: Int64?
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let epoch, epoch < 1 { throw ValidationError("--epoch must be 1 or more, not \(epoch)") }
    }

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let meta = try PGConnection.connect(metadata, applicationName: "reshard map", settings: ["default_transaction_read_only": "on"])
        let epochs = try ShardMap.publishedEpochs(name, on: meta)
        let shown: ShardMapStore.Epoch
        if let epoch {
            guard let found = epochs.first(where: { $0.map.epoch == epoch }) else {
                throw ReshardError.badInput("migration \(name) has no epoch \(epoch) (it has \(epochs.map { String($0.map.epoch) }.joined(separator: ", ")))")
            }
            shown = found
        } else {
            shown = epochs.first(where: \.isCurrent) ?? epochs.last!
        }
        if output.json { return try Console.json(shown.map) }
        for line in Self.text(shown, all: epochs) { Console.out(line) }
        if try Self.assumesTodaysPlacement(shown.map, on: meta) {
            Console.out("note: the config has no source.function: this epoch assumes the sources are split evenly by hash")
        }
    }

    /// Whether `map` is the old layout of a migration whose config did not say how rows are placed
    /// today (`ShardMap(plan:layout:)` then assumes an even hash split over the sources).
    static func assumesTodaysPlacement(_ map: ShardMap, on meta: PGConnection) throws -> Bool {
        let row = try meta.query("SELECT plan::text FROM reshard.migrations WHERE name = $1", [map.migration])
        guard row.rowCount == 1, let text = row[0, 0], let plan = try? JSONDecoder().decode(Plan.self, from: Data(text.utf8)) else { return false }
        return plan.sourceFunction == nil && plan.sources.count > 1 && map.shards.map(\.name) == plan.sources.map(\.name)
    }

    static func text(_ shown: ShardMapStore.Epoch, all: [ShardMapStore.Epoch]) -> [String] {
        let map = shown.map
        let published = ISO8601DateFormatter().string(from: shown.publishedAt)
        var lines = ["migration \(map.migration): epoch \(map.epoch)\(shown.isCurrent ? " (current)" : ""), published \(published)"]
        let points = map.function.boundaries.isEmpty
            ? "" : ", \(map.function.kind == .hash ? "split points" : "boundaries") \(map.function.boundaries.map(String.init).joined(separator: ", "))"
        lines.append("function \(map.function.kind.rawValue), \(map.shards.count) shard(s)\(points)")
        for (index, shard) in map.shards.enumerated() {
            lines.append("  \(index) \(shard.name)  \(shard.dsn)\(shard.replicas.isEmpty ? "" : "  replicas: \(shard.replicas.joined(separator: "; "))")")
        }
        lines.append("tables: " + map.tables.map { "\($0.name) (\($0.key) \($0.keyType.rawValue))" }.joined(separator: ", "))
        if all.count > 1 {
            lines.append("epochs: " + all.map { "\($0.map.epoch)\($0.isCurrent ? " (current)" : "")" }.joined(separator: ", "))
        }
        return lines
    }
}

extension ShardMap {
    /// Every published epoch of `migration`; refuses a migration that is not registered or has
    /// no epoch yet (`map` and `route` have nothing to show then).
    static func publishedEpochs(_ migration: String, on meta: PGConnection) throws -> [ShardMapStore.Epoch] {
        // Refuses a migration of a newer reshard; nil when not registered (also before 'reshard init').
        guard try PhaseStore.read(migration, on: meta) != nil else {
            throw ReshardError.refused("migration \(migration) is not registered; run 'reshard apply' first")
        }
        let epochs = try ShardMapStore.epochs(migration: migration, on: meta)
        guard !epochs.isEmpty else {
            throw ReshardError.refused("migration \(migration) has no shard map yet; 'reshard apply' publishes its first epoch")
        }
        return epochs
    }
}
