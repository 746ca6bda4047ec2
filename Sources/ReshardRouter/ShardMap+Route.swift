import ReshardRouting

extension ShardMap {
    /// The table by the name the map gives it (`schema.table` as the config wrote it, or `table`).
    public func table(named name: String) throws -> Table {
        guard let table = tables.first(where: { $0.name == name }) else {
            throw RouterError(
                .unknownTable,
                "table \(name) is not in the shard map of migration \(migration) (it has \(tables.map(\.name).joined(separator: ", ")))")
        }
        return table
    }

    /// Where a key of `table` goes in this epoch. An integer key is taken as the table's key type,
    /// whatever type the caller tagged it with: `hashint4` and `hashint8` differ.
    public func route(table name: String, key: ShardKey) throws -> ReshardRouter.Route {
        let table = try table(named: name)
        let notOne = RouterError(.badKey, "table \(name) is sharded on \(table.key), a \(table.keyType.rawValue) key: the key given is not one")
        var key = key
        switch key {
        case .int(let value, _):
            guard table.keyType.isInteger else { throw notOne }
            key = .int(value, table.keyType)
        case .text(let text):
            guard !table.keyType.isInteger else { throw notOne }
            if table.keyType == .uuid {
                guard let parsed = ShardKey(text: text, type: .uuid) else {
                    throw RouterError(.badKey, "'\(text)' is not a uuid (the key \(table.key) of \(name))")
                }
                key = parsed
            }
        case .uuid:
            guard table.keyType == .uuid else { throw notOne }
        }
        let index: Int
        do { index = try function.shard(for: key) } catch let error as ShardFunctionError {
            throw RouterError(.badKey, "table \(name): \(error.message)")
        }
        return .init(epoch: epoch, index: index, shard: shards[index])
    }

    /// Where a key given as text (as PostgreSQL prints the table's key type) goes in this epoch.
    public func route(table name: String, keyText: String) throws -> ReshardRouter.Route {
        let table = try table(named: name)
        guard let key = ShardKey(text: keyText, type: table.keyType) else {
            throw RouterError(.badKey, "'\(keyText)' is not a \(table.keyType.rawValue) (the key \(table.key) of \(name))")
        }
        return try route(table: name, key: key)
    }
}

/// What the router refuses: no map to route by, a table or key the map does not describe.
public struct RouterError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: Sendable, Equatable {
        /// The migration has no published epoch (or the metadata database no shard map).
        case noShardMap
        /// The table is not part of the migration.
        case unknownTable
        /// The key is not of the table's key type.
        case badKey
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
