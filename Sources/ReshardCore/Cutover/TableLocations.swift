import PostgresClient

/// Where each layout's copy of a migrated table is, on each database, at each moment of a
/// migration: the one answer cutover, rollback, their undo and cleanup ask for ("where is table T
/// of layout L on database D now"). A value with no database (`TableLocationsTests`).
///
/// On a database that is only a source or only a target a table always has its own name. On a
/// database that is both (source `s` and target `t`), `swapped` says which of the two tables has
/// the live name:
/// - not swapped (before cutover, after rollback): the old layout is the live table, the new one
///   is built in `reshard_build`;
/// - swapped (after cutover): the new layout is the live table, the old one is kept in
///   `reshard_old` for rollback until cleanup.
/// The swap moves each table with everything on it (reshard's capture and fence triggers, the
/// application's triggers), since those follow the table, not its name.
public struct TableLocations: Sendable, Equatable {
    public enum Layout: String, Sendable {
        case old, new
    }

    /// The targets (by name) that are a source's database and have the new layout swapped in.
    public var swapped: Set<String>
    /// source name -> the target that is the same database.
    let sharedTargetOfSource: [String: String]
    let sharedTargets: Set<String>
    let tables: [QualifiedName]

    public init(_ plan: Plan, swapped: Set<String>) {
        self.swapped = swapped
        var map: [String: String] = [:]
        for target in plan.targets { if let source = target.sameAsSource { map[source] = target.name } }
        sharedTargetOfSource = map
        sharedTargets = Set(plan.targets.filter(\.isShared).map(\.name))
        tables = plan.tables.map(\.name)
    }

    /// The rule itself: a table's name on one database.
    public static func name(of table: QualifiedName, layout: Layout, shared: Bool, swapped: Bool) -> QualifiedName {
        guard shared else { return table }
        switch (layout, swapped) {
        case (.old, false), (.new, true): return table
        case (.new, false): return QualifiedName(schema: Plan.buildSchema, table.name)
        case (.old, true): return QualifiedName(schema: Plan.oldSchema, table.name)
        }
    }

    /// The names of every migrated table (in plan order) of `layout` on `shard`, a source's name
    /// for the old layout, a target's for the new one.
    public func names(_ layout: Layout, on shard: String) -> [QualifiedName] {
        let target: String? = layout == .old ? sharedTargetOfSource[shard] : (sharedTargets.contains(shard) ? shard : nil)
        return tables.map { Self.name(of: $0, layout: layout, shared: target != nil, swapped: target.map(swapped.contains) ?? false) }
    }

    /// The two layouts of a switch as places: `from` serves now, `to` takes over.
    public func places(_ plan: Plan, _ direction: CutoverStateMachine.Direction) -> SwitchPlaces {
        let old = plan.sources.map { (shard: $0.name, names: names(.old, on: $0.name)) }
        let new = plan.targets.map { (shard: $0.name, names: names(.new, on: $0.name)) }
        let same = Dictionary(uniqueKeysWithValues: plan.targets.compactMap { target in target.sameAsSource.map { (target.name, $0) } })
        return direction == .cutover ? SwitchPlaces(from: old, to: new, sameDatabase: same) : SwitchPlaces(from: new, to: old, sameDatabase: same)
    }

    /// Asks each shared database whether its swap happened (`isSwapped`).
    public static func read(_ plan: Plan, connect: (String) throws -> PGConnection) throws -> Set<String> {
        guard !plan.tables.isEmpty else { return [] }
        var swapped: Set<String> = []
        for target in plan.sharedTargets where try isSwapped(plan, on: connect(target.name)) {
            swapped.insert(target.name)
        }
        return swapped
    }

    /// Whether one shared database is swapped, from its catalog (every table of a database swaps
    /// in one transaction, so the plan's first table says): the old layout's table is in
    /// `reshard_old` exactly after a swap in, the new one's in `reshard_build` exactly before it.
    /// Either one missing means swapped (`isSwapped(parked:built:)`).
    static func isSwapped(_ plan: Plan, on conn: PGConnection) throws -> Bool {
        let first = plan.tables[0].name.name
        let row = try conn.query("SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
                                 [SQLText.name(QualifiedName(schema: Plan.oldSchema, first)), SQLText.name(QualifiedName(schema: Plan.buildSchema, first))])
        return isSwapped(parked: row[0, 0] == "t", built: row[0, 1] == "t")
    }

    /// The rule: swapped when the old layout's table is parked in `reshard_old`, or when the new
    /// one is no longer in `reshard_build` (a cleanup interrupted after it dropped `reshard_old`
    /// leaves neither: the new layout has the live names).
    static func isSwapped(parked: Bool, built: Bool) -> Bool { parked || !built }
}
