/// One epoch of the shard map: the layout applications route by. The contract between reshard and
/// the application, stored per epoch in the metadata database (`reshard.shard_map`, see README)
/// and loaded by `ReshardRouter`. A migration publishes its old layout as one epoch when `apply`
/// starts, the new layout at cutover (epoch + 1), the old one again at rollback (epoch + 2).
///
/// Pure value type with no dependency, so applications and reshard agree on one definition.
public struct ShardMap: Sendable, Equatable, Codable {
    public struct Shard: Sendable, Equatable, Codable {
        public var name: String
        /// libpq connection string without its password (applications add theirs: `.pgpass`, `PGPASSWORD`).
        public var dsn: String
        /// Read replicas of this shard, as connection strings without passwords (may be empty).
        public var replicas: [String]

        public init(name: String, dsn: String, replicas: [String] = []) {
            self.name = name
            self.dsn = dsn
            self.replicas = replicas
        }
    }

    public struct Table: Sendable, Equatable, Codable {
        /// `schema.table` as written in the config (`table` when unqualified).
        public var name: String
        /// The shard key column and its type.
        public var key: String
        public var keyType: KeyType

        public init(name: String, key: String, keyType: KeyType) {
            self.name = name
            self.key = key
            self.keyType = keyType
        }
    }

    public var migration: String
    public var epoch: Int64
    public var function: ShardFunction
    /// In shard order: `function.shard(for:)` indexes this array.
    public var shards: [Shard]
    public var tables: [Table]

    public init(migration: String, epoch: Int64, function: ShardFunction, shards: [Shard], tables: [Table]) {
        self.migration = migration
        self.epoch = epoch
        self.function = function
        self.shards = shards
        self.tables = tables
    }

    /// The shard a key of `table` belongs to in this epoch.
    public func shard(table: String, key: ShardKey) throws -> Shard {
        guard tables.contains(where: { $0.name == table }) else {
            throw ShardFunctionError("table \(table) is not in the shard map of migration \(migration)")
        }
        return shards[try function.shard(for: key)]
    }
}

/// What a write refused by reshard's fence looks like to an application: PostgreSQL errors with
/// these SQLSTATEs (class `RS`, reshard's own). A router reloads the map and retries the write.
public enum FenceSQLState {
    /// The write reached a layout that no longer serves writes (the map has a newer epoch; the
    /// message names it).
    public static let staleEpoch = "RS001"
    /// The write's key belongs to another shard in the current epoch.
    public static let misrouted = "RS002"
    /// The session setting a router declares the epoch it routes by in; the fence refuses a write
    /// whose session declares an older epoch than the current one (`staleEpoch`).
    public static let declaredEpochSetting = "reshard.epoch"
    /// The channel on which the metadata database announces, with the migration's name as
    /// payload, that refused writes may go on somewhere new: a publish (sent on its commit), a
    /// release of the fence, an undone switch. A router whose write was refused listens on it
    /// instead of sleeping, so it retries at once instead of at its next poll.
    public static let announcementChannel = "reshard_shard_map"
}
