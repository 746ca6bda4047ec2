import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import ReshardRouting

#if canImport(Glibc)
import Glibc
#endif

/// `reshard rehearse`: a migration end to end on throwaway (or given) servers, under a ledger
/// workload and seeded faults, then proof with independent SQL that nothing acknowledged was lost.
///
/// Each step runs the real `reshard` binary as a child process, as a user would, so a `kill -9`
/// of the coordinator is a real one and "run the same command again" is what a user would do.
public final class Rehearsal: @unchecked Sendable {
    public struct Options: Sendable {
        public var sources = 2
        public var targets = 3
        /// Targets that are the first sources' databases (without `--config`).
        public var sharedTargets = 1
        public var rows = 10_000
        public var writesPerSecond = 200
        public var crashes = 0
        public var seed: UInt64 = 1
        /// The user's reshard.yml: schema (read-only, from its first source) and topology.
        public var config: String?
        /// A map file of existing servers instead of local clusters.
        public var external: String?
        /// How long the catch-up runs under writes after the backfill.
        public var catchUpSeconds: Double = 8
        /// The backfill is paced to last about this long, so faults land inside it.
        public var backfillSeconds: Double = 6
        public var writerThreads = 4
        /// Stop before cutover (`--no-cutover`): the copy alone, checked in both layouts.
        public var switches = true
        /// The `reshard` binary the steps run.
        public var executable: String
        /// Asked between steps and while a step's child runs (SIGINT, SIGTERM): when it says yes,
        /// the child is stopped, the workload ends, the clusters are removed, and `run` throws
        /// `stoppedEarly`.
        public var shouldStop: @Sendable () -> Bool = { false }
        public init(executable: String) { self.executable = executable }
    }

    let options: Options
    let say: @Sendable (String) -> Void
    let directory: String
    let started = Date()
    private var phases: [RehearsalReport.Phase] = []
    private var faults: [RehearsalReport.FaultRecord] = []
    private var failures: [String] = []
    private var lagSamples: [(Double, Double)] = []
    private var catchUpWindow: (Double, Double)?
    /// CPU seconds this process used during each step (`processCPUSeconds`), by step name.
    private var stepCPU: [String: Double] = [:]
    private let lock = NSLock()
    /// What the periodic progress line says besides the step (the ledger's count, the lag).
    private var status: @Sendable () -> String = { "" }

    public static let migration = "rehearsal"

