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
    /// the same name in `buildSchema` on a database that is also a source (in `oldSchema` for the
    /// reversed plan, whose "built" tables on shared databases are the old layout's, swapped out
    /// at cutover: `TableLocations`).
    public func builtName(of table: Table, on target: Shard) -> QualifiedName {
        target.isShared ? QualifiedName(schema: sharedBuildSchema ?? Plan.buildSchema, table.name.name) : table.name
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

extension Plan {
    /// Where one target's tables are built, for `plan` and `status` (text and `--json`).
    public struct Placement: Sendable, Codable, Equatable {
        public var target: String
        /// Whether the target is also a source's database.
        public var shared: Bool
        public var sameAsSource: String?
        /// The schema the tables are built in until cutover (`buildSchema`); nil on a pure
        /// target, which builds them under their own names.
        public var buildSchema: String?

        public var text: String {
            guard let source = sameAsSource, let schema = buildSchema else {
                return "target \(target): tables built under their own names"
            }
            return "target \(target): the database of source \(source); tables built in \(schema), swapped in at cutover"
        }
    }

    public var placements: [Placement] {
        targets.map { Placement(target: $0.name, shared: $0.isShared, sameAsSource: $0.sameAsSource, buildSchema: $0.isShared ? Plan.buildSchema : nil) }
    }

    /// The plan as `plan --json` prints it: the plan file's fields and `placements`.
    public struct Report: Encodable {
        public let plan: Plan

        public init(_ plan: Plan) { self.plan = plan }

        private enum Keys: String, CodingKey { case placements }

        public func encode(to encoder: any Encoder) throws {
            try plan.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(plan.placements, forKey: .placements)
        }
    }
}
