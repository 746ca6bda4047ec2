import Foundation

/// How `reshard verify` runs.
public struct VerifyOptions: Sendable {
    /// Only these tables (as the plan names them); nil for all.
    public var tables: [String]?
    /// Chunks verified at once; each holds one connection per database.
    public var jobs: Int?
    /// About how many rows a chunk holds.
    public var chunkRows: Int64 = 100_000
    /// Times a differing chunk is scanned again, after its pending changes are applied, before
    /// it is narrowed down to rows.
    public var rechecks = 3
    /// How long to wait for the pending changes of a chunk to be applied.
    public var pendingTimeoutSeconds = 60.0
    /// At most this many differences are stored and reported per table (all are counted).
    public var maxReportedDifferences = 1000
    /// Discard an interrupted run and start again.
    public var restart = false

    public init() {}

    /// The settings that change how values print, pinned on every connection that hashes, so
    /// shards configured differently (or DSNs with their own `options`) hash identical rows alike.
    public static let pinnedSettings: [String: String] = CanonicalText.settings.merging([
        // Chunks are already verified side by side.
        "max_parallel_workers_per_gather": "0",
        // The planner cannot know a chunk's rows fall into at most M target groups and would sort
        // them all for a GroupAggregate; hashing them into M groups is much cheaper.
        "enable_sort": "off",
        // A chunk's key range read through a bitmap visits its heap pages in order, as fast per
        // row as a sequential scan; a plain index scan costs about 20 % more.
        "enable_indexscan": "off",
    ]) { $1 }
}

/// One look at a running verification, for progress lines.
public struct VerifyProgress: Sendable, Codable {
    public var migration: String
    public var chunksDone: Int
    public var chunksTotal: Int
    public var rowsChecked: Int64
    public var rowsPerSecond: Double
    public var etaSeconds: Double?
    public var differences: Int64
    public var rechecks: Int
}

/// What `reshard verify` found: per table, and in all.
public struct VerifyResult: Sendable, Codable {
    public struct Table: Sendable, Codable {
        public var name: String
        public var outcome: String
        public var sourceRows: Int64
        public var targetRows: Int64
        public var chunks: Int
        public var differences: Int64
        /// Chunk and key re-checks made because writes were in flight.
        public var rechecks: Int
        public var startedAt: String
        public var finishedAt: String?
        /// Up to `maxReportedDifferences` of them.
        public var rows: [RowDifference]
    }

    public var migration: String
    public var run: Int
    public var identical: Bool
    public var seconds: Double
    public var tables: [Table]

    public var text: String {
        var lines: [String] = []
        for table in tables {
            let counts = "\(table.sourceRows.grouped) rows on the sources, \(table.targetRows.grouped) on the targets, \(table.chunks) chunk(s)"
                + (table.rechecks > 0 ? ", \(table.rechecks) re-check(s)" : "")
            if table.outcome == "identical" {
                lines.append("table \(table.name): identical (\(counts))")
                continue
            }
            lines.append("table \(table.name): \(table.differences.grouped) difference(s) (\(counts))")
            for row in table.rows {
                let key = "(" + row.key.joined(separator: ", ") + ")"
                let whereFrom = row.source.map { "source \($0) -> target \(row.target)" } ?? "target \(row.target)"
                lines.append("  \(row.kind.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) key \(key) \(whereFrom)")
            }
            if Int64(table.rows.count) < table.differences {
                lines.append("  ... and \((table.differences - Int64(table.rows.count)).grouped) more")
            }
        }
        let different = tables.filter { $0.outcome != "identical" }
        lines.append(
            identical
                ? "verify \(migration): all \(tables.count) table(s) identical (\(String(format: "%.1f", seconds)) s)"
                : "verify \(migration): differences in \(different.count) of \(tables.count) table(s) (\(String(format: "%.1f", seconds)) s)")
        return lines.joined(separator: "\n")
    }
}
