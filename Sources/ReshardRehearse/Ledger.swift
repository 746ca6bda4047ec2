import Foundation
import PostgresClient
import ReshardRouting

/// The client side's record of what the database acknowledged: per row (table and unique key),
/// the states it may be in now. A write enters it only once its COMMIT returned; a write that
/// failed with a server error (rolled back) leaves the state as it was; a write whose outcome is
/// unknown (the connection broke before the answer) makes both the old and the new state
/// acceptable, and the workload writes that row no more.
///
/// Why `@unchecked Sendable`: every field is guarded by `lock`.
public final class Ledger: @unchecked Sendable {
    public struct Key: Hashable, Sendable, Comparable {
        public var table: QualifiedName
        /// `ROW(unique key columns)::text` as the server printed it.
        public var key: String
        public init(table: QualifiedName, key: String) {
            self.table = table
            self.key = key
        }
        public static func < (a: Key, b: Key) -> Bool { (a.table.description, a.key) < (b.table.description, b.key) }
        public var description: String { "\(table) \(key)" }
    }

    public enum State: Hashable, Sendable {
        case absent
        /// The row's text (`ROW(every column)::text`), and the values of its routing columns.
        case present(row: String, shardKey: String, placementKey: String)
    }

    /// The row text of a state whose text is unknown (a write in doubt): any text matches.
    public static let anyRow = "*"

    public enum Outcome: String, Sendable, Codable {
        case acknowledged, failed, inDoubt = "in-doubt"
    }

    struct Entry {
        var accepted: [State]
        var lastWriteFailed = false
    }

    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]
    private var counts: [Outcome: Int] = [:]
    private var loadedRows = 0
    /// (seconds since `start`, latency in seconds) of every acknowledged write.
    private var samples: [(Float, Float)] = []
    public let start = Date()

    public init() {}

    /// Rows the loader committed before the rehearsal started.
    public func loaded(_ key: Key, _ state: State) {
        lock.withLock {
            entries[key] = Entry(accepted: [state])
            loadedRows += 1
        }
    }

    /// Records one write to `key` that would take it from its current state to `state`.
    public func record(_ key: Key, _ state: State, _ outcome: Outcome, started: Date, latency: TimeInterval) {
        lock.withLock {
            counts[outcome, default: 0] += 1
            switch outcome {
            case .acknowledged:
                entries[key] = Entry(accepted: [state])
                samples.append((Float(started.timeIntervalSince(start)), Float(latency)))
            case .failed:
                entries[key, default: Entry(accepted: [.absent])].lastWriteFailed = true
            case .inDoubt:
                var entry = entries[key] ?? Entry(accepted: [.absent])
                if !entry.accepted.contains(state) { entry.accepted.append(state) }
                entries[key] = entry
            }
        }
    }

    public var acknowledged: Int { lock.withLock { counts[.acknowledged] ?? 0 } }
    public var failed: Int { lock.withLock { counts[.failed] ?? 0 } }
    public var inDoubt: Int { lock.withLock { counts[.inDoubt] ?? 0 } }
    public var loaded: Int { lock.withLock { loadedRows } }

    /// Latency samples of acknowledged writes: (seconds since the ledger started, latency seconds).
    public var latencySamples: [(Float, Float)] { lock.withLock { samples } }

    /// The states each key may be in, for the checker.
    public func expectations() -> [Key: [State]] { lock.withLock { entries.mapValues(\.accepted) } }

    /// Keys whose last write failed (for naming an unacknowledged write that appeared).
    public func failedLast() -> Set<Key> { lock.withLock { Set(entries.filter { $0.value.lastWriteFailed }.keys) } }
}

/// Proves a layout holds what the ledger says: every acknowledged write present exactly once, on
/// the shard that owns it, and nothing that was not acknowledged. Pure: the rows are read by the
/// caller with independent SQL (`LayoutReader`).
public struct LedgerCheck: Sendable {
    /// One row as read from one shard of a layout.
    public struct Observation: Sendable, Equatable {
        public var key: Ledger.Key
        public var shard: Int
        public var row: String
        public init(key: Ledger.Key, shard: Int, row: String) {
            self.key = key
            self.shard = shard
            self.row = row
        }
    }

