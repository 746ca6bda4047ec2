import ReshardRouting

/// The catch-up's SQL for one table, built from the plan alone so it can be read as text
/// (`CatchUpSQLTests`).
///
/// Keys never travel as a row-value `(a, b, c) IN ((...), ...)` list: the planner runs such a list
/// as a filter over every row of the table, which is what kept the catch-up at a fraction of the
/// write rate on composite keys. Instead a set of keys is joined column by column (`t.a = k.a AND
/// t.b = k.b ...`), which the planner turns into one index lookup per key whatever the key's
/// width. Where a statement takes parameters the keys are `unnest($1::text[], $2::text[], ...)`,
/// one text[] per key column, cast to the key's types on the server. COPY takes no parameters:
/// there the keys are the session's temp table `pg_temp.reshard_keys`, filled from the changelog
/// by ctid (or from parameters) just before. Every comparison of keys happens on the server, by
/// the key type's own equality (bytes, for text), never by Swift's `String ==`.
///
/// Table columns are always qualified (`t.`, `s.`): a table may have columns named `pk` or `k0`.
struct CatchUpSQL: Sendable {
    let sql: TableSQL
    let function: ShardFunction
    /// A staging table per table and session, emptied at every commit.
    let staging: String
    /// The shard key column's type, for casting logged shard keys.
    let shardKeyType: String

    static let keyTable = "pg_temp.reshard_keys"

    /// Run once on every session of a lane. A batch's key set is small beside the table, so each
    /// key must be one index lookup (a nested loop); but the planner, which knows neither how few
    /// keys a temp table or an `unnest` holds nor how the shard filter thins them, picks a hash
    /// join that reads the whole table for every batch (a sequential scan per lane and round,
    /// which was most of a round's time). Every join the lanes make is between a key set and an
    /// indexed key, so these sessions plan no hash or merge joins.
    static let sessionSettings = "SET enable_hashjoin = off; SET enable_mergejoin = off"

    /// - Parameter target: the target the statements write; on one that is a source's database
    ///   they write the table built beside the live one, and read the live table for current rows.
    init(plan: Plan, table: Plan.Table, target: Int) {
        sql = TableSQL(table, writingTo: plan.builtName(of: table, on: plan.targets[target]))
        function = plan.function
        staging = "pg_temp.reshard_staging_" + Shim.objectNames(migration: plan.migration, table: table).log.dropFirst("log_".count)
        shardKeyType = table.columns.first { $0.name == table.key }?.type ?? "text"
    }

    // MARK: the session's key set (for COPY)

    /// Created once per session; holds the distinct keys a COPY reads.
    static let createKeyTable =
        "SET client_min_messages = warning; CREATE TEMP TABLE IF NOT EXISTS reshard_keys (pk text[] NOT NULL); RESET client_min_messages"

    static let clearKeys = "TRUNCATE \(keyTable)"

    /// The distinct keys of the entries (parameter: their ctids, a tid scan on the log) whose
    /// logged shard key belongs to `target`. Enough for that target: the write that gave a row its current shard key logged
    /// that key, in this batch or in one still to come, so a row that belongs to `target` now is
    /// applied there by that entry; and a row `target` holds was put there under a shard key its
    /// source logs again when the row changes or leaves.
    func loadKeys(fromLog log: String, target: Int) -> String {
        let shardKey = function.sqlShardFilter(quotedColumn: "(shard_key)::\(shardKeyType)", type: sql.table.keyType, target: target)
        return "INSERT INTO \(Self.keyTable) (pk) SELECT DISTINCT pk FROM \(log) WHERE ctid = ANY($1::tid[]) AND \(shardKey)"
    }

    /// `clearKeys` and `loadKeys(fromLog:target:)` in one simple query (one round trip, not two: a
    /// cutover's drain pays each of a lane's round trips inside the stall). The ctids go in as a
    /// literal: the server printed them (`array_agg(ctid)::text`), and a simple query takes no parameters.
    func reloadKeys(fromLog log: String, target: Int, ctids: String) -> String {
        "\(Self.clearKeys); " + loadKeys(fromLog: log, target: target).replacingOccurrences(of: "$1::tid[]", with: "\(SQLText.literal(ctids))::tid[]")
    }

