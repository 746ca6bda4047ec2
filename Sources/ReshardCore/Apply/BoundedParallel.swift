import Foundation

/// Runs blocking jobs on a few threads of their own (they block in libpq, so never on Swift's
/// cooperative pool), at most `atOnce` at a time, and waits for every one of them.
///
/// Bounded because each job of `apply`'s fixed steps holds sessions of its own while it runs: 16
/// targets times 10 tables at once would take 160 of the first source's connections (PostgreSQL's
/// default `max_connections` is 100), starve the application's own, and run as many `CREATE INDEX`
/// on a live primary.
enum BoundedParallel {
    /// Each job's duration, in order. Once every started job has ended (none is left running
    /// behind a failure, and none starts after one), throws the error of the first job that
    /// failed, in the order given.
    @discardableResult
    static func run(_ name: String, atOnce: Int, _ jobs: [@Sendable () throws -> Void]) throws -> [Double] {
        let outcome = Outcome(count: jobs.count)
        let group = DispatchGroup()
        for lane in 0..<min(jobs.count, max(1, atOnce)) {
            group.enter()
            let thread = Thread {
                while let index = outcome.next() {
                    let start = Date()
                    do { try jobs[index]() } catch { outcome.failed(index, error) }
                    outcome.took(index, Date().timeIntervalSince(start))
                }
                group.leave()
            }
            thread.name = "\(name) \(lane)"
            thread.start()
        }
        group.wait()
        return try outcome.result()
    }

    /// The jobs' durations and errors of one `run`, and which job is next, shared by its threads.
    /// Why `@unchecked Sendable`: every field is read and written under `lock`.
    private final class Outcome: @unchecked Sendable {
        private let lock = NSLock()
        private var seconds: [Double]
        private var errors: [Int: any Error] = [:]
        private var started = 0

        init(count: Int) { seconds = Array(repeating: 0, count: count) }

        /// The next job to run, or nil once all have started or one has failed.
        func next() -> Int? {
            lock.withLock {
                guard errors.isEmpty, started < seconds.count else { return nil }
                defer { started += 1 }
                return started
            }
        }

        func failed(_ index: Int, _ error: any Error) { lock.withLock { errors[index] = error } }
        func took(_ index: Int, _ duration: Double) { lock.withLock { seconds[index] = duration } }

        func result() throws -> [Double] {
            try lock.withLock {
                if let first = errors.keys.min() { throw errors[first]! }
                return seconds
            }
        }
    }
}
