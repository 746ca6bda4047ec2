import ReshardRouting
import Foundation
import PostgresClient

/// One database verify reads: a source, a target, or both at once (a source whose database is
/// also a target, read once for both roles).
struct VerifyPlace: Sendable {
    /// The shard name to connect with.
    let shard: String
    /// The source's name and index, when it is a source.
    let source: (name: String, index: Int)?
    /// The target index, when it is a target.
    let target: Int?

    static func all(_ plan: Plan) -> [VerifyPlace] {
        var places = plan.sources.enumerated().map { index, source in
            VerifyPlace(
                shard: source.name, source: (source.name, index),
                target: plan.targets.firstIndex { $0.sameAsSource == source.name })
        }
        for (index, target) in plan.targets.enumerated() where target.sameAsSource == nil {
            places.append(VerifyPlace(shard: target.name, source: nil, target: index))
        }
        return places
    }

    /// Whether a row found here, destined for target `t`, counts on the sources' side: every row
    /// of a pure source does; in a database that is also target `place.target`, rows destined
    /// there count only when today's placement puts them here (`own`), the rest being copies.
    func countsForSources(target t: Int, own: Bool) -> Bool {
        source != nil && (target == nil || own || t != target)
    }

    /// Whether a row found here, destined for target `t`, counts on the target's side. Rows that
    /// belong to another target are left out (a source keeps the rows leaving it until cleanup).
    func countsForTarget(_ t: Int) -> Bool { target == t }
}

/// The SQL verify runs for one table in one place, quoted through that place's connection.
struct VerifySQL {
    let place: VerifyPlace
    let table: TableSQL
    /// The target index of a row.
    let targetIndex: String
    /// True for rows today's placement puts in this source (only asked where it matters).
    let own: String
    /// The strong per-row hash over every column, in the plan's column order, of the row's
    /// canonical text (the session settings that change how values print are pinned).
    let rowHash: String
    /// The unique key as text[], as the shim logs it.
    let keyArray: String
    /// Only rows this place can count: a pure target reads only its own rows.
    let placeFilter: String
    /// The FROM item: the table with an alias for whole-row references.
    let from: String

    init(_ plan: Plan, _ table: Plan.Table, place: VerifyPlace, on connection: PGConnection) throws {
        self.place = place
        self.table = TableSQL(table)
        let sql = self.table
        if place.source == nil, let t = place.target {
            targetIndex = "\(t)"
            placeFilter = sql.shardFilter(plan.function, target: t)
        } else {
            targetIndex = plan.function.sqlShardIndex(quotedColumn: sql.shardKey, type: table.keyType)
            placeFilter = "true"
        }
        if let source = place.source, place.target != nil {
            guard let function = plan.sourceFunction, let column = table.sourceKey, let type = table.sourceKeyType else {
                throw ReshardError.badInput("verify needs today's placement (source.function)")
            }
            own = "\(function.sqlShardIndex(quotedColumn: try connection.quoteIdentifier(column), type: type)) = \(source.index)"
        } else {
            own = "true"
        }
        // The whole row's text is the same as ROW(every column)'s when the table's columns stand
        // in the plan's order here, and cheaper (no new tuple per row).
        var alias = "reshard_row"
        while table.columns.contains(where: { $0.name == alias }) { alias += "_" }
        from = "\(sql.name) AS \(alias)"
        let here = try connection.query(
            "SELECT array_to_json(array_agg(attname::text ORDER BY attnum))::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            [sql.name])[0, 0].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        rowHash = here == table.columns.map(\.name)
            ? "hashtextextended(\(alias)::text, 0)" : "hashtextextended(ROW(\(sql.columns))::text, 0)"
        keyArray = sql.keyTextArray
    }

    /// `lower <= key < upper`, either end open, over the table's key columns.
    func rangeCondition(lower: [String]?, upper: [String]?) throws -> String {
        try range(of: table.keyRow, lower: lower, upper: upper)
    }

    func keyCondition(_ keys: [[String]]) throws -> String { try self.keys(keys, in: table.keyRow) }

    /// Per (target, own): row count and hash sum modulo 2^64.
    /// Per (target, own): row count and hash sum modulo 2^64. Only a source that is also a
    /// target groups its rows (each row counts on one side or both); a pure source's rows all
    /// count for the sources and a pure target reads only its own, so they return one total
    /// (target -1 for a pure source) without the cost of computing a shard per row or grouping.
    func sums(where condition: String) -> String {
        let aggregates = "count(*), (coalesce(sum(\(rowHash)), 0) % 18446744073709551616)::text"
        switch (place.source, place.target) {
        case (.some, .some):
            return "SELECT \(targetIndex), \(own), \(aggregates) FROM \(from) WHERE \(condition) GROUP BY 1, 2"
        case (.some, nil):
            return "SELECT -1, true, \(aggregates) FROM \(from) WHERE \(condition)"
        default:
            return "SELECT \(targetIndex), true, \(aggregates) FROM \(from) WHERE \(condition) AND \(placeFilter)"
        }
    }

    /// The rows themselves: target, own, key as JSON, hash.
    func rows(where condition: String) -> String {
        "SELECT \(targetIndex), \(own), array_to_json(\(keyArray))::text, \(rowHash) FROM \(from) WHERE \(condition) AND \(placeFilter)"
    }

    /// The same conditions over the shim's log (`pk` is the key as text[]), cast to the key's types.
    func logCondition(lower: [String]?, upper: [String]?) throws -> String {
        try range(of: logKeyRow, lower: lower, upper: upper)
    }

    func logKeyCondition(_ keys: [[String]]) throws -> String { try self.keys(keys, in: logKeyRow) }

    private func range(of row: String, lower: [String]?, upper: [String]?) throws -> String {
        var parts: [String] = []
        if let lower { parts.append("\(row) >= \(table.keyLiteral(lower))") }
        if let upper { parts.append("\(row) < \(table.keyLiteral(upper))") }
        return parts.isEmpty ? "true" : parts.joined(separator: " AND ")
    }

    private func keys(_ keys: [[String]], in row: String) throws -> String {
        keys.isEmpty ? "false" : "\(row) IN (\(table.keySet(keys)))"
    }

    private var logKeyRow: String {
        "(" + table.keyTypes.enumerated().map { "(pk[\($0.offset + 1)])::\($0.element)" }.joined(separator: ", ") + ")"
    }
}