    public struct Totals: Sendable, Codable, Equatable {
        /// Rows the ledger expects in the layout, and those found where and as expected.
        public var expected = 0
        public var found = 0
        public var lost = 0
        public var duplicated = 0
        public var misplaced = 0
        /// Rows no acknowledged write explains: an unacknowledged write that landed, or a stray row.
        public var unacknowledgedSeen = 0

        public var clean: Bool { lost == 0 && duplicated == 0 && misplaced == 0 && unacknowledgedSeen == 0 }
    }

    public struct Result: Sendable {
        public var layout: String
        public var totals: Totals
        /// One line per problem (the first `maxProblems`), naming table, key and shard.
        public var problems: [String]
    }

    public static let maxProblems = 20

    /// - Parameters:
    ///   - owner: the shard index a present state belongs to in this layout.
    ///   - shardNames: for messages.
    public static func check(
        layout: String, expectations: [Ledger.Key: [Ledger.State]], failedLast: Set<Ledger.Key> = [], observations: [Observation],
        shardNames: [String], owner: (Ledger.State) throws -> Int
    ) rethrows -> Result {
        var seen: [Ledger.Key: [Observation]] = [:]
        for observation in observations { seen[observation.key, default: []].append(observation) }
        var totals = Totals()
        var problems: [String] = []
        func problem(_ text: String) { if problems.count < maxProblems { problems.append(text) } }
        func name(_ shard: Int) -> String { shard < shardNames.count ? shardNames[shard] : "shard \(shard)" }

        for (key, accepted) in expectations.sorted(by: { $0.key < $1.key }) {
            let rows = seen.removeValue(forKey: key) ?? []
            if accepted.contains(where: { if case .present = $0 { true } else { false } }) { totals.expected += 1 }
            var matches = false
            for state in accepted {
                switch state {
                case .absent: if rows.isEmpty { matches = true }
                case .present(let row, _, _):
                    if rows.count == 1, row == Ledger.anyRow || rows[0].row == row, rows[0].shard == (try owner(state)) { matches = true }
                }
                if matches { break }
            }
            if matches {
                if !rows.isEmpty { totals.found += 1 }
                continue
            }
            let wanted = accepted.compactMap { state -> (String, Int)? in
                if case .present(let row, _, _) = state { return (row, (try? owner(state)) ?? -1) }
                return nil
            }
            if rows.count > 1 {
                totals.duplicated += 1
                problem("duplicated: \(key.table) key \(key.key) is on \(rows.map { name($0.shard) }.joined(separator: ", "))")
            } else if rows.isEmpty {
                totals.lost += 1
                problem("lost: \(key.table) key \(key.key) (acknowledged \(wanted.first.map { $0.0 } ?? "")) is on no shard of the \(layout) layout, expected on \(wanted.first.map { name($0.1) } ?? "?")")
            } else if wanted.isEmpty {
                // Acknowledged as deleted (or never acknowledged), yet there.
                if failedLast.contains(key) {
                    totals.unacknowledgedSeen += 1
                    problem("unacknowledged write appeared: \(key.table) key \(key.key) on \(name(rows[0].shard))")
                } else {
                    totals.lost += 1
                    problem("lost: the acknowledged delete of \(key.table) key \(key.key): the row is still on \(name(rows[0].shard))")
                }
            } else if !wanted.contains(where: { $0.1 == rows[0].shard }) {
                totals.misplaced += 1
                problem("misplaced: \(key.table) key \(key.key) is on \(name(rows[0].shard)), owned by \(name(wanted[0].1))")
            } else if failedLast.contains(key) {
                totals.unacknowledgedSeen += 1
                problem("unacknowledged write appeared: \(key.table) key \(key.key) on \(name(rows[0].shard)) holds \(rows[0].row)")
            } else {
                totals.lost += 1
                problem("lost: an acknowledged write to \(key.table) key \(key.key): \(name(rows[0].shard)) holds \(rows[0].row), acknowledged \(wanted[0].0)")
            }
        }
        for (key, rows) in seen.sorted(by: { $0.key < $1.key }) {
            totals.unacknowledgedSeen += 1
            problem("unacknowledged row: \(key.table) key \(key.key) on \(rows.map { name($0.shard) }.joined(separator: ", ")), no acknowledged write made it")
        }
        return Result(layout: layout, totals: totals, problems: problems)
    }
}
