import Foundation
import PostgresClient

/// Runs `reshard verify`: compares, chunk by chunk, the rows the sources hold for each target
/// with the rows the target holds for itself, on the servers (count and hash sum per chunk), and
/// narrows a chunk that differs down to rows. Chunks are key ranges fixed in the metadata when a
/// table's verification starts, and every finished chunk is recorded there, so a verifier killed
/// at any moment continues where it was when run again.
///
/// It runs while the application writes and the catch-up applies: a chunk that differs is
/// scanned again once the changes pending for its keys are applied (by the running `apply`, or by
/// verify itself under the catch-up lock when no coordinator runs), and only what still differs
/// with nothing pending is reported.
public final class Verifier: @unchecked Sendable {
    public let plan: Plan
    let shards: [String: ConnectionString]
    let metadataDSN: ConnectionString
    let options: VerifyOptions
    let places: [VerifyPlace]
    let tables: [Plan.Table]
    let state = VerifyState()

    public init(plan: Plan, shards: [String: ConnectionString], metadata: ConnectionString, options: VerifyOptions) throws {
        self.plan = plan
        self.shards = shards
        self.metadataDSN = metadata
        self.options = options
        places = VerifyPlace.all(plan)
        if let names = options.tables {
            var selected: [Plan.Table] = []
            for name in names {
                let parsed = try QualifiedName.parse(name)
                guard let table = plan.tables.first(where: { $0.name == parsed || $0.name.description == name }) else {
                    throw ReshardError.badInput("table \(name) is not part of migration \(plan.migration)")
                }
                selected.append(table)
            }
            tables = selected
        } else {
            tables = plan.tables
        }
    }

    // MARK: - Run

    public func run(shouldStop: () -> Bool, report: (VerifyProgress) -> Void) throws -> VerifyResult {
        let started = Date()
        let meta = try PGConnection.connect(metadataDSN, applicationName: "reshard verify")
        // Refuse before writing anything, even the schema, to a metadata database that has no
        // such migration.
        try checkPhase(meta)
        _ = try MetadataSchema.current.apply(to: meta)
        guard try MetadataLock.verify.tryLock(plan.migration, on: meta) else {
            throw ReshardError.refused("migration \(plan.migration) is already being verified by another 'reshard verify'")
        }
        let run = try prepareRun(meta)
        let pending = try loadPendingChunks(meta)
        let totals = try meta.query(
            """
            SELECT count(*)::int, count(*) FILTER (WHERE done)::int, coalesce(sum(source_rows) FILTER (WHERE done), 0)::bigint
            FROM reshard.verify_chunks WHERE migration = $1 AND table_name = ANY($2::text[])
            """, [plan.migration, tables.map(\.name.description)])
        state.start(
            chunks: pending, total: try totals.get(0, 0, as: Int.self), done: try totals.get(0, 1, as: Int.self),
            rows: try totals.get(0, 2, as: Int64.self))

        let drainer = PendingDrainer(plan: plan, shards: shards, metadata: metadataDSN)
        let jobs = max(1, min(options.jobs ?? min(8, max(2, places.count)), max(pending.count, 1)))
        let workers = Workers()
        if !pending.isEmpty {
            workers.start("reshard verify", count: jobs) { [self] _ in work(drainer: drainer, workers: workers) }
        }
        var lastReport = Date.distantPast
        var rate = 0.0
        var lastRows = state.progress().rows
        var lastAt = Date()
        while !workers.wait(seconds: 0.1) {
            if shouldStop(), !state.isStopping {
                state.stop()
                // Bounded: chunks in flight get a moment, then their statements are cancelled.
                workers.stop(grace: 5, afterCancel: 5)
            }
            if Date().timeIntervalSince(lastReport) >= 1 {
                lastReport = Date()
                let p = state.progress()
                let instant = Double(p.rows - lastRows) / Date().timeIntervalSince(lastAt)
                rate = rate == 0 ? instant : 0.7 * rate + 0.3 * instant
                lastRows = p.rows
                lastAt = Date()
                report(progress(rate: rate))
            }
        }
        if let failure = state.firstFailure { throw failure }
        report(progress(rate: rate))
        if state.isStopping {
            let p = state.progress()
            throw ReshardError(
                .stoppedEarly, "verify of \(plan.migration) interrupted after \(p.done) of \(p.total) chunks; run it again to continue")
        }
        try finish(run: run, on: meta)
        return try result(run: run, seconds: Date().timeIntervalSince(started), on: meta)
    }

