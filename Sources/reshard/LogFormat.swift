import ArgumentParser
import Foundation
import Logging

/// How the events reshard logs (phase changes, retries, errors: the ones it also records in
/// `reshard.events`) are written to stderr: `--log-format text|json`.
enum LogFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json

    /// The format the command line chose; read by the handler at each event.
    static var current: LogFormat {
        get { lock.withLock { chosen } }
        set { lock.withLock { chosen = newValue } }
    }
    nonisolated(unsafe) private static var chosen = LogFormat.text
    private static let lock = NSLock()

    /// Points swift-log at stderr before anything logs (its default would write to stdout, which
    /// carries only results).
    static func bootstrap() {
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label) }
    }
}

/// One line per event on stderr, as text or as a JSON object.
struct StderrLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let at = Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
        let line: String
        switch LogFormat.current {
        case .json:
            var object: [String: String] = ["at": at, "level": event.level.rawValue, "message": event.message.description]
            for (key, value) in fields { object[key] = value.description }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        case .text:
            let extra = fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            line = "\(at) \(event.level.rawValue) \(event.message)" + (extra.isEmpty ? "" : " " + extra)
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
