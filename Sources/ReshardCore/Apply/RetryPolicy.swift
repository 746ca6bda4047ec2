import Foundation
import PostgresClient

/// When reshard retries work that a shard or the metadata database interrupted, and when it gives
/// up. One policy serves the backfill, the catch-up, prepare and the coordinator's own metadata
/// connection, so a restarting server is survived the same way wherever it hits.
///
/// Pure: the caller keeps a `RetryPolicy.Run` per piece of work, tells it about each failure and
/// success, and sleeps as it says. Every retry it allows comes back as a `Retry` for the caller to
/// report (event, `status`), so no retry is ever silent.
public struct RetryPolicy: Sendable, Equatable {
    /// The wait after the first failure of a run.
    public var initialDelay: TimeInterval = 0.2
    /// Waits double after every failure up to this.
    public var maxDelay: TimeInterval = 5
    /// How long an unbroken run of failures may last before the work fails for good.
    public var window: TimeInterval = 300

    public init(window: TimeInterval = 300, initialDelay: TimeInterval = 0.2, maxDelay: TimeInterval = 5) {
        self.window = window
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// Whether `error` is worth retrying: a server going away or refusing connections for a while
    /// (restart, failover, network), a serialization failure or deadlock, a server refusing writes
    /// for now (25006: a failover's standby not yet promoted, `default_transaction_read_only`
    /// switched on). Anything else (a missing table, a constraint violation, a wrong password
    /// reported as such) will not fix itself.
    public static func isTransient(_ error: any Error) -> Bool {
        guard let error = error as? PostgresError else { return false }
        return error.isTransient || error.code == .connectionFailed || error.sqlState == "25006"
    }

    /// The wait before the next attempt after `failures` failures in a row (1 or more).
    public func delay(afterFailures failures: Int) -> TimeInterval {
        min(initialDelay * pow(2, Double(max(failures, 1) - 1)), maxDelay)
    }

    /// One retry that is about to happen, for the event log and `status`.
    public struct Retry: Sendable, Equatable {
        /// The failures in a row so far; the next attempt is number `failures + 1`.
        public var failures: Int
        /// When the first failure of this run happened.
        public var since: Date
        /// How long the caller waits before the next attempt.
        public var delay: TimeInterval
        /// The error, on one line, without a password.
        public var error: String
        /// The shard the error came from, when it names one.
        public var shard: String?
    }

    /// The failures of one piece of work since it last succeeded.
    public struct Run: Sendable, Equatable {
        public let policy: RetryPolicy
        public private(set) var failures = 0
        public private(set) var since: Date?

        public init(_ policy: RetryPolicy) { self.policy = policy }

        /// Records a failure at `now`: the retry to make, or nil when the error is not transient
        /// or the window is spent (the caller then fails with the error).
        public mutating func failed(_ error: any Error, at now: Date = Date()) -> Retry? {
            guard RetryPolicy.isTransient(error) else { return nil }
            let start = since ?? now
            guard now.timeIntervalSince(start) <= policy.window else { return nil }
            since = start
            failures += 1
            let pg = error as? PostgresError
            return Retry(
                failures: failures, since: start, delay: policy.delay(afterFailures: failures),
                error: pg?.summary ?? "\(error)", shard: pg?.endpoint?.label)
        }

        /// The error to fail with when a transient `error` outlasted the window: it says that
        /// reshard retried, for how long, and the option that sets it.
        public func gaveUp(_ what: String, _ error: any Error, shard: String?) -> ReshardError {
            let summary = (error as? PostgresError)?.summary ?? "\(error)"
            return ReshardError.failed(
                "\(what): gave up after retrying for \(Int(policy.window)) s (--max-retry): \(summary)", shard: shard,
                underlying: error)
        }

        /// Records a success: the next failure starts a new run. Returns whether a run of failures
        /// ended (worth an event: "recovered").
        @discardableResult
        public mutating func succeeded() -> Bool {
            defer {
                failures = 0
                since = nil
            }
            return failures > 0
        }
    }
}
