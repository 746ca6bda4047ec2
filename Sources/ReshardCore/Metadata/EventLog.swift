import Logging
import PostgresClient

/// What happened when: every event reshard records (phase changes, retries, errors, what abort
/// removed) goes to `reshard.events` with its time, for `status`, and to swift-log, for the
/// operator's log pipeline (`--log-format text|json`). One place writes both, so the two never
/// disagree. Messages are reshard's own words or scrubbed server errors, never connection strings,
/// so no password can reach either.
public enum EventLog {
    public static let logger = Logger(label: "reshard")

    /// Inserts the event (inside the caller's transaction, when there is one) and logs it.
    public static func record(
        migration: String, level: String = "info", _ message: String, shard: String? = nil, on conn: PGConnection
    ) throws {
        try conn.query(
            "INSERT INTO reshard.events (migration, level, message, shard) VALUES ($1, $2, $3, $4)", [migration, level, message, shard])
        log(migration: migration, level: level, message, shard: shard)
    }

    /// Logs without recording (the metadata database is out of reach).
    public static func log(migration: String, level: String, _ message: String, shard: String? = nil) {
        var metadata: Logger.Metadata = ["migration": .string(migration)]
        if let shard { metadata["shard"] = .string(shard) }
        let swiftLevel: Logger.Level = level == "error" ? .error : level == "warning" ? .warning : .info
        logger.log(level: swiftLevel, "\(message)", metadata: metadata)
    }
}
