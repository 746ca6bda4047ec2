import Foundation
import PostgresClient

/// Copies one slice (a table's rows on one source that belong to one target) in keyset batches
/// over the unique key.
///
/// Each batch is one binary COPY relay, from `COPY (SELECT ... WHERE key in (last, upper] AND
/// shard = t) TO STDOUT` on the source into `COPY ... FROM STDIN` on the target, inside one target
/// transaction; no row is materialised in the coordinator. The checkpoint (`last_key`) is written
/// after that transaction commits, so it never runs ahead of data on the target. A batch that is
/// re-run after a crash finds some of its rows already there: it is then loaded through a staging
/// table with ON CONFLICT (the migration's key) DO NOTHING, which makes re-running harmless; any
/// other unique violation (values of two sources colliding on the target) stops the migration. Rows changed after a batch
/// was read are fixed by the catch-up, which re-reads them.
///
/// On a target that is also a source's database the rows go into the table built beside the
/// live one (`Plan.builtName(of:on:)`), never into the live table. The rows that stay there (a
/// `staysInPlace` slice) are copied by the server itself, `INSERT INTO reshard_build.x SELECT ...
/// FROM x WHERE <shard filter> AND <key range>`, in the same batches and checkpoints as a relay.
struct SliceCopier {
    let plan: Plan
    let table: Plan.Table
    let targetIndex: Int
    let source: PGConnection
    let target: PGConnection
    /// The source is the target's own database: batches are copied on the server, not relayed.
    let local: Bool
    let sql: TableSQL

    init(plan: Plan, table: Plan.Table, targetIndex: Int, source: PGConnection, target: PGConnection, local: Bool) {
        self.plan = plan
        self.table = table
        self.targetIndex = targetIndex
        self.source = source
        self.target = target
        self.local = local
        sql = TableSQL(table, writingTo: plan.builtName(of: table, on: plan.targets[targetIndex]))
    }
    /// Stops the copy on a key another source holds for this target too (`KeyCollisionGuard`).
    var collisionGuard: KeyCollisionGuard? = nil

    /// For a single integer key: batches are cut by value, `batchSize x spacing` wide, which
    /// spares the per-batch query that would otherwise find where the next batch ends.
    struct IntegerKeyRange {
        var min: Int64
        var max: Int64
        /// Average distance between consecutive keys.
        var spacing: Double
    }

    /// Measures the key range once per slice; nil when the key is not a single integer column.
    func integerKeyRange() throws -> IntegerKeyRange? {
        guard table.uniqueKey.count == 1,
            let type = table.columns.first(where: { $0.name == table.uniqueKey[0] })?.type,
            ["bigint", "integer", "smallint"].contains(type)
        else { return nil }
        let key = sql.keyColumns[0]
        let row = try source.query(
            "SELECT min(\(key))::bigint, max(\(key))::bigint, greatest((SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)), 1)::float8 FROM \(sql.name)",
            [sql.name])
        guard let min = row[0, 0].flatMap({ Int64($0) }), let max = row[0, 1].flatMap({ Int64($0) }) else {
            return IntegerKeyRange(min: 0, max: 0, spacing: 1)
        }
        let count = try row.get(0, 2, as: Double.self)
        return IntegerKeyRange(min: min, max: max, spacing: Swift.max(1, (Double(max) - Double(min) + 1) / count))
    }

    struct Batch {
        var rows: Int
        var lastKey: [String]?
        var done: Bool
    }

