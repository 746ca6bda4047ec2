import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `reshard` binary as a user would, capturing exit code, stdout and stderr.
enum ReshardCLI {
    struct Outcome {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// The `reshard` executable next to the test bundle.
    static var executable: String {
        let bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [bundleDirectory, bundleDirectory.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("reshard").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return bundleDirectory.appendingPathComponent("reshard").path
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        let process = try start(arguments, environment: environment)
        let status = process.wait()
        return Outcome(status: status, stdout: process.stdout, stderr: process.stderr)
    }

    /// - Parameter environment: variables set (or, with an empty value, unset) on top of this process's.
    static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> Running {
        let directory = NSTemporaryDirectory() + "reshard-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, directory + "/stdout", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, directory + "/stderr", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var variables = ProcessInfo.processInfo.environment
        for (name, value) in environment { variables[name] = value.isEmpty ? nil : value }
        let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard code == 0 else { throw NSError(domain: "spawn", code: Int(code)) }
        return Running(pid: pid, directory: directory)
    }

    /// A `reshard` process started in the background.
    final class Running {
        let pid: pid_t
        let directory: String
        private var status: Int32?

        init(pid: pid_t, directory: String) {
            self.pid = pid
            self.directory = directory
        }

        var stdout: String { (try? String(contentsOfFile: directory + "/stdout", encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOfFile: directory + "/stderr", encoding: .utf8)) ?? "" }

        func signal(_ number: Int32) { kill(pid, number) }

        /// Waits for exit; returns the exit code, or 128+signal.
        @discardableResult
        func wait() -> Int32 {
            if let status { return status }
            var raw: Int32 = 0
            while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            let result = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            status = result
            return result
        }

        /// Waits for exit up to `timeout`; nil (still running) after that.
        func wait(timeout: TimeInterval) -> Int32? {
            if let status { return status }
            let deadline = Date().addingTimeInterval(timeout)
            var raw: Int32 = 0
            while Date() < deadline {
                if waitpid(pid, &raw, WNOHANG) == pid {
                    let result = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
                    status = result
                    return result
                }
                usleep(20_000)
            }
            return nil
        }

        deinit {
            if status == nil {
                kill(pid, SIGKILL)
                wait()
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// Polls `condition` until it holds or `timeout` passes: for waiting on another process, where
/// there is nothing to block on. Returns whether it held.
func eventually(timeout: TimeInterval = 30, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}
