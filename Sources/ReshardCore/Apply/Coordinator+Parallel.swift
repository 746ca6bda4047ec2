import Foundation

extension Coordinator {
    /// Runs `jobs` at once, each on a thread of its own (they block in libpq, so never on Swift's
    /// cooperative pool), and waits for every one of them. For the fixed steps of `apply` that are
    /// one database's work each and do not depend on each other (a target's tables, a source's
    /// shim, a target's indexes): the step then takes as long as the slowest database, not the sum
    /// of them all. Returns each job's duration, in order; once every job has ended (none is left
    /// running behind a failure), throws the error of the first job that failed, in the order given.
    /// Connections the jobs open through `connect` are tracked, so a stop cancels them as any other.
    @discardableResult
    func inParallel(_ name: String, _ jobs: [@Sendable () throws -> Void]) throws -> [Double] {
        let outcome = ParallelOutcome(count: jobs.count)
        let group = DispatchGroup()
        for (index, job) in jobs.enumerated() {
            group.enter()
            let thread = Thread {
                let start = Date()
                do { try job() } catch { outcome.failed(index, error) }
                outcome.took(index, Date().timeIntervalSince(start))
                group.leave()
            }
            thread.name = "\(name) \(index)"
            thread.start()
        }
        group.wait()
        return try outcome.result()
    }
}

/// The jobs' durations and errors of one `inParallel` call, written by its threads.
/// Why `@unchecked Sendable`: every field is read and written under `lock`.
private final class ParallelOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var seconds: [Double]
    private var errors: [Int: any Error] = [:]

    init(count: Int) { seconds = Array(repeating: 0, count: count) }

    func failed(_ index: Int, _ error: any Error) { lock.withLock { errors[index] = error } }
    func took(_ index: Int, _ duration: Double) { lock.withLock { seconds[index] = duration } }

    func result() throws -> [Double] {
        try lock.withLock {
            if let first = errors.keys.min() { throw errors[first]! }
            return seconds
        }
    }
}
