import Foundation
import PostgresClient

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PgBouncer (the apt package's `pgbouncer`) on a free loopback port in front of a
/// local cluster, for tests of `PAUSE`/`RESUME` around a cutover.
///
/// Every database name is forwarded to the cluster (`* =`), pooled per transaction (so `PAUSE`
/// waits for transactions, not for clients to disconnect); clients and the admin console
/// (database `pgbouncer`, user `postgres`) are trusted on loopback. Like the clusters it runs as
/// the postgres OS user when we are root, and a watchdog stops it if this process dies without
/// `stop()`. Its directory starts with `LocalClusterSet.directoryPrefix`, so leftovers are found.
///
/// Why `@unchecked Sendable`: `stopped` is guarded by `lock`; everything else is immutable.
public final class PgBouncer: @unchecked Sendable {
    public let directory: String
    public let port: Int
    public let logFile: String
    private let lock = NSLock()
    private var stopped = false

    /// Where the program is: `RESHARD_PGBOUNCER`, else `/usr/sbin/pgbouncer`, else `PATH`; nil when not installed.
    public static var executable: String? {
        let env = ProcessInfo.processInfo.environment
        let candidates = [env["RESHARD_PGBOUNCER"], "/usr/sbin/pgbouncer"].compactMap { $0 }
            + (env["PATH"] ?? "").split(separator: ":").map { "\($0)/pgbouncer" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Starts one in front of `cluster` and returns once its admin console answers.
    public static func start(in front: LocalCluster, poolMode: String = "transaction") throws -> PgBouncer {
        guard let executable else { throw LocalClusterError("pgbouncer is not installed (apt-get install pgbouncer)") }
        let runner = front.runner
        let directory = try LocalClusterSet.makeTemporaryDirectory()
        if runner.runAsPostgres { try LocalClusterSet.chownToPostgres(directory) }
        try startWatchdog(directory: directory)
        do {
            // The cluster takes scram-sha-256 on TCP: PgBouncer logs in with the superuser's password.
            let passfile = try String(contentsOfFile: front.passwordFile, encoding: .utf8)
            guard let password = passfile.split(separator: "\n").first?.split(separator: ":").last else {
                throw LocalClusterError("cannot read the password of cluster \(front.name)")
            }
            try write("\"postgres\" \"\"\n", to: directory + "/userlist.txt", runner: runner)
            var lastError: Error?
            for _ in 0..<5 {
                let port = try LocalClusterSet.freeLoopbackPort()
                let config = """
                    [databases]
                    * = host=127.0.0.1 port=\(front.port) user=postgres password=\(password)

                    [pgbouncer]
                    listen_addr = 127.0.0.1
                    listen_port = \(port)
                    unix_socket_dir =
                    auth_type = trust
                    auth_file = \(directory)/userlist.txt
                    admin_users = postgres
                    pool_mode = \(poolMode)
                    logfile = \(directory)/pgbouncer.log
                    pidfile = \(directory)/pgbouncer.pid
                    ignore_startup_parameters = extra_float_digits,options

                    """
                try write(config, to: directory + "/pgbouncer.ini", runner: runner)
                let bouncer = PgBouncer(directory: directory, port: port)
                do {
                    try runner.run(executable, ["-d", directory + "/pgbouncer.ini"])
                    try bouncer.waitUntilAnswering()
                    return bouncer
                } catch {
                    lastError = error
                    bouncer.stopProcess()
                    let log = (try? String(contentsOfFile: bouncer.logFile, encoding: .utf8)) ?? ""
                    guard log.contains("Address already in use") else { break }
                }
            }
            let log = (try? String(contentsOfFile: directory + "/pgbouncer.log", encoding: .utf8)) ?? ""
            throw LocalClusterError(
                "cannot start pgbouncer: \(lastError.map { "\($0)" } ?? "") \(log.split(separator: "\n").suffix(3).joined(separator: " | "))")
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    private init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
        logFile = directory + "/pgbouncer.log"
    }

    deinit { stop() }

    /// A client's connection string to `database` through this PgBouncer.
    public func connectionString(database: String, label: String? = nil) -> ConnectionString {
        let raw = ConnectionString.keywordString(["host": "127.0.0.1", "port": String(port), "dbname": database, "user": "postgres"])
        return try! ConnectionString(raw, label: label ?? "pgbouncer")
    }

    /// The admin console's connection string (`PAUSE`, `RESUME`, `SHOW POOLS`).
    public var adminConnectionString: ConnectionString { connectionString(database: "pgbouncer", label: "pgbouncer admin") }

    /// Stops it and removes its directory. Idempotent.
    public func stop() {
        let first: Bool = lock.withLock {
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        stopProcess()
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: - Steps

    private var pid: pid_t? {
        (try? String(contentsOfFile: directory + "/pgbouncer.pid", encoding: .utf8))
            .flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// SIGTERM (immediate shutdown), then SIGKILL if it is still there after 5 s.
    private func stopProcess() {
        guard let pid, pid > 0 else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while kill(pid, 0) == 0, Date() < deadline { usleep(20_000) }
        if kill(pid, 0) == 0 { kill(pid, SIGKILL) }
    }

    private func waitUntilAnswering() throws {
        let deadline = Date().addingTimeInterval(10)
        var lastError: Error?
        while Date() < deadline {
            do {
                _ = try PGConnection.connect(adminConnectionString).execute("SHOW VERSION")
                return
            } catch {
                lastError = error
                usleep(50_000)
            }
        }
        throw LocalClusterError("pgbouncer on port \(port) did not answer: \(lastError.map { "\($0)" } ?? "")")
    }

    private static func write(_ text: String, to path: String, runner: ClusterProcessRunner) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw LocalClusterError("cannot write \(path)")
        }
        if runner.runAsPostgres { try LocalClusterSet.chownToPostgres(path) }
    }

    /// Stops the PgBouncer and removes its directory once this process is gone (see
    /// `LocalClusterSet`'s watchdog: the same, for one pidfile).
    private static func startWatchdog(directory: String) throws {
        let script = """
            trap '' INT HUP TERM QUIT
            while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 0.2; done
            [ -d "$2" ] || exit 0
            [ -f "$2/pgbouncer.pid" ] && kill -9 "$(cat "$2/pgbouncer.pid")" 2>/dev/null
            rm -rf "$2"
            """
        var command = ["/bin/sh", "-c", script, "reshard-pgbouncer-watchdog", String(getpid()), directory]
        let setsid = "/usr/bin/setsid"
        if FileManager.default.isExecutableFile(atPath: setsid) { command = [setsid, "-f"] + command }
        let pid = try Subprocess.spawn(command)
        if command[0] == setsid {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}
