import Foundation
import PostgresClient

/// The planner's sessions, opened all at once: every source, every target and the metadata
/// database. Each connection costs a handshake (TCP, SCRAM, a backend started, one round trip for
/// its settings); one after another they were a fixed cost of every `plan` and every `apply`,
/// paid once per database. What each opening finds (its connection, or the problem to report) is
/// kept in the order of the config, so the messages and their order are as before.
extension Planner {
    /// One shard's session, or why there is none.
    struct Opened {
        var connected: Connected?
        var problem: String?
        /// A transient cause (a server restarting), which makes the refusal a runtime failure.
        var transient: PostgresError?
    }

    /// The metadata database's recorded phase of this migration, or why it could not be read.
    struct MetadataReading {
        var recordedPhase: String?
        var problem: String?
        var transient: PostgresError?
        /// Anything but a connection's error, thrown as the planner did before.
        var failure: (any Error)?
    }

    /// Opens every source and target, and reads the metadata's recorded phase, at once (at most
    /// `atOnce` handshakes at a time), on threads of their own (libpq blocks).
    func openAll(atOnce: Int = 8) -> (sources: [Opened], targets: [Opened], metadata: MetadataReading) {
        let shards = config.sources.map { ($0, "source") } + config.targets.map { ($0, "target") }
        let results = Results(count: shards.count)
        var jobs: [@Sendable () throws -> Void] = shards.enumerated().map { index, shard in
            { results.set(index, Self.open(shard.0, role: shard.1)) }
        }
        let metadataDSN = config.metadata, migration = config.migration
        jobs.append { results.metadata = Self.readMetadata(metadataDSN, migration: migration) }
        // The jobs catch their own errors: `run` has none to throw.
        _ = try? BoundedParallel.run("reshard plan connect", atOnce: atOnce, jobs)
        let opened = results.opened
        return (Array(opened.prefix(config.sources.count)), Array(opened.dropFirst(config.sources.count)), results.metadata)
    }

    /// A read-only session to `shard` (every planner session is: a bug here cannot write), on a
    /// UTF8 database; else the problem, naming the shard and its role.
    static func open(_ shard: ReshardConfig.Shard, role: String) -> Opened {
        do {
            let connection = try PGConnection.connect(
                shard.dsn, applicationName: "reshard plan", settings: ["default_transaction_read_only": "on"])
            let encoding = try connection.query("SELECT current_setting('server_encoding')")[0, 0] ?? ""
            guard encoding == "UTF8" else {
                return Opened(problem: "\(role) shard \(shard.name): server encoding is \(encoding); reshard supports UTF8 databases only")
            }
            let database = try connection.query("SELECT current_database()")[0, 0] ?? ""
            return Opened(connected: Connected(shard: shard, connection: connection, database: database, role: role))
        } catch let error as PostgresError {
            return Opened(
                problem: "\(role) shard \(shard.name): cannot connect to \(error.endpoint?.description ?? "\(shard.dsn)"): \(error.message)",
                transient: error.isTransient ? error : nil)
        } catch {
            return Opened(problem: "\(role) shard \(shard.name): \(error)")
        }
    }

    static func readMetadata(_ dsn: ConnectionString, migration: String) -> MetadataReading {
        do {
            let metadata = try PGConnection.connect(dsn, applicationName: "reshard plan", settings: ["default_transaction_read_only": "on"])
            return MetadataReading(recordedPhase: try recordedPhase(of: migration, on: metadata))
        } catch let error as PostgresError {
            return MetadataReading(
                problem: "metadata: cannot connect to \(error.endpoint?.description ?? "\(dsn)"): \(error.message)",
                transient: error.isTransient ? error : nil)
        } catch {
            return MetadataReading(failure: error)
        }
    }

    /// What the opening threads found. Why `@unchecked Sendable`: every field is read and written
    /// under `lock`.
    private final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var shards: [Opened]
        private var reading = MetadataReading()
        init(count: Int) { shards = Array(repeating: Opened(), count: count) }
        func set(_ index: Int, _ opened: Opened) { lock.withLock { shards[index] = opened } }
        var opened: [Opened] { lock.withLock { shards } }
        var metadata: MetadataReading {
            get { lock.withLock { reading } }
            set { lock.withLock { reading = newValue } }
        }
    }
}
