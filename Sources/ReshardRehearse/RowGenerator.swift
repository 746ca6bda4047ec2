import PostgresClient
import ReshardCore
import ReshardRouting

/// Synthetic rows that a schema accepts, placed on the old layout's shards.
///
/// Every cell is drawn from its own `SeededRandom` (seed, table, column, row index), so the same
/// `--seed` gives the same rows whatever the order they are made in. Values are text, sent as
/// parameters cast by the server to the column's type. What it respects: types and their declared
/// lengths and precisions, NOT NULL, unique constraints (one column of each unique set takes a
/// value derived from the row's index, which is unique across all shards), the bounds simple CHECK
/// constraints state, and foreign keys (the referencing columns copy a parent row's values, so a
/// child sharing its parent's shard key lands on the parent's shard). Rows a constraint it cannot
/// read still refuses are skipped by the loader.
public struct RowGenerator: Sendable {
    public struct Row: Sendable, Equatable {
        /// Aligned with the table's `writtenColumns`; nil is NULL.
        public var values: [String?]
        /// The source shard the old layout puts it on.
        public var shard: Int
    }

    public let seed: UInt64
    /// How rows are placed on the sources today.
    public let placement: ShardFunction

    public init(seed: UInt64, placement: ShardFunction) {
        self.seed = seed
        self.placement = placement
    }

    /// The key type a placement column's values are routed as.
    public static func keyType(_ column: TableModel.Column) -> KeyType? {
        switch column.baseType {
        case "int2": .smallint
        case "int4": .integer
        case "int8": .bigint
        case "text": .text
        case "varchar": .varchar
        case "uuid": .uuid
        default: nil
        }
    }

    /// The shard the old layout gives a row.
    public func shard(of values: [String?], in table: TableModel) throws -> Int {
        let columns = table.writtenColumns
        guard let index = columns.firstIndex(where: { $0.name == table.placementKey }), let type = Self.keyType(columns[index]) else {
            throw ReshardError.badInput("table \(table.name): placement column \(table.placementKey) is not a shard key type rehearse can route")
        }
        guard let text = values[index], let key = ShardKey(text: text, type: type) else {
            throw ReshardError.badInput("table \(table.name): row without a usable \(table.placementKey)")
        }
        return try placement.shard(for: key)
    }

    /// Rows for every table, parents first. `counts` says how many rows each table gets.
    public func generate(_ tables: [TableModel], counts: [QualifiedName: Int]) throws -> [QualifiedName: [Row]] {
        var rows: [QualifiedName: [Row]] = [:]
        let generator = knowing(tables)
        for table in try TableModel.parentsFirst(tables) {
            let n = counts[table.name] ?? 0
            rows[table.name] = try (0..<n).map { try generator.row(of: table, index: $0, parents: rows) }
        }
        return rows
    }

    /// The columns of `table` that take index-derived (globally unique) values: one per unique set
    /// not already covered, preferring columns no foreign key fills.
    public static func uniqueColumns(_ table: TableModel) -> Set<String> {
        let fkColumns = Set(table.foreignKeys.flatMap(\.columns))
        let written = Set(table.writtenColumns.map(\.name))
        var chosen = Set<String>()
        for set in table.uniqueSets where !set.contains(where: chosen.contains) {
            if let pick = set.first(where: { !fkColumns.contains($0) && written.contains($0) }) { chosen.insert(pick) }
        }
        return chosen
    }

