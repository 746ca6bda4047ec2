import ReshardRouting
import PostgresClient

/// The SQL fragments one table needs on one connection, quoted through that connection.
struct TableSQL {
    let table: Plan.Table
    let name: String
    /// Every column, in the source's order.
    let columns: String
    let keyColumns: [String]
    /// `(a, b)`: the unique key as a row, for keyset comparisons.
    let keyRow: String
    /// The key's column types, for casting text literals.
    let keyTypes: [String]
    let shardKey: String
    let connection: PGConnection

    init(_ table: Plan.Table, on connection: PGConnection) throws {
        self.table = table
        self.connection = connection
        name = try connection.quote(table.name)
        columns = try table.columns.map { try connection.quoteIdentifier($0.name) }.joined(separator: ", ")
        keyColumns = try table.uniqueKey.map { try connection.quoteIdentifier($0) }
        keyRow = "(\(keyColumns.joined(separator: ", ")))"
        keyTypes = table.uniqueKey.map { key in table.columns.first { $0.name == key }?.type ?? "text" }
        shardKey = try connection.quoteIdentifier(table.key)
    }

    /// `ARRAY[a::text, b::text]`: the unique key as text[], as the shim logs it.
    var keyTextArray: String { "ARRAY[" + keyColumns.map { "\($0)::text" }.joined(separator: ", ") + "]" }

    /// `('1'::bigint, 'x'::text)`: a key value as a row of typed literals.
    func keyLiteral(_ values: [String]) throws -> String {
        "(" + (try zip(values, keyTypes).map { "\(try connection.quoteLiteral($0))::\($1)" }).joined(separator: ", ") + ")"
    }

    /// The keys as a VALUES list of rows, for `(key) IN (...)`.
    func keyList(_ keys: [[String]]) throws -> String {
        try keys.map { try keyLiteral($0) }.joined(separator: ", ")
    }

    /// `... AND shard index = t`, or nothing when the function is the identity of one target.
    func shardFilter(_ function: ShardFunction, target: Int) -> String {
        function.sqlShardFilter(quotedColumn: shardKey, type: table.keyType, target: target)
    }

    /// `SET col = EXCLUDED.col` for every column outside the key, for upserts.
    var updateSet: String {
        get throws {
            let others = try table.columns.filter { !table.uniqueKey.contains($0.name) }.map { try connection.quoteIdentifier($0.name) }
            guard !others.isEmpty else { return "NOTHING" }
            return "UPDATE SET " + others.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
        }
    }
}
