import CLibPQ
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension PGConnection {
    /// Runs `sql` (simple query protocol, like `execute`) but waits at most `timeout` seconds for
    /// its result, for servers where `statement_timeout` does not exist (PgBouncer's admin
    /// console, whose `PAUSE` waits for every transaction in flight).
    ///
    /// On timeout it asks the server to cancel, waits a moment for the answer, and throws
    /// `PostgresError.Code.cancelled`; the statement may still be pending on the server, so the
    /// caller must not use this connection again (drop it: a new connection starts clean).
    @discardableResult
    public func execute(_ sql: String, timeout: TimeInterval) throws -> PGResult {
        try lock.withLock {
            guard PQsendQuery(handle, sql) == 1 else { throw error(code: .connectionLost, statement: sql) }
            let deadline = Date().addingTimeInterval(timeout)
            // Every result of the statement, the last one returned (as PQexec does); an error wins.
            // PQgetResult is only called once libpq holds a whole result, so it never blocks.
            var last: OpaquePointer?
            var failure: PostgresError?
            while true {
                guard try waitForResult(until: deadline, statement: sql) else {
                    if let last { PQclear(last) }
                    _ = cancel()
                    _ = try? waitForResult(until: Date().addingTimeInterval(0.5), statement: sql)
                    throw PostgresError(
                        code: .cancelled, message: "did not finish within \(Self.seconds(timeout))", endpoint: endpoint, statement: sql)
                }
                guard let raw = PQgetResult(handle) else { break }
                if let previous = last { PQclear(previous) }
                last = raw
                let status = PQresultStatus(raw)
                if failure == nil, status != PGRES_COMMAND_OK, status != PGRES_TUPLES_OK, status != PGRES_EMPTY_QUERY {
                    failure = error(from: PGResult(raw), statement: sql)
                    last = nil
                }
            }
            if let failure {
                if let last { PQclear(last) }
                throw failure
            }
            return try checked(last, statement: sql)
        }
    }

    /// Reads from the socket until libpq holds a whole result or `deadline` passes (false).
    private func waitForResult(until deadline: Date, statement: String) throws -> Bool {
        while PQisBusy(handle) == 1 {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return false }
            var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(left * 1000, 1000).rounded(.up)))
            if ready < 0, errno != EINTR { throw error(code: .connectionLost, statement: statement) }
            if ready > 0, PQconsumeInput(handle) != 1 { throw error(code: .connectionLost, statement: statement) }
        }
        return true
    }

    static func seconds(_ value: TimeInterval) -> String {
        value == value.rounded() ? "\(Int(value)) s" : String(format: "%.1f s", value)
    }
}
