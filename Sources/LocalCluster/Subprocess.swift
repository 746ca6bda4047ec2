import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Starts programs with `posix_spawn` and reaps them with `waitpid`.
///
/// Foundation's `Process` was seen spinning in `waitUntilExit` on Linux while its child sat as a
/// zombie; the cluster harness starts programs often and must never hang, so it uses this instead.
enum Subprocess {
    /// Runs `arguments[0]` (an absolute path) and waits. Standard output and error go to `outputPath`
    /// (or /dev/null); standard input is /dev/null. Returns the exit status (128+signal if killed).
    static func run(_ arguments: [String], outputPath: String? = nil) throws -> Int32 {
        let pid = try spawn(arguments, outputPath: outputPath)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw LocalClusterError("waitpid: \(String(cString: strerror(errno)))") }
        }
        let exited = status & 0x7f == 0
        return exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Starts `arguments[0]` without waiting and returns its pid.
    static func spawn(_ arguments: [String], outputPath: String? = nil) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let code = posix_spawn(&pid, arguments[0], &actions, nil, argv, environ)
        guard code == 0 else {
            throw LocalClusterError("cannot run \(arguments[0]): \(String(cString: strerror(code)))")
        }
        return pid
    }
}