    /// A round's batch of `log` (at most `limit` entries): their count, their ctids as one text[],
    /// then per target how many of them concern it (their logged shard key belongs there, as
    /// `loadKeys` selects them). One read tells which lanes have work: the others skip the round
    /// (a cutover's drain pays each of their round trips inside the stall).
    static func readBatch(plan: Plan, table: Plan.Table, log: String, limit: Int) -> String {
        let type = table.columns.first { $0.name == table.key }?.type ?? "text"
        let perTarget = plan.targets.indices.map {
            "count(*) FILTER (WHERE \(plan.function.sqlShardFilter(quotedColumn: "(shard_key)::\(type)", type: table.keyType, target: $0)))"
        }
        return "SELECT count(*), array_agg(ctid)::text, \(perTarget.joined(separator: ", ")) FROM (SELECT ctid, shard_key FROM \(log) LIMIT \(limit)) e"
    }

    /// Parameters: one text[] per key column.
    static func loadKeys(columns: Int) -> String {
        let arrays = (1...columns).map { "$\($0)::text[]" }.joined(separator: ", ")
        let names = (0..<columns).map { "k\($0)" }
        return "INSERT INTO \(keyTable) (pk) SELECT ARRAY[\(names.map { "e.\($0)" }.joined(separator: ", "))] FROM unnest(\(arrays)) AS e(\(names.joined(separator: ", ")))"
    }

    /// Indexed on the key: "not in staging" is then a lookup per row whatever the planner
    /// estimates (it cannot know a temp table's size, and a nested loop over an unindexed staging
    /// table is quadratic).
    var createStaging: String {
        let name = staging.dropFirst("pg_temp.".count)
        return """
            SET client_min_messages = warning; CREATE TEMP TABLE IF NOT EXISTS \(name) (LIKE \(sql.targetName)) ON COMMIT DELETE ROWS;
            CREATE INDEX IF NOT EXISTS \(name)_key ON \(name) (\(sql.keyColumns.joined(separator: ", "))); RESET client_min_messages
            """
    }

    /// `t.a = (k.pk[1])::bigint AND t.b = (k.pk[2])::text`
    private var joinKeyTable: String {
        zip(sql.keyColumns, sql.keyTypes).enumerated().map { "t.\($1.0) = (k.pk[\($0 + 1)])::\($1.1)" }.joined(separator: " AND ")
    }

    private var distinctKeys: String { "\(Self.keyTable) k" }

    /// The condition true exactly for the rows of `target`, on alias `t`.
    func belongsTo(_ target: Int) -> String {
        function.sqlShardFilter(quotedColumn: "t.\(sql.shardKey)", type: sql.table.keyType, target: target)
    }

    private func qualified(_ alias: String) -> String {
        sql.table.columns.filter { !$0.isGenerated }.map { "\(alias).\(SQLText.identifier($0.name))" }.joined(separator: ", ")
    }

    /// The current rows of the session's keys that belong to `target`: what a COPY relays.
    func currentRows(target: Int) -> String {
        "SELECT \(qualified("t")) FROM \(sql.name) t JOIN \(distinctKeys) ON \(joinKeyTable) WHERE \(belongsTo(target))"
    }

    /// The same rows into staging, on the source's own database (a COPY cannot relay a session to itself).
    func currentRowsIntoStaging(target: Int) -> String {
        "INSERT INTO \(staging) (\(sql.writableColumns)) \(currentRows(target: target))"
    }

    /// The distinct (key, shard key) pairs the entries (parameter: their ctids) logged with a
    /// shard key that belongs to `target`: their count, then one text[] per key column, then the
    /// shard keys. Distinct in SQL, so by bytes.
    func loggedKeys(fromLog log: String, target: Int) -> String {
        let shardKey = function.sqlShardFilter(quotedColumn: "(shard_key)::\(shardKeyType)", type: sql.table.keyType, target: target)
        let columns = sql.keyColumns.indices.map { "array_agg(pk[\($0 + 1)])::text" }.joined(separator: ", ")
        return "SELECT count(*), \(columns), array_agg(shard_key)::text FROM (SELECT DISTINCT pk, shard_key FROM \(log) WHERE ctid = ANY($1::tid[]) AND \(shardKey)) e"
    }

