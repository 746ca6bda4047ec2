import Foundation

/// Where the PostgreSQL server programs (`initdb`, `pg_ctl`, `postgres`) are.
public struct PostgresBinaries: Sendable {
    public let directory: String

    public func path(_ program: String) -> String { directory + "/" + program }

    /// Looks in `RESHARD_PG_BINDIR`, then next to `initdb` on `PATH`, then `pg_config --bindir`,
    /// then the newest `/usr/lib/postgresql/*/bin` (Debian and Ubuntu keep them off `PATH`).
    public static func locate() throws -> PostgresBinaries {
        let fm = FileManager.default
        func usable(_ dir: String) -> Bool {
            fm.isExecutableFile(atPath: dir + "/initdb") && fm.isExecutableFile(atPath: dir + "/pg_ctl")
        }
        var candidates: [String] = []
        let env = ProcessInfo.processInfo.environment
        if let dir = env["RESHARD_PG_BINDIR"] { candidates.append(dir) }
        for dir in (env["PATH"] ?? "").split(separator: ":").map(String.init) where fm.isExecutableFile(atPath: dir + "/initdb") {
            let resolved = (try? fm.destinationOfSymbolicLink(atPath: dir + "/initdb")).map {
                URL(fileURLWithPath: $0, relativeTo: URL(fileURLWithPath: dir + "/")).deletingLastPathComponent().path
            }
            candidates.append(resolved ?? dir)
        }
        if let bindir = try? runCapturing("pg_config", ["--bindir"]) { candidates.append(bindir) }
        if let versions = try? fm.contentsOfDirectory(atPath: "/usr/lib/postgresql") {
            for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
                candidates.append("/usr/lib/postgresql/\(version)/bin")
            }
        }
        guard let found = candidates.first(where: usable) else {
            throw LocalClusterError(
                "cannot find PostgreSQL server programs (initdb, pg_ctl): install postgresql or set RESHARD_PG_BINDIR")
        }
        return PostgresBinaries(directory: found)
    }
}

/// Runs `program` (found on PATH) and returns its trimmed standard output, or throws.
func runCapturing(_ program: String, _ arguments: [String]) throws -> String {
    let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    guard let executable = paths.map({ "\($0)/\(program)" }).first(where: FileManager.default.isExecutableFile(atPath:)) else {
        throw LocalClusterError("\(program) not found on PATH")
    }
    let capture = NSTemporaryDirectory() + "/reshard-run-\(UUID().uuidString).out"
    defer { try? FileManager.default.removeItem(atPath: capture) }
    let status = try Subprocess.run([executable] + arguments, outputPath: capture)
    guard status == 0 else { throw LocalClusterError("\(program) exited \(status)") }
    let output = (try? String(contentsOfFile: capture, encoding: .utf8)) ?? ""
    return output.trimmingCharacters(in: .whitespacesAndNewlines)
}

public struct LocalClusterError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
