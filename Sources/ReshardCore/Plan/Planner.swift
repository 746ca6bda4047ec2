import ReshardRouting
import Foundation
import PostgresClient

/// Validates a config against the real shards and estimates what moves where.
///
/// Read-only by construction: every connection it opens sets `default_transaction_read_only`, so
/// a bug here cannot write. It collects every problem it can find before giving up, so a user
/// fixes them all in one go; each names the shard, the table and the column.
public struct Planner {
    public let config: ReshardConfig
    /// Rows to sample per table and source for the slice estimates.
    public var sampleRows = 100_000
    /// Check key collisions on a sample of about `sampleRows` keys per source instead of every
    /// key (`plan --fast`); `apply` always checks every key.
    public var fastChecks = false
    /// What `plan` would otherwise refuse that the user accepts (`Planner+Refusals`).
    public var allowances = Allowances()

    public init(config: ReshardConfig) { self.config = config }

    struct Connected {
        let shard: ReshardConfig.Shard
        let connection: PGConnection
        /// `current_database()`: two shards with different names are different databases.
        let database: String
        /// `source shard s0`, for messages.
        let role: String
        var label: String { "\(role) shard \(shard.name)" }
    }

    public func run() throws -> Plan {
        var problems: [String] = []
        // A session lost while planning (terminated, its server restarting) says nothing about the
        // input: the plan fails as a runtime failure (exit 1, `apply` retries it), not as bad input.
        var interrupted: PostgresError?
        func note(_ error: Error) { if let error = error as? PostgresError, error.isTransient { interrupted = interrupted ?? error } }
        func refuse() throws -> Never {
            let message = problems.joined(separator: "\n")
            if let interrupted { throw ReshardError.failed(message, underlying: interrupted) }
            throw ReshardError.badInput(message)
        }
        // Every session at once (`openAll`); the problems in the config's order, as one by one.
        let opened = openAll()
        for found in opened.sources + opened.targets {
            if let transient = found.transient { interrupted = interrupted ?? transient }
            if let problem = found.problem { problems.append(problem) }
        }
        let sources = opened.sources.map(\.connected), targets = opened.targets.map(\.connected)
        problems += Self.duplicates(sources.compactMap { $0 }, list: "source", interrupted: &interrupted)
        problems += Self.duplicates(targets.compactMap { $0 }, list: "target", interrupted: &interrupted)
        // A target that is also a source: the same database, asked of the databases themselves.
        var sameAs: [String?] = []
        for target in targets.compactMap({ $0 }) {
            var same: String?
            for source in sources.compactMap({ $0 }) {
                do {
                    if try Self.sameDatabase(source, target) { same = source.shard.name }
                } catch {
                    note(error)
                    problems.append(Self.undecided(source, target, error))
                }
            }
            sameAs.append(same)
        }

        if let failure = opened.metadata.failure { throw failure }
        let recordedPhase = opened.metadata.recordedPhase
        if let transient = opened.metadata.transient { interrupted = interrupted ?? transient }
        if let problem = opened.metadata.problem { problems.append(problem) }
        guard problems.isEmpty else { try refuse() }
        let connectedSources = sources.map { $0! }, connectedTargets = targets.map { $0! }
        for source in connectedSources { problems += try Self.shimSchemaProblems(source) }

        var tables: [Plan.Table] = []
        var warnings: [String] = []
        problems += Self.buildNameCollisions(
            config.tables, sharedTargets: zip(connectedTargets, sameAs).compactMap { t, same in same.map { (t.shard.name, $0) } })
        for table in config.tables {
            do {
                let (schema, keyType, tableProblems) = try validate(
                    table, sources: connectedSources, targets: connectedTargets, sameAs: sameAs,
                    underWay: recordedPhase != nil)
                problems += tableProblems
                problems += try Self.leftoverBuiltTable(table.name, targets: connectedTargets, sameAs: sameAs, underWay: recordedPhase != nil)
                guard tableProblems.isEmpty, let schema, let keyType else { continue }
                var planned = try estimate(table, schema: schema, keyType: keyType, sources: connectedSources, sameAs: sameAs)
                if let sourceFunction = config.sourceFunction {
                    let column = table.sourceKey ?? table.key
                    if let type = schema.column(column).flatMap({ KeyType(formatType: $0.type) }), sourceFunction.supports(type) {
                        planned.sourceKey = column
                        planned.sourceKeyType = type
                    } else if schema.column(column) == nil {
                        problems.append("table \(table.name): source_key column \(column) does not exist")
                    } else {
                        problems.append(
                            "table \(table.name): source_key column \(column) is \(schema.column(column)!.type), which source.function \(sourceFunction.kind.rawValue) cannot place")
                    }
                }
                planned.identityAlways = try identityAlwaysWhereWritten(table.name, schema: schema, targets: connectedTargets, sameAs: sameAs)
                let unique = try uniqueIndexChecks(
                    planned, sources: connectedSources, targets: connectedTargets, sameAs: sameAs, underWay: recordedPhase != nil)
                problems += unique.problems
                warnings += unique.warnings
                problems += try keyCollisionProblems(planned, sources: connectedSources, underWay: recordedPhase != nil)
                warnings += Plan.skewWarnings(planned, targets: config.targets.count)
                tables.append(planned)
            } catch let error as PostgresError {
                note(error)
                problems.append("table \(table.name): \(error.summary)")
            }
        }
        guard problems.isEmpty else { try refuse() }
        return Plan(
            migration: config.migration, metadata: config.metadata.planFileValue, function: config.function,
            sourceFunction: config.sourceFunction,
            sources: connectedSources.map {
                Plan.Shard(
                    name: $0.shard.name, endpoint: $0.shard.dsn.endpoint.description, dsn: $0.shard.dsn.planFileValue, sameAsSource: nil,
                    replicas: Self.replicas($0.shard))
            },
            targets: zip(connectedTargets, sameAs).map { t, same in
                Plan.Shard(
                    name: t.shard.name, endpoint: t.shard.dsn.endpoint.description, dsn: t.shard.dsn.planFileValue, sameAsSource: same,
                    replicas: Self.replicas(t.shard))
            },
            tables: tables, recordedPhase: recordedPhase, warnings: warnings.isEmpty ? nil : warnings)
    }