    /// - Parameter say: progress lines (phases, faults) as they happen.
    public init(options: Options, say: @escaping @Sendable (String) -> Void) throws {
        self.options = options
        self.say = say
        directory = NSTemporaryDirectory() + "reshard-rehearsal-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    var now: Double { Date().timeIntervalSince(started) }

    // MARK: - Setup

    struct Setup {
        var topology: RehearsalTopology
        var tables: [TableModel]
        var schemaSQL: String
    }

    /// The topology and schema: from the user's config, or the built-in reference.
    func setup() throws -> Setup {
        var schemaSQL = RehearsalData.referenceSchema
        var tableSpecs = RehearsalData.referenceTables.map { (name: $0.name, key: $0.key, sourceKey: String?.none) }
        var n = options.sources, m = options.targets
        var shared: [Int?] = (0..<m).map { $0 < min(options.sharedTargets, n) ? $0 : nil }
        var function = try ShardFunction(kind: .hash, shardCount: m)
        var sourceFunction = try ShardFunction(kind: .modulo, shardCount: n)
        if let path = options.config {
            let config = try ReshardConfig.load(path: path)
            n = config.sources.count
            m = config.targets.count
            shared = config.targets.map { t in config.sources.firstIndex { $0.dsn.sameDatabase(as: t.dsn) } }
            function = config.function
            sourceFunction = try config.sourceFunction ?? ShardFunction(kind: .hash, shardCount: n)
            if config.sourceFunction == nil { say("config has no source.function: rehearsal places today's rows by hash over \(n) source(s)") }
            tableSpecs = config.tables.map { ($0.name, $0.key, $0.sourceKey) }
            say("reading the schema of \(tableSpecs.map(\.name.description).joined(separator: ", ")) from \(config.sources[0].name) (read-only)")
            schemaSQL = try RehearsalData.dumpSchema(of: config.sources[0].dsn, directory: directory)
        }
        let topology: RehearsalTopology
        if let path = options.external {
            let map = try RehearsalTopology.readMap(path)
            func parse(_ kind: String?, _ count: Int, _ fallback: ShardFunction) throws -> ShardFunction {
                guard let kind else { return try ShardFunction(kind: fallback.kind, shardCount: count) }
                guard let k = ShardFunction.Kind(rawValue: kind) else { throw ReshardError.badInput("\(path): unknown function \(kind)") }
                return try ShardFunction(kind: k, shardCount: count)
            }
            topology = try RehearsalTopology.external(
                map, path: path, function: try parse(map.function, map.targets.count, function),
                sourceFunction: try parse(map.source_function, map.sources.count, sourceFunction))
            say("external servers: \(topology.sources.count) source(s), \(topology.targets.count) target(s) from \(path)")
        } else {
            say("starting \(n + shared.filter { $0 == nil }.count + 1) throwaway local PostgreSQL clusters...")
            topology = try RehearsalTopology.local(sources: n, targets: m, sharedWith: shared, function: function, sourceFunction: sourceFunction)
        }
        do {
            for (name, dsn) in topology.databases.filter({ $0.name.hasPrefix("s") }) {
                let conn = try PGConnection.connect(dsn, applicationName: "rehearse setup")
                for spec in tableSpecs where try LayoutReader.exists(spec.name, on: conn) {
                    throw ReshardError.refused("\(name) already has a table \(spec.name): rehearse needs empty databases")
                }
                try conn.execute(schemaSQL)
                try conn.execute("RESET search_path")
            }
            // Targets need the schema's types and functions (reshard creates only the tables):
            // the same schema, without the migrated tables.
            for (name, dsn) in topology.databases.filter({ $0.name.hasPrefix("t") }) {
                let conn = try PGConnection.connect(dsn, applicationName: "rehearse setup")
                for spec in tableSpecs where try LayoutReader.exists(spec.name, on: conn) {
                    throw ReshardError.refused("\(name) already has a table \(spec.name): rehearse needs empty databases")
                }
                try conn.execute(schemaSQL)
                try conn.execute("RESET search_path")
                try conn.execute("SET client_min_messages = warning; DROP TABLE \(try tableSpecs.map { try conn.quote($0.name) }.joined(separator: ", ")) CASCADE")
            }
            let conn = try PGConnection.connect(topology.sources[0], applicationName: "rehearse setup")
            let tables = try tableSpecs.map { try TableModel.read($0.name, shardKey: $0.key, placementKey: $0.sourceKey, on: conn) }
            for problem in tables.flatMap(\.problems) { throw ReshardError.badInput(problem) }
            for table in tables where table.uniqueKey.isEmpty { throw ReshardError.badInput("table \(table.name) has no primary key or unique index") }
            return Setup(topology: topology, tables: tables, schemaSQL: schemaSQL)
        } catch {
            topology.stop()
            throw error
        }
    }

    // MARK: - Running

    public func run() throws -> RehearsalReport {
        // The steps' output files and config go with the rehearsal.
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let setup = try setup()
        defer { setup.topology.stop() }
        try stopIfAsked("setup")
        phases.append(.init(name: "setup", start: 0, seconds: now, exitCodes: [], note: setup.topology.isLocal ? "local clusters, schema" : "schema"))
        let topology = setup.topology
        let tables = try TableModel.parentsFirst(setup.tables)
        lockTable = tables[0].name

        // Rows, split evenly over the tables, placed by today's layout.
        let generator = RowGenerator(seed: options.seed, placement: topology.sourceFunction)
        let perTable = max(1, options.rows / max(tables.count, 1))
        var phaseStart = now
        let rows = try generator.generate(tables, counts: Dictionary(uniqueKeysWithValues: tables.map { ($0.name, perTable) }))
        let ledger = Ledger()
        let (pools, skipped) = try RehearsalData.load(rows, tables: tables, sources: topology.sources, ledger: ledger)
        phases.append(.init(name: "load", start: phaseStart, seconds: now - phaseStart, exitCodes: [],
                            note: "\(ledger.loaded) rows\(skipped > 0 ? ", \(skipped) refused by constraints and skipped" : "")"))
        say("loaded \(ledger.loaded) rows on \(topology.sources.count) source(s)")
        try stopIfAsked("load")

        let configPath = directory + "/reshard.yml"
        try topology.config(migration: Self.migration, tables: tables).write(toFile: configPath, atomically: true, encoding: .utf8)

        phaseStart = now
        let plan = try ChildProcess([options.executable, "plan", "-c", configPath], directory: directory, name: "plan")
        let planStatus = plan.wait()
        try stopIfAsked("plan")
        phases.append(.init(name: "plan", start: phaseStart, seconds: now - phaseStart, exitCodes: [planStatus], note: nil))
        guard planStatus == 0 else { throw ReshardError.failed("reshard plan refused the rehearsal's migration: \(plan.lastErrorLine)") }

        // Faults: what this topology can take.
        var kinds = FaultSchedule.Kind.allCases
        if !topology.isLocal { kinds.removeAll { [.restartSource, .restartTarget, .restartMetadata].contains($0) } }
        let schedule = FaultSchedule.make(
            seed: options.seed, crashes: options.crashes, kinds: kinds, sources: topology.sources.count, targets: topology.targets.count)

        let oldMap = ShardMap(
            migration: Self.migration, epoch: 1, function: topology.sourceFunction,
            shards: topology.sources.enumerated().map { .init(name: "s\($0)", dsn: $1.unsafeRawValue) },
            tables: try tables.map { t in
                guard let column = t.column(t.placementKey), let type = RowGenerator.keyType(column) else {
                    throw ReshardError.badInput("table \(t.name): \(t.placementKey) is not a key rehearse can route")
                }
                return .init(name: t.name.description, key: t.placementKey, keyType: type)
            })
        let nextIndex = Dictionary(uniqueKeysWithValues: tables.map { ($0.name, perTable) })
        let workload = try LedgerWorkload(
            tables: tables, generator: generator, ledger: ledger, maps: StaticMapSource(oldMap),
            options: .init(
                writesPerSecond: options.writesPerSecond, threads: options.writerThreads, seed: options.seed, metadata: topology.metadata,
                migration: Self.migration),
            pools: pools, nextIndex: nextIndex)
        let workloadStarted = now
        workload.start()
        // Stopped early (a signal, a step that threw): the writers end before the clusters do.
        defer { workload.stop() }
        status = { [weak self] in
            guard let self else { return "" }
            let lag = lock.withLock { self.lagSamples.last?.1 }
            return "\(ledger.acknowledged) writes acknowledged" + (lag.map { String(format: ", catch-up lag %.1f s", $0) } ?? "")
        }
        let sampler = startLagSampler(topology.sources)
        defer { sampler.stop() }

        let rate = max(1_000, Int(Double(ledger.loaded) / options.backfillSeconds))
        let apply = ["apply", "-c", configPath, "--max-connections-per-shard", "2"]
        try runStep(
            "backfill", apply + ["--until", "caught-up", "--max-rows-per-second", String(rate)], topology: topology,
            faults: schedule.faults.filter { $0.point.step == .backfill }, progress: { [self] in backfillFraction(topology) })
        let catchUpStart = now
        try runStep(
            "catch-up", apply, topology: topology, faults: schedule.faults.filter { $0.point.step == .catchUp },
            duration: options.catchUpSeconds, progress: { [self] in (now - catchUpStart) / options.catchUpSeconds })
        lock.withLock { catchUpWindow = (catchUpStart, now) }
        var switched = false
        var cutover = "cutover not available: this reshard has no cutover command yet, so the rehearsal stops before cutover"
        var switchPhases: [String] = []
        if !options.switches {
            cutover = "not rehearsed (--no-cutover)"
        } else if hasCommand("cutover") && hasCommand("rollback") && hasCommand("cleanup") {
            // The writes go on through verify and every switch: the router follows each epoch.
            try runStep("verify", ["verify", "-c", configPath], topology: topology, faults: [], progress: { nil }, accept: [0, 3])
            // A transaction holding row locks across the first attempt: the barrier must wait or give up and retry.
            let holder = holdLocks(on: topology.sources[0], seconds: 3, point: "the first cutover attempt", target: "s0")
            let first = try runStep("cutover", ["cutover", "-c", configPath], topology: topology, faults: [], progress: { nil })
            if first.exitCodes.last == 0 {
                switched = true
                lock.withLock { faults.append(holder) }
                lock.withLock { faults[faults.count - 1].survived = true }
                switchPhases.append(first.name)
                for (name, command) in [("rollback", "rollback"), ("cutover-2", "cutover")] {
                    switchPhases.append(try runStep(name, [command, "-c", configPath], topology: topology, faults: [], progress: { nil }).name)
                }
                cutover = "cut over, rolled back and cut over again under writes"
            } else {
                // Refused (exit 2: say a verify found differences) or failed: a finding either way.
                lock.withLock { faults.append(holder) }
                cutover = "cutover failed" + (first.note.map { ": \($0)" } ?? "")
            }
        }
        workload.stop()
        let workloadSeconds = now - workloadStarted
        say("workload stopped: \(ledger.acknowledged) writes acknowledged")
        if switched {
            try runStep("cleanup", ["cleanup", "-c", configPath], topology: topology, faults: [], progress: { nil })
        } else {
            try runStep("drain", apply + ["--until", "caught-up"], topology: topology, faults: [], progress: { nil })
            try runStep("verify", ["verify", "-c", configPath], topology: topology, faults: [], progress: { nil }, accept: [0, 3])
            if cutover.hasPrefix("cutover not available") { say(cutover) }
        }

        // The proof: both layouts by independent SQL.
        phaseStart = now
        let expectations = ledger.expectations(), failedLast = ledger.failedLast()
        let sourceNames = topology.sources.indices.map { "s\($0)" }, targetNames = topology.targets.indices.map { "t\($0)" }
        var layouts: [RehearsalReport.LayoutCheck] = []
        let keyTypes = Dictionary(uniqueKeysWithValues: tables.map { t in
            (t.name, (RowGenerator.keyType(t.column(t.shardKey)!), RowGenerator.keyType(t.column(t.placementKey)!)))
        })
        func check(_ layout: String, shards: [ConnectionString], names: [String], function: ShardFunction, byShardKey: Bool,
                   relation: @escaping (TableModel, Int, PGConnection) throws -> QualifiedName,
                   keep: @escaping (TableModel, Int, String) -> Bool) throws {
            let observations = try LayoutReader.observations(tables: tables, shards: shards, name: relation, keep: keep)
            var byTable: [QualifiedName: [Ledger.Key: [Ledger.State]]] = [:]
            for (key, states) in expectations { byTable[key.table, default: [:]][key] = states }
            var totals = LedgerCheck.Totals(), problems: [String] = []
            for table in tables {
                let types = keyTypes[table.name]!
                guard let type = byShardKey ? types.0 : types.1 else { continue }
                let result = try LedgerCheck.check(
                    layout: layout, expectations: byTable[table.name] ?? [:], failedLast: failedLast,
                    observations: observations.filter { $0.key.table == table.name }, shardNames: names
                ) { state in
                    guard case .present(_, let shardKey, let placementKey) = state,
                        let key = ShardKey(text: byShardKey ? shardKey : placementKey, type: type)
                    else { return -1 }
                    return try function.shard(for: key)
                }
                totals.expected += result.totals.expected
                totals.found += result.totals.found
                totals.lost += result.totals.lost
                totals.duplicated += result.totals.duplicated
                totals.misplaced += result.totals.misplaced
                totals.unacknowledgedSeen += result.totals.unacknowledgedSeen
                problems += result.problems.prefix(LedgerCheck.maxProblems - problems.count)
            }
            layouts.append(.init(layout: layout, totals: totals, problems: problems))
        }
        do {
            if switched {
                // After the last cutover and cleanup the new layout is the live one, everywhere.
                try check("new (live)", shards: topology.targets, names: targetNames, function: topology.function, byShardKey: true,
                          relation: { t, _, _ in t.name }, keep: { _, _, _ in true })
                throw CheckDone()
            }
            // Today's layout, which the application still uses: every table on its source.
            try check("old (live)", shards: topology.sources, names: sourceNames, function: topology.sourceFunction, byShardKey: false,
                      relation: { t, _, _ in t.name }, keep: { _, _, _ in true })
            // The new layout, as built on the targets: on a shared database the built table when
            // there is one, else the rows of the live table that map to it.
            let function = topology.function
            let typeOf = { (t: TableModel) in keyTypes[t.name]!.0 }
            try check("new (built)", shards: topology.targets, names: targetNames, function: function, byShardKey: true,
                      relation: { t, j, conn in
                          guard topology.sharedWith[j] != nil else { return t.name }
                          let built = QualifiedName(schema: Plan.buildSchema, t.name.name)
                          return try LayoutReader.exists(built, on: conn) ? built : t.name
                      },
                      keep: { t, j, shardKey in
                          guard topology.sharedWith[j] != nil, let type = typeOf(t), let key = ShardKey(text: shardKey, type: type) else { return true }
                          return (try? function.shard(for: key)) == j
                      })
        } catch is CheckDone {
        } catch {
            failures.append("the checker could not read a layout: \(error)")
        }
        phases.append(.init(name: "check", start: phaseStart, seconds: now - phaseStart, exitCodes: [], note: nil))
        try stopIfAsked("check")

        // Leave nothing behind: cleanup removed everything of reshard; without cutover, abort removes the
        // shim and (--drop-target-data) the copies built on shared databases, with their schema.
        if !switched { try runStep("abort", ["abort", "-c", configPath, "--drop-target-data"], topology: topology, faults: [], progress: { nil }) }
        var leftovers: [String] = []
        for (name, dsn) in switched ? topology.databases : topology.sources.enumerated().map({ ("s\($0)", $1) }) {
            do { leftovers += try LayoutReader.leftovers(on: dsn, name: name) } catch { leftovers.append("\(name): cannot be read: \(error)") }
        }

        let status = try? MigrationStatus.read(migration: Self.migration, from: PGConnection.connect(topology.metadata, applicationName: "rehearse"))
        let samples = ledger.latencySamples
        let backfillPhase = phases.first { $0.name == "backfill" }
        // The ledger's clock started at its creation, before the load; phases count from the rehearsal's start.
        let ledgerOffset = ledger.start.timeIntervalSince(started)
        let backfillWrites = backfillPhase.map { p in
            samples.filter { Double($0.0) + ledgerOffset >= p.start && Double($0.0) + ledgerOffset <= p.start + p.seconds }.count
        } ?? 0
        let ack = ledger.acknowledged
        // A switch's stall: the longest any write that started during it waited.
        let stalls: [Double] = phases.filter { switchPhases.contains($0.name) }.map { p in
            samples.filter { Double($0.0) + ledgerOffset >= p.start && Double($0.0) + ledgerOffset <= p.start + p.seconds }
                .map { Double($0.1) * 1000 }.max() ?? 0
        }
        let lagInWindow = lock.withLock { lagSamples.filter { s in catchUpWindow.map { s.0 >= $0.0 && s.0 <= $0.1 } ?? false }.map(\.1) }
        let totals = layouts.reduce(into: LedgerCheck.Totals()) {
            $0.found += $1.totals.found; $0.lost += $1.totals.lost; $0.duplicated += $1.totals.duplicated
            $0.misplaced += $1.totals.misplaced; $0.unacknowledgedSeen += $1.totals.unacknowledgedSeen
        }
        let clean = totals.lost == 0 && totals.duplicated == 0 && totals.misplaced == 0 && totals.unacknowledgedSeen == 0
        let faultsOK = faults.allSatisfy { !$0.injected || $0.survived }
        let verdict = clean && failures.isEmpty && leftovers.isEmpty && faultsOK && workload.applicationAnomalies.isEmpty ? "pass" : "fail"
        return RehearsalReport(
            seed: options.seed, sources: topology.sources.count, targets: topology.targets.count,
            sharedTargets: topology.sharedWith.enumerated().compactMap { j, s in s.map { "t\(j) = s\($0)" } }, rows: ledger.loaded,
            writesPerSecondAsked: options.writesPerSecond, external: !topology.isLocal, phases: phases,
            backfillRowsPerSecond: backfillPhase.flatMap { p in status.map { Double($0.rowsCopied) / max(p.seconds, 0.001) } },
            catchUpLag: .of(lagInWindow), writeLatencyMs: .of(samples.map { Double($0.1) * 1000 }), writeStallMs: .of(stalls), cutover: cutover,
            faults: faults,
            ledger: .init(
                loaded: ledger.loaded, acknowledged: ack, failed: ledger.failed, inDoubt: ledger.inDoubt, shardKeyMoves: workload.shardKeyMoves,
                mapReloads: workload.mapReloads, throughRouter: workload.usedRouter, writesPerSecond: Double(ack) / max(workloadSeconds, 0.001),
                writesPerSecondDuringBackfill: Double(backfillWrites) / max(backfillPhase?.seconds ?? 0, 0.001),
                cpuShareOfOneCore: (lock.withLock { stepCPU["backfill"] } ?? 0) / max(backfillPhase?.seconds ?? 0, 0.001),
                workloadThreadsCPUShare: workload.cpuSeconds / max(workloadSeconds, 0.001),
                bookkeepingCPUShare: (workload.cpuSeconds - workload.databaseCallCPUSeconds) / max(workloadSeconds, 0.001), found: totals.found, lost: totals.lost,
                duplicated: totals.duplicated, misplaced: totals.misplaced, unacknowledgedSeen: totals.unacknowledgedSeen),
            layouts: layouts, applicationAnomalies: workload.applicationAnomalies, leftovers: leftovers, stepFailures: failures,
            verdict: verdict, seconds: now,
            latencyTimeline: Self.downsample(samples.map { [Double($0.0) + ledgerOffset, Double($0.1) * 1000] }),
            lagTimeline: lock.withLock { lagSamples.map { [$0.0, $0.1] } })
    }

    /// At most `limit` points: the slowest write of each time bucket, so spikes stay visible.
    static func downsample(_ points: [[Double]], limit: Int = 1500) -> [[Double]] {
        guard points.count > limit, let last = points.map({ $0[0] }).max() else { return points }
        var buckets = [[Double]?](repeating: nil, count: limit)
        for p in points {
            let b = min(limit - 1, Int(p[0] / max(last, 0.001) * Double(limit - 1)))
            if buckets[b] == nil || buckets[b]![1] < p[1] { buckets[b] = p }
        }
        return buckets.compactMap { $0 }
    }

    /// User and system CPU seconds of this whole process so far: every thread (the writers, their
    /// routers and libpq, the samplers, this control loop), not the `reshard` children, which
    /// `RUSAGE_SELF` leaves out. Time spent waiting for a server is not CPU, so over a step this is
    /// the rehearsal's own overhead.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
            + Double(usage.ru_stime.tv_usec) / 1e6
    }

