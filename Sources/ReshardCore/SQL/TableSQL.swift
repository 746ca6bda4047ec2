import PostgresClient
import ReshardRouting

/// The SQL text one table needs, built once per table from the plan alone (no connection), so
/// copy, catch-up and verify share it and tests can read it as text (`TableSQLTests`).
///
/// Identifiers are quoted by `SQLText` (UTF-8 rules, the same as libpq's). Statements run with
/// `query(_:_:)` take key values as `$n` parameters; a COPY takes no parameters, so key values
/// inside the `COPY (SELECT ...)` of a batch are quoted literals cast to the key's types.
struct TableSQL: Sendable {
    let table: Plan.Table
    /// `"schema"."table"`: the table as the sources (and the application) name it.
    let name: String
    /// The table rows are written into: `name`, or the table built beside the live one on a
    /// target that is a source's database (`Plan.builtName(of:on:)`).
    let targetName: String
    /// Every column, in the source's order: what a SELECT reads.
    let columns: String
    /// The columns a COPY or INSERT writes: every column but generated ones, which the target
    /// computes itself (PostgreSQL refuses values for them).
    let writableColumns: String
    let keyColumns: [String]
    /// `(a, b)`: the unique key as a row, for keyset comparisons.
    let keyRow: String
    /// The key's column types, for casting text literals and parameters.
    let keyTypes: [String]
    /// The shard key column, quoted.
    let shardKey: String

    /// - Parameter built: the name the target's copy is written under, when not the table's own.
    init(_ table: Plan.Table, writingTo built: QualifiedName? = nil) {
        self.table = table
        name = SQLText.name(table.name)
        targetName = SQLText.name(built ?? table.name)
        columns = table.columns.map { SQLText.identifier($0.name) }.joined(separator: ", ")
        writableColumns = table.columns.filter { !$0.isGenerated }.map { SQLText.identifier($0.name) }.joined(separator: ", ")
        keyColumns = table.uniqueKey.map(SQLText.identifier)
        keyRow = "(\(keyColumns.joined(separator: ", ")))"
        keyTypes = table.uniqueKey.map { key in table.columns.first { $0.name == key }?.type ?? "text" }
        shardKey = SQLText.identifier(table.key)
    }

    /// `ARRAY[a::text, b::text]`: the unique key as text[], as the shim logs it.
    var keyTextArray: String { "ARRAY[" + keyColumns.map { "\($0)::text" }.joined(separator: ", ") + "]" }

    /// `('1'::bigint, 'x'::text)`: a key value as a row of typed literals (for COPY, which takes
    /// no parameters).
    func keyLiteral(_ values: [String]) -> String {
        "(" + zip(values, keyTypes).map { "\(SQLText.literal($0))::\($1)" }.joined(separator: ", ") + ")"
    }

    /// `($3::bigint, $4::text)`: a key value as a row of parameters starting at `$first`.
    func keyParameters(from first: Int) -> String {
        "(" + keyTypes.enumerated().map { "$\(first + $0.offset)::\($0.element)" }.joined(separator: ", ") + ")"
    }

    /// The keys as a list of rows, for `(key) IN (...)`.
    func keyList(_ keys: [[String]]) -> String {
        keys.map { keyLiteral($0) }.joined(separator: ", ")
    }

