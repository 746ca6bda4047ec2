import PostgresClient

/// Where each target's copy of a table lives until cutover.
///
/// A target that is also a source's database (doubling keeps every old shard as a target) must
/// not show the application any row before cutover, so its copy is built beside the live table
/// in reshard's own schema and swapped in at cutover; the live table it replaces is kept in
/// `oldSchema` for rollback until `cleanup`. Pure targets build under the table's real name.
/// See docs/architecture.md, "Databases that are both source and target".
extension Plan {
    /// The schema the copies on shared databases are built in.
    public static let buildSchema = "reshard_build"
    /// The schema the swapped-out live tables are kept in until `cleanup` (rollback swaps them back).
    public static let oldSchema = "reshard_old"

    /// The name `target`'s copy of `table` is built under: the table's own name on a pure target,
    /// the same name in `buildSchema` on a database that is also a source.
    public func builtName(of table: Table, on target: Shard) -> QualifiedName {
        target.isShared ? QualifiedName(schema: Plan.buildSchema, table.name.name) : table.name
    }

    /// The name the live table is kept under on a shared database after cutover.
    public func oldName(of table: Table) -> QualifiedName {
        QualifiedName(schema: Plan.oldSchema, table.name.name)
    }

    /// The targets that are also a source's database.
    public var sharedTargets: [Shard] { targets.filter(\.isShared) }
}

extension Plan.Shard {
    /// Whether this target is also a source's database (its copies are built beside the live tables).
    public var isShared: Bool { sameAsSource != nil }
}