    func progress(rate: Double) -> VerifyProgress {
        let p = state.progress()
        let chunkRate = p.doneThisRun > 0 ? Double(p.doneThisRun) / Date().timeIntervalSince(p.startedAt) : 0
        return VerifyProgress(
            migration: plan.migration, chunksDone: p.done, chunksTotal: p.total, rowsChecked: p.rows, rowsPerSecond: max(rate, 0),
            etaSeconds: chunkRate > 0 && p.total > p.done ? Double(p.total - p.done) / chunkRate : nil,
            differences: p.differences, rechecks: p.rechecks)
    }

    /// Verify compares a finished backfill: before it, every chunk would differ.
    func checkPhase(_ meta: PGConnection) throws {
        guard let phase = try PhaseStore.read(plan.migration, on: meta) else {
            throw ReshardError.refused("migration \(plan.migration) is not registered; run 'reshard apply' first")
        }
        guard phase == .catchingUp || phase == .inSync else {
            throw ReshardError.refused(
                "migration \(plan.migration) is in phase \(phase.rawValue); verify needs the backfill done (phase catching-up or in-sync)")
        }
    }

    // MARK: - Runs and chunks in the metadata

    /// What a run compares: the tables (name, key, schema), the shard function and the shards.
    /// Not the estimates, which change between plans of the same layout.
    static func fingerprint(_ plan: Plan) throws -> String {
        struct Verified: Encodable {
            let function: ShardFunction
            let sources: [[String]]
            let targets: [[String?]]
            let tables: [[String]]
        }
        let verified = Verified(
            function: plan.function, sources: plan.sources.map { [$0.name, $0.endpoint] },
            targets: plan.targets.map { [$0.name, $0.endpoint, $0.sameAsSource] },
            tables: plan.tables.map { [$0.name.description, $0.key, $0.fingerprint] })
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return fnv1a64Hex(String(decoding: try encoder.encode(verified), as: UTF8.self))
    }

