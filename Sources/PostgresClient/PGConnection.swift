import CLibPQ
import Foundation

/// One libpq connection. Owns its `PGconn` and finishes it exactly once, in `deinit`, including
/// after a failed connect (the object exists as soon as libpq hands back a pointer).
///
/// Why `@unchecked Sendable`: a `PGconn` may be used from any thread but only by one at a time.
/// Every use goes through `lock` (recursive, so a transaction body can run statements while the
/// transaction holds it), which makes handing a connection to a worker thread safe. The only call
/// that deliberately bypasses the lock is `cancel()`: it uses the separate `PGcancel` object,
/// which libpq documents as safe to use from another thread while a statement runs.
///
/// All calls block. Run them on a dedicated thread (reshard's coordinator gives each worker one,
/// see `Workers`), never on Swift's cooperative pool.
public final class PGConnection: @unchecked Sendable {
    let handle: OpaquePointer
    let cancelHandle: OpaquePointer?
    let lock = NSRecursiveLock()
    /// Where this connection goes, as reported by libpq once connected.
    public let endpoint: Endpoint

    private init(handle: OpaquePointer, label: String?, fallback: Endpoint) {
        self.handle = handle
        func field(_ value: UnsafeMutablePointer<CChar>?, _ fallback: String) -> String {
            guard let value, value.pointee != 0 else { return fallback }
            return String(cString: value)
        }
        var endpoint = Endpoint(
            host: field(PQhost(handle), fallback.host), port: field(PQport(handle), fallback.port),
            database: field(PQdb(handle), fallback.database), user: field(PQuser(handle), fallback.user),
            label: label)
        // A unix-socket directory is not helpful in messages when the user gave none.
        if endpoint.host.hasPrefix("/"), fallback.host != endpoint.host { endpoint.host = fallback.host }
        self.endpoint = endpoint
        self.cancelHandle = PQstatus(handle) == CONNECTION_OK ? PQgetCancel(handle) : nil
    }

    deinit {
        if let cancelHandle { PQfreeCancel(cancelHandle) }
        PQfinish(handle)
    }

    /// Connects through `PQconnectdbParams`, so libpq's own rules apply to `connection`.
    ///
    /// - Parameters:
    ///   - applicationName: shown in `pg_stat_activity` unless the string sets its own.
    ///   - settings: set right after connecting (for example pinned `TimeZone`), over `sessionDefaults`.
    public static func connect(
        _ connection: ConnectionString, applicationName: String = "reshard", settings: [String: String] = [:]
    ) throws -> PGConnection {
        // reshard builds SQL text and compares keys as UTF-8 (the planner refuses other server
        // encodings); the client side is pinned so no PGCLIENTENCODING can change that.
        var keywords = ["dbname", "fallback_application_name", "client_encoding"]
        var values = [connection.raw, applicationName, "UTF8"]
        // libpq waits forever by default; an unreachable shard should fail, not hang.
        if connection.options["connect_timeout"] == nil,
            ProcessInfo.processInfo.environment["PGCONNECT_TIMEOUT"] == nil
        {
            keywords.append("connect_timeout")
            values.append("10")
        }
        for (keyword, value) in tcpDefaults where connection.options[keyword] == nil {
            keywords.append(keyword)
            values.append(value)
        }
        let handle: OpaquePointer? = withCStringArray(keywords) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let handle else {
            throw PostgresError(code: .connectionFailed, message: "out of memory", endpoint: connection.endpoint)
        }
        let conn = PGConnection(handle: handle, label: connection.label, fallback: connection.endpoint)
        conn.quietNotices()
        guard PQstatus(handle) == CONNECTION_OK else {
            // `conn` is released when this throws, and its deinit calls PQfinish once.
            throw PostgresError(
                code: .connectionFailed, message: Redaction.hidingOptionValues(Redaction.oneLine(conn.lastErrorMessage())),
                endpoint: conn.endpoint)
        }
        // One round trip for every setting.
        let all = sessionDefaults.merging(settings) { $1 }.sorted { $0.key < $1.key }
        let calls = all.indices.map { "set_config($\($0 * 2 + 1), $\($0 * 2 + 2), false)" }.joined(separator: ", ")
        // PgBouncer's admin console (database pgbouncer) answers only its own commands.
        if connection.options["dbname"] != "pgbouncer" || !settings.isEmpty {
            _ = try conn.query("SELECT \(calls)", all.flatMap { [$0.key, $0.value] })
        }
        return conn
    }

