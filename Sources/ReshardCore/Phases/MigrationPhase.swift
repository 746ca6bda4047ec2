/// The phases of one migration, stored in `reshard.migrations.phase`. Only
/// `MigrationStateMachine` decides which phase follows which, and only `PhaseStore` writes one.
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
    /// `cutover` is switching writes to the targets.
    case cuttingOver = "cutting-over"
    /// Writes go to the targets.
    case cutOver = "cut-over"
    /// `cutover --rollback` is switching writes back to the sources.
    case rollingBack = "rolling-back"
    /// Writes go to the sources again; the migration can be cut over again or aborted.
    case rolledBack = "rolled-back"
    /// Cut over for good; what is left on the sources is removed.
    case cleanedUp = "cleaned-up"
    /// Stopped for good by `reshard abort`.
    case aborted

    /// The phase recorded for `migration`. A phase this binary does not know was written by a
    /// newer reshard: guessing one (say, `planned`, which restarts the backfill) could undo its
    /// work, so it is refused before anything is changed.
    public static func recorded(_ raw: String, migration: String) throws -> MigrationPhase {
        guard let phase = MigrationPhase(rawValue: raw) else {
            throw ReshardError(.newerMetadata, "migration \(migration): metadata written by a newer reshard (phase '\(raw)')")
        }
        return phase
    }
}
