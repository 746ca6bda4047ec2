import Foundation
import PostgresClient

#if canImport(Glibc)
import Glibc
#endif

/// K independent throwaway PostgreSQL clusters in one temporary directory.
///
/// They are always stopped and removed: by `stop()`, by `deinit`, and, if this process dies
/// without either (a crash, `kill -9`, Ctrl-C), by a small watchdog process started with the set,
/// which waits for this process to disappear and then stops the clusters and deletes the directory.
///
/// Why `@unchecked Sendable`: `stopped` is guarded by `lock`; everything else is immutable.
public final class LocalClusterSet: @unchecked Sendable {
    public struct Options: Sendable {
        /// Turns off fsync and full_page_writes: fast, and unsafe only after an OS crash. A
        /// PostgreSQL crash (`pg_ctl restart -m immediate`) still loses no committed transaction,
        /// which crash tests rely on, so synchronous_commit stays on. Rehearsals keep fsync on.
        public var forTests: Bool
        /// Extra postgresql.conf settings.
        public var settings: [String: String]

        public init(forTests: Bool = true, settings: [String: String] = [:]) {
            self.forTests = forTests
            self.settings = settings
        }
    }

    public let directory: String
    public let clusters: [LocalCluster]
    private let runner: ClusterProcessRunner
    private let lock = NSLock()
    private var stopped = false
    private var replicaCount = 0

    /// Directories of sets made by this harness start with this, under the system temp directory.
    public static let directoryPrefix = "reshard-cluster-"

    /// Starts `count` clusters. On failure, whatever was started is stopped and removed.
    public static func start(count: Int, options: Options = Options()) throws -> LocalClusterSet {
        precondition(count > 0)
        let binaries = try PostgresBinaries.locate()
        let root = geteuid() == 0
        let runner = ClusterProcessRunner(binaries: binaries, runAsPostgres: root)
        let directory = try makeTemporaryDirectory()
        if root { try chownToPostgres(directory) }
        try startWatchdog(directory: directory, runner: runner)
        do {
            let password = randomPassword()
            let passwordFile = directory + "/pgpass"
            guard FileManager.default.createFile(
                atPath: passwordFile, contents: Data("127.0.0.1:*:*:*:\(password)\n".utf8), attributes: [.posixPermissions: 0o600])
            else { throw LocalClusterError("cannot write \(passwordFile)") }
            let template = directory + "/c0"
            try initdb(template, password: password, directory: directory, runner: runner)
            try writeConfig(template, socketDirectory: directory, options: options)
            var clusters: [LocalCluster] = []
            for index in 0..<count {
                let dataDirectory = directory + "/c\(index)"
                if index > 0 { try runner.run("/bin/cp", ["-a", template, dataDirectory]) }
                let cluster = LocalCluster(
                    name: "c\(index)", dataDirectory: dataDirectory, logFile: directory + "/c\(index).log",
                    port: 0, passwordFile: passwordFile, runner: runner)
                clusters.append(cluster)
            }
            // Start only after all copies are made: a running template cannot be copied.
            for cluster in clusters { try startOnFreePort(cluster) }
            return LocalClusterSet(directory: directory, clusters: clusters, runner: runner)
        } catch {
            removeEverything(directory: directory, runner: runner)
            throw error
        }
    }

    /// Runs `body` with `count` fresh clusters and always removes them afterwards.
    public static func with<T>(count: Int, options: Options = Options(), _ body: (LocalClusterSet) throws -> T) throws -> T {
        let set = try start(count: count, options: options)
        defer { set.stop() }
        return try body(set)
    }

    private init(directory: String, clusters: [LocalCluster], runner: ClusterProcessRunner) {
        self.directory = directory
        self.clusters = clusters
        self.runner = runner
    }

    deinit { stop() }

    /// Stops every cluster and removes the directory. Idempotent.
    public func stop() {
        let first: Bool = lock.withLock {
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        Self.removeEverything(directory: directory, runner: runner)
    }

    /// Starts a streaming replica of `primary` (`pg_basebackup -R`), in this set's directory and
    /// removed with it. `settings` go into its postgresql.conf, e.g.
    /// `recovery_min_apply_delay = '5s'` to make it lag on purpose.
    public func startReplica(of primary: LocalCluster, settings: [String: String] = [:]) throws -> LocalCluster {
        let index: Int = lock.withLock {
            replicaCount += 1
            return replicaCount
        }
        let name = "\(primary.name)r\(index)"
        let dataDirectory = directory + "/" + name
        // The server programs run as postgres when we are root: they need a password file of their own.
        let passwordFile = directory + "/pgpass.server"
        if !FileManager.default.fileExists(atPath: passwordFile) {
            try FileManager.default.copyItem(atPath: primary.passwordFile, toPath: passwordFile)
            if runner.runAsPostgres { try Self.chownToPostgres(passwordFile) }
        }
        let conninfo = "host=127.0.0.1 port=\(primary.port) user=postgres passfile=\(passwordFile) application_name=\(name)"
        try runner.run(runner.binaries.path("pg_basebackup"), [
            "-D", dataDirectory, "-d", conninfo, "-R", "-X", "stream", "-c", "fast", "--no-sync",
        ])
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
        try handle.seekToEnd()
        let extra = settings.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)\n" }.joined()
        try handle.write(contentsOf: Data(("\n# replica of \(primary.name)\n" + extra).utf8))
        try handle.close()
        let replica = LocalCluster(
            name: name, dataDirectory: dataDirectory, logFile: directory + "/\(name).log", port: 0,
            passwordFile: primary.passwordFile, runner: runner)
        try Self.startOnFreePort(replica)
        return replica
    }