    /// Row number `index` of `table`. Parents must already be generated (`parents`), or be given
    /// by the caller as the rows the workload may reference.
    public func row(of table: TableModel, index: Int, parents: [QualifiedName: [Row]]) throws -> Row {
        let columns = table.writtenColumns
        let unique = Self.uniqueColumns(table)
        var values: [String?] = columns.enumerated().map { c, column in
            cell(table, column, index: index, unique: unique.contains(column.name), isKey: Self.mustHaveValue(column, table))
        }
        for fk in table.foreignKeys {
            guard let parentTable = parents[fk.parent], !parentTable.isEmpty, let model = parentModel(fk, table) else { continue }
            // A child whose foreign key covers a unique set is one-to-one: the index-th parent.
            let oneToOne = table.uniqueSets.contains { Set($0).isSubset(of: Set(fk.columns)) }
            var rng = SeededRandom(seed: seed, [table.name.description, "fk", fk.columns.joined(separator: ",")], index: UInt64(index))
            let parentIndex = oneToOne ? index % parentTable.count : Int(rng.next() % UInt64(parentTable.count))
            let parentRow = parentTable[parentIndex]
            for (column, parentColumn) in zip(fk.columns, fk.parentColumns) {
                guard let c = columns.firstIndex(where: { $0.name == column }),
                    let p = model.writtenColumns.firstIndex(where: { $0.name == parentColumn })
                else { continue }
                values[c] = parentRow.values[p]
            }
        }
        return Row(values: values, shard: try shard(of: values, in: table))
    }

    /// The parent's model, when the child carries it (self-references use the table itself).
    private func parentModel(_ fk: TableModel.ForeignKey, _ table: TableModel) -> TableModel? {
        fk.parent == table.name ? table : parentModels[fk.parent]
    }

    /// Parent models by name, set by `withParents` (the generator is a value: copies carry them).
    public var parentModels: [QualifiedName: TableModel] = [:]

    /// This generator knowing `tables`, so foreign keys can be filled from their rows.
    public func knowing(_ tables: [TableModel]) -> RowGenerator {
        var copy = self
        for table in tables { copy.parentModels[table.name] = table }
        return copy
    }

    static func mustHaveValue(_ column: TableModel.Column, _ table: TableModel) -> Bool {
        column.notNull || table.uniqueKey.contains(column.name) || column.name == table.shardKey || column.name == table.placementKey
            || column.identity != nil
    }

    /// A new value for `column` (an update), drawn from `rng`.
    public func freshValue(_ table: TableModel, _ column: TableModel.Column, rng: inout SeededRandom) -> String? {
        randomValue(column, rng: &rng, nullable: !Self.mustHaveValue(column, table))
    }

    /// One cell: index-derived when it must be unique, random otherwise.
    func cell(_ table: TableModel, _ column: TableModel.Column, index: Int, unique: Bool, isKey: Bool) -> String? {
        var rng = SeededRandom(seed: seed, [table.name.description, column.name], index: UInt64(index))
        if unique, let value = uniqueValue(column, index: index, rng: &rng) { return value }
        return randomValue(column, rng: &rng, nullable: !isKey)
    }

