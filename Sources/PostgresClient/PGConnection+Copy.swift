import CLibPQ
import Foundation

/// Counts from one COPY.
public struct CopyStats: Sendable, Equatable {
    /// Rows the receiving side reported (`COPY n`), or data messages read for `copyOut`.
    public var rows: Int
    public var bytes: Int
}

/// Streaming COPY. Data moves one row message at a time (libpq hands out a row per
/// `PQgetCopyData` call and buffers about 8 KB before sending), so memory stays bounded by the
/// largest row, whatever the table's size. The SQL decides the format: text, csv or binary.
extension PGConnection {
    /// Runs `COPY ... TO STDOUT` and hands each data message to `consume`.
    @discardableResult
    public func copyOut(_ sql: String, _ consume: (UnsafeRawBufferPointer) throws -> Void) throws -> CopyStats {
        try lock.withLock {
            try startCopy(sql, expecting: PGRES_COPY_OUT)
            var stats = CopyStats(rows: 0, bytes: 0)
            var consumerError: Error?
            while true {
                var buffer: UnsafeMutablePointer<CChar>?
                let length = PQgetCopyData(handle, &buffer, 0)
                if length > 0, let buffer {
                    defer { PQfreemem(buffer) }
                    stats.rows += 1
                    stats.bytes += Int(length)
                    if consumerError == nil {
                        do { try consume(UnsafeRawBufferPointer(start: buffer, count: Int(length))) } catch {
                            // Stop the server from sending more; drain what is in flight.
                            consumerError = error
                            _ = cancel()
                        }
                    }
                    continue
                }
                if length == -1 { break }
                throw error(code: .copyFailed, statement: sql)
            }
            let finalResult = drainResults(statement: sql)
            if let consumerError { throw consumerError }
            if let finalResult { throw finalResult }
            return stats
        }
    }

    /// Runs `COPY ... FROM STDIN`, letting `produce` write the data, and returns the rows loaded.
    /// If `produce` throws, the COPY is aborted on the server (nothing is loaded) and the error rethrown.
    @discardableResult
    public func copyIn(_ sql: String, _ produce: (CopyInWriter) throws -> Void) throws -> CopyStats {
        try lock.withLock {
            try startCopy(sql, expecting: PGRES_COPY_IN)
            let writer = CopyInWriter(connection: self)
            do {
                try produce(writer)
            } catch {
                PQputCopyEnd(handle, "aborted by client")
                _ = drainResults(statement: sql)
                throw error
            }
            let rows = try finishCopyIn(statement: sql)
            return CopyStats(rows: rows, bytes: writer.bytes)
        }
    }

    /// Streams `COPY ... TO STDOUT` on `source` straight into `COPY ... FROM STDIN` on
    /// `destination`, row message by row message, without holding the data in memory.
    /// On any failure neither side is left in COPY state, and the destination loads nothing.
    public static func relayCopy(
        from source: PGConnection, _ copyOutSQL: String, to destination: PGConnection, _ copyInSQL: String
    ) throws -> CopyStats {
        precondition(source !== destination, "relayCopy needs two connections")
        // Lock in a fixed order so two relays in opposite directions cannot deadlock.
        let (first, second) = ObjectIdentifier(source) < ObjectIdentifier(destination)
            ? (source, destination) : (destination, source)
        return try first.lock.withLock {
            try second.lock.withLock {
                try destination.startCopy(copyInSQL, expecting: PGRES_COPY_IN)
                do {
                    try source.startCopy(copyOutSQL, expecting: PGRES_COPY_OUT)
                } catch {
                    PQputCopyEnd(destination.handle, "source failed")
                    _ = destination.drainResults(statement: copyInSQL)
                    throw error
                }
                var bytes = 0
                var failure: PostgresError?
                // COPY data is a byte stream: rows are gathered into messages of about 64 kB, which
                // costs the receiving server far less than one message per row. Memory stays bounded.
                var pending = CopyBuffer(capacity: 64 * 1024)
                defer { pending.deallocate() }
                func flush() {
                    guard failure == nil, pending.count > 0 else { return }
                    if PQputCopyData(destination.handle, pending.base, Int32(pending.count)) != 1 {
                        failure = destination.error(code: .copyFailed, statement: copyInSQL)
                        _ = source.cancel()
                    }
                    pending.count = 0
                }
                while true {
                    var buffer: UnsafeMutablePointer<CChar>?
                    let length = PQgetCopyData(source.handle, &buffer, 0)
                    if length > 0, let buffer {
                        defer { PQfreemem(buffer) }
                        bytes += Int(length)
                        guard failure == nil else { continue }
                        if pending.count + Int(length) > pending.capacity { flush() }
                        if Int(length) > pending.capacity {
                            if PQputCopyData(destination.handle, buffer, length) != 1 {
                                failure = destination.error(code: .copyFailed, statement: copyInSQL)
                                _ = source.cancel()
                            }
                        } else {
                            pending.append(buffer, Int(length))
                        }
                        continue
                    }
                    if length == -1 { break }
                    failure = failure ?? source.error(code: .copyFailed, statement: copyOutSQL)
                    break
                }
                flush()
                if let sourceError = source.drainResults(statement: copyOutSQL), failure == nil {
                    failure = sourceError
                }
                if let failure {
                    PQputCopyEnd(destination.handle, "source failed")
                    _ = destination.drainResults(statement: copyInSQL)
                    throw failure
                }
                let rows = try destination.finishCopyIn(statement: copyInSQL)
                return CopyStats(rows: rows, bytes: bytes)
            }
        }
    }

