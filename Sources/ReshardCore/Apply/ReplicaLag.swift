import Foundation
import PostgresClient

/// How far a source's streaming replicas are behind, read by the coordinator's lag checker once a
/// second (`apply --max-replica-lag`; the backfill pauses while it is exceeded, and the catch-up
/// slows down).
///
/// Two views, the larger wins: the primary's own `pg_stat_replication.replay_lag` (every replica
/// streaming from it, listed or not), and each replica listed under `replicas:` asked directly
/// (cascaded or otherwise invisible to the primary), as `now() - pg_last_xact_replay_timestamp()`.
///
/// That timestamp is the commit time of the last transaction replayed, so on an idle primary it
/// grows while the replica is fully caught up. It therefore only counts while the replica has WAL
/// to replay: the primary's WAL position is sampled at every check, and a listed replica's lag is
/// at most the age of the oldest sample it has not replayed yet (`Estimate`). An idle primary
/// reads as no lag; after a write the lag can only grow as fast as the clock, so one late commit
/// after hours of quiet never pauses the backfill. The cost: a replica already behind when
/// `apply` starts is seen lagging only once the samples are as old as its lag.
final class ReplicaLag {
    private let replicas: [String: [ConnectionString]]
    private let settings: [String: String]
    private let track: (PGConnection) -> PGConnection
    private var connections: [ConnectionString: PGConnection] = [:]
    private var estimates: [ConnectionString: Estimate] = [:]

    init(replicas: [String: [ConnectionString]], settings: [String: String], track: @escaping (PGConnection) -> PGConnection) {
        self.replicas = replicas
        self.settings = settings
        self.track = track
    }

    /// The largest lag, in seconds, of `source`'s replicas; throws when the primary or a listed
    /// replica cannot be read (the checker then counts the source as lagging), naming the replica.
    func read(_ source: String, primary: PGConnection) throws -> Double {
        let row = try primary.query(
            "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8, pg_current_wal_lsn()::text FROM pg_stat_replication")
        var lag = try row.get(0, 0, as: Double.self)
        guard let listed = replicas[source], !listed.isEmpty, let primaryLSN = row[0, 1].flatMap(Self.lsn) else { return lag }
        let now = Date()
        for replica in listed {
            do {
                lag = max(lag, try read(replica, primaryLSN: primaryLSN, at: now))
            } catch {
                connections[replica] = nil
                let why = (error as? PostgresError)?.message ?? "\(error)"
                throw ReshardError.failed("replica \(replica): \(why)", shard: source)
            }
        }
        return lag
    }

    private func read(_ replica: ConnectionString, primaryLSN: UInt64, at now: Date) throws -> Double {
        if connections[replica].map({ !$0.isHealthy }) ?? true {
            connections[replica] = nil
            connections[replica] = track(try PGConnection.connect(replica, applicationName: "reshard apply", settings: settings))
        }
        let row = try connections[replica]!.query(
            """
            SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
                   extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
            """)
        guard try row.get(0, 0, as: Bool.self), let replayed = row[0, 1].flatMap(Self.lsn) else {
            throw ReshardError.failed("is not a streaming replica (not in recovery)")
        }
        var estimate = estimates[replica] ?? Estimate()
        estimate.sample(primaryLSN: primaryLSN, at: now)
        let lag = estimate.lag(replayed: replayed, sinceLastReplay: row[0, 2].flatMap(Double.init), at: now)
        estimates[replica] = estimate
        return lag
    }

    /// `16/B374D848` as a number.
    static func lsn(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let high = UInt64(parts[0], radix: 16), let low = UInt64(parts[1], radix: 16) else { return nil }
        return high << 32 | low
    }

    /// One listed replica's lag from the primary's WAL positions sampled at each check and what
    /// the replica has replayed (see `ReplicaLag`).
    struct Estimate {
        /// The primary's WAL position at recent checks the replica had not replayed, oldest first.
        private(set) var samples: [(lsn: UInt64, at: Date)] = []

        mutating func sample(primaryLSN: UInt64, at now: Date) {
            if samples.last.map({ $0.lsn < primaryLSN }) ?? true { samples.append((primaryLSN, now)) }
            // A day of checks at most: older samples only matter while the replica is a day behind.
            if samples.count > 86_400 { samples.removeFirst(samples.count - 86_400) }
        }

        /// Seconds behind: 0 when everything sampled is replayed, else the age of the oldest
        /// sample not replayed, or the replay timestamp's age when that is smaller.
        mutating func lag(replayed: UInt64, sinceLastReplay: Double?, at now: Date) -> Double {
            samples.removeAll { $0.lsn <= replayed }
            guard let oldest = samples.first else { return 0 }
            let age = now.timeIntervalSince(oldest.at)
            return max(0, min(age, sinceLastReplay ?? age))
        }
    }
}

extension ApplyState {
    /// Whether some source's replicas lag more than `maxLagSeconds` (the catch-up then slows down).
    func replicasLag(maxLagSeconds: Double) -> Bool {
        lag.values.contains { if case .seconds(let s) = $0 { return s > maxLagSeconds } else { return false } }
    }

    /// The lag last read per source, in seconds (sources whose lag cannot be read are left out),
    /// for the progress line and the metrics.
    var replicaLagSeconds: [String: Double] {
        lag.compactMapValues { if case .seconds(let s) = $0 { return s } else { return nil } }
    }
}
