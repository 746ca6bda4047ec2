import CLibPQ
import Foundation

/// A libpq connection string (URI or `key=value` form), kept opaque so it cannot be printed by
/// accident: `description` shows host, port, database and user, never the password.
///
/// Parsing is libpq's own (`PQconninfoParse`), and connecting passes the string unchanged to
/// `PQconnectdbParams` with `expand_dbname`, so everything libpq users rely on keeps working:
/// `PG*` environment variables, `.pgpass`, `sslmode`, `service`, multiple hosts.
public struct ConnectionString: Sendable, Hashable, CustomStringConvertible {
    let raw: String
    /// libpq's parse of `raw`: only the options the string sets.
    public let options: [String: String]
    /// A name for messages (`s0`, `metadata`...).
    public var label: String?
    /// The string as the config file wrote it, with its `${VAR}` references not yet expanded:
    /// what a plan file may keep (`planFileValue`), so the secret stays in the environment.
    public var template: String?

    public init(_ raw: String, label: String? = nil) throws {
        self.raw = raw
        self.label = label
        var errmsg: UnsafeMutablePointer<CChar>?
        guard let parsed = PQconninfoParse(raw, &errmsg) else {
            let reason = errmsg.map { String(cString: $0) } ?? "out of memory"
            if let errmsg { PQfreemem(errmsg) }
            throw PostgresError(
                code: .invalidConnectionString,
                message: "invalid connection string\(label.map { " for \($0)" } ?? ""): \(Redaction.parseError(reason, keywords: Self.keywords))")
        }
        defer { PQconninfoFree(parsed) }
        var options: [String: String] = [:]
        var option = parsed
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { options[String(cString: keyword)] = String(cString: value) }
            option += 1
        }
        self.options = options
    }

    /// Every option name libpq knows (`PQconndefaults`), which error messages may name.
    static let keywords: Set<String> = {
        guard let defaults = PQconndefaults() else { return [] }
        defer { PQconninfoFree(defaults) }
        var names: Set<String> = []
        var option = defaults
        while let keyword = option.pointee.keyword {
            names.insert(String(cString: keyword))
            option += 1
        }
        return names
    }()

    /// Where this string points, with libpq's defaults filled in from the environment.
    public var endpoint: Endpoint {
        let env = ProcessInfo.processInfo.environment
        let user = options["user"] ?? env["PGUSER"] ?? ProcessInfo.processInfo.userName
        return Endpoint(
            host: options["host"] ?? options["hostaddr"] ?? env["PGHOST"] ?? "localhost",
            port: options["port"] ?? env["PGPORT"] ?? "5432",
            database: options["dbname"] ?? env["PGDATABASE"] ?? user,
            user: user,
            label: label)
    }

    /// Whether two strings reach the same database (host, port and database name compared).
    public func sameDatabase(as other: ConnectionString) -> Bool {
        let a = endpoint, b = other.endpoint
        return a.host == b.host && a.port == b.port && a.database == b.database
    }

    /// Builds a `key='value'` connection string, quoting as libpq requires.
    public static func keywordString(_ options: [String: String]) -> String {
        options.sorted { $0.key < $1.key }.map { key, value in
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "'", with: "\\'")
            return "\(key)='\(escaped)'"
        }.joined(separator: " ")
    }

    /// `user@host:port/database`, never the password.
    public var description: String {
        let e = endpoint
        let place = "\(e.user)@\(e.host):\(e.port)/\(e.database)"
        return label.map { "\($0) (\(place))" } ?? place
    }

    /// The raw string, for handing to another libpq client (psql in benchmarks): never print it.
    public var unsafeRawValue: String { raw }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.raw == rhs.raw && lhs.label == rhs.label }
    public func hash(into hasher: inout Hasher) { hasher.combine(raw) }
}

extension ConnectionString {
    /// What a plan file stores: the string as the config wrote it when its password (if any)
    /// comes from a `${VAR}` reference, expanded again from the environment when the plan is read;
    /// otherwise the string without its password (libpq then finds it in `PGPASSWORD`, `.pgpass`
    /// or a `passfile`). Never an expanded secret.
    public var planFileValue: String {
        guard let template, template.contains("${"), let written = try? ConnectionString(template) else { return withoutPassword }
        if let password = written.options["password"], !password.contains("${") { return written.withoutPassword }
        return template
    }

    /// The same connection string without its password, for files that outlive this process (a
    /// plan file): libpq then takes the password from `PGPASSWORD`, `.pgpass` or a `passfile`.
    public var withoutPassword: String {
        var options = options
        options["password"] = nil
        return Self.keywordString(options)
    }
}