    // MARK: keys as parameters

    /// `unnest($1::text[], $2::text[]) AS e(k0, k1)`, optionally with the shard key and the ordinality.
    private func unnest(_ alias: String, shardKey: Bool = false, ordinality: Bool = false) -> String {
        let count = sql.keyColumns.count + (shardKey ? 1 : 0)
        let arrays = (1...count).map { "$\($0)::text[]" }.joined(separator: ", ")
        let names = sql.keyColumns.indices.map { "k\($0)" } + (shardKey ? ["sk"] : []) + (ordinality ? ["i"] : [])
        return "unnest(\(arrays))\(ordinality ? " WITH ORDINALITY" : "") AS \(alias)(\(names.joined(separator: ", ")))"
    }

    /// `t.a = e.k0::bigint AND t.b = e.k1::text`
    private func joinParameters(_ alias: String) -> String {
        zip(sql.keyColumns, sql.keyTypes).enumerated().map { "t.\($1.0) = \(alias).k\($0)::\($1.1)" }.joined(separator: " AND ")
    }

    private var keysText: String { sql.keyColumns.enumerated().map { "t.\($1)::text AS k\($0)" }.joined(separator: ", ") }

    /// The keys (parameters: one text[] per key column, then the logged shard keys) whose logged
    /// shard key belongs to `target`, that the target holds under that shard key but staging
    /// does not: rows to delete unless another source holds them. Their count, then one text[]
    /// per key column. Matching the logged shard key
    /// means a row the target holds under another shard key (another source's row of the same
    /// key) is never a candidate.
    func deleteCandidates(target: Int) -> String {
        let logged = function.sqlShardFilter(quotedColumn: "(e.sk)::\(shardKeyType)", type: sql.table.keyType, target: target)
        let inStaging = sql.keyColumns.map { "s.\($0) = t.\($0)" }.joined(separator: " AND ")
        // When the shard key is part of the unique key, the key join already matches it (and a
        // second equality on the same column would only skew the planner's estimates).
        let shardKey = sql.table.uniqueKey.contains(sql.table.key) ? "" : " AND t.\(sql.shardKey) = e.sk::\(shardKeyType)"
        let columns = sql.keyColumns.indices.map { "array_agg(c.k\($0))::text" }.joined(separator: ", ")
        return """
            SELECT count(*), \(columns) FROM (SELECT DISTINCT \(keysText) FROM \(sql.targetName) t JOIN \(unnest("e", shardKey: true)) ON \(joinParameters("e"))\(shardKey)
            WHERE \(logged) AND \(belongsTo(target)) AND NOT EXISTS (SELECT 1 FROM \(staging) s WHERE \(inStaging))) c
            """
    }

    /// Deletes the keys (parameters: one text[] per key column) where they belong to `target`,
    /// unless staging holds them.
    func deleteKeys(target: Int) -> String {
        let inStaging = sql.keyColumns.map { "s.\($0) = t.\($0)" }.joined(separator: " AND ")
        return "DELETE FROM \(sql.targetName) t USING \(unnest("e")) WHERE \(joinParameters("e")) AND \(belongsTo(target)) AND NOT EXISTS (SELECT 1 FROM \(staging) s WHERE \(inStaging))"
    }

    // MARK: staging

    var copyIntoStaging: String { "COPY \(staging) (\(sql.writableColumns)) FROM STDIN (FORMAT binary)" }

    /// Staging holds one source's rows, unique by key: upserted over what the target has
    /// (`TableSQL.insertFromStaging`: identity ALWAYS columns are overridden).
    var upsertStaging: String { "\(sql.insertFromStaging(staging)) \(sql.onKeyConflictUpdate)" }

    /// Staging holds rows of several sources (a key may be on two while the application moves
    /// it): one per key.
    var upsertStagingOnePerKey: String { "\(sql.insertFromStaging(onePerKey)) \(sql.onKeyConflictUpdate)" }


    private var onePerKey: String { "(SELECT DISTINCT ON (\(sql.keyColumns.joined(separator: ", "))) * FROM \(staging)) s" }
}
