import Foundation
import PostgresClient

/// How `cutover` and `rollback` run.
public struct SwitchOptions: Sendable {
    /// Run the checks and print the steps, change nothing.
    public var dryRun = false
    /// The longest the application's writes may be held up: from the barrier to the release.
    /// Half of it is the barrier's `lock_timeout`.
    public var maxStallSeconds = 2.0
    public var skipVerify = false
    /// A transaction on the serving layout open longer than this refuses the switch: the
    /// barrier would wait for it.
    public var maxTransactionAgeSeconds = 60.0
    /// Values added to the highest one any layout handed out when sequences are advanced.
    public var sequenceMargin: Int64 = 10_000
    /// The backlog the catch-up before the stall leaves at most (what the drain applies within it).
    public var maxBacklog = 200
    /// How long the catch-up before the stall may take to get there.
    public var catchUpSeconds = 60.0
    public var maxConnectionsPerShard = 4
    /// `--pgbouncer`: admin consoles of PgBouncers in front of the application; the shards'
    /// databases are paused on them for the stall (`LayoutSwitch+PgBouncer`).
    public var pgBouncers: [ConnectionString] = []

    public init() {}

    /// `2s`, `500ms`, `1.5s`, `5m`, `1h`, `2d`, or plain seconds; `option` names the flag in errors.
    public static func seconds(_ text: String, option: String) throws -> Double {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value >= 0, value.isFinite { return value * factor }
        }
        if let value = Double(text), value >= 0, value.isFinite { return value }
        throw ReshardError.badInput("\(option): '\(text)' is not a duration (for example 2s, 500ms, 10m)")
    }
}

/// The two layouts of a switch as places: for each database, the names the migrated tables have
/// there (in plan order). `from` serves now, `to` takes over.
public struct SwitchPlaces: Sendable {
    public var from: [(shard: String, names: [QualifiedName])]
    public var to: [(shard: String, names: [QualifiedName])]
    /// Shard name -> the other name of the same database (a target that is a source's database,
    /// both ways).
    var sameDatabase: [String: String]

    /// Every database of either layout, once, by the first of its names (`from`'s first: the
    /// barrier's sessions are `from`'s). A shared database is one fence: flipped twice it would
    /// cost a second round trip inside the stall.
    public var databases: [String] {
        var seen: Set<String> = []
        return (from + to).map(\.shard).filter { shard in
            guard seen.insert(shard).inserted else { return false }
            guard let other = sameDatabase[shard] else { return true }
            return !seen.contains(other)
        }
    }

    /// Where the tables are is `TableLocations.places` (the names on shared databases depend on
    /// whether their swap happened). `sameDatabase`: target -> the source whose database it is.
    public init(from: [(shard: String, names: [QualifiedName])], to: [(shard: String, names: [QualifiedName])], sameDatabase: [String: String] = [:]) {
        self.from = from
        self.to = to
        var both = sameDatabase
        for (target, source) in sameDatabase { both[source] = target }
        self.sameDatabase = both
    }

    var sequencePlaces: SequenceSync.Places { .init(from: from, to: to) }
}