    // MARK: - Steps and faults

    /// Runs one step's command until it reaches its goal (exit in `accept`), injecting `faults`
    /// at their points, and running the command again after a fault killed it. With `duration`,
    /// the step is stopped (SIGTERM) once that long has passed.
    /// Throws `stoppedEarly` when `Options.shouldStop` says so (the callers' defers stop the
    /// workload and remove the clusters).
    func stopIfAsked(_ during: String) throws {
        guard options.shouldStop() else { return }
        say("stopped by a signal during \(during): stopping the workload and removing the clusters")
        throw ReshardError(.stoppedEarly, "rehearse was stopped by a signal during \(during); its clusters were removed, nothing was checked")
    }

    /// How long a step's child has to exit after SIGTERM when the rehearsal is stopped, before SIGKILL.
    static let childStopSeconds = 10.0

    @discardableResult
    func runStep(
        _ name: String, _ arguments: [String], topology: RehearsalTopology, faults pending: [FaultSchedule.Fault], duration: Double? = nil,
        progress: () -> Double?, accept: Set<Int32> = [0]
    ) throws -> RehearsalReport.Phase {
        let start = now
        let cpuAtStart = Self.processCPUSeconds()
        defer { let spent = Self.processCPUSeconds() - cpuAtStart; lock.withLock { stepCPU[name] = spent } }
        var codes: [Int32] = []
        var pending = pending
        var injected: [Int] = []
        var note: String?
        say("\(name): reshard \(arguments.first ?? "")")
        var run = 0
        var lastLine = Date()
        while true {
            run += 1
            guard let child = try? ChildProcess([options.executable] + arguments, directory: directory, name: "\(name)-\(run)") else {
                failures.append("\(name): cannot start reshard")
                break
            }
            var killedByFault = false
            var stopping = false
            var lastProgress = Date.distantPast
            var fraction: Double?
            var code: Int32?
            while code == nil {
                usleep(100_000)
                code = child.poll()
                if code != nil { break }
                if options.shouldStop() {
                    // As a user's Ctrl-C would: the step's command stops cleanly (SIGKILL if it hangs).
                    child.signal(SIGTERM)
                    if child.wait(seconds: Self.childStopSeconds) == nil {
                        child.signal(SIGKILL)
                        child.wait()
                    }
                    try stopIfAsked(name)
                }
                if Date().timeIntervalSince(lastProgress) >= 0.5 {
                    fraction = progress()
                    lastProgress = Date()
                }
                if Date().timeIntervalSince(lastLine) >= 5 {
                    let done = fraction.map { String(format: " %.0f%%,", min($0, 1) * 100) } ?? ""
                    say("\(name):\(done) \(status())")
                    lastLine = Date()
                }
                while let fault = pending.first, let f = fraction, f >= fault.point.at {
                    pending.removeFirst()
                    let record = inject(fault, topology: topology, child: child)
                    if fault.kind == .killCoordinator { killedByFault = true }
                    lock.withLock { faults.append(record) }
                    injected.append(faults.count - 1)
                }
                if let duration, now - start >= duration, !stopping {
                    child.signal(SIGTERM)
                    stopping = true
                }
            }
            codes.append(code!)
            if killedByFault && !stopping { continue }  // a user runs the same command again
            if accept.contains(code!) || (stopping && (code == 0 || code == 128 + SIGTERM)) { break }
            if run < 3, code != 2 {  // a refusal (exit 2) changed nothing and would refuse again
                note = "run \(run) exited \(code!): \(child.lastErrorLine); ran it again"
                say("\(name): \(note!)")
                continue
            }
            if code == 2 { note = child.lastErrorLine.replacingOccurrences(of: "reshard: error: ", with: "") }
            failures.append("\(name): reshard \(arguments.first ?? "") exited \(code!): \(child.lastErrorLine)")
            break
        }
        let reached = failures.last.map { !$0.hasPrefix("\(name):") } ?? true
        for i in injected { lock.withLock { faults[i].survived = reached } }
        for fault in pending {
            lock.withLock {
                faults.append(.init(kind: fault.kind.rawValue, point: fault.point.description, target: targetName(fault, topology), at: nil,
                                    injected: false, survived: false, note: "the step ended before this point"))
            }
        }
        try stopIfAsked(name)
        if name == "verify", codes.last == 3 { note = "verify found differences" }
        let phase = RehearsalReport.Phase(name: name, start: start, seconds: now - start, exitCodes: codes, note: note)
        phases.append(phase)
        say(String(format: "%@: done in %.1f s (exit %@)", name, phase.seconds, codes.map(String.init).joined(separator: ", ")))
        return phase
    }