    /// The replicas the config lists for a shard, as a plan stores connection strings.
    static func replicas(_ shard: ReshardConfig.Shard) -> [String]? {
        shard.replicas.isEmpty ? nil : shard.replicas.map(\.planFileValue)
    }

    // MARK: Validation

    /// Whether two connections reach the same database, asked of the databases themselves: `a`
    /// takes an advisory lock on a random token inside a short (read-only) transaction, and `b`
    /// looks for it in its server's lock table, held by `a`'s backend in `b`'s own database. No
    /// address or identifier suffices: physical clones (base backups, promoted replicas, restored
    /// snapshots) share `system_identifier`, database names and often ports, and one server is
    /// reached by many addresses.
    static func sameDatabase(_ a: Connected, _ b: Connected) throws -> Bool {
        guard a.database == b.database else { return false }
        let token = UUID().uuidString
        return try a.connection.transaction { conn in
            guard try MetadataLock.identityProbe.tryLockForTransaction(token, on: conn) else {
                throw ReshardError.refused("the probe lock on \(a.label) was not granted")
            }
            return try MetadataLock.identityProbe.isHeldInThisDatabase(token, byBackend: conn.backendPID, on: b.connection)
        }
    }

    static func undecided(_ a: Connected, _ b: Connected, _ error: Error) -> String {
        let why = (error as? PostgresError)?.summary ?? (error as? ReshardError)?.message ?? "\(error)"
        return "cannot tell whether \(a.label) and \(b.label) are the same database: \(why)"
    }

    static func duplicates(_ shards: [Connected], list: String, interrupted: inout PostgresError?) -> [String] {
        var problems: [String] = []
        for (i, shard) in shards.enumerated() {
            for first in shards[..<i] {
                do {
                    if try sameDatabase(first, shard) {
                        problems.append(
                            "\(list) shards \(first.shard.name) and \(shard.shard.name) are the same database (\(shard.shard.dsn.endpoint.description))")
                        break
                    }
                } catch {
                    if let error = error as? PostgresError, error.isTransient { interrupted = interrupted ?? error }
                    problems.append(undecided(first, shard, error))
                }
            }
        }
        return problems
    }

    /// The phase recorded for a migration that is under way, nil when none is.
    static func recordedPhase(of migration: String, on metadata: PGConnection) throws -> String? {
        guard let phase = try PhaseStore.read(migration, on: metadata), phase != .planned, phase != .aborted else { return nil }
        return phase.rawValue
    }

