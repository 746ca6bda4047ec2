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

    /// `body` of each of `items`, their results in order, every item on a thread of its own
    /// (`run`'s bounds and errors); one item runs on the calling thread, with no thread's start.
    static func map<Item: Sendable, Value: Sendable>(
        _ name: String, _ items: [Item], atOnce: Int, _ body: @escaping @Sendable (Item) throws -> Value
    ) throws -> [Value] {
        if items.count == 1 { return [try body(items[0])] }
        let values = Values<Value>(count: items.count)
        try run(name, atOnce: atOnce, items.indices.map { index in { values.set(index, try body(items[index])) } })
        return values.all
    }

    /// Why `@unchecked Sendable`: every slot is read and written under `lock`, each by one job.
    private final class Values<Value>: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [Value?]
        init(count: Int) { slots = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ value: Value) { lock.withLock { slots[index] = value } }
        var all: [Value] { lock.withLock { slots.map { $0! } } }
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
