import Foundation
import ReshardCore

#if canImport(Glibc)
import Glibc
#endif

/// A program rehearse runs as a user would (the `reshard` binary for each step, `pg_dump`), so
/// that `kill -9` is a real one. Output goes to files in `directory`.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    let stdoutPath: String
    let stderrPath: String
    private var status: Int32?

    /// - Parameter environment: variables set on top of this process's (an empty value unsets one).
    init(_ arguments: [String], environment: [String: String] = [:], directory: String, name: String) throws {
        stdoutPath = directory + "/\(name).out"
        stderrPath = directory + "/\(name).err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var variables = ProcessInfo.processInfo.environment
        for (key, value) in environment { variables[key] = value.isEmpty ? nil : value }
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var child: pid_t = 0
        let code = posix_spawn(&child, arguments[0], &actions, nil, argv, envp)
        guard code == 0 else { throw ReshardError.failed("cannot run \(arguments[0]): \(String(cString: strerror(code)))") }
        pid = child
    }

    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The first error line on stderr (else its last line), for reports.
    var lastErrorLine: String {
        let lines = stderr.split(separator: "\n").map(String.init)
        return lines.first { $0.hasPrefix("reshard: error:") } ?? lines.last ?? ""
    }

    func signal(_ number: Int32) { kill(pid, number) }

    /// The exit code (128+signal when killed) once it ended, nil while it runs.
    func poll() -> Int32? {
        if let status { return status }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
        status = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return status
    }

    /// The exit code once it ended within `seconds`, else nil (it still runs).
    func wait(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let status = poll() { return status }
            usleep(20_000)
        }
        return poll()
    }

    @discardableResult
    func wait() -> Int32 {
        while true {
            if let status = poll() { return status }
            usleep(20_000)
        }
    }

    deinit {
        if poll() == nil {
            kill(pid, SIGKILL)
            wait()
        }
    }
}

