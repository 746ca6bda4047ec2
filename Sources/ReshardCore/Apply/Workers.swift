import Foundation
import PostgresClient

/// The threads of a long command: the coordinator's (one per backfill worker, per catch-up
/// source, for the lag checks) and verify's (one per chunk job).
///
/// libpq calls block for as long as a statement runs, so each piece of work that talks to a shard
/// gets a thread of its own (never Swift's cooperative pool). A worker registers the connections
/// it opens (`track`), which is what makes stopping bounded: `stop` first lets the workers finish
/// what they are doing, then cancels the statements still running on their connections
/// (`PGConnection.cancel()`), and finally gives up waiting and names the threads that did not end.
///
/// A component that needs N threads with their own connections asks with `start(_:count:)`; the
/// stop flag, the interruptible waits and the retries live in `ApplyState` and `RetryPolicy`.
///
/// Why `@unchecked Sendable`: every field is read and written under `condition`.
final class Workers: @unchecked Sendable {
    private let condition = NSCondition()
    /// Threads still running, by name.
    private var running: [String: Int] = [:]
    /// Connections opened by workers; weak, so a connection a worker dropped is simply gone.
    private var connections: [WeakConnection] = []

    private struct WeakConnection {
        weak var connection: PGConnection?
    }

    /// Starts one named thread running `body`.
    func start(_ name: String, _ body: @escaping @Sendable () -> Void) {
        condition.withLock { running[name, default: 0] += 1 }
        let thread = Thread { [self] in
            body()
            condition.withLock {
                running[name, default: 1] -= 1
                if running[name] == 0 { running[name] = nil }
                condition.broadcast()
            }
        }
        thread.name = name
        thread.start()
    }

    /// Starts `count` threads named `name 0`, `name 1`..., each running `body` with its index.
    func start(_ name: String, count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        for index in 0..<count { start("\(name) \(index)") { body(index) } }
    }

    /// Registers a connection a worker uses, so `stop` can cancel its statement. Returns it.
    @discardableResult
    func track(_ connection: PGConnection) -> PGConnection {
        condition.withLock {
            connections.removeAll { $0.connection == nil }
            connections.append(WeakConnection(connection: connection))
        }
        return connection
    }

    /// Names of the threads still running.
    var runningNames: [String] { condition.withLock { running.keys.sorted() } }

    /// Waits for the threads to end once they were told to stop (`ApplyState.stop()`): up to
    /// `grace` seconds for them to finish their statements, then cancels what still runs on their
    /// connections and waits up to `afterCancel` more. Returns the names of the threads that still
    /// had not ended (empty when all did).
    @discardableResult
    func stop(grace: TimeInterval = 10, afterCancel: TimeInterval = 5) -> [String] {
        if waitForAll(until: Date().addingTimeInterval(grace)) { return [] }
        let live = condition.withLock { connections.compactMap(\.connection) }
        for connection in live { _ = connection.cancel() }
        if waitForAll(until: Date().addingTimeInterval(afterCancel)) { return [] }
        return runningNames
    }

    /// Waits up to `seconds` for every thread to end; returns whether they all did.
    func wait(seconds: TimeInterval) -> Bool { waitForAll(until: Date().addingTimeInterval(seconds)) }

    private func waitForAll(until deadline: Date) -> Bool {
        condition.withLock {
            while !running.isEmpty {
                if !condition.wait(until: deadline) { return running.isEmpty }
            }
            return true
        }
    }
}
