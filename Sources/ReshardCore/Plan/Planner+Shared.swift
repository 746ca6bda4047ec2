import PostgresClient

/// What `plan` refuses on a target that is also a source's database, where each table is built
/// beside the live one as `reshard_build.<name>` and swapped in at cutover (see
/// docs/architecture.md, "Databases that are both source and target").
extension Planner {
    /// Two moving tables with the same name in different schemas would be built as the same
    /// `reshard_build` table: refused, naming both and the shared targets.
    static func buildNameCollisions(_ tables: [ReshardConfig.Table], sharedTargets: [(target: String, source: String)]) -> [String] {
        guard !sharedTargets.isEmpty else { return [] }
        let on = sharedTargets.map { "\($0.target) (the database of source \($0.source))" }.joined(separator: ", ")
        var first: [String: ReshardConfig.Table] = [:]
        var problems: [String] = []
        for table in tables {
            guard let earlier = first[table.name.name] else {
                first[table.name.name] = table
                continue
            }
            guard earlier.name != table.name else { continue }
            problems.append(
                "tables \(earlier.name) (line \(earlier.line)) and \(table.name) (line \(table.line)) would both be built as "
                    + "\(Plan.buildSchema).\(table.name.name) on \(on): move them in separate migrations")
        }
        return problems
    }

    /// A table already built on a shared target (an earlier migration aborted without
    /// `--drop-target-data`) would be resumed from someone else's rows: refused unless this
    /// migration is the one under way.
    static func leftoverBuiltTable(_ table: QualifiedName, targets: [Connected], sameAs: [String?], underWay: Bool) throws -> [String] {
        guard !underWay else { return [] }
        var problems: [String] = []
        for (target, same) in zip(targets, sameAs) where same != nil {
            let built = QualifiedName(schema: Plan.buildSchema, table.name)
            let conn = target.connection
            let quoted = try conn.quote(built)
            guard try conn.query("SELECT to_regclass($1) IS NOT NULL", [quoted]).get(0, 0, as: Bool.self) else { continue }
            if try conn.query("SELECT EXISTS (SELECT 1 FROM \(quoted))").get(0, 0, as: Bool.self) {
                problems.append(
                    "table \(table) on target \(target.shard.name): \(built) already holds rows (left by an aborted migration?); "
                        + "'reshard abort --drop-target-data' for that migration drops it")
            }
        }
        return problems
    }
}
