import Foundation
import PostgresClient

/// Sequences (`serial`, identity, any sequence a column's default calls) of the layout taking
/// over, advanced past every value the serving layout handed out, plus a margin for what it hands
/// out until the fence: done BEFORE the stall (Vitess users saw sequence work inside the switch
/// time it out), and only checked during it (`check`, a few sequence reads).
public enum SequenceSync {
    /// One sequence of a column, on one database.
    public struct Sequence: Sendable, Equatable {
        public var shard: String
        public var table: String
        public var column: String
        /// regclass text, quoted as needed.
        public var sequence: String
    }

    /// One line per sequence advanced, for the user.
    public struct Advanced: Sendable, Codable, Equatable {
        public var shard: String
        public var table: String
        public var column: String
        public var to: Int64
        public var highestSeen: Int64
        public var margin: Int64
        /// The sequence's increment from now on: one per database of the layout, interleaved.
        public var increment: Int64
        public var text: String {
            "\(shard): \(table).\(column) sequence advanced to \(to), increment \(increment) (highest handed out \(highestSeen) + margin \(margin))"
        }
    }

    /// The sequences of `name`'s columns on `conn`: owned ones (serial, identity) and those a default calls.
    static func sequences(of name: QualifiedName, table: String, shard: String, on conn: PGConnection) throws -> [Sequence] {
        let quoted = try conn.quote(name)
        let rows = try conn.query(
            """
            SELECT DISTINCT a.attname, s.seq::regclass::text FROM pg_attribute a,
              LATERAL (SELECT to_regclass(pg_get_serial_sequence($1, a.attname)) AS seq
                       UNION ALL
                       SELECT d.refobjid::regclass FROM pg_attrdef ad
                       JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid AND d.refclassid = 'pg_class'::regclass
                       JOIN pg_class c ON c.oid = d.refobjid AND c.relkind = 'S'
                       WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum) s
            WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND s.seq IS NOT NULL
            ORDER BY 1, 2
            """, [quoted])
        return (0..<rows.rowCount).map { Sequence(shard: shard, table: table, column: rows[$0, 0]!, sequence: rows[$0, 1]!) }
    }

    /// The highest value a sequence handed out (0 when none).
    static func handedOut(_ sequence: String, on conn: PGConnection) throws -> Int64 {
        try conn.query("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM \(sequence)").get(0, 0, as: Int64.self)
    }

    /// Where the values come from and go to: for each table, its name on each database of each layout.
    public struct Places {
        public var from: [(shard: String, names: [QualifiedName])]
        public var to: [(shard: String, names: [QualifiedName])]
    }

    /// Advances every sequence of the `to` layout past the highest value of the same column seen
    /// on either layout (its sequences and its rows) plus `margin`. Returns what it advanced.
    public static func advance(
        _ plan: Plan, places: Places, margin: Int64, connect: (String) throws -> PGConnection
    ) throws -> [Advanced] {
        var advanced: [Advanced] = []
        for (t, table) in plan.tables.enumerated() {
            let label = table.name.description
            var targets: [Sequence] = []
            for place in places.to { targets += try sequences(of: place.names[t], table: label, shard: place.shard, on: try connect(place.shard)) }
            guard !targets.isEmpty else { continue }
            for name in Set(targets.map(\.column)).sorted() {
                let column = name
                var highest: Int64 = 0
                for place in places.from + places.to {
                    let conn = try connect(place.shard)
                    for sequence in try sequences(of: place.names[t], table: label, shard: place.shard, on: conn) where sequence.column == column {
                        highest = max(highest, try handedOut(sequence.sequence, on: conn))
                    }
                    // Values written explicitly (not from the sequence) count too; an index on the column makes this a lookup.
                    guard ["smallint", "integer", "bigint"].contains(table.columns.first(where: { $0.name == column })?.type ?? "") else { continue }
                    let rows = try conn.query("SELECT max(\(try conn.quoteIdentifier(column)))::text FROM \(try conn.quote(place.names[t]))")
                    if let text = rows[0, 0], let value = Int64(text) { highest = max(highest, value) }
                }
                // Each database of the layout hands out its own values: interleaved (increment k,
                // offset i), so no two of them ever hand out the same one, which the sources' own
                // scheme (say, ranges) cannot be continued to guarantee on another number of shards.
                let interleaved = targets.filter { $0.column == column }
                let stride = Int64(interleaved.count)
                for (i, sequence) in interleaved.enumerated() {
                    let conn = try connect(sequence.shard)
                    let value = highest + margin + Int64(i)
                    try conn.execute("ALTER SEQUENCE \(sequence.sequence) INCREMENT BY \(stride)")
                    try conn.query("SELECT setval($1::regclass, $2, true)", [sequence.sequence, value])
                    advanced.append(.init(shard: sequence.shard, table: label, column: sequence.column, to: value, highestSeen: highest,
                                          margin: margin, increment: stride))
                }
            }
        }
        return advanced
    }

    /// The sequences of both layouts, found before the stall so the check during it only reads values.
    public struct Known: Sendable {
        public var from: [Sequence]
        public var to: [Sequence]
    }

    public static func known(_ plan: Plan, places: Places, connect: (String) throws -> PGConnection) throws -> Known {
        func find(_ places: [(shard: String, names: [QualifiedName])]) throws -> [Sequence] {
            var found: [Sequence] = []
            for place in places {
                let conn = try connect(place.shard)
                for (t, table) in plan.tables.enumerated() {
                    found += try sequences(of: place.names[t], table: table.name.description, shard: place.shard, on: conn)
                }
            }
            return found
        }
        return Known(from: try find(places.from), to: try find(places.to))
    }

    /// During the stall: every sequence of the `to` layout must be past what the `from` layout's
    /// sequences handed out since `advance`. A few sequence reads; one that fell behind (writes
    /// outran the margin) is advanced at once, which is a single `setval`. Returns those.
    public static func check(_ known: Known, margin: Int64, connect: (String) throws -> PGConnection) throws -> [Advanced] {
        var highest: [String: Int64] = [:]
        for sequence in known.from {
            let key = "\(sequence.table)\u{0}\(sequence.column)"
            highest[key] = max(highest[key] ?? 0, try handedOut(sequence.sequence, on: try connect(sequence.shard)))
        }
        var advanced: [Advanced] = []
        for sequence in known.to {
            let conn = try connect(sequence.shard)
            guard let seen = highest["\(sequence.table)\u{0}\(sequence.column)"], try handedOut(sequence.sequence, on: conn) <= seen else { continue }
            // Ahead again, keeping this database's place among the interleaved sequences.
            let row = try conn.query(
                "SELECT last_value, seqincrement FROM \(sequence.sequence), pg_sequence WHERE seqrelid = $1::regclass", [sequence.sequence])
            let (last, stride) = (try row.get(0, 0, as: Int64.self), max(1, try row.get(0, 1, as: Int64.self)))
            var value = seen + margin
            value += ((last - value) % stride + stride) % stride
            try conn.query("SELECT setval($1::regclass, $2, true)", [sequence.sequence, value])
            advanced.append(.init(shard: sequence.shard, table: sequence.table, column: sequence.column, to: value, highestSeen: seen,
                                  margin: margin, increment: stride))
        }
        return advanced
    }
}