    /// Copies the rows after `lastKey` up to `batchSize` keys further on the source.
    func copyBatch(after lastKey: [String]?, batchSize: Int, integerRange: IntegerKeyRange? = nil) throws -> Batch {
        // Where this batch ends; nil for the last batch, which reads to the end of the table
        // (rows inserted later are in the changelog).
        let upperKey: [String]?
        if let range = integerRange {
            let start = lastKey.flatMap { Int64($0[0]) } ?? (range.min == Int64.min ? Int64.min : range.min - 1)
            let end = Double(start) + Double(batchSize) * range.spacing
            upperKey = end >= Double(range.max) ? nil : [String(Int64(end))]
        } else {
            let (query, _) = sql.batchEndQuery(after: lastKey != nil)
            let bound = try source.query(query, (lastKey ?? []) + [String(batchSize - 1)])
            upperKey = bound.rowCount == 0 ? nil : (0..<bound.columnCount).map { bound[0, $0] ?? "" }
        }
        let select = sql.batchSelect(after: lastKey, upTo: upperKey, function: plan.function, target: targetIndex)
        if skipsPlantedBatch() { return Batch(rows: 0, lastKey: upperKey ?? lastKey, done: upperKey == nil) }
        var rows: Int
        if local {
            rows = try copyLocally(select: select)
            return Batch(rows: rows, lastKey: upperKey ?? lastKey, done: upperKey == nil)
        }
        do {
            try target.execute("BEGIN; SET LOCAL reshard.applying = on")
            rows = try PGConnection.relayCopy(from: source, "COPY (\(select)) TO STDOUT (FORMAT binary)", to: target, sql.copyIn).rows
            try target.execute("COMMIT")
        } catch let error as PostgresError where error.sqlState == "23505" {
            try target.execute("ROLLBACK")
            rows = try copyThroughStaging(select: select)
        } catch {
            _ = try? target.execute("ROLLBACK")
            throw error
        }
        // The last batch ends at the table's end: remember the highest key seen, if any.
        let lastSeen = upperKey ?? lastKey
        return Batch(rows: rows, lastKey: lastSeen, done: upperKey == nil)
    }

    /// The re-run path: the batch was (partly) committed before a crash, or by a process that
    /// lost the slice before its checkpoint. Returns every row of the batch, not only those
    /// inserted now: the rows already there were never counted (a checkpoint counts the rows up
    /// to its key, and this batch starts after the last one), so the slice's count stays exact.
    private func copyThroughStaging(select: String) throws -> Int {
        try target.transaction { conn in
            try conn.execute(
                """
                SET LOCAL reshard.applying = on;
                CREATE TEMP TABLE reshard_staging (LIKE \(sql.targetName)) ON COMMIT DROP;
                """)
            let staged = try PGConnection.relayCopy(
                from: source, "COPY (\(select)) TO STDOUT (FORMAT binary)", to: conn,
                "COPY reshard_staging (\(sql.writableColumns)) FROM STDIN (FORMAT binary)").rows
            try collisionGuard?.checkConflicts(staging: "reshard_staging", into: sql.targetName, on: conn, own: source)
            _ = try stoppingOnOtherUniqueViolations {
                try conn.execute("\(sql.insertFromStaging("reshard_staging")) \(sql.onKeyConflictDoNothing)")
            }
            return staged
        }
    }

    /// The rows that stay, copied by the server from the live table into the built one: a
    /// plain INSERT ... SELECT (as fast as the server copies rows), or, when the batch was
    /// (partly) committed before a crash, the same with ON CONFLICT (key) DO NOTHING.
    private func copyLocally(select: String) throws -> Int {
        do {
            return try target.transaction { conn in
                try conn.execute("SET LOCAL reshard.applying = on")
                return try conn.execute(sql.insert(select)).affectedRows
            }
        } catch let error as PostgresError where error.sqlState == "23505" {
            return try target.transaction { conn in
                try conn.execute("SET LOCAL reshard.applying = on")
                try collisionGuard?.checkConflicts(staging: "(\(select))", into: sql.targetName, on: conn, own: source)
                return try stoppingOnOtherUniqueViolations { try conn.execute("\(sql.insert(select)) \(sql.onKeyConflictDoNothing)").affectedRows }
            }
        }
    }

    /// Runs `body`, turning a unique violation (of a constraint other than the migration's key,
    /// which ON CONFLICT covers) into the error that stops the migration rather than drop a row.
    private func stoppingOnOtherUniqueViolations<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as PostgresError where error.sqlState == "23505" {
            throw ReshardError.failed(
                "table \(table.name), \(source.endpoint.label ?? "\(source.endpoint)") -> \(plan.targets[targetIndex].name): "
                    + "\(error.message)\(error.detail.map { " (\($0))" } ?? ""): a unique constraint other than the migration's key, "
                    + "holding on each source alone, is violated where rows of several sources meet",
                shard: plan.targets[targetIndex].name, underlying: error)
        }
    }
}
