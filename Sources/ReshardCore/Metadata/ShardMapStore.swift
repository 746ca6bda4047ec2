import Foundation
import PostgresClient

/// The shard map's epochs in the metadata database (`reshard.shard_map_epochs`, read by
/// applications through the view `reshard.shard_map`): the one writer and reader of them.
///
/// An epoch is never changed once published; a new layout is a new epoch, and the newest one
/// is current. Publishing runs inside the caller's transaction, so a cutover that fails after
/// publishing leaves no new epoch behind.
public enum ShardMapStore {
    /// One published epoch, as `reshard map` shows it.
    public struct Epoch: Sendable, Equatable {
        public var map: ShardMap
        public var publishedAt: Date
        public var isCurrent: Bool
    }

    /// Publishes `map` as the migration's next epoch (the previous one + 1, or 1) and makes it
    /// current. Run it inside the caller's transaction (`conn.transaction { ... }`): the
    /// migration's row is locked until that commits, so two publishers never take one number.
    /// - Returns: the map as published, with its epoch.
    @discardableResult
    public static func publish(_ map: ShardMap, on conn: PGConnection) throws -> ShardMap {
        let locked = try conn.query("SELECT 1 FROM reshard.migrations WHERE name = $1 FOR UPDATE", [map.migration])
        guard locked.rowCount == 1 else {
            throw ReshardError.refused("migration \(map.migration) is not registered: no shard map can be published for it")
        }
        let previous = try conn.query(
            "SELECT coalesce(max(epoch), 0) FROM reshard.shard_map_epochs WHERE migration = $1", [map.migration]
        ).get(0, 0, as: Int64.self)
        var published = map
        published.epoch = previous + 1
        try conn.query("UPDATE reshard.shard_map_epochs SET is_current = false WHERE migration = $1 AND is_current", [map.migration])
        try conn.query(
            "INSERT INTO reshard.shard_map_epochs (migration, epoch, map, is_current) VALUES ($1, $2, $3::jsonb, true)",
            [map.migration, published.epoch, try json(published)])
        return published
    }

    /// Publishes the old layout as epoch 1 when the migration has no epoch yet (`apply`, when a
    /// migration first starts, in its registering transaction); otherwise does nothing.
    public static func publishInitial(_ plan: Plan, on conn: PGConnection) throws {
        let exists = try conn.query("SELECT 1 FROM reshard.shard_map_epochs WHERE migration = $1 LIMIT 1", [plan.migration])
        guard exists.rowCount == 0 else { return }
        try publish(ShardMap(plan: plan, layout: .old), on: conn)
    }

    /// The current epoch, nil when none was published (or the schema predates the map).
    public static func current(migration: String, on conn: PGConnection) throws -> ShardMap? {
        try read("WHERE migration = $1 AND is_current", [migration], on: conn).first?.map
    }

    /// Every epoch of the migration, oldest first.
    public static func epochs(migration: String, on conn: PGConnection) throws -> [Epoch] {
        try read("WHERE migration = $1 ORDER BY epoch", [migration], on: conn)
    }

    private static func read(_ condition: String, _ parameters: [String], on conn: PGConnection) throws -> [Epoch] {
        guard try conn.query("SELECT to_regclass('reshard.shard_map_epochs') IS NOT NULL").get(0, 0, as: Bool.self) else { return [] }
        let rows = try conn.query(
            "SELECT map::text, extract(epoch FROM created_at)::float8, is_current FROM reshard.shard_map_epochs \(condition)",
            parameters)
        return try (0..<rows.rowCount).map { row in
            Epoch(
                map: try JSONDecoder().decode(ShardMap.self, from: Data((rows[row, 0] ?? "").utf8)),
                publishedAt: Date(timeIntervalSince1970: try rows.get(row, 1, as: Double.self)),
                isCurrent: try rows.get(row, 2, as: Bool.self))
        }
    }

    static func json(_ map: ShardMap) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: try encoder.encode(map), as: UTF8.self)
    }
}