    func uniqueValue(_ column: TableModel.Column, index: Int, rng: inout SeededRandom) -> String? {
        let n = Int64(index)
        switch column.baseType {
        case "int2", "int4", "int8", "numeric":
            return String(Int64(column.minimum.map { $0.rounded(.up) } ?? 1) + n)
        case "text", "varchar", "bpchar":
            let base = String(n, radix: 36)
            let width = column.length ?? 12
            guard base.count <= width else { return nil }
            let fill = column.baseType == "bpchar" ? width : min(width, base.count + 6)
            return base + randomLetters(fill - base.count, rng: &rng)
        case "uuid":
            // The index in the last 8 bytes keeps uuids distinct however many are drawn.
            var bytes = (0..<8).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes[6] = (bytes[6] & 0x0f) | 0x40
            for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: UInt64(n) >> UInt64(shift))) }
            bytes[8] = (bytes[8] & 0x3f) | 0x80
            return Self.uuidText(bytes)
        case "timestamptz": return Self.timestampText(1_704_067_200 + n, zone: true)
        case "timestamp": return Self.timestampText(1_704_067_200 + n, zone: false)
        case "date": return Self.timestampText(1_704_067_200 + n * 86_400, zone: false).prefix(10).description
        default: return nil
        }
    }

    func randomValue(_ column: TableModel.Column, rng: inout SeededRandom, nullable: Bool) -> String? {
        if nullable, rng.next() % 10 == 0 { return nil }
        func int(_ low: Int64, _ high: Int64) -> Int64 {
            let lo = max(low, column.minimum.map { Int64($0.rounded(.up)) } ?? low)
            let hi = min(high, column.maximum.map { Int64($0.rounded(.down)) } ?? high)
            guard hi > lo else { return lo }
            return lo + Int64(rng.next() % UInt64(hi - lo + 1))
        }
        switch column.baseType {
        case "int2": return String(int(0, 30_000))
        case "int4": return String(int(0, 1_000_000))
        case "int8": return String(int(0, 1_000_000_000))
        case "numeric":
            let scale = column.scale ?? 2
            let digits = min(max((column.precision ?? 12) - scale, 0), 9)
            var high = Int64(1)
            for _ in 0..<digits { high *= 10 }
            let whole = int(0, max(high - 1, 0))
            guard scale > 0 else { return String(whole) }
            let fraction = String(rng.next() % 100_000_000).leftPadded(8).prefix(min(scale, 8))
            // A fraction could push a value over a CHECK's upper bound: stay on whole numbers there.
            if let maximum = column.maximum, Double(whole) + 1 > maximum { return String(whole) }
            return "\(whole).\(fraction)"
        case "float4", "float8": return String(Double(int(0, 1_000_000)) / 64)
        case "text", "varchar":
            let words = ["alpha", "bravo", "delta", "échelle", "kilo", "lima", "Ωmega", "quote'd", "back\\slash", "sierra"]
            var text = ""
            for _ in 0..<(1 + rng.next() % 4) { text += (text.isEmpty ? "" : " ") + words[Int(rng.next() % UInt64(words.count))] }
            if let length = column.length { text = String(text.prefix(length)) }
            return text
        case "bpchar": return randomLetters(column.length ?? 1, rng: &rng)
        case "uuid":
            var bytes = (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes[6] = (bytes[6] & 0x0f) | 0x40
            bytes[8] = (bytes[8] & 0x3f) | 0x80
            return Self.uuidText(bytes)
        case "jsonb", "json":
            let n = rng.next() % 1000
            return #"{"n": \#(n), "tags": ["t\#(n % 7)", "x"], "nested": {"ok": \#(n % 2 == 0)}}"#
        case "timestamptz": return Self.timestampText(1_704_067_200 + int(0, 63_072_000), zone: true)
        case "timestamp": return Self.timestampText(1_704_067_200 + int(0, 63_072_000), zone: false)
        case "date": return Self.timestampText(1_704_067_200 + int(0, 730) * 86_400, zone: false).prefix(10).description
        case "bool": return rng.next() % 2 == 0 ? "true" : "false"
        case "bytea": return "\\x" + (0..<8).map { _ in String(UInt8(truncatingIfNeeded: rng.next()), radix: 16).leftPadded(2) }.joined()
        case "enum": return column.enumLabels.isEmpty ? nil : column.enumLabels[Int(rng.next() % UInt64(column.enumLabels.count))]
        default: return nil
        }
    }

    func randomLetters(_ count: Int, rng: inout SeededRandom) -> String {
        let letters = Array("abcdefghijklmnopqrstuvwxyz")
        return String((0..<max(count, 0)).map { _ in letters[Int(rng.next() % 26)] })
    }

    static func uuidText(_ bytes: [UInt8]) -> String {
        let hex = bytes.map { String($0, radix: 16).leftPadded(2) }.joined()
        let h = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(h[$0]) }.joined(separator: "-")
    }

    /// `YYYY-MM-DD HH:MM:SS[+00]` for seconds since 1970 (UTC), without Foundation's calendars.
    public static func timestampText(_ seconds: Int64, zone: Bool) -> String {
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secs = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { String(v).leftPadded(2, with: "0") }
        return "\(y)-\(two(m))-\(two(d)) \(two(secs / 3600)):\(two(secs / 60 % 60)):\(two(secs % 60))" + (zone ? "+00" : "")
    }
}

extension StringProtocol {
    func leftPadded(_ width: Int, with pad: Character = "0") -> String {
        count >= width ? String(self) : String(repeating: pad, count: width - count) + self
    }
}
