import Foundation
import Metrics

/// What `apply` and `verify` tell the metrics system, from the progress they report about once a
/// second. They emit through swift-metrics only: the CLI picks the backend (Prometheus, with
/// `--metrics-listen`), and without one every call here is a no-op, so the figures cost nothing
/// on the copy path.
///
/// Why `@unchecked Sendable`: the last seen totals are only touched under `lock`.
public final class ReshardMetrics: @unchecked Sendable {
    private let migration: String
    private let lock = NSLock()
    private var lastCopied: [String: Int64] = [:]
    private var lastApplied: Int64?
    private var lastChecked: Int64?

    public init(migration: String) { self.migration = migration }

    private var base: [(String, String)] { [("migration", migration)] }

    /// Counters only go up: a total read back from the metadata after a restart starts them at
    /// that total, and every later report adds the difference.
    private func advance(_ counter: Counter, from last: Int64?, to now: Int64) {
        let delta = now - (last ?? 0)
        if delta > 0 { counter.increment(by: delta) }
    }

    public func record(_ p: ApplyProgress) {
        lock.withLock {
            for table in p.tables {
                let dims = base + [("table", table.name)]
                advance(Counter(label: "reshard_rows_copied_total", dimensions: dims), from: lastCopied[table.name], to: table.rowsCopied)
                lastCopied[table.name] = max(lastCopied[table.name] ?? 0, table.rowsCopied)
                Gauge(label: "reshard_rows_estimated", dimensions: dims).record(table.rowsEstimated)
                Gauge(label: "reshard_table_copied", dimensions: dims).record(table.done ? 1 : 0)
            }
            Gauge(label: "reshard_copy_rows_per_second", dimensions: base).record(p.rowsPerSecond)
            Gauge(label: "reshard_changelog_backlog", dimensions: base).record(p.backlog)
            advance(Counter(label: "reshard_catchup_applied_total", dimensions: base), from: lastApplied, to: p.changesApplied)
            lastApplied = max(lastApplied ?? 0, p.changesApplied)
            Gauge(label: "reshard_backfill_paused", dimensions: base).record(p.paused ? 1 : 0)
            for (source, seconds) in p.replicaLagSeconds ?? [:] {
                Gauge(label: "reshard_replica_lag_seconds", dimensions: base + [("source", source)]).record(seconds)
            }
            recordPhase(p.phase.rawValue)
            Gauge(label: "reshard_lease_held", dimensions: base).record(1)
        }
    }

    public func record(_ p: VerifyProgress) {
        lock.withLock {
            Gauge(label: "reshard_verify_chunks_done", dimensions: base).record(p.chunksDone)
            Gauge(label: "reshard_verify_chunks_total", dimensions: base).record(p.chunksTotal)
            advance(Counter(label: "reshard_verify_rows_checked_total", dimensions: base), from: lastChecked, to: p.rowsChecked)
            lastChecked = max(lastChecked ?? 0, p.rowsChecked)
            Gauge(label: "reshard_verify_rows_per_second", dimensions: base).record(p.rowsPerSecond)
            Gauge(label: "reshard_verify_differences", dimensions: base).record(p.differences)
        }
    }

    /// One series per phase, 1 for the current one (the Prometheus way to export a state).
    private func recordPhase(_ current: String) {
        for phase in MigrationPhase.allCases {
            Gauge(label: "reshard_phase", dimensions: base + [("phase", phase.rawValue)]).record(phase.rawValue == current ? 1 : 0)
        }
    }

    /// An error by kind (`retry`, `failed`...), for alerting.
    public func recordError(kind: String, shard: String?) {
        Counter(label: "reshard_errors_total", dimensions: base + [("kind", kind), ("shard", shard ?? "")]).increment()
    }
}
