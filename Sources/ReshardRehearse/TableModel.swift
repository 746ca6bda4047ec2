import PostgresClient
import ReshardCore

/// What the generator needs to know about one table to write rows it accepts: columns with their
/// types, which columns must be unique, the simple ranges its CHECK constraints allow, and its
/// foreign keys. Read from a source's catalog (`TableModel+Catalog.swift`), or built in tests.
public struct TableModel: Sendable, Equatable {
    public struct Column: Sendable, Equatable {
        public var name: String
        /// `pg_type.typname` of the column's type (`int8`, `numeric`, `uuid`...); `enum` for enum types.
        public var baseType: String
        /// Declared length (varchar/char), precision and scale (numeric), from the typmod.
        public var length: Int?
        public var precision: Int?
        public var scale: Int?
        public var enumLabels: [String]
        public var notNull: Bool
        public var hasDefault: Bool
        /// `GENERATED ALWAYS AS (...) STORED`: computed by the server, never written.
        public var isGenerated: Bool
        /// `always` / `by default` identity; rows carry explicit values (`OVERRIDING SYSTEM VALUE`),
        /// since each shard's own sequence would hand out the same numbers.
        public var identity: String?
        /// Lower and upper bounds its CHECK constraints state (`x >= 0`, `x < 100`), when simple.
        public var minimum: Double?
        public var maximum: Double?

        public init(
            name: String, baseType: String, length: Int? = nil, precision: Int? = nil, scale: Int? = nil, enumLabels: [String] = [],
            notNull: Bool = false, hasDefault: Bool = false, isGenerated: Bool = false, identity: String? = nil,
            minimum: Double? = nil, maximum: Double? = nil
        ) {
            self.name = name
            self.baseType = baseType
            self.length = length
            self.precision = precision
            self.scale = scale
            self.enumLabels = enumLabels
            self.notNull = notNull
            self.hasDefault = hasDefault
            self.isGenerated = isGenerated
            self.identity = identity
            self.minimum = minimum
            self.maximum = maximum
        }
    }

    public struct ForeignKey: Sendable, Equatable {
        public var columns: [String]
        public var parent: QualifiedName
        public var parentColumns: [String]

        public init(columns: [String], parent: QualifiedName, parentColumns: [String]) {
            self.columns = columns
            self.parent = parent
            self.parentColumns = parentColumns
        }
    }

    public var name: QualifiedName
    public var columns: [Column]
    /// The unique key reshard uses (primary key, else the first unique index over NOT NULL columns).
    public var uniqueKey: [String]
    /// Every unique constraint or index (its key columns).
    public var uniqueSets: [[String]]
    public var foreignKeys: [ForeignKey]
    /// The shard key, and the column today's placement reads (the same unless `source_key` says).
    public var shardKey: String
    public var placementKey: String

    public init(
        name: QualifiedName, columns: [Column], uniqueKey: [String], uniqueSets: [[String]] = [], foreignKeys: [ForeignKey] = [],
        shardKey: String, placementKey: String? = nil
    ) {
        self.name = name
        self.columns = columns
        self.uniqueKey = uniqueKey
        self.uniqueSets = uniqueSets.isEmpty ? [uniqueKey] : uniqueSets
        self.foreignKeys = foreignKeys
        self.shardKey = shardKey
        self.placementKey = placementKey ?? shardKey
    }

    public func column(_ name: String) -> Column? { columns.first { $0.name == name } }

    /// The types the generator can make values for.
    public static let supportedTypes: Set<String> = [
        "int2", "int4", "int8", "numeric", "float4", "float8", "text", "varchar", "bpchar", "uuid", "jsonb", "json",
        "timestamptz", "timestamp", "date", "bool", "bytea", "enum",
    ]

    /// The columns rows are written with: not generated, and of a type the generator knows (a
    /// column of another type is left to its default or NULL).
    public var writtenColumns: [Column] {
        columns.filter { !$0.isGenerated && Self.supportedTypes.contains($0.baseType) }
    }

    /// Columns an update may change: written, outside every unique set, key and foreign key.
    public var updatableColumns: [Column] {
        let fixed = Set(uniqueSets.flatMap { $0 } + [shardKey, placementKey] + foreignKeys.flatMap(\.columns))
        return writtenColumns.filter { !fixed.contains($0.name) && $0.identity == nil }
    }

    /// Why rows cannot be generated for this table, if they cannot: a NOT NULL column without a
    /// default whose type the generator does not know.
    public var problems: [String] {
        columns.filter { !$0.isGenerated && !Self.supportedTypes.contains($0.baseType) && $0.notNull && !$0.hasDefault }.map {
            "table \(name), column \($0.name): rehearse cannot generate values of type \($0.baseType) (NOT NULL, no default)"
        }
    }

    /// Tables in an order that puts every parent before the tables referencing it.
    public static func parentsFirst(_ tables: [TableModel]) throws -> [TableModel] {
        var ordered: [TableModel] = []
        var placed = Set<QualifiedName>()
        var pending = tables
        let names = Set(tables.map(\.name))
        for table in tables {
            for fk in table.foreignKeys where !names.contains(fk.parent) {
                throw ReshardError.badInput("table \(table.name) has a foreign key to \(fk.parent), which is not one of the migration's tables")
            }
        }
        while !pending.isEmpty {
            guard let next = pending.firstIndex(where: { t in t.foreignKeys.allSatisfy { $0.parent == t.name || placed.contains($0.parent) } })
            else { throw ReshardError.badInput("the foreign keys between \(pending.map(\.name.description).joined(separator: ", ")) form a cycle") }
            placed.insert(pending[next].name)
            ordered.append(pending.remove(at: next))
        }
        return ordered
    }
}
