import Foundation

/// What a rehearsal found: `--json` prints it, the terminal summary and the HTML page are made from it.
public struct RehearsalReport: Codable, Sendable {
    public struct Phase: Codable, Sendable {
        public var name: String
        /// Seconds since the rehearsal started, and how long it took.
        public var start: Double
        public var seconds: Double
        /// Exit code of each run of the step's command (a run killed by a fault, then the run again).
        public var exitCodes: [Int32]
        public var note: String?
    }

    public struct FaultRecord: Codable, Sendable {
        public var kind: String
        public var point: String
        public var target: String
        /// Seconds since the rehearsal started; nil when the step ended before the point was reached.
        public var at: Double?
        public var injected: Bool
        /// The step it hit still reached its goal.
        public var survived: Bool
        public var note: String?
    }

    public struct Percentiles: Codable, Sendable {
        public var p50: Double
        public var p99: Double
        public var max: Double
        public var samples: Int

        public static func of(_ values: [Double]) -> Percentiles? {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            func at(_ q: Double) -> Double { sorted[min(sorted.count - 1, Int((Double(sorted.count) * q).rounded(.down)))] }
            return Percentiles(p50: at(0.5), p99: at(0.99), max: sorted.last!, samples: sorted.count)
        }
    }

    public struct LayoutCheck: Codable, Sendable {
        public var layout: String
        public var totals: LedgerCheck.Totals
        public var problems: [String]
    }

    public struct Ledger: Codable, Sendable {
        public var loaded: Int
        public var acknowledged: Int
        public var failed: Int
        public var inDoubt: Int
        public var shardKeyMoves: Int
        public var mapReloads: Int
        /// Whether the writes went through `ReshardRouter` once `apply` published the shard map.
        public var throughRouter: Bool
        public var writesPerSecond: Double
        /// Acknowledged writes per second while the backfill ran (the coordinator copying).
        public var writesPerSecondDuringBackfill: Double
        /// The rehearsal's own overhead while the backfill ran: CPU this process used (every thread:
        /// the ledger, routing and libpq client work, the lag sampler, progress polls; not the
        /// `reshard` children) per second of the backfill's wall time, as a share of one core.
        public var cpuShareOfOneCore: Double
        /// CPU of the writer threads alone over the whole time they ran, as a share of one core.
        public var workloadThreadsCPUShare: Double
        /// The writer threads' CPU outside their database calls (routing, libpq and the kernel's
        /// socket work left out): the ledger bookkeeping proper, over the same time.
        public var bookkeepingCPUShare: Double
        public var found: Int
        public var lost: Int
        public var duplicated: Int
        public var misplaced: Int
        public var unacknowledgedSeen: Int
    }

    public var seed: UInt64
    public var sources: Int
    public var targets: Int
    public var sharedTargets: [String]
    public var rows: Int
    public var writesPerSecondAsked: Int
    public var external: Bool
    public var phases: [Phase]
    public var backfillRowsPerSecond: Double?
    /// Age of the oldest unapplied change while the catch-up kept up under writes, in seconds.
    public var catchUpLag: Percentiles?
    /// Write latency of acknowledged writes, in milliseconds.
    public var writeLatencyMs: Percentiles?
    /// Longest write stall of each switch (cutover, rollback), in milliseconds.
    public var writeStallMs: Percentiles?
    public var cutover: String
    public var faults: [FaultRecord]
    public var ledger: Ledger
    public var layouts: [LayoutCheck]
    public var applicationAnomalies: [String]
    public var leftovers: [String]
    public var stepFailures: [String]
    public var verdict: String
    public var seconds: Double
    /// For the timeline: (seconds, write latency ms) downsampled, and (seconds, catch-up lag s).
    public var latencyTimeline: [[Double]]
    public var lagTimeline: [[Double]]

    public var passed: Bool { verdict == "pass" }

    /// The summary a person reads at the end.
    public var text: String {
        var lines: [String] = []
        lines.append("rehearsal \(sources) -> \(targets) (shared: \(sharedTargets.isEmpty ? "none" : sharedTargets.joined(separator: ", "))), seed \(seed), \(rows) rows, \(writesPerSecondAsked) writes/s asked\(external ? ", external servers" : "")")
        for phase in phases {
            let runs = phase.exitCodes.count > 1 ? " (\(phase.exitCodes.count) runs: exit \(phase.exitCodes.map(String.init).joined(separator: ", ")))" : ""
            lines.append("  \(phase.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(format: "%7.1f s", phase.seconds))\(runs)\(phase.note.map { "  \($0)" } ?? "")")
        }
        if let rate = backfillRowsPerSecond { lines.append(String(format: "backfill: %.0f rows/s", rate)) }
        if let lag = catchUpLag { lines.append(String(format: "catch-up lag: p50 %.2f s, p99 %.2f s, max %.2f s", lag.p50, lag.p99, lag.max)) }
        if let w = writeLatencyMs { lines.append(String(format: "write latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d writes)", w.p50, w.p99, w.max, w.samples)) }
        if let s = writeStallMs {
            lines.append(String(format: "write stall per switch: p50 %.0f ms, p99 %.0f ms, max %.0f ms", s.p50, s.p99, s.max))
        } else {
            lines.append("write stall per switch: none measured (\(cutover))")
        }
        let survived = faults.filter { $0.injected && $0.survived }.count
        lines.append("faults: \(faults.filter(\.injected).count) injected, \(survived) survived, \(faults.filter { !$0.injected }.count) not reached")
        for f in faults {
            let state = !f.injected ? "not reached" : f.survived ? "survived" : "NOT SURVIVED"
            lines.append("  \(f.kind) \(f.target) at \(f.point)\(f.at.map { String(format: " (t=%.1f s)", $0) } ?? ""): \(state)\(f.note.map { "; \($0)" } ?? "")")
        }
        let l = ledger
        lines.append(
            "ledger: \(l.loaded) rows loaded, \(l.acknowledged) writes acknowledged (\(String(format: "%.0f", l.writesPerSecond))/s, \(l.shardKeyMoves) shard-key changes\(l.throughRouter ? ", through ReshardRouter" : "")), \(l.failed) failed, \(l.inDoubt) in doubt; found \(l.found), lost \(l.lost), duplicated \(l.duplicated), misplaced \(l.misplaced), unacknowledged seen \(l.unacknowledgedSeen)")
        lines.append(String(
            format: "ledger bookkeeping: %.1f%% of one core during the backfill (this process, every thread; writers alone %.1f%% over the run, "
                + "%.1f%% outside their database calls)",
            l.cpuShareOfOneCore * 100, l.workloadThreadsCPUShare * 100, l.bookkeepingCPUShare * 100))
        for layout in layouts {
            let t = layout.totals
            lines.append("  \(layout.layout) layout: \(t.found) of \(t.expected) found\(t.clean ? "" : ", lost \(t.lost), duplicated \(t.duplicated), misplaced \(t.misplaced), unacknowledged \(t.unacknowledgedSeen)")")
            for problem in layout.problems { lines.append("    \(problem)") }
        }
        for anomaly in applicationAnomalies { lines.append("application saw: \(anomaly)") }
        for failure in stepFailures { lines.append("step failed: \(failure)") }
        for leftover in leftovers { lines.append("left behind: \(leftover)") }
        lines.append(String(format: "verdict: %@ (%.1f s)", verdict.uppercased(), seconds))
        return lines.joined(separator: "\n")
    }
}
