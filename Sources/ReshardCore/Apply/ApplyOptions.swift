import Foundation
import PostgresClient

/// How `reshard apply` runs.
public struct ApplyOptions: Sendable {
    public var goal: MigrationStateMachine.Goal = .forever
    /// Connections the backfill may hold on any one shard at once.
    public var maxConnectionsPerShard = 4
    /// Build secondary indexes with the target tables instead of after the copy.
    public var keepIndexes = false
    public var initialBatchSize = 20_000
    /// Batches grow or shrink to take about this long.
    public var targetBatchSeconds = 2.0
    /// Backfill rate limit across all workers; changeable while running (`reshard throttle`).
    public var maxRowsPerSecond: Int?
    /// Pause the backfill while more changes than this wait in the changelogs.
    public var maxBacklog: Int64 = 500_000
    /// Pause the backfill (and slow the catch-up) while a source's replicas lag more than this
    /// (`apply --max-replica-lag`, `ReplicaLag`).
    public var maxReplicationLagSeconds = 30.0
    /// Streaming replicas listed per source (`replicas:` in the config), by shard name.
    public var replicas: [String: [ConnectionString]] = [:]
    /// How long the catch-up rests between rounds while replicas lag: it keeps applying (the
    /// backlog must not grow without bound) but leaves the replicas room to catch up.
    static let laggingCatchUpPause = 0.5
    /// How work interrupted by a shard or the metadata database going away is retried, and for
    /// how long before the migration fails.
    public var retry = RetryPolicy()
    /// How long a stop waits for workers to finish their statements before cancelling them.
    public var stopGraceSeconds = 10.0
    /// A source's replication lag query may take this long before the lag counts as unreadable.
    public var lagCheckTimeoutSeconds = 2.0
    /// The plan was made just now from the config, and its planner checked every key for
    /// collisions (`KeyCollisions`): `prepare` need not read them all again. False for a plan file.
    public var keysJustChecked = false

    public init() {}
}

/// One look at a running apply, for progress lines and `--json`.
public struct ApplyProgress: Sendable, Codable {
    public struct Table: Sendable, Codable {
        public var name: String
        public var rowsCopied: Int64
        public var rowsEstimated: Int64
        public var done: Bool
    }

    public var migration: String
    public var phase: MigrationPhase
    public var rowsCopied: Int64
    public var rowsEstimated: Int64
    public var rowsPerSecond: Double
    public var etaSeconds: Double?
    public var backlog: Int64
    public var changesApplied: Int64
    public var paused: Bool
    /// Why the backfill is paused, when it is.
    public var pausedReason: String? = nil
    /// Each source's replication lag as last read, in seconds (a source whose lag cannot be read
    /// is left out: `pausedReason` says why).
    public var replicaLagSeconds: [String: Double]? = nil
    /// The backfill's rate limit in force, rows per second.
    public var maxRowsPerSecond: Int? = nil
    /// Whether the changelog grows or drains: `s1 falling behind: 7,000 changes/s produced, 1,200 applied`.
    public var backlogTrend: String? = nil
    /// Work being retried right now: `retrying s1: ... (3rd attempt, since 12:00:01 UTC)`.
    public var retrying: [String] = []
    public var tables: [Table]
}

extension MigrationStateMachine.Goal: Codable {}

/// How a `reshard apply` ended: at its goal, or stopped (a signal) before it. A goal of `forever`
/// is never reached: stopping is the only way it ends.
public struct ApplyOutcome: Sendable, Codable {
    public var goal: MigrationStateMachine.Goal
    public var reachedGoal: Bool
    /// The figures when it stopped.
    public var progress: ApplyProgress
}