    /// Continues the unfinished run when it verifies the same (`fingerprint`), or starts a new
    /// one; makes the chunks of every selected table that has none in this run. Returns the run
    /// number.
    func prepareRun(_ meta: PGConnection) throws -> Int {
        let fingerprint = try Self.fingerprint(plan)
        let existing = try meta.query(
            "SELECT run, finished_at IS NULL AND fingerprint IS NOT DISTINCT FROM $2 FROM reshard.verify_runs WHERE migration = $1",
            [plan.migration, fingerprint])
        var run = 1
        if existing.rowCount == 1 {
            run = try existing.get(0, 0, as: Int.self)
            let continues = try existing.get(0, 1, as: Bool.self)
            if !continues || options.restart { run += 1 }
        }
        try meta.query(
            """
            INSERT INTO reshard.verify_runs (migration, run, fingerprint) VALUES ($1, $2, $3)
            ON CONFLICT (migration) DO UPDATE SET run = EXCLUDED.run, finished_at = NULL, fingerprint = EXCLUDED.fingerprint,
                started_at = CASE WHEN reshard.verify_runs.run = EXCLUDED.run THEN reshard.verify_runs.started_at ELSE now() END
            """, [plan.migration, run, fingerprint])
        var sources: [PGConnection]?
        for table in tables {
            let recorded = try meta.query(
                "SELECT run FROM reshard.verify_tables WHERE migration = $1 AND table_name = $2", [plan.migration, table.name.description])
            if recorded.rowCount == 1, try recorded.get(0, 0, as: Int.self) == run { continue }
            if sources == nil { sources = try plan.sources.map { try connect($0.name) } }
            let boundaries = try chunkBoundaries(table, sources: sources!)
            try meta.transaction { conn in
                try conn.query(
                    "DELETE FROM reshard.verify_tables WHERE migration = $1 AND table_name = $2", [plan.migration, table.name.description])
                let ranges = ChunkBoundaries.ranges(boundaries)
                try conn.query(
                    "INSERT INTO reshard.verify_tables (migration, table_name, run, chunks_total) VALUES ($1, $2, $3, $4)",
                    [plan.migration, table.name.description, run, ranges.count])
                let encoder = JSONEncoder()
                let json = String(decoding: try encoder.encode(ranges.map { [$0.lower, $0.upper] }), as: UTF8.self)
                try conn.query(
                    """
                    INSERT INTO reshard.verify_chunks (migration, table_name, chunk, lower_key, upper_key)
                    SELECT $1, $2, (n - 1)::int,
                           CASE WHEN json_typeof(r->0) = 'null' THEN NULL ELSE ARRAY(SELECT json_array_elements_text(r->0)) END,
                           CASE WHEN json_typeof(r->1) = 'null' THEN NULL ELSE ARRAY(SELECT json_array_elements_text(r->1)) END
                    FROM json_array_elements($3::json) WITH ORDINALITY AS c(r, n)
                    """, [plan.migration, table.name.description, json])
            }
        }
        return run
    }

    /// Key boundaries that cut the table into chunks of about `chunkRows` rows, from a sample of
    /// keys taken from every source (sources may hold disjoint key ranges) sorted by the server.
    /// The sample reads whole pages (cheap) and keeps one key per page (keys are often clustered
    /// by page), from about 40 pages per chunk.
    func chunkBoundaries(_ table: Plan.Table, sources: [PGConnection]) throws -> [[String]] {
        var sizes: [(rows: Int64, pages: Int64)] = []
        for conn in sources {
            let quoted = try conn.quote(table.name)
            let stats = try conn.query("SELECT reltuples::bigint, relpages::bigint FROM pg_class WHERE oid = to_regclass($1)", [quoted])
            var rows = try stats.get(0, 0, as: Int64.self)
            if rows < 0 { rows = try conn.query("SELECT count(*) FROM \(quoted)").get(0, 0, as: Int64.self) }
            sizes.append((rows, max(1, try stats.get(0, 1, as: Int64.self))))
        }
        let total = sizes.reduce(0) { $0 + $1.rows }
        let chunks = Int(max(1, (total + options.chunkRows - 1) / options.chunkRows))
        guard chunks > 1 else { return [] }
        var sample: [[String]] = []
        let decoder = JSONDecoder()
        for (conn, size) in zip(sources, sizes) {
            let sql = TableSQL(table)
            let share = Double(size.rows) / Double(max(total, 1))
            let percent = min(100, 100 * Double(chunks) * share * 40 / Double(size.pages))
            let result = try conn.query(
                "SELECT coalesce(json_agg(\(sql.keyTextArray)), '[]')::text FROM \(sql.name) TABLESAMPLE SYSTEM (\(percent)) REPEATABLE (20261121) WHERE (ctid::text::point)[1] = 1")
            sample += try decoder.decode([[String]].self, from: Data(result[0, 0]!.utf8))
        }
        let sql = TableSQL(table)
        let order = sql.keyTypes.enumerated().map { "(e->>\($0.offset))::\($0.element)" }.joined(separator: ", ")
        let sorted = try sources[0].query(
            "SELECT coalesce(json_agg(e ORDER BY \(order)), '[]')::text FROM json_array_elements($1::json) e",
            [String(decoding: try JSONEncoder().encode(sample), as: UTF8.self)])
        return ChunkBoundaries.pick(sortedSample: try decoder.decode([[String]].self, from: Data(sorted[0, 0]!.utf8)), chunks: chunks)
    }

