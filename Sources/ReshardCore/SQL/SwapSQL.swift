import PostgresClient

/// The statements that swap the built tables of a shared database into place at cutover, and
/// back at rollback, as text (`SwapSQLTests`). Run as ONE transaction per shared database behind
/// the write fence, under a short `lock_timeout`: `ALTER TABLE ... SET SCHEMA` takes ACCESS
/// EXCLUSIVE on both tables, which is why the fence's EXCLUSIVE barrier comes first and the swap
/// only waits for readers. Every moving table of the database swaps in the same transaction, so
/// the application never sees a mix of layouts.
///
/// `live` is the live table's real, schema-qualified name on that database (resolve an
/// unqualified plan name through the server's `search_path` first: `liveSchemaQuery`). Sequences
/// owned by the live table's columns (`serial`, `ownedSequencesQuery`) stay where they are, in the
/// live table's schema, and are re-owned by the table swapped in, so dropping the old table at
/// cleanup does not drop a sequence the new one's defaults call. They are let go of first:
/// `ALTER TABLE ... SET SCHEMA` moves the sequences a table owns along with it, which would park
/// the application's sequence in `reshard_old` (and `cleanup` would drop it with that schema).
/// Identity columns have a sequence of their own per table, which moves with its table.
public enum SwapSQL {
    public struct Table: Sendable, Equatable {
        /// The live table, schema-qualified.
        public var live: QualifiedName
        /// `(sequence, column)` pairs: sequences owned by a column of the live table.
        public var ownedSequences: [(sequence: QualifiedName, column: String)]

        public init(live: QualifiedName, ownedSequences: [(sequence: QualifiedName, column: String)] = []) {
            precondition(live.schema != nil, "SwapSQL needs the live table's schema")
            self.live = live
            self.ownedSequences = ownedSequences
        }

        public static func == (a: Table, b: Table) -> Bool {
            a.live == b.live && a.ownedSequences.map(\.sequence) == b.ownedSequences.map(\.sequence)
                && a.ownedSequences.map(\.column) == b.ownedSequences.map(\.column)
        }
    }

    /// Cutover: live -> `reshard_old`, built (`reshard_build`) -> live's schema.
    public static func swapIn(_ tables: [Table]) -> [String] {
        swap(tables, outTo: Plan.oldSchema, inFrom: Plan.buildSchema)
    }

    /// Rollback: the current table (the one built) -> `reshard_build`, the old one (`reshard_old`) -> back.
    public static func swapBack(_ tables: [Table]) -> [String] {
        swap(tables, outTo: Plan.buildSchema, inFrom: Plan.oldSchema)
    }

    static func swap(_ tables: [Table], outTo parked: String, inFrom waiting: String) -> [String] {
        var statements = ["CREATE SCHEMA IF NOT EXISTS \(SQLText.identifier(parked))"]
        for table in tables {
            let schema = table.live.schema!
            for owned in table.ownedSequences { statements.append("ALTER SEQUENCE \(SQLText.name(owned.sequence)) OWNED BY NONE") }
            statements.append("ALTER TABLE \(SQLText.name(table.live)) SET SCHEMA \(SQLText.identifier(parked))")
            statements.append(
                "ALTER TABLE \(SQLText.name(QualifiedName(schema: waiting, table.live.name))) SET SCHEMA \(SQLText.identifier(schema))")
            for owned in table.ownedSequences {
                statements.append(
                    "ALTER SEQUENCE \(SQLText.name(owned.sequence)) OWNED BY \(SQLText.name(table.live)).\(SQLText.identifier(owned.column))")
            }
        }
        return statements
    }

    /// The schema of the table a plan names (`$1`, quoted), as the server resolves it.
    public static let liveSchemaQuery =
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)"

    /// The sequences owned by a column of the table `$1` (quoted, schema-qualified): one row per
    /// sequence with its schema, its name and the column. Only `serial`-style ownership (`OWNED
    /// BY`, dependency type `a`), not identity columns' own sequences (type `i`).
    public static let ownedSequencesQuery = """
        SELECT n.nspname, s.relname, a.attname
        FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass($1)
          AND d.deptype = 'a'
        ORDER BY a.attnum, s.relname
        """
}
