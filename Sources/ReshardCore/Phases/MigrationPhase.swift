/// The phases of one migration, stored in `reshard.migrations.phase`.
public enum MigrationPhase: String, Sendable, Codable, CaseIterable {
    /// Registered; nothing touched on any shard yet.
    case planned
    /// Target tables created and the dual-write shim installed on the sources.
    case prepared
    /// Copying rows; the catch-up applies changes of tables already copied.
    case backfilling
    /// Every row copied; applying the rest of the changelog.
    case catchingUp = "catching-up"
    /// Targets hold everything; the catch-up keeps them in sync.
    case inSync = "in-sync"
    /// Stopped for good by `reshard abort`.
    case aborted
}

/// What drives the phases, as a value: events in, actions out. The coordinator carries out the
/// actions against the shards and reports back with events; this type never touches a database,
/// so every transition is unit-tested.
public struct MigrationStateMachine: Sendable, Equatable {
    public enum Event: Sendable, Equatable {
        /// The coordinator starts or resumes with the phase recorded in the metadata.
        case resumed(MigrationPhase)
        case prepared
        case backfillComplete
        /// The changelog of every source is empty (for tables that are copied).
        case caughtUp
        case stopRequested
    }

    public enum Action: Sendable, Equatable {
        /// Create missing target tables and install the shim (both idempotent).
        case prepare
        /// Record the phase in the metadata before acting on it.
        case record(MigrationPhase)
        /// Start (or keep) the backfill workers and the catch-up.
        case runBackfillAndCatchUp
        /// Keep only the catch-up running.
        case runCatchUp
        /// Build secondary indexes deferred during the copy.
        case buildDeferredIndexes
        /// Stop the workers and return (the `until` goal was reached, or a stop was requested).
        case stop
        /// Refuse to run: the migration is in a phase this command cannot continue from.
        case refuse(String)
    }

    /// Where `apply` returns by itself, when asked to.
    public enum Goal: String, Sendable, CaseIterable {
        case backfilled
        case caughtUp = "caught-up"
        /// Keep the targets in sync until stopped.
        case forever
    }

    public private(set) var phase: MigrationPhase
    public let goal: Goal

    public init(goal: Goal) {
        self.phase = .planned
        self.goal = goal
    }

    public mutating func handle(_ event: Event) -> [Action] {
        switch (event, phase) {
        case (.stopRequested, _):
            return [.stop]
        case (.resumed(let recorded), _):
            phase = recorded
            switch recorded {
            case .aborted: return [.refuse("the migration was aborted; start a new one under another name")]
            case .planned, .prepared: return [.prepare]
            case .backfilling: return [.prepare, .runBackfillAndCatchUp]
            case .catchingUp: return goal == .backfilled ? [.stop] : [.prepare, .runCatchUp]
            // In sync when last seen, but writes went on since: catch up again before returning.
            case .inSync: return goal == .backfilled ? [.stop] : [.prepare, .runCatchUp]
            }
        case (.prepared, .planned), (.prepared, .prepared):
            phase = .backfilling
            return [.record(.backfilling), .runBackfillAndCatchUp]
        case (.prepared, _):
            // Resumed past preparation: the shim was re-checked, the work goes on.
            return []
        case (.backfillComplete, .backfilling):
            phase = .catchingUp
            let next: [Action] = [.buildDeferredIndexes, .record(.catchingUp)]
            return next + (goal == .backfilled ? [.stop] : [.runCatchUp])
        case (.caughtUp, .catchingUp):
            phase = .inSync
            return [.record(.inSync)] + (goal == .forever ? [] : [.stop])
        case (.caughtUp, .inSync):
            return goal == .forever ? [] : [.stop]
        case (.caughtUp, .backfilling), (.caughtUp, .planned), (.caughtUp, .prepared):
            return []
        default:
            return []
        }
    }
}