    func validate(
        _ table: ReshardConfig.Table, sources: [Connected], targets: [Connected], sameAs: [String?], underWay: Bool
    ) throws -> (TableSchema?, KeyType?, [String]) {
        var problems: [String] = []
        var reference: (name: String, schema: TableSchema)?
        var keyType: KeyType?
        for source in sources {
            let here = "source \(source.shard.name)"
            guard let schema = try TableSchema.read(table.name, on: source.connection) else {
                let suggestion = try Self.similarTable(to: table.name, on: source.connection).map { " (did you mean \($0)?)" } ?? ""
                problems.append("table \(table.name) is missing on \(here)\(suggestion)")
                continue
            }
            problems += try Self.shimTableProblems(table.name, on: source)
            problems += try refusals(table, on: source)
            problems += try Self.keyCollationProblems(table, schema: schema, on: source)
            if schema.uniqueKey.isEmpty {
                problems.append("table \(table.name) on \(here) has no primary key or unique index over non-null columns")
            }
            if let column = schema.column(table.key) {
                if !column.notNull {
                    problems.append("table \(table.name) on \(here): shard key column \(table.key) is nullable (add NOT NULL)")
                }
                if let type = KeyType(formatType: column.type), config.function.supports(type) {
                    keyType = type
                } else {
                    let supported = config.function.kind == .hash ? "smallint, integer, bigint, text, varchar, uuid" : "smallint, integer, bigint"
                    problems.append(
                        "table \(table.name) on \(here): shard key column \(table.key) is \(column.type), which \(config.function.kind.rawValue) sharding does not support (supported: \(supported))")
                }
            } else {
                problems.append("table \(table.name) on \(here): shard key column \(table.key) does not exist")
            }
            if let reference {
                problems += schema.differences(from: reference.schema, here: here, there: "source \(reference.name)")
                    .map { "table \(table.name): \($0)" }
            } else {
                reference = (source.shard.name, schema)
            }
        }
        guard let reference else { return (nil, nil, problems) }
        for (target, same) in zip(targets, sameAs) where same == nil {
            let here = "target \(target.shard.name)"
            guard let schema = try TableSchema.read(table.name, on: target.connection) else { continue }
            problems += schema.differences(from: reference.schema, here: here, there: "source \(reference.name)")
                .map { "table \(table.name): \($0)" }
            if !underWay {
                let quoted = try target.connection.quote(table.name)
                if try target.connection.query("SELECT EXISTS (SELECT 1 FROM \(quoted))").get(0, 0, as: Bool.self) {
                    problems.append(
                        "table \(table.name) on \(here) already holds rows, and \(target.shard.name) is not a source (empty it, or pick another target)")
                }
            }
        }
        return (reference.schema, keyType, problems)
    }

    // MARK: Rights

    /// What the role reshard connects as lacks on a source to create the shim's schema: CREATE on
    /// the database, or on the schema once it exists.
    static func shimSchemaProblems(_ source: Connected) throws -> [String] {
        let row = try source.connection.query(
            """
            SELECT current_user, current_database(), to_regnamespace($1) IS NOT NULL,
                   has_database_privilege(current_database(), 'CREATE'),
                   to_regnamespace($1) IS NULL OR has_schema_privilege($1, 'CREATE')
            """, [Shim.schema])
        let role = row[0, 0] ?? "", database = row[0, 1] ?? ""
        let schemaExists = try row.get(0, 2, as: Bool.self)
        if !schemaExists, try !row.get(0, 3, as: Bool.self) {
            return ["source \(source.shard.name): role \(role) cannot install the shim: it needs CREATE on database \(database) (GRANT CREATE ON DATABASE \(SQLText.identifier(database)) TO \(SQLText.identifier(role)))"]
        }
        if schemaExists, try !row.get(0, 4, as: Bool.self) {
            return ["source \(source.shard.name): role \(role) cannot install the shim: it needs CREATE on schema \(Shim.schema)"]
        }
        return []
    }