    // MARK: - Steps

    private static func removeEverything(directory: String, runner: ClusterProcessRunner) {
        if let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) {
            for entry in entries where FileManager.default.fileExists(atPath: "\(directory)/\(entry)/postmaster.pid") {
                try? runner.pgctl(["-D", "\(directory)/\(entry)", "-m", "immediate", "-w", "stop"])
            }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func makeTemporaryDirectory() throws -> String {
        var template = Array((NSTemporaryDirectory() + "/" + directoryPrefix + "XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw LocalClusterError("cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        // Unix socket paths are limited to ~107 bytes; keep the path short and canonical.
        return URL(fileURLWithPath: String(cString: made)).standardizedFileURL.path
    }

    static func chownToPostgres(_ path: String) throws {
        guard let pw = getpwnam("postgres") else {
            throw LocalClusterError("running as root needs an OS user named postgres to run the clusters")
        }
        guard chown(path, pw.pointee.pw_uid, pw.pointee.pw_gid) == 0 else {
            throw LocalClusterError("cannot hand \(path) to the postgres user: \(String(cString: strerror(errno)))")
        }
    }

    private static func initdb(_ dataDirectory: String, password: String, directory: String, runner: ClusterProcessRunner) throws {
        let passwordFile = directory + "/pwfile"
        _ = FileManager.default.createFile(atPath: passwordFile, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600])
        if runner.runAsPostgres { try chownToPostgres(passwordFile) }
        defer { try? FileManager.default.removeItem(atPath: passwordFile) }
        try runner.run(runner.binaries.path("initdb"), [
            "-D", dataDirectory, "-U", "postgres", "--pwfile=\(passwordFile)", "--auth-host=scram-sha-256",
            "--auth-local=peer", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        ])
    }

    private static func writeConfig(_ dataDirectory: String, socketDirectory: String, options: Options) throws {
        var settings: [String: String] = [
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'\(socketDirectory)'",
            "max_connections": "100",
            "shared_buffers": "128MB",
            "max_wal_size": "4GB",
            "checkpoint_timeout": "30min",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %d '",
        ]
        if options.forTests {
            settings["fsync"] = "off"
            settings["full_page_writes"] = "off"
        }
        settings.merge(options.settings) { _, new in new }
        let text = "\n# reshard local cluster harness\n"
            + settings.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: "\n") + "\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }

    /// Picks a free port and starts; if another process grabbed the port in between, tries again.
    private static func startOnFreePort(_ cluster: LocalCluster) throws {
        var lastError: Error?
        for _ in 0..<5 {
            let port = try freeLoopbackPort()
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: cluster.dataDirectory + "/postgresql.conf"))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data("port = \(port)\n".utf8))
            try handle.close()
            cluster.port = port
            do {
                try cluster.start()
                return
            } catch {
                lastError = error
                let log = (try? String(contentsOfFile: cluster.logFile, encoding: .utf8)) ?? ""
                guard log.contains("could not bind") || log.contains("already in use") else { break }
            }
        }
        let log = (try? String(contentsOfFile: cluster.logFile, encoding: .utf8)) ?? ""
        throw LocalClusterError(
            "cannot start local cluster \(cluster.name): \(lastError.map { "\($0)" } ?? "") \(log.split(separator: "\n").suffix(3).joined(separator: " | "))")
    }

    /// Asks the kernel for a free TCP port on 127.0.0.1.
    static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LocalClusterError("socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw LocalClusterError("cannot find a free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func randomPassword() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(generator.next() as UInt64, radix: 36) }.joined()
    }

    /// Starts a detached shell that removes the set once this process is gone. It polls with
    /// `kill -0` (a process cannot be waited for by a non-parent) and ignores terminal signals, so a
    /// Ctrl-C that kills us does not kill it.
    private static func startWatchdog(directory: String, runner: ClusterProcessRunner) throws {
        let pgctl = runner.binaries.path("pg_ctl")
        let asPostgres = runner.runAsPostgres ? "/usr/sbin/runuser -u postgres -- " : ""
        let script = """
            trap '' INT HUP TERM QUIT
            while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 0.2; done
            [ -d "$2" ] || exit 0
            for d in "$2"/*/; do
              [ -f "$d/postmaster.pid" ] && \(asPostgres)"\(pgctl)" -D "$d" -m immediate -w stop >/dev/null 2>&1
            done
            rm -rf "$2"
            """
        var command = ["/bin/sh", "-c", script, "reshard-cluster-watchdog", String(getpid()), directory]
        // `setsid -f` detaches it from our session (no terminal signals) and from us (no zombie).
        let setsid = "/usr/bin/setsid"
        if FileManager.default.isExecutableFile(atPath: setsid) { command = [setsid, "-f"] + command }
        let pid = try Subprocess.spawn(command)
        if command[0] == setsid {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}