    // MARK: internals (caller holds `lock`)

    func startCopy(_ sql: String, expecting status: ExecStatusType) throws {
        let result = try checked(PQexec(handle, sql), statement: sql)
        guard PQresultStatus(result.raw) == status else {
            throw PostgresError(
                code: .unexpectedResult, message: "statement did not start a COPY in the expected direction",
                endpoint: endpoint, statement: sql)
        }
    }

    /// Ends COPY IN and returns the number of rows the server loaded.
    func finishCopyIn(statement: String) throws -> Int {
        guard PQputCopyEnd(handle, nil) == 1 else { throw error(code: .copyFailed, statement: statement) }
        var rows = 0
        var failure: PostgresError?
        while let raw = PQgetResult(handle) {
            let result = PGResult(raw)
            if PQresultStatus(raw) == PGRES_COMMAND_OK {
                rows = result.affectedRows
            } else if failure == nil {
                failure = error(from: result, statement: statement)
            }
        }
        if let failure { throw failure }
        return rows
    }

    /// Reads results until libpq has none left; returns the first error among them.
    func drainResults(statement: String) -> PostgresError? {
        var failure: PostgresError?
        while let raw = PQgetResult(handle) {
            let result = PGResult(raw)
            switch PQresultStatus(raw) {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK: break
            case PGRES_COPY_OUT:
                // Still streaming (the consumer gave up): discard the rest.
                var buffer: UnsafeMutablePointer<CChar>?
                while PQgetCopyData(handle, &buffer, 0) > 0 { PQfreemem(buffer) }
            case PGRES_COPY_IN:
                PQputCopyEnd(handle, "aborted by client")
            default:
                if failure == nil { failure = error(from: result, statement: statement) }
            }
        }
        return failure
    }
}

/// Hands data to a running `COPY ... FROM STDIN`. Only valid inside `copyIn`'s closure.
public final class CopyInWriter {
    private let connection: PGConnection
    fileprivate(set) var bytes = 0

    fileprivate init(connection: PGConnection) { self.connection = connection }

    public func write(_ data: UnsafeRawBufferPointer) throws {
        guard let base = data.baseAddress, data.count > 0 else { return }
        guard PQputCopyData(connection.handle, base.assumingMemoryBound(to: CChar.self), Int32(data.count)) == 1
        else { throw connection.error(code: .copyFailed, statement: nil) }
        bytes += data.count
    }

    public func write(_ text: String) throws {
        var text = text
        try text.withUTF8 { try write(UnsafeRawBufferPointer($0)) }
    }
}

/// A fixed-size byte buffer for gathering COPY rows into larger messages.
struct CopyBuffer {
    let base: UnsafeMutablePointer<CChar>
    let capacity: Int
    var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
    }

    mutating func append(_ bytes: UnsafePointer<CChar>, _ length: Int) {
        (base + count).update(from: bytes, count: length)
        count += length
    }

    func deallocate() { base.deallocate() }
}
