import Foundation

/// The backfill's rate limit (`--max-rows-per-second`, `reshard throttle`), shared by every
/// backfill worker: a token bucket that may go into debt.
///
/// A worker reserves a batch's worth of rows before it starts the batch and may start only while
/// the bucket is not in debt, so batches of all workers together start no faster than the limit
/// allows; after the batch it gives back what it reserved but did not copy (a batch reads a key
/// range, and only part of it belongs to its target). The whole debt is waited for, however
/// long, and the limit can change at any moment: a waiting worker asks again and the new rate
/// applies from then on. With batches capped at about a second of the limit (`maxBatchRows`),
/// the rate over any 10 s stays within about 10% of the limit.
///
/// Pure: time is passed in, so it is unit-tested without sleeping.
struct RateLimiter: Sendable, Equatable {
    /// Rows per second, or nil for no limit.
    private(set) var limit: Int?
    private var tokens = 0.0
    private var updated: Date
    /// Unused time saved up (while paused, or between slow batches) is capped at this many
    /// seconds of the limit, so a quiet spell is not followed by a burst.
    static let burstSeconds = 0.25

    init(limit: Int? = nil, at now: Date = Date()) {
        self.limit = limit
        self.updated = now
    }

    /// Changes the limit; reservations already made keep their debt, which is now paid back at the
    /// new rate.
    mutating func setLimit(_ newLimit: Int?, at now: Date) {
        guard newLimit != limit else { return }
        refill(now)
        limit = newLimit
        if let newLimit { tokens = min(tokens, Self.burstSeconds * Double(newLimit)) } else { tokens = 0 }
    }

    /// The largest batch, in rows, that fits the limit: about one second of it.
    var maxBatchRows: Int? { limit.map { max($0, 1) } }

    /// Reserves `rows` when the bucket is not in debt and returns 0; otherwise reserves nothing and
    /// returns how long the debt takes to pay back at the current rate (ask again after that, or
    /// sooner to notice a new limit).
    mutating func reserve(_ rows: Int, at now: Date) -> TimeInterval {
        guard let limit else { return 0 }
        refill(now)
        if tokens < 0 { return -tokens / Double(limit) }
        tokens -= Double(rows)
        return 0
    }

    /// Settles a reservation: `rows` reserved but not copied come back (negative when a batch
    /// copied more than it reserved).
    mutating func settle(unused rows: Int, at now: Date) {
        guard let limit else { return }
        refill(now)
        tokens = min(tokens + Double(rows), Self.burstSeconds * Double(limit))
    }

    /// Adds the tokens earned since the last call. Time that seems to go back (a clock step, or
    /// callers passing times slightly out of order) earns nothing and is not counted twice.
    private mutating func refill(_ now: Date) {
        guard now > updated else { return }
        if let limit {
            tokens = min(tokens + now.timeIntervalSince(updated) * Double(limit), Self.burstSeconds * Double(limit))
        }
        updated = now
    }
}
