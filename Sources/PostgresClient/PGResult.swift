import CLibPQ

/// A query result. Owns its `PGresult` and clears it exactly once, in `deinit`.
///
/// Why `@unchecked Sendable`: a finished `PGresult` is immutable and libpq's accessors only read
/// it, so sharing one across threads is safe.
public final class PGResult: @unchecked Sendable {
    let raw: OpaquePointer

    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { PQclear(raw) }

    public var rowCount: Int { Int(PQntuples(raw)) }
    public var columnCount: Int { Int(PQnfields(raw)) }
    public var columnNames: [String] { (0..<columnCount).map { String(cString: PQfname(raw, Int32($0))) } }

    /// Rows affected by INSERT/UPDATE/DELETE/COPY (`PQcmdTuples`), 0 when not applicable.
    public var affectedRows: Int { Int(String(cString: PQcmdTuples(raw))) ?? 0 }
    /// The command tag (`COMMIT`, or `ROLLBACK` for a COMMIT of an aborted transaction).
    public var commandStatus: String { String(cString: PQcmdStatus(raw)) }

    public func isNull(_ row: Int, _ column: Int) -> Bool { PQgetisnull(raw, Int32(row), Int32(column)) == 1 }

    /// The value in text form, `nil` for SQL NULL.
    public subscript(row: Int, column: Int) -> String? {
        precondition(row < rowCount && column < columnCount, "result index out of range")
        if isNull(row, column) { return nil }
        return String(cString: PQgetvalue(raw, Int32(row), Int32(column)))
    }

    public func columnIndex(_ name: String) -> Int? {
        let i = PQfnumber(raw, "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"")
        return i < 0 ? nil : Int(i)
    }

    /// A typed value: `try result.get(0, 1, as: Int64.self)`. Throws on NULL unless `T` is optional.
    public func get<T: PGDecodable>(_ row: Int, _ column: Int, as type: T.Type = T.self) throws -> T {
        guard let value = try T.decode(pgText: self[row, column]) else {
            throw PostgresError(
                code: .decoding,
                message: "cannot read \(self[row, column] == nil ? "NULL" : "value") in column \(columnNames[column]) as \(T.self)")
        }
        return value
    }

    /// A typed value by column name.
    public func get<T: PGDecodable>(_ row: Int, _ column: String, as type: T.Type = T.self) throws -> T {
        guard let index = columnIndex(column) else {
            throw PostgresError(code: .decoding, message: "result has no column \(column)")
        }
        return try get(row, index, as: type)
    }
}
