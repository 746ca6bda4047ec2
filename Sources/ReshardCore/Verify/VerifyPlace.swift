import ReshardRouting
import Foundation
import PostgresClient

/// One table verify reads: a source's live table, or a target's copy. A target that is also a
/// source's database is read twice, as two places: its live table for the source, the table built
/// beside it (`Plan.builtName(of:on:)`) for the target, so no copy is ever taken for a source row
/// and verify needs no knowledge of today's placement.
struct VerifyPlace: Sendable {
    /// The shard name to connect with.
    let shard: String
    /// The source's name and index, when it is a source.
    let source: (name: String, index: Int)?
    /// The target index, when it is a target.
    let target: Int?
    /// The table's name here: its own on a source and a pure target, the built one on a shared target.
    let table: @Sendable (Plan.Table) -> QualifiedName

    static func all(_ plan: Plan) -> [VerifyPlace] {
        let sources = plan.sources.enumerated().map { index, source in
            VerifyPlace(shard: source.name, source: (source.name, index), target: nil, table: { $0.name })
        }
        return sources + plan.targets.enumerated().map { index, target in
            VerifyPlace(shard: target.name, source: nil, target: index, table: { plan.builtName(of: $0, on: target) })
        }
    }

    /// Every row of a source counts on the sources' side.
    var countsForSources: Bool { source != nil }

    /// Whether a row found here, destined for target `t`, counts on the target's side: a target
    /// reads only its own rows.
    func countsForTarget(_ t: Int) -> Bool { target == t }
}

/// The SQL verify runs for one table in one place, quoted through that place's connection.
struct VerifySQL {
    let place: VerifyPlace
    let table: TableSQL
    /// The target index of a row.
    let targetIndex: String
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
        if let t = place.target {
            targetIndex = "\(t)"
            placeFilter = sql.shardFilter(plan.function, target: t)
        } else {
            targetIndex = plan.function.sqlShardIndex(quotedColumn: sql.shardKey, type: table.keyType)
            placeFilter = "true"
        }
        // The whole row's text is the same as ROW(every column)'s when the table's columns stand
        // in the plan's order here, and cheaper (no new tuple per row).
        var alias = "reshard_row"
        while table.columns.contains(where: { $0.name == alias }) { alias += "_" }
        let name = SQLText.name(place.table(table))
        from = "\(name) AS \(alias)"
        let here = try connection.query(
            "SELECT array_to_json(array_agg(attname::text ORDER BY attnum))::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            [name])[0, 0].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        rowHash = here == table.columns.map(\.name)
            ? "hashtextextended(\(alias)::text, 0)" : "hashtextextended(ROW(\(sql.columns))::text, 0)"
        keyArray = sql.keyTextArray
    }

    /// `lower <= key < upper`, either end open, over the table's key columns.
    func rangeCondition(lower: [String]?, upper: [String]?) throws -> String {
        try range(of: table.keyRow, lower: lower, upper: upper)
    }

    func keyCondition(_ keys: [[String]]) throws -> String { try self.keys(keys, in: table.keyRow) }

    /// Per target: row count and hash sum modulo 2^64. A source's rows all count for the sources
    /// and a target reads only its own, so each returns one total (target -1 for a source)
    /// without the cost of computing a shard per row or grouping.
    func sums(where condition: String) -> String {
        let aggregates = "count(*), (coalesce(sum(\(rowHash)), 0) % 18446744073709551616)::text"
        if place.source != nil { return "SELECT -1, \(aggregates) FROM \(from) WHERE \(condition)" }
        return "SELECT \(targetIndex), \(aggregates) FROM \(from) WHERE \(condition) AND \(placeFilter)"
    }

    /// The rows themselves: target, key as JSON, hash.
    func rows(where condition: String) -> String {
        "SELECT \(targetIndex), array_to_json(\(keyArray))::text, \(rowHash) FROM \(from) WHERE \(condition) AND \(placeFilter)"
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