    /// What the role reshard connects as lacks on a source table: the capture triggers are
    /// `ENABLE ALWAYS`, which only the table's owner may set (ALTER TABLE), and the backfill reads it.
    static func shimTableProblems(_ table: QualifiedName, on source: Connected) throws -> [String] {
        let row = try source.connection.query(
            """
            SELECT current_user, pg_get_userbyid(relowner), pg_has_role(relowner, 'USAGE'), has_table_privilege(oid, 'SELECT')
            FROM pg_class WHERE oid = to_regclass($1)
            """, [try source.connection.quote(table)])
        guard row.rowCount == 1 else { return [] }
        let role = row[0, 0] ?? "", owner = row[0, 1] ?? ""
        var problems: [String] = []
        if try !row.get(0, 2, as: Bool.self) {
            problems.append(
                "table \(table) on source \(source.shard.name): role \(role) cannot install the shim: it must own the table, owned by \(owner) (GRANT \(SQLText.identifier(owner)) TO \(SQLText.identifier(role))): the capture triggers are ENABLE ALWAYS, which only the owner may set")
        }
        if try !row.get(0, 3, as: Bool.self) {
            problems.append("table \(table) on source \(source.shard.name): role \(role) cannot read it (GRANT SELECT)")
        }
        return problems
    }

    // MARK: Collations

    /// Nondeterministic collations (case-insensitive ICU ones, say) on the shard key or the unique
    /// key: values equal under the collation but different in bytes would hash to different
    /// shards, and keys could not be matched exactly. Refused.
    static func keyCollationProblems(_ table: ReshardConfig.Table, schema: TableSchema, on source: Connected) throws -> [String] {
        let rows = try source.connection.query(
            """
            SELECT a.attname, format('%I.%I', n.nspname, c.collname)
            FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation JOIN pg_namespace n ON n.oid = c.collnamespace
            WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2::text[]) AND NOT c.collisdeterministic ORDER BY a.attnum
            """, [try source.connection.quote(table.name), Array(Set(schema.uniqueKey + [table.key]))])
        return (0..<rows.rowCount).map { row in
            let column = rows[row, 0]!
            let role = column == table.key ? "shard key" : "unique key"
            return "table \(table.name) on source \(source.shard.name): \(role) column \(column) has the nondeterministic collation \(rows[row, 1]!), under which placement and de-duplication cannot be exact (use a deterministic collation for it)"
        }
    }

    // MARK: Identity columns on targets

    /// Whether a table the rows are written into has an identity `GENERATED ALWAYS` column: one
    /// reshard creates (it keeps ALWAYS, as the source has it), a target the user created
    /// (`pg_dump -s` keeps ALWAYS), or a source that is also a target. The catch-up's inserts
    /// there need OVERRIDING SYSTEM VALUE.
    func identityAlwaysWhereWritten(_ table: QualifiedName, schema: TableSchema, targets: [Connected], sameAs: [String?]) throws -> Bool {
        if schema.columns.contains(where: { $0.identity == "always" }) { return true }
        for (target, same) in zip(targets, sameAs) where same == nil {
            if try TableSchema.read(table, on: target.connection)?.columns.contains(where: { $0.identity == "always" }) == true { return true }
        }
        return false
    }

    // MARK: Unique indexes across sources

    /// Unique indexes other than the migration's key hold on each source alone. On a target, rows
    /// of several sources meet (also on a target that is a source: its table is built apart with
    /// the rows that map there), so values unique on each source can collide there: the copy would stop on them. Checks the
    /// rows there now exactly, per target and pair of sources feeding it, on the servers: one
    /// source's values are sent in chunks to the other, whose index finds the matches. Refuses
    /// with up to 10 colliding values; warns that values written later can still collide. Once the
    /// migration is under way the rows are not checked again (it reads every value, and every
    /// resumed apply plans again): the copy and the catch-up stop on a collision themselves.
    func uniqueIndexChecks(
        _ table: Plan.Table, sources: [Connected], targets: [Connected], sameAs: [String?], underWay: Bool
    ) throws -> (problems: [String], warnings: [String]) {
        guard sources.count > 1 else { return ([], []) }
        let indexes = try UniqueIndex.read(table.name, on: sources[0].connection)
            .filter { !Set(table.uniqueKey).isSubset(of: $0.columns) || $0.hasExpressions }
        guard !indexes.isEmpty else { return ([], []) }
        let canonical = CanonicalText.settings.sorted { $0.key < $1.key }
            .map { "SET \(SQLText.identifier($0.key)) TO \(SQLText.literal($0.value))" }.joined(separator: "; ")
        for source in sources { try source.connection.execute(canonical) }
        var problems: [String] = [], warnings: [String] = []
        for index in indexes {
            let described = "unique index \(index.name) (\(index.columns.joined(separator: ", ")))"
            if index.hasExpressions {
                warnings.append("table \(table.name): \(described) is over expressions: values colliding across sources are not checked")
                continue
            }
            warnings.append(
                "table \(table.name): \(described) holds on each source alone; rows of several sources meet on the targets, so a value written on two sources before cutover stops apply")
            if underWay { continue }
            var found = 0
            for t in targets.indices where found < 10 {
                for a in sources.indices where found < 10 {
                    for b in sources.indices where b > a && found < 10 {
                        let values = try collisions(
                            index, table: table, target: t, sources: (sources[a], sources[b]), sameAs: sameAs, limit: 10 - found)
                        guard !values.isEmpty else { continue }
                        found += values.count
                        problems.append(
                            "table \(table.name): \(described) would be violated on target \(targets[t].shard.name): on both \(sources[a].shard.name) and \(sources[b].shard.name): "
                                + values.map { "(\($0.joined(separator: ", ")))" }.joined(separator: ", "))
                    }
                }
            }
        }
        return (problems, warnings)
    }

