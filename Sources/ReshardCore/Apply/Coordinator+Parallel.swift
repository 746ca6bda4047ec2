import Foundation
import PostgresClient

extension Coordinator {
    /// Runs `jobs`, at most `--max-connections-per-shard` at a time (`BoundedParallel`), and waits
    /// for every one of them. For the fixed steps of `apply` that are one database's work each and
    /// do not depend on each other (a target's tables, a source's shim, a target's indexes): the
    /// step then takes about as long as the slowest database, not the sum of them all. Returns each
    /// job's duration, in order; throws the first failed job's error. Connections the jobs open
    /// through `connect` are tracked, so a stop cancels them as any other.
    @discardableResult
    func inParallel(_ name: String, _ jobs: [@Sendable () throws -> Void]) throws -> [Double] {
        try BoundedParallel.run(name, atOnce: options.maxConnectionsPerShard, jobs)
    }

    /// The sessions a piece of work needs (a slice's source, target and metadata sessions; a
    /// target job's source and target), their handshakes made at once, each on a thread of its
    /// own: one after another they delayed the work by two or three handshakes (TCP, SCRAM, a
    /// backend, a settings round trip). In order; throws the first failure in that order (the
    /// sessions already opened are closed as they go).
    func connectAtOnce(_ openers: [@Sendable () throws -> PGConnection]) throws -> [PGConnection] {
        let opened = OpenedSessions(count: openers.count)
        try BoundedParallel.run("reshard connect", atOnce: openers.count, openers.indices.map { index in
            { opened.set(index, try openers[index]()) }
        })
        return opened.all
    }

    /// `connectAtOnce` for a source session and a target session.
    func connectAtOnce(source: String, target: String, sourceSettings: [String: String] = [:]) throws -> (source: PGConnection, target: PGConnection) {
        let both = try connectAtOnce([{ [self] in try connect(source, settings: sourceSettings) }, { [self] in try connect(target) }])
        return (both[0], both[1])
    }
}

/// The sessions `connectAtOnce`'s threads opened. Why `@unchecked Sendable`: every field is read
/// and written under `lock`.
private final class OpenedSessions: @unchecked Sendable {
    private let lock = NSLock()
    private var sessions: [PGConnection?]
    init(count: Int) { sessions = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ session: PGConnection) { lock.withLock { sessions[index] = session } }
    /// Every session; called only once every opener succeeded.
    var all: [PGConnection] { lock.withLock { sessions.map { $0! } } }
}
