import Foundation
import PostgresClient

/// One throwaway PostgreSQL cluster on a free loopback port, created by `LocalClusterSet`.
///
/// Why `@unchecked Sendable`: its fields are immutable after start; `restart` only runs pg_ctl.
public final class LocalCluster: @unchecked Sendable {
    public let name: String
    public let dataDirectory: String
    public let logFile: String
    public internal(set) var port: Int
    /// A libpq password file holding the superuser's password. The cluster accepts TCP
    /// connections with scram-sha-256 only, and connection strings name this file instead of
    /// carrying the password, so printing one leaks nothing.
    public let passwordFile: String
    let runner: ClusterProcessRunner

    init(name: String, dataDirectory: String, logFile: String, port: Int, passwordFile: String, runner: ClusterProcessRunner) {
        self.name = name
        self.dataDirectory = dataDirectory
        self.logFile = logFile
        self.port = port
        self.passwordFile = passwordFile
        self.runner = runner
    }

    /// A connection string for this cluster (superuser `postgres` unless told otherwise).
    public func connectionString(database: String = "postgres", user: String = "postgres", label: String? = nil) -> ConnectionString {
        let raw = ConnectionString.keywordString([
            "host": "127.0.0.1", "port": String(port), "dbname": database, "user": user, "passfile": passwordFile,
        ])
        return try! ConnectionString(raw, label: label ?? name)
    }

    /// Creates a database (if missing) and returns a connection string to it.
    @discardableResult
    public func createDatabase(_ database: String) throws -> ConnectionString {
        let admin = try PGConnection.connect(connectionString())
        let exists = try admin.query("SELECT 1 FROM pg_database WHERE datname = $1", [database]).rowCount > 0
        if !exists { try admin.execute("CREATE DATABASE \(try admin.quoteIdentifier(database))") }
        return connectionString(database: database)
    }

    func start() throws {
        try runner.pgctl(["-D", dataDirectory, "-l", logFile, "-w", "-t", "120", "start"])
    }

    /// Stops the cluster (`immediate` is a crash, as `kill -9` of the postmaster would be).
    public func stop(mode: String = "fast") throws {
        try runner.pgctl(["-D", dataDirectory, "-m", mode, "-w", "stop"])
    }

    /// Restarts the cluster, by default as after a crash (`pg_ctl restart -m immediate`).
    public func restart(mode: String = "immediate") throws {
        try runner.pgctl(["-D", dataDirectory, "-l", logFile, "-m", mode, "-w", "-t", "120", "restart"])
    }

    /// Whether the postmaster is running.
    public var isRunning: Bool { (try? runner.pgctl(["-D", dataDirectory, "status"])) != nil }

    /// The postmaster's process id, read from postmaster.pid.
    public var postmasterPID: Int32? {
        guard let text = try? String(contentsOfFile: dataDirectory + "/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first
        else { return nil }
        return Int32(first)
    }
}

/// Runs the server programs, as the `postgres` OS user when we are root (PostgreSQL refuses to
/// run as root).
struct ClusterProcessRunner: Sendable {
    let binaries: PostgresBinaries
    let runAsPostgres: Bool

    func pgctl(_ arguments: [String]) throws { try run(binaries.path("pg_ctl"), arguments) }

    func run(_ executable: String, _ arguments: [String]) throws {
        let command = runAsPostgres ? ["/usr/sbin/runuser", "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        // Output goes to a file, not a pipe: a postmaster inheriting a pipe would keep it open.
        let capture = NSTemporaryDirectory() + "/reshard-run-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: capture) }
        let status = try Subprocess.run(command, outputPath: capture)
        guard status == 0 else {
            let output = (try? String(contentsOfFile: capture, encoding: .utf8)) ?? ""
            let lastLines = output.split(separator: "\n").suffix(3).joined(separator: " | ")
            let program = URL(fileURLWithPath: executable).lastPathComponent
            throw LocalClusterError("\(program) failed (exit \(status)): \(lastLines)")
        }
    }
}