    /// Settings every session gets unless `connect`'s caller sets them: none of a role's or
    /// database's timeouts for statements. reshard sizes its own statements (batches of about two
    /// seconds, bounded rounds) and stops or cancels them itself; a `statement_timeout` a DBA set
    /// on its role (or `idle_in_transaction_session_timeout`, which a transaction waiting on
    /// another shard could exceed) would fail the same batch on every retry. A statement that
    /// must not wait long (the lag check) sets its own.
    public static let sessionDefaults = ["statement_timeout": "0", "idle_in_transaction_session_timeout": "0"]

    /// TCP settings a connection gets unless its string sets them. libpq leaves a silent socket
    /// alone, so a shard behind a network partition would hold a waiting statement forever:
    /// keepalives probe a connection waiting for a result (a dead peer is noticed after about
    /// 30 + 3 x 10 s), and `tcp_user_timeout` ends one whose sent data stays unacknowledged for
    /// 60 s. A connection that ends this way is lost, which reshard retries. Long statements are
    /// not affected: a live server's kernel answers the probes. Unix sockets ignore them.
    public static let tcpDefaults: [(keyword: String, value: String)] = [
        ("keepalives", "1"), ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
        ("tcp_user_timeout", "60000"),
    ]

    /// The value of a connection option in effect on this connection (`PQconninfo`), e.g.
    /// `keepalives_idle`; nil when it is unset. Never ask for `password`.
    public func option(_ keyword: String) -> String? {
        precondition(keyword != "password", "the password is never read back")
        return lock.withLock {
            guard let info = PQconninfo(handle) else { return nil }
            defer { PQconninfoFree(info) }
            var option = info
            while let name = option.pointee.keyword {
                if String(cString: name) == keyword { return option.pointee.val.map { String(cString: $0) } }
                option += 1
            }
            return nil
        }
    }