    func loadPendingChunks(_ meta: PGConnection) throws -> [VerifyState.Chunk] {
        let rows = try meta.query(
            """
            SELECT table_name, chunk, array_to_json(lower_key)::text, array_to_json(upper_key)::text
            FROM reshard.verify_chunks WHERE migration = $1 AND table_name = ANY($2::text[]) AND NOT done
            ORDER BY table_name, chunk
            """, [plan.migration, tables.map(\.name.description)])
        let decoder = JSONDecoder()
        return try (0..<rows.rowCount).map { r in
            VerifyState.Chunk(
                table: rows[r, 0]!, index: try rows.get(r, 1, as: Int.self),
                lower: try rows[r, 2].map { try decoder.decode([String].self, from: Data($0.utf8)) },
                upper: try rows[r, 3].map { try decoder.decode([String].self, from: Data($0.utf8)) })
        }
    }

    /// Records a verified chunk, its differences and the table's running totals, atomically.
    func record(_ chunk: VerifyState.Chunk, _ outcome: ChunkOutcome, on meta: PGConnection) throws {
        try meta.transaction { conn in
            var room = 0
            if !outcome.differences.isEmpty {
                let stored = try conn.query(
                    "SELECT count(*) FROM reshard.verify_differences WHERE migration = $1 AND table_name = $2", [plan.migration, chunk.table])
                room = max(0, options.maxReportedDifferences - (try stored.get(0, 0, as: Int.self)))
            }
            for difference in outcome.differences.prefix(room) {
                try conn.query(
                    """
                    INSERT INTO reshard.verify_differences (migration, table_name, chunk, kind, key, source, target)
                    VALUES ($1, $2, $3, $4, $5::text[], $6, $7)
                    """,
                    [plan.migration, chunk.table, chunk.index, difference.kind.rawValue, difference.key, difference.source, difference.target])
            }
            try conn.query(
                """
                UPDATE reshard.verify_chunks SET done = true, source_rows = $4, target_rows = $5, rechecks = $6, verified_at = now()
                WHERE migration = $1 AND table_name = $2 AND chunk = $3
                """, [plan.migration, chunk.table, chunk.index, outcome.sources.rows, outcome.targets.rows, outcome.rechecks])
            try conn.query(
                """
                UPDATE reshard.verify_tables SET source_rows = source_rows + $3, target_rows = target_rows + $4,
                    differences = differences + $5
                WHERE migration = $1 AND table_name = $2
                """, [plan.migration, chunk.table, outcome.sources.rows, outcome.targets.rows, outcome.differences.count])
        }
    }

    /// Closes every table whose chunks are all done, and the run when all its tables are.
    func finish(run: Int, on meta: PGConnection) throws {
        try meta.query(
            """
            UPDATE reshard.verify_tables t SET finished_at = now(),
                outcome = CASE WHEN differences > 0 OR source_rows <> target_rows THEN 'different' ELSE 'identical' END
            WHERE migration = $1 AND run = $2 AND outcome = 'running'
              AND NOT EXISTS (SELECT 1 FROM reshard.verify_chunks c
                              WHERE c.migration = t.migration AND c.table_name = t.table_name AND NOT c.done)
            """, [plan.migration, run])
        try meta.query(
            """
            UPDATE reshard.verify_runs SET finished_at = now() WHERE migration = $1 AND run = $2
              AND NOT EXISTS (SELECT 1 FROM reshard.verify_tables WHERE migration = $1 AND run = $2 AND outcome = 'running')
            """, [plan.migration, run])
    }