    /// Values of `index` that rows of both sources bring to target `target`, at most `limit`.
    private func collisions(
        _ index: UniqueIndex, table: Plan.Table, target: Int, sources: (Connected, Connected), sameAs: [String?], limit: Int
    ) throws -> [[String]] {
        let name = SQLText.name(table.name)
        let columns = index.columns.map(SQLText.identifier)
        func rowsHere(_ source: Connected) -> String {
            var conditions = columns.map { "\($0) IS NOT NULL" }
            if let predicate = index.predicate { conditions.append("(\(predicate))") }
            // Also on a target that is this source: its table is built apart, with the rows that map there.
            conditions.append(config.function.sqlShardFilter(quotedColumn: SQLText.identifier(table.key), type: table.keyType, target: target))
            return conditions.joined(separator: " AND ")
        }
        let typed = zip(columns.indices, index.types).map { "$\($0 + 1)::\($1)" }
        let read = { (after: Bool) in
            "SELECT \(columns.map { "\($0)::text" }.joined(separator: ", ")) FROM \(name) WHERE \(rowsHere(sources.0))"
                + (after ? " AND (\(columns.joined(separator: ", "))) > (\(typed.joined(separator: ", ")))" : "")
                + " ORDER BY \(columns.joined(separator: ", ")) LIMIT 5000"
        }
        let arrays = index.columns.indices.map { "$\($0 + 1)::text[]" }.joined(separator: ", ")
        let names = index.columns.indices.map { "v\($0)" }
        let match = """
            SELECT \(names.joined(separator: ", ")) FROM unnest(\(arrays)) AS v(\(names.joined(separator: ", ")))
            WHERE EXISTS (SELECT 1 FROM \(name) WHERE \(rowsHere(sources.1))
                          AND (\(columns.joined(separator: ", "))) = (\(zip(names, index.types).map { "\($0)::\($1)" }.joined(separator: ", "))))
            LIMIT \(limit)
            """
        var last: [String]?
        var found: [[String]] = []
        while found.count < limit {
            let chunk = try sources.0.connection.query(read(last != nil), last ?? [])
            guard chunk.rowCount > 0 else { break }
            let rows = (0..<chunk.rowCount).map { r in columns.indices.map { chunk[r, $0] ?? "" } }
            let hits = try sources.1.connection.query(match, columns.indices.map { c in rows.map { $0[c] } })
            found += (0..<hits.rowCount).map { r in columns.indices.map { hits[r, $0] ?? "" } }
            if chunk.rowCount < 5000 { break }
            last = rows.last
        }
        return Array(found.prefix(limit))
    }

    /// The source's table closest to a missing one's name (a typo), schema-qualified when the
    /// config qualified it.
    static func similarTable(to name: QualifiedName, on conn: PGConnection) throws -> String? {
        let rows = try conn.query(
            """
            SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'reshard_shim')
              AND n.nspname NOT LIKE 'pg_toast%' AND ($1::text IS NOT NULL OR n.oid = ANY (current_schemas(false)::regnamespace[]))
            """, [name.schema])
        let names = (0..<rows.rowCount).map { name.schema == nil ? rows[$0, 1]! : "\(rows[$0, 0]!).\(rows[$0, 1]!)" }
        return NameSuggestion.closest(to: name.description, among: names)
    }

