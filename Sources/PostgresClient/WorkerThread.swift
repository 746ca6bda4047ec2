import Foundation

/// A thread of its own that runs submitted jobs in order.
///
/// libpq calls block for as long as a statement runs. Swift's cooperative pool has one thread per
/// core (two on a small machine), so one blocked libpq call there can stall the whole program.
/// Each connection that is used from async code gets one of these instead.
///
/// Why `@unchecked Sendable`: the job queue is only touched under `condition`.
public final class WorkerThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var stopping = false
    private var thread: Thread?
    private var threadID: pthread_t?

    public init(name: String) {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = name
        self.thread = thread
        thread.start()
    }

    deinit { shutdown() }

    private func loop() {
        condition.withLock { threadID = pthread_self() }
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty && stopping {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Whether the caller is running on this worker's thread.
    public var isCurrent: Bool {
        condition.withLock { threadID.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
    }

    /// Queues `job`; it runs after the jobs queued before it.
    public func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        precondition(!stopping, "job submitted to a stopped WorkerThread")
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `body` on this thread and resumes the caller with its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { continuation.resume(with: Result { try body() }) }
        }
    }

    /// Lets queued jobs finish, then ends the thread. Idempotent.
    public func shutdown() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }
}

/// A connection paired with its own thread: the way async code talks to a shard.
public final class ConnectionWorker: Sendable {
    public let connection: PGConnection
    /// The thread every `run` body executes on.
    public let thread: WorkerThread

    public init(connection: PGConnection, name: String? = nil) {
        self.connection = connection
        self.thread = WorkerThread(name: name ?? "pg \(connection.endpoint)")
    }

    deinit { thread.shutdown() }

    /// Runs `body` with the connection on the worker's thread. Cancelling the calling Task cancels
    /// the statement on the server, so a cancelled task does not leave a query running.
    public func run<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let connection = self.connection
        return try await withTaskCancellationHandler {
            try await thread.run { try body(connection) }
        } onCancel: {
            connection.cancel()
        }
    }
}