    /// libpq prints every server NOTICE on stderr by default (`DROP TABLE IF EXISTS` says "does not
    /// exist, skipping"), which would mix with reshard's own output. NOTICE and below are dropped:
    /// they are expected chatter of idempotent statements. A WARNING still reaches stderr, as one
    /// scrubbed line.
    private func quietNotices() {
        PQsetNoticeReceiver(handle, { _, result in
            guard let result else { return }
            let severity = PQresultErrorField(result, Int32(UInt8(ascii: "V"))).map { String(cString: $0) } ?? ""
            guard severity == "WARNING" else { return }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) } ?? ""
            FileHandle.standardError.write(Data("reshard: warning from the server: \(Redaction.oneLine(message))\n".utf8))
        }, nil)
    }

    /// The backend process id, as in `pg_stat_activity.pid`.
    public var backendPID: Int32 { PQbackendPID(handle) }

    /// Whether libpq still considers the connection usable.
    public var isHealthy: Bool { lock.withLock { PQstatus(handle) == CONNECTION_OK } }

    // MARK: Statements

    /// Runs one or more statements without parameters (simple query protocol) and returns the
    /// last result.
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        try lock.withLock {
            try checked(PQexec(handle, sql), statement: sql)
        }
    }

    /// Runs one statement with parameters (`$1`, `$2`...), sent separately from the SQL text so
    /// they never need quoting. `nil` is SQL NULL.
    @discardableResult
    public func query(_ sql: String, _ parameters: [(any PGBindable)?] = []) throws -> PGResult {
        let texts: [String?] = parameters.map { $0?.pgText }
        return try lock.withLock {
            let raw = withOptionalCStringArray(texts) { values in
                PQexecParams(handle, sql, Int32(texts.count), nil, values, nil, nil, 0)
            }
            return try checked(raw, statement: sql)
        }
    }

    /// Runs `body` with the connection held: other threads' statements on it wait until `body`
    /// returns, so a session setting and the statements it is meant for cannot be split by another
    /// thread's (`ReshardRouter` declares its epoch so).
    public func exclusive<T>(_ body: (PGConnection) throws -> T) throws -> T {
        try lock.withLock { try body(self) }
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    /// Other threads cannot interleave statements on this connection meanwhile.
    @discardableResult
    public func transaction<T>(isolation: String? = nil, _ body: (PGConnection) throws -> T) throws -> T {
        try lock.withLock {
            try execute(isolation.map { "BEGIN ISOLATION LEVEL \($0)" } ?? "BEGIN")
            do {
                let value = try body(self)
                // PostgreSQL answers COMMIT of a transaction that a failed statement aborted with
                // ROLLBACK, not an error: a body that caught that error must not pass for committed.
                let commit = try execute("COMMIT")
                if String(cString: PQcmdStatus(commit.raw)) == "ROLLBACK" {
                    throw PostgresError(
                        code: .server, message: "the transaction was rolled back at COMMIT: one of its statements had failed",
                        sqlState: "25P02", endpoint: endpoint, statement: "COMMIT")
                }
                return value
            } catch {
                if PQtransactionStatus(handle) != PQTRANS_IDLE { _ = try? execute("ROLLBACK") }
                throw error
            }
        }
    }

    // MARK: Errors

    /// Turns a result into a `PGResult`, or throws the server's error with its fields.
    func checked(_ raw: OpaquePointer?, statement: String?) throws -> PGResult {
        guard let raw else {
            throw error(code: PQstatus(handle) == CONNECTION_OK ? .server : .connectionLost, statement: statement)
        }
        let result = PGResult(raw)
        switch PQresultStatus(raw) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_SINGLE_TUPLE:
            return result
        default:
            throw error(from: result, statement: statement)
        }
    }

    func error(from result: PGResult, statement: String?) -> PostgresError {
        func field(_ code: UInt8) -> String? {
            PQresultErrorField(result.raw, Int32(code)).map { String(cString: $0) }
        }
        let sqlState = field(UInt8(ascii: "C"))
        let lost = PQstatus(handle) != CONNECTION_OK
        var message = field(UInt8(ascii: "M")) ?? ""
        if message.isEmpty {
            message = PQresultErrorMessage(result.raw).map { String(cString: $0) } ?? ""
        }
        if message.isEmpty { message = lastErrorMessage() }
        let code: PostgresError.Code =
            sqlState == "57014" ? .cancelled : (lost && sqlState == nil ? .connectionLost : .server)
        return PostgresError(
            code: code, message: message, sqlState: sqlState, detail: field(UInt8(ascii: "D")),
            hint: field(UInt8(ascii: "H")), endpoint: endpoint, statement: statement)
    }

    func error(code: PostgresError.Code, statement: String?) -> PostgresError {
        // A COPY cut off because the server went away (a restart, a killed backend, the network)
        // is a lost connection, which callers retry, not a COPY that failed.
        let code = code == .copyFailed && PQstatus(handle) != CONNECTION_OK ? .connectionLost : code
        return PostgresError(code: code, message: lastErrorMessage(), endpoint: endpoint, statement: statement)
    }

    func lastErrorMessage() -> String {
        let text = PQerrorMessage(handle).map { String(cString: $0) } ?? ""
        return text.isEmpty ? "unknown libpq error" : text
    }
}

// MARK: C string helpers

/// Calls `body` with a NULL-terminated array of C strings that live for the duration of the call.
func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    withOptionalCStringArray(strings.map { Optional($0) }) { body($0) }
}

func withOptionalCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let duplicates: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0)! } }
    defer { duplicates.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = duplicates.map { $0.map { UnsafePointer($0) } }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
