import Foundation

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
}
