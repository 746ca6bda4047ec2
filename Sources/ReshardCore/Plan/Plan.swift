import ReshardRouting
import Foundation
import PostgresClient

/// The output of `reshard plan` and the input of `reshard apply`: what moves where, with the
/// schema fingerprints that let `apply` refuse a plan whose tables changed since.
public struct Plan: Sendable, Codable, Equatable {
    public struct Shard: Sendable, Codable, Equatable {
        public var name: String
        /// `user@host:port/db`, for people.
        public var endpoint: String
        /// The connection string without its password.
        public var dsn: String
        /// For a target: the source it is the same database as.
        public var sameAsSource: String?
        /// Read replicas the config lists for the shard (as the plan stores connection strings),
        /// published in the shard map for applications' reads, and watched on sources by
        /// `apply --max-replica-lag` (`ReplicaLag`); nil when none.
        public var replicas: [String]? = nil
    }

    public struct Slice: Sendable, Codable, Equatable {
        public var source: String
        public var target: String
        public var estimatedRows: Int64
        public var estimatedBytes: Int64
        /// The target is the source's own database: these rows are already in place.
        public var staysInPlace: Bool
    }

    public struct Table: Sendable, Codable, Equatable {
        public var name: QualifiedName
        public var key: String
        public var keyType: KeyType
        public var columns: [TableSchema.Column]
        public var uniqueKey: [String]
        public var fingerprint: String
        /// How the estimates were made: `exact` (small tables) or `sample` (statistics and a row sample).
        public var estimateMethod: String
        public var slices: [Slice]
        /// The column today's placement reads (`key` unless the config names another), and its
        /// type; nil when the config does not describe today's placement.
        public var sourceKey: String? = nil
        public var sourceKeyType: KeyType? = nil
        /// Whether some place this table's rows are written to (a target the user created, or a
        /// source that is also a target) has an identity `GENERATED ALWAYS` column: inserts there
        /// need `OVERRIDING SYSTEM VALUE`. Recorded by plan; nil in older plans.
        public var identityAlways: Bool? = nil

        public var identityAlwaysOnTarget: Bool { identityAlways ?? columns.contains { $0.identity == "always" } }

        /// Distinct shard key values across the sources, from the statistics, when they have them.
        public var distinctKeys: Int64? = nil

        public var estimatedRows: Int64 { slices.reduce(0) { $0 + $1.estimatedRows } }
        public var estimatedBytes: Int64 { slices.reduce(0) { $0 + $1.estimatedBytes } }
        public var movingRows: Int64 { slices.filter { !$0.staysInPlace }.reduce(0) { $0 + $1.estimatedRows } }
        public var movingBytes: Int64 { slices.filter { !$0.staysInPlace }.reduce(0) { $0 + $1.estimatedBytes } }
    }

    public var formatVersion = 1
    public var migration: String
    /// The metadata database's connection string, without its password.
    public var metadata: String
    public var function: ShardFunction
    /// How rows are placed on the sources today (`source.function`), when the config says.
    public var sourceFunction: ShardFunction? = nil
    public var sources: [Shard]
    public var targets: [Shard]
    public var tables: [Table]
    /// The phase the metadata records for this migration, when it is already under way.
    public var recordedPhase: String?
    /// What plan could not rule out and the user should know (nil when nothing).
    public var warnings: [String]? = nil
    /// The schema a shared target's tables are written in when not `Plan.buildSchema`: the reversed
    /// plan (`Plan.reversed()`) writes the old layout's tables kept in `Plan.oldSchema` after cutover.
    public var sharedBuildSchema: String? = nil

    public var estimatedRows: Int64 { tables.reduce(0) { $0 + $1.estimatedRows } }
    public var movingRows: Int64 { tables.reduce(0) { $0 + $1.movingRows } }
    public var movingBytes: Int64 { tables.reduce(0) { $0 + $1.movingBytes } }
    public var movingFraction: Double { estimatedRows == 0 ? 0 : Double(movingRows) / Double(estimatedRows) }
}

extension Plan {
    /// The plan as a person reads it: one block per table, one line per slice.
    /// Why a table's new layout may be lopsided, for `plan` to warn about (not to refuse: a skewed
    /// key can be deliberate): a target estimated to get more than twice the mean share of the
    /// table, or a key with fewer distinct values than there are targets.
    public static func skewWarnings(_ table: Table, targets: Int) -> [String] {
        var warnings: [String] = []
        if let distinct = table.distinctKeys, distinct < Int64(targets) {
            warnings.append(
                "table \(table.name): shard key \(table.key) has about \(distinct) distinct value(s) for \(targets) targets: some targets will get none")
        }
        let total = table.estimatedRows
        guard total > 0, targets > 1 else { return warnings }
        let mean = Double(total) / Double(targets)
        var rowsByTarget: [String: Int64] = [:]
        for slice in table.slices { rowsByTarget[slice.target, default: 0] += slice.estimatedRows }
        for (target, rows) in rowsByTarget.sorted(by: { $0.key < $1.key }) where Double(rows) > 2 * mean {
            warnings.append(String(
                format: "table %@: target %@ would get ~%.0f%% of the rows (%.1fx the mean share); the shard key may be skewed",
                table.name.description, target, 100 * Double(rows) / Double(total), Double(rows) / mean))
        }
        return warnings
    }

    public var text: String {
        var lines: [String] = []
        let sameAs = targets.compactMap { t in t.sameAsSource.map { "\(t.name) = \($0)" } }
        lines.append(
            "plan \(migration): \(sources.count) source(s) -> \(targets.count) target(s), \(function.kind.rawValue)"
                + (sameAs.isEmpty ? "" : " (\(sameAs.joined(separator: ", ")))"))
        if let recordedPhase { lines.append("migration is under way: phase \(recordedPhase)") }
        lines += placements.map(\.text)
        for table in tables {
            lines.append("")
            lines.append(
                "table \(table.name) (key \(table.key) \(table.keyType.rawValue)): ~\(count(table.estimatedRows)) rows, \(bytes(table.estimatedBytes)) [\(table.estimateMethod)]")
            for slice in table.slices {
                let label = "  \(slice.source) -> \(slice.target)".padding(toLength: 22, withPad: " ", startingAt: 0)
                lines.append(
                    "\(label)\(count(slice.estimatedRows).leftPadded(14)) rows \(bytes(slice.estimatedBytes).leftPadded(10))\(slice.staysInPlace ? "  stays in place, copied on the server" : "")")
            }
        }
        for warning in warnings ?? [] {
            lines.append("")
            lines.append("warning: \(warning)")
        }
        lines.append("")
        lines.append(
            "moving ~\(count(movingRows)) of ~\(count(estimatedRows)) rows (\(String(format: "%.1f", movingFraction * 100))%), ~\(bytes(movingBytes))")
        return lines.joined(separator: "\n")
    }

    private func count(_ n: Int64) -> String { n.grouped }

    private func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}

extension Int64 {
    /// `1234567` -> `1,234,567`, for people reading row counts.
    public var grouped: String {
        let digits = String(self.magnitude)
        var out = ""
        for (i, c) in digits.reversed().enumerated() {
            if i > 0, i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (self < 0 ? "-" : "") + String(out.reversed())
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
