import Foundation

/// Where the CLI's words go: results to stdout, errors and progress to stderr, one line each.
enum Console {
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("reshard: error: \(message)\n".utf8))
    }

    static func plain(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    static func out(_ line: String) {
        // Unbuffered, so lines arrive in order with stderr and before a long wait.
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    /// Prints one JSON document on stdout (sorted keys, so scripts and diffs are stable).
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        out(String(decoding: try encoder.encode(value), as: UTF8.self))
    }
}