    /// `SELECT k1::bigint, k2::text FROM unnest('{...}'::text[], '{...}'::text[]) AS k (k1, k2)`:
    /// the keys as a set of rows, for `(key) IN (...)` over any number of keys. One array literal
    /// per key column: a literal list of thousands of rows makes an expression tree the server
    /// walks recursively, which ends in `stack depth limit exceeded` (54001).
    func keySet(_ keys: [[String]]) -> String {
        func element(_ value: String) -> String {
            "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let names = keyTypes.indices.map { "k\($0 + 1)" }
        let arrays = keyTypes.indices.map { column in
            SQLText.literal("{" + keys.map { element($0[column]) }.joined(separator: ",") + "}") + "::text[]"
        }
        let select = zip(names, keyTypes).map { "\($0)::\($1)" }.joined(separator: ", ")
        return "SELECT \(select) FROM unnest(\(arrays.joined(separator: ", "))) AS k (\(names.joined(separator: ", ")))"
    }

    /// The condition true exactly for the rows of `target` under `function`.
    func shardFilter(_ function: ShardFunction, target: Int) -> String {
        function.sqlShardFilter(quotedColumn: shardKey, type: table.keyType, target: target)
    }

    /// `SET col = EXCLUDED.col` for every writable column outside the key, for upserts. Not an
    /// identity `GENERATED ALWAYS` column, which an UPDATE may only set to DEFAULT (its value is
    /// the one inserted; a source changing it with `SET col = DEFAULT` is not followed).
    var updateSet: String {
        let others = table.columns.filter { !table.uniqueKey.contains($0.name) && !$0.isGenerated && $0.identity != "always" }
            .map { SQLText.identifier($0.name) }
        guard !others.isEmpty else { return "NOTHING" }
        return "UPDATE SET " + others.map { "\($0) = EXCLUDED.\($0)" }.joined(separator: ", ")
    }

    // MARK: Backfill

    /// The key of the row `$k` rows after the key given in `$1...` (or from the start): where a
    /// batch over a non-integer key ends. Parameters: the lower key's values (when `after`), then
    /// the offset.
    func batchEndQuery(after: Bool) -> (sql: String, offsetParameter: Int) {
        let lower = after ? "WHERE \(keyRow) > \(keyParameters(from: 1))" : ""
        let offset = after ? keyTypes.count + 1 : 1
        let sql = "SELECT \(keyColumns.map { "\($0)::text" }.joined(separator: ", ")) FROM \(name) \(lower) ORDER BY \(keyColumns.joined(separator: ", ")) OFFSET $\(offset) LIMIT 1"
        return (sql, offset)
    }

    /// `SELECT every column ... WHERE lower < key <= upper AND the row belongs to target`: one batch.
    func batchSelect(after lower: [String]?, upTo upper: [String]?, function: ShardFunction, target: Int) -> String {
        var conditions: [String] = []
        if let lower { conditions.append("\(keyRow) > \(keyLiteral(lower))") }
        if let upper { conditions.append("\(keyRow) <= \(keyLiteral(upper))") }
        conditions.append(shardFilter(function, target: target))
        return "SELECT \(writableSelectList) FROM \(name) WHERE \(conditions.joined(separator: " AND "))"
    }

    /// What a batch or catch-up reads: the writable columns (generated ones are recomputed).
    var writableSelectList: String { writableColumns }

    /// `INSERT INTO table (writable columns) SELECT writable columns FROM staging`: how copied rows
    /// leave a staging table. `OVERRIDING SYSTEM VALUE` when a table the rows go to has an identity
    /// `GENERATED ALWAYS` column (one the user created, or a source that is a target), which
    /// otherwise refuses the source's values; COPY needs no such clause.
    func insertFromStaging(_ staging: String) -> String {
        insert("SELECT \(writableColumns) FROM \(staging)")
    }

    /// `INSERT INTO targetName (writable columns) [OVERRIDING SYSTEM VALUE] select`: rows written by
    /// the server itself, from staging or (a target that is the source's own database) straight
    /// from the live table (`batchSelect`), never through the coordinator.
    func insert(_ select: String) -> String {
        let overriding = table.identityAlwaysOnTarget ? " OVERRIDING SYSTEM VALUE" : ""
        return "INSERT INTO \(targetName) (\(writableColumns))\(overriding) \(select)"
    }

    /// `ON CONFLICT (key) DO NOTHING`: a re-run batch skips the rows it already copied. Only the
    /// migration's key: any other unique violation is an error, never a row silently dropped.
    var onKeyConflictDoNothing: String { "ON CONFLICT \(keyRow) DO NOTHING" }

    /// `ON CONFLICT (key) DO UPDATE SET ...`: the catch-up's upsert of a row's current values.
    var onKeyConflictUpdate: String { "ON CONFLICT \(keyRow) DO \(updateSet)" }

    /// `COPY table (writable columns) FROM STDIN (FORMAT binary)`
    var copyIn: String { "COPY \(targetName) (\(writableColumns)) FROM STDIN (FORMAT binary)" }
}
