import Foundation
import ReshardRouting
import PostgresClient

/// What reshard needs to know about one table on one shard, read from the catalog.
public struct TableSchema: Sendable, Equatable, Codable {
    public struct Column: Sendable, Equatable, Codable {
        public var name: String
        /// `format_type(atttypid, atttypmod)`, e.g. `character varying(40)`.
        public var type: String
        public var notNull: Bool
        /// `GENERATED ALWAYS AS (...) STORED`: computed by each server, never written by reshard.
        public var isGenerated = false
        /// `always` or `by default` for identity columns (writes need `OVERRIDING SYSTEM VALUE`
        /// for `always`); nil otherwise.
        public var identity: String? = nil
        /// The column's own collation (`schema.name`) when it is not its type's default; nil
        /// otherwise. Not part of the fingerprint, so plans made before it existed stay valid.
        public var collation: String? = nil

        public init(
            name: String, type: String, notNull: Bool, isGenerated: Bool = false, identity: String? = nil, collation: String? = nil
        ) {
            self.name = name
            self.type = type
            self.notNull = notNull
            self.isGenerated = isGenerated
            self.identity = identity
            self.collation = collation
        }

        // Plan files written before these fields existed still read.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            type = try c.decode(String.self, forKey: .type)
            notNull = try c.decode(Bool.self, forKey: .notNull)
            isGenerated = try c.decodeIfPresent(Bool.self, forKey: .isGenerated) ?? false
            identity = try c.decodeIfPresent(String.self, forKey: .identity)
            collation = try c.decodeIfPresent(String.self, forKey: .collation)
        }
    }

    public var columns: [Column]
    /// The primary key, or else the first unique index over non-null columns; empty if neither.
    public var uniqueKey: [String]
    public var uniqueKeyIsPrimary: Bool

    public func column(_ name: String) -> Column? { columns.first { $0.name == name } }

    /// Changes with any column, type, nullability or key change: lets `apply` refuse a stale plan.
    public var fingerprint: String {
        fnv1a64Hex(
            columns.map { "\($0.name):\($0.type):\($0.notNull)\($0.isGenerated ? ":generated" : "")" }.joined(separator: ";") + "|"
                + uniqueKey.joined(separator: ","))
    }

    /// Differences between this schema and `other`, as phrases naming the column.
    public func differences(from other: TableSchema, here: String, there: String) -> [String] {
        var problems: [String] = []
        for column in other.columns where self.column(column.name) == nil {
            problems.append("column \(column.name) is missing on \(here) but exists on \(there)")
        }
        for column in columns {
            guard let theirs = other.column(column.name) else {
                problems.append("column \(column.name) exists on \(here) but not on \(there)")
                continue
            }
            if theirs.type != column.type {
                problems.append("column \(column.name) is \(column.type) on \(here) but \(theirs.type) on \(there)")
            } else if theirs.collation != column.collation {
                problems.append(
                    "column \(column.name) has collation \(column.collation ?? "default") on \(here) but \(theirs.collation ?? "default") on \(there)")
            }
        }
        return problems
    }
}

extension TableSchema {
    /// Reads a table's schema, or returns nil when the table does not exist.
    public static func read(_ table: QualifiedName, on connection: PGConnection) throws -> TableSchema? {
        let quoted = try connection.quote(table)
        let oidResult = try connection.query("SELECT to_regclass($1)::oid", [quoted])
        guard let oid = oidResult[0, 0] else { return nil }
        let columnRows = try connection.query(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated <> '',
                   CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                   CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN format('%I.%I', n.nspname, c.collname) END
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_collation c ON c.oid = a.attcollation LEFT JOIN pg_namespace n ON n.oid = c.collnamespace
            WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """, [oid])
        var columns: [Column] = []
        for row in 0..<columnRows.rowCount {
            columns.append(Column(
                name: columnRows[row, 0]!, type: columnRows[row, 1]!, notNull: try columnRows.get(row, 2, as: Bool.self),
                isGenerated: try columnRows.get(row, 3, as: Bool.self), identity: columnRows[row, 4], collation: columnRows[row, 5]))
        }
        // Unique, valid, non-partial, non-expression indexes, primary key first, fewest columns next.
        // Only the first `indnkeyatts` columns are the key: INCLUDE columns are carried, not unique.
        let keyRows = try connection.query(
            """
            SELECT i.indexrelid, i.indisprimary, a.attname, a.attnotnull
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = $1::oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              AND k.ord <= i.indnkeyatts
            ORDER BY i.indisprimary DESC, i.indnkeyatts, i.indexrelid, k.ord
            """, [oid])
        var candidates: [(primary: Bool, columns: [String], notNull: Bool)] = []
        var current: String?
        for row in 0..<keyRows.rowCount {
            if keyRows[row, 0] != current {
                current = keyRows[row, 0]
                candidates.append((try keyRows.get(row, 1, as: Bool.self), [], true))
            }
            candidates[candidates.count - 1].columns.append(keyRows[row, 2]!)
            if try !keyRows.get(row, 3, as: Bool.self) { candidates[candidates.count - 1].notNull = false }
        }
        let key = candidates.first { $0.primary || $0.notNull }
        return TableSchema(columns: columns, uniqueKey: key?.columns ?? [], uniqueKeyIsPrimary: key?.primary ?? false)
    }
}

/// A unique index of a table as the planner checks it across shards: its key columns (not its
/// INCLUDE columns), their types, and its predicate when partial.
public struct UniqueIndex: Sendable, Equatable {
    public var name: String
    public var columns: [String]
    public var types: [String]
    /// `pg_get_expr(indpred)`: which rows a partial index covers; nil for all rows.
    public var predicate: String?
    /// Indexes over expressions cannot be compared value by value here.
    public var hasExpressions: Bool

    /// The valid unique indexes of `table`, by name.
    public static func read(_ table: QualifiedName, on connection: PGConnection) throws -> [UniqueIndex] {
        let rows = try connection.query(
            """
            SELECT c.relname, i.indexprs IS NOT NULL, pg_get_expr(i.indpred, i.indrelid),
                   coalesce(json_agg(a.attname::text ORDER BY k.ord) FILTER (WHERE a.attname IS NOT NULL), '[]')::text,
                   coalesce(json_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.ord) FILTER (WHERE a.attname IS NOT NULL), '[]')::text
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
            LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
            WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid AND k.ord <= i.indnkeyatts
            GROUP BY c.relname, i.indexprs IS NOT NULL, i.indpred, i.indrelid ORDER BY c.relname
            """, [try connection.quote(table)])
        let decoder = JSONDecoder()
        return try (0..<rows.rowCount).map { row in
            UniqueIndex(
                name: rows[row, 0]!, columns: try decoder.decode([String].self, from: Data(rows[row, 3]!.utf8)),
                types: try decoder.decode([String].self, from: Data(rows[row, 4]!.utf8)),
                predicate: rows[row, 2], hasExpressions: try rows.get(row, 1, as: Bool.self))
        }
    }
}