    func result(run: Int, seconds: Double, on meta: PGConnection) throws -> VerifyResult {
        var result = VerifyResult(migration: plan.migration, run: run, identical: true, seconds: seconds, tables: [])
        for table in tables {
            let row = try meta.query(
                """
                SELECT outcome, source_rows, target_rows, chunks_total, differences, started_at::text, finished_at::text,
                       (SELECT coalesce(sum(rechecks), 0)::int FROM reshard.verify_chunks c
                        WHERE c.migration = t.migration AND c.table_name = t.table_name)
                FROM reshard.verify_tables t WHERE migration = $1 AND table_name = $2
                """, [plan.migration, table.name.description])
            guard row.rowCount == 1 else { continue }
            let differences = try meta.query(
                """
                SELECT kind, array_to_json(key)::text, source, target FROM reshard.verify_differences
                WHERE migration = $1 AND table_name = $2 ORDER BY target, kind, key
                """, [plan.migration, table.name.description])
            let rows = try (0..<differences.rowCount).map { r in
                RowDifference(
                    table: table.name.description, kind: RowDifference.Kind(rawValue: differences[r, 0]!) ?? .different,
                    key: try JSONDecoder().decode([String].self, from: Data(differences[r, 1]!.utf8)), source: differences[r, 2],
                    target: differences[r, 3]!)
            }
            let entry = VerifyResult.Table(
                name: table.name.description, outcome: row[0, 0]!, sourceRows: try row.get(0, 1), targetRows: try row.get(0, 2),
                chunks: try row.get(0, 3), differences: try row.get(0, 4), rechecks: try row.get(0, 7), startedAt: row[0, 5]!, finishedAt: row[0, 6], rows: rows)
            if entry.outcome != "identical" { result.identical = false }
            result.tables.append(entry)
        }
        return result
    }

    // MARK: - Workers

    func connect(_ shard: String) throws -> PGConnection {
        guard let dsn = shards[shard] else { throw ReshardError.badInput("no connection string for shard \(shard)") }
        return try PGConnection.connect(dsn, applicationName: "reshard verify", settings: VerifyOptions.pinnedSettings)
    }

    /// One worker: its own connection to every place and to the metadata; verifies chunks until
    /// none are left, retrying through a shard restarting (the coordinator's `RetryPolicy`).
    func work(drainer: PendingDrainer, workers: Workers) {
        var connections: ChunkConnections?
        var retry = RetryPolicy.Run(RetryPolicy())
        while !state.isStopping, let chunk = state.claim() {
            while !state.isStopping {
                do {
                    if connections == nil || !connections!.healthy {
                        connections = nil
                        connections = try ChunkConnections(verifier: self, workers: workers)
                    }
                    let outcome = try verify(chunk, with: connections!, drainer: drainer)
                    try record(chunk, outcome, on: connections!.meta)
                    state.finished(chunk, outcome)
                    retry.succeeded()
                    break
                } catch {
                    guard let next = retry.failed(error) else {
                        state.fail(error)
                        return
                    }
                    connections = nil
                    usleep(UInt32(next.delay * 1_000_000))
                }
            }
        }
    }
}

/// A worker's connections: one per place (settings pinned) and one to the metadata, with each
/// table's SQL quoted through them.
struct ChunkConnections {
    let places: [(place: VerifyPlace, connection: PGConnection)]
    let meta: PGConnection
    private var sql: [String: [VerifySQL]] = [:]

    /// Every connection is registered with `workers`, so a stop can cancel what runs on it.
    init(verifier: Verifier, workers: Workers) throws {
        places = try verifier.places.map { ($0, workers.track(try verifier.connect($0.shard))) }
        meta = workers.track(try PGConnection.connect(verifier.metadataDSN, applicationName: "reshard verify"))
        for table in verifier.tables {
            sql[table.name.description] = try places.map { try VerifySQL(verifier.plan, table, place: $0.place, on: $0.connection) }
        }
    }

    var healthy: Bool { meta.isHealthy && places.allSatisfy { $0.connection.isHealthy } }

    func sql(_ table: String) -> [VerifySQL] { sql[table] ?? [] }
}