    /// Distinct shard key values on a source from the statistics (nil without them), and the
    /// values themselves when the statistics list them all (few distinct values: every one is a
    /// most common value), so counts from several sources can be combined without double counting.
    static func distinctKeys(_ table: QualifiedName, key: String, on conn: PGConnection) throws -> (count: Int64, values: Set<String>?)? {
        let rows = try conn.query(
            """
            SELECT CASE WHEN s.n_distinct >= 0 THEN s.n_distinct ELSE -s.n_distinct * greatest(c.reltuples, 0) END::float8,
                   array_to_json(s.most_common_vals::text::text[])::text
            FROM pg_stats s JOIN pg_class c ON c.oid = to_regclass($1)
              JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = s.schemaname
            WHERE s.tablename = c.relname AND s.attname = $2
            """, [try conn.quote(table), key])
        guard rows.rowCount == 1, let estimate = try rows.get(0, 0, as: Double?.self) else { return nil }
        let count = Int64(estimate.rounded())
        let values = rows[0, 1].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }.map(Set.init)
        return (count, values.flatMap { $0.count == count ? $0 : nil })
    }

    /// Distinct key values across the sources: the union of complete value lists, else the sum.
    static func combinedDistinctKeys(_ perSource: [(count: Int64, values: Set<String>?)?]) -> Int64? {
        let known = perSource.compactMap { $0 }
        guard known.count == perSource.count else { return nil }
        let lists = known.compactMap(\.values)
        if lists.count == known.count { return Int64(lists.reduce(into: Set<String>()) { $0.formUnion($1) }.count) }
        return known.reduce(0) { $0 + $1.count }
    }

    // MARK: Estimates

    /// Per source: the row count from statistics (exact when there are none) split by a
    /// server-side sample grouped by target shard. Small tables are counted exactly.
    func estimate(
        _ table: ReshardConfig.Table, schema: TableSchema, keyType: KeyType, sources: [Connected], sameAs: [String?]
    ) throws -> Plan.Table {
        var slices: [Plan.Slice] = []
        var sampled = false
        for source in sources {
            let conn = source.connection
            let quoted = try conn.quote(table.name)
            let index = config.function.sqlShardIndex(quotedColumn: try conn.quoteIdentifier(table.key), type: keyType)
            let stats = try conn.query("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", [quoted])
            var total = try stats.get(0, 0, as: Int64.self)
            if total < 0 { total = try conn.query("SELECT count(*) FROM \(quoted)").get(0, 0, as: Int64.self) }
            let percent = total > 0 ? min(100.0, 100.0 * Double(sampleRows) / Double(total)) : 100
            // Hash and modulo scatter keys across pages, so sampling whole pages (SYSTEM) is as
            // good as sampling rows and reads only the sampled pages. Range keys often follow the
            // physical order, where only a row-level sample (BERNOULLI, a full read) is unbiased.
            let method = config.function.kind == .range ? "BERNOULLI" : "SYSTEM"
            let sample = percent < 100 ? " TABLESAMPLE \(method) (\(percent)) REPEATABLE (20261121)" : ""
            let rows = try conn.query(
                "SELECT \(index), count(*), sum(pg_column_size(x.*))::bigint FROM \(quoted) AS x\(sample) GROUP BY 1")
            var counts = [Int64](repeating: 0, count: config.targets.count)
            var sizes = [Int64](repeating: 0, count: config.targets.count)
            for row in 0..<rows.rowCount {
                let shard = try rows.get(row, 0, as: Int.self)
                counts[shard] = try rows.get(row, 1, as: Int64.self)
                sizes[shard] = try rows.get(row, 2, as: Int64.self)
            }
            let inSample = counts.reduce(0, +)
            // Exact when the whole table was read; otherwise scale the sample to the statistics.
            let scale = sample.isEmpty || inSample == 0 ? 1.0 : Double(total) / Double(inSample)
            sampled = sampled || !sample.isEmpty
            for (t, target) in config.targets.enumerated() {
                slices.append(Plan.Slice(
                    source: source.shard.name, target: target.name,
                    estimatedRows: Int64((Double(counts[t]) * scale).rounded()),
                    estimatedBytes: Int64((Double(sizes[t]) * scale).rounded()),
                    staysInPlace: sameAs[t] == source.shard.name))
            }
        }
        let distinct = try sources.map { try Self.distinctKeys(table.name, key: table.key, on: $0.connection) }
        return Plan.Table(
            name: table.name, key: table.key, keyType: keyType, columns: schema.columns, uniqueKey: schema.uniqueKey,
            fingerprint: schema.fingerprint, estimateMethod: sampled ? "sample" : "exact", slices: slices,
            distinctKeys: Self.combinedDistinctKeys(distinct))
    }
}
