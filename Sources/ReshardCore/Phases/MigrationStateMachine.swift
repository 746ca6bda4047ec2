/// What drives the phases, as a value: events in, actions out. The coordinator, `abort` and (to
/// come) `cutover` carry out the actions against the shards and report back with events; this
/// type never touches a database, so every transition and every refusal is unit-tested.
///
/// Strict: each event is one method, and an event the current phase does not allow throws
/// rather than being ignored, so a caller that gets out of step with the metadata stops instead
/// of acting on a phase it misread.
public struct MigrationStateMachine: Sendable, Equatable {
    /// A phase change, made only here; `PhaseStore.write` records it as a compare-and-set.
    public struct Transition: Sendable, Equatable, CustomStringConvertible {
        public let from: MigrationPhase
        public let to: MigrationPhase
        fileprivate init(_ from: MigrationPhase, _ to: MigrationPhase) {
            self.from = from
            self.to = to
        }
        public var description: String { "\(from.rawValue) -> \(to.rawValue)" }
    }

    public enum Action: Sendable, Equatable {
        /// Create missing target tables and install the shim (both idempotent); report `prepared()`.
        case prepare
        /// Record the phase change in the metadata before acting on it.
        case record(Transition)
        /// Start (or keep) the backfill workers and the catch-up.
        case runBackfillAndCatchUp
        /// Keep only the catch-up running.
        case runCatchUp
        /// Build secondary indexes deferred during the copy.
        case buildDeferredIndexes
        /// Stop the workers and return (the `until` goal was reached, or a stop was requested).
        case stop
    }

    /// Where `apply` returns by itself, when asked to.
    public enum Goal: String, Sendable, CaseIterable {
        case backfilled
        case caughtUp = "caught-up"
        /// Keep the targets in sync until stopped.
        case forever
    }

    public let migration: String
    public private(set) var phase: MigrationPhase
    public let goal: Goal
    private var resumed = false
    private var preparing = false

    /// The machine of a migration whose metadata records `phase`.
    public init(migration: String, phase: MigrationPhase, goal: Goal = .forever) {
        self.migration = migration
        self.phase = phase
        self.goal = goal
    }

    // MARK: - apply

    /// `apply` starts or resumes with the recorded phase.
    public mutating func resume() throws -> [Action] {
        guard !resumed else { throw impossible("resume") }
        resumed = true
        switch phase {
        case .planned, .prepared:
            preparing = true
            return [.prepare]
        case .backfilling:
            preparing = true
            return [.prepare, .runBackfillAndCatchUp]
        case .catchingUp, .inSync:
            // In sync when last seen, but writes went on since: catch up again before returning.
            guard goal != .backfilled else { return [.stop] }
            preparing = true
            return [.prepare, .runCatchUp]
        case .rolledBack:
            // Writes go to the sources again: keeping the targets caught up is what a second
            // cutover needs; the phase stays until that cutover.
            guard goal != .backfilled else { return [.stop] }
            preparing = true
            return [.prepare, .runCatchUp]
        case .aborted:
            throw ReshardError.refused("migration \(migration): the migration was aborted; start a new one under another name")
        case .cuttingOver, .cutOver, .rollingBack, .cleanedUp:
            throw ReshardError.refused("migration \(migration) is in phase \(phase.rawValue); apply cannot continue it")
        }
    }

    /// The shim and target tables are in place (after `.prepare`).
    public mutating func prepared() throws -> [Action] {
        guard preparing else { throw impossible("prepared") }
        preparing = false
        switch phase {
        case .planned, .prepared:
            let transition = Transition(phase, .backfilling)
            phase = .backfilling
            return [.record(transition), .runBackfillAndCatchUp]
        default:
            // Resumed past preparation: the shim was re-checked, the work goes on.
            return []
        }
    }

    /// Every slice is copied.
    public mutating func backfillComplete() throws -> [Action] {
        guard resumed, phase == .backfilling, !preparing else { throw impossible("backfill complete") }
        let transition = Transition(.backfilling, .catchingUp)
        phase = .catchingUp
        return [.buildDeferredIndexes, .record(transition)] + (goal == .backfilled ? [.stop] : [.runCatchUp])
    }

    /// The changelog of every source is empty (for tables that are copied).
    public mutating func caughtUp() throws -> [Action] {
        guard resumed, !preparing else { throw impossible("caught up") }
        switch phase {
        case .catchingUp:
            let transition = Transition(.catchingUp, .inSync)
            phase = .inSync
            return [.record(transition)] + (goal == .forever ? [] : [.stop])
        case .inSync, .rolledBack:
            return goal == .forever ? [] : [.stop]
        default:
            throw impossible("caught up")
        }
    }

    /// Ctrl-C or SIGTERM: allowed in every phase.
    public mutating func stopRequested() -> [Action] { [.stop] }

    // MARK: - abort, cutover, rollback

    /// `reshard abort`: before cutover, or after a rollback.
    public mutating func abort() throws -> Transition {
        switch phase {
        case .planned, .prepared, .backfilling, .catchingUp, .inSync, .rolledBack: return move(to: .aborted)
        default:
            throw ReshardError.refused(
                "migration \(migration) is in phase \(phase.rawValue); abort is possible only before cutover or after a rollback")
        }
    }

    /// `reshard cutover` starts switching writes to the targets.
    public mutating func startCutover() throws -> Transition {
        guard phase == .inSync || phase == .rolledBack else { throw impossible("start cutover") }
        return move(to: .cuttingOver)
    }

    /// Writes go to the targets.
    public mutating func cutoverComplete() throws -> Transition {
        guard phase == .cuttingOver else { throw impossible("complete cutover") }
        return move(to: .cutOver)
    }

    /// A cutover attempt was undone before the new epoch was published (a step timed out or
    /// failed, or `rollback` after a coordinator died mid-cutover): the old layout serves.
    public mutating func cutoverUndone() throws -> Transition {
        guard phase == .cuttingOver else { throw impossible("undo the cutover") }
        return move(to: .inSync)
    }

    /// A rollback attempt was undone before the old layout's epoch was published: the new layout serves.
    public mutating func rollbackUndone() throws -> Transition {
        guard phase == .rollingBack else { throw impossible("undo the rollback") }
        return move(to: .cutOver)
    }

    /// `reshard rollback` starts switching writes back to the sources.
    public mutating func startRollback() throws -> Transition {
        guard phase == .cutOver else { throw impossible("start rollback") }
        return move(to: .rollingBack)
    }

    /// Writes go to the sources again.
    public mutating func rollbackComplete() throws -> Transition {
        guard phase == .rollingBack else { throw impossible("complete rollback") }
        return move(to: .rolledBack)
    }

    /// The sources' copies are removed; the migration is over.
    public mutating func cleanup() throws -> Transition {
        guard phase == .cutOver else { throw impossible("clean up") }
        return move(to: .cleanedUp)
    }

    private mutating func move(to next: MigrationPhase) -> Transition {
        let transition = Transition(phase, next)
        phase = next
        return transition
    }

    private func impossible(_ event: String) -> ReshardError {
        let when = !resumed ? " before apply resumed it" : preparing ? " while preparing" : ""
        return ReshardError.refused("migration \(migration): cannot \(event) in phase \(phase.rawValue)\(when)")
    }
}
