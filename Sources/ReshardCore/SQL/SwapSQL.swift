import PostgresClient

/// The statements that swap the built tables of a shared database into place at cutover, and
/// back at rollback, as text (`SwapSQLTests`). Run as ONE transaction per shared database behind
/// the write fence, under a short `lock_timeout`: `ALTER TABLE ... SET SCHEMA` takes ACCESS
/// EXCLUSIVE on both tables, which is why the fence's EXCLUSIVE barrier comes first and the swap
/// only waits for readers. Every moving table of the database swaps in the same transaction, so
/// the application never sees a mix of layouts.
///
/// `live` is the live table's real, schema-qualified name on that database (resolve an
/// unqualified plan name through the server's `search_path` first). Sequences owned by the live
/// table's columns (`serial`) are re-owned by the built table's columns, so dropping the old table
/// at cleanup does not drop a sequence the new one's defaults call.
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
}