    func targetName(_ fault: FaultSchedule.Fault, _ topology: RehearsalTopology) -> String {
        switch fault.kind {
        case .killCoordinator: "coordinator"
        case .restartMetadata: "metadata"
        case .restartSource, .holdLocks: "s\(fault.shard % topology.sources.count)"
        case .restartTarget: "t\(fault.shard % topology.targets.count)"
        case .terminateSessions:
            fault.shard < topology.sources.count ? "s\(fault.shard)" : "t\((fault.shard - topology.sources.count) % topology.targets.count)"
        }
    }

    func inject(_ fault: FaultSchedule.Fault, topology: RehearsalTopology, child: ChildProcess) -> RehearsalReport.FaultRecord {
        let at = now
        let target = targetName(fault, topology)
        var note: String?
        do {
            switch fault.kind {
            case .killCoordinator:
                child.signal(SIGKILL)
            case .restartSource:
                try topology.sourceClusters[fault.shard % topology.sources.count].restart()
            case .restartTarget:
                let j = fault.shard % topology.targets.count
                if let cluster = topology.targetClusters[j] { try cluster.restart() } else {
                    // A shared target is its source's cluster.
                    try topology.sourceClusters[topology.sharedWith[j]!].restart()
                    note = "shared with s\(topology.sharedWith[j]!)"
                }
            case .restartMetadata:
                try topology.metadataCluster?.restart()
            case .terminateSessions:
                let dsn = fault.shard < topology.sources.count
                    ? topology.sources[fault.shard] : topology.targets[(fault.shard - topology.sources.count) % topology.targets.count]
                let conn = try PGConnection.connect(dsn, applicationName: "rehearse faults")
                let n = try conn.query(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'reshard%' AND pid <> pg_backend_pid()")
                note = "\(n[0, 0] ?? "0") session(s) ended"
            case .holdLocks:
                let dsn = topology.sources[fault.shard % topology.sources.count]
                let table = lockTable
                Thread {
                    guard let conn = try? PGConnection.connect(dsn, applicationName: "rehearse lock holder") else { return }
                    _ = try? conn.execute("BEGIN; SELECT 1 FROM \(try conn.quote(table)) LIMIT 5 FOR UPDATE; SELECT pg_sleep(3); COMMIT")
                }.start()
                note = "row locks held for 3 s"
            }
        } catch {
            note = "could not inject: \(error)"
            say("fault \(fault.kind.rawValue) on \(target): \(note!)")
            return .init(kind: fault.kind.rawValue, point: fault.point.description, target: target, at: at, injected: false, survived: false, note: note)
        }
        say(String(format: "fault: %@ on %@ at %@ (t=%.1f s)%@", fault.kind.rawValue, target, fault.point.description, at, note.map { ", \($0)" } ?? ""))
        return .init(kind: fault.kind.rawValue, point: fault.point.description, target: target, at: at, injected: true, survived: false, note: note)
    }

    struct CheckDone: Error {}

    /// Whether the `reshard` binary has `command` (cutover, rollback, cleanup arrive with their issue).
    func hasCommand(_ command: String) -> Bool {
        guard let help = try? ChildProcess([options.executable, "help", command], directory: directory, name: "help-\(command)") else { return false }
        return help.wait() == 0
    }

    /// A transaction on `dsn` that locks a few rows and holds them for `seconds` before committing.
    func holdLocks(on dsn: ConnectionString, seconds: Double, point: String, target: String) -> RehearsalReport.FaultRecord {
        let table = lockTable
        Thread {
            guard let conn = try? PGConnection.connect(dsn, applicationName: "rehearse lock holder") else { return }
            _ = try? conn.execute("BEGIN; SELECT 1 FROM \(try conn.quote(table)) LIMIT 5 FOR UPDATE; SELECT pg_sleep(\(seconds)); COMMIT")
        }.start()
        say(String(format: "fault: hold-locks on %@ at %@ (t=%.1f s), row locks held for %.0f s", target, point, now, seconds))
        return .init(kind: FaultSchedule.Kind.holdLocks.rawValue, point: point, target: target, at: now, injected: true, survived: false,
                     note: "row locks held for \(Int(seconds)) s")
    }

    /// The progress poll's metadata connection (used by the control loop only).
    private var progressConnection: PGConnection?

    /// The table the lock-holding transaction locks rows of (the first migrated table).
    var lockTable = QualifiedName("users")

    /// rows copied / estimated, from the metadata (nil while it cannot be read: it may be restarting).
    func backfillFraction(_ topology: RehearsalTopology) -> Double? {
        // One connection kept open (a new one each poll was a handshake twice a second).
        if progressConnection == nil || !progressConnection!.isHealthy {
            progressConnection = nil
            var dsn = topology.metadata.options
            dsn["connect_timeout"] = "2"
            guard let raw = try? ConnectionString(ConnectionString.keywordString(dsn)) else { return nil }
            progressConnection = try? PGConnection.connect(raw, applicationName: "rehearse progress")
        }
        guard let conn = progressConnection, let status = try? MigrationStatus.read(migration: Self.migration, from: conn), status.estimatedRows > 0
        else { return nil }
        if ["catching-up", "in-sync"].contains(status.phase) { return 1 }
        return Double(status.rowsCopied) / Double(status.estimatedRows)
    }

    final class Sampler: @unchecked Sendable {
        private let lock = NSLock()
        private var running = true
        private let done = DispatchGroup()
        var isRunning: Bool { lock.withLock { running } }
        func stop() {
            let first = lock.withLock { defer { running = false }; return running }
            if first { done.wait() }
        }
        func start(_ body: @escaping @Sendable () -> Void) {
            done.enter()
            Thread { [self] in
                while isRunning { body(); usleep(500_000) }
                done.leave()
            }.start()
        }
    }

    /// Every half second: the age of the oldest change not yet applied, over all sources.
    func startLagSampler(_ sources: [ConnectionString]) -> Sampler {
        let sampler = Sampler()
        final class Conns: @unchecked Sendable { var list: [PGConnection] = [] }
        let conns = Conns()
        sampler.start { [self] in
            if conns.list.count != sources.count || !conns.list.allSatisfy(\.isHealthy) {
                conns.list = sources.compactMap { try? PGConnection.connect($0, applicationName: "rehearse lag") }
            }
            guard conns.list.count == sources.count, let age = LayoutReader.oldestChangeAge(conns.list) else {
                conns.list = []
                return
            }
            let t = now
            lock.withLock { lagSamples.append((t, age)) }
        }
        return sampler
    }
}
