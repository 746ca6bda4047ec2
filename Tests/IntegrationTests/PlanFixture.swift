import Foundation
import LocalCluster
import PostgresClient
import XCTest

/// Two sources and three targets on the shared clusters, the first target being the first
/// source's database, plus a metadata database; and a config file describing them.
struct PlanFixture {
    var sources: [ConnectionString]
    var targets: [ConnectionString]
    var metadata: ConnectionString
    let directory: String

    init(_ test: XCTestCase) throws {
        let clusters = try TestClusters.shared.clusters()
        let s0 = try test.freshDatabase(on: clusters[0], "s0")
        let s1 = try test.freshDatabase(on: clusters[1], "s1")
        sources = [s0, s1]
        targets = [s0, try test.freshDatabase(on: clusters[0], "t1"), try test.freshDatabase(on: clusters[1], "t2")]
        metadata = try test.freshDatabase(on: clusters[0], "meta")
        directory = NSTemporaryDirectory() + "reshard-plan-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let directory = self.directory
        test.addTeardownBlock { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Runs SQL on every source.
    func onSources(_ sql: String) throws {
        for source in sources { try PGConnection.connect(source).execute(sql) }
    }

    /// Writes reshard.yml and returns its path.
    func writeConfig(
        tables: [(String, String)] = [("users", "id")], function: String = "hash", extraTarget: String = "",
        sources: [ConnectionString]? = nil, targets: [ConnectionString]? = nil, sourceFunction: String? = nil,
        sourceKeys: [String: String] = [:], replicas: [Int: [ConnectionString]] = [:]
    ) throws -> String {
        func quoted(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        var yaml = "migration: plan-test\nmetadata: \(quoted(metadata.unsafeRawValue))\nsource:\n" + (sourceFunction.map { "  function: \($0)\n" } ?? "") + "  shards:\n"
        for (i, s) in (sources ?? self.sources).enumerated() {
            let listed = replicas[i].map { ", replicas: [" + $0.map { quoted($0.unsafeRawValue) }.joined(separator: ", ") + "]" }
            yaml += listed.map { "    - {dsn: \(quoted(s.unsafeRawValue))\($0)}\n" } ?? "    - \(quoted(s.unsafeRawValue))\n"
        }
        yaml += "target:\n  function: \(function)\n\(extraTarget)  shards:\n"
        for t in targets ?? self.targets { yaml += "    - \(quoted(t.unsafeRawValue))\n" }
        yaml += "tables:\n"
        for (name, key) in tables {
            yaml += "  - name: \(quoted(name))\n    key: \(quoted(key))\n"
            if let sourceKey = sourceKeys[name] { yaml += "    source_key: \(quoted(sourceKey))\n" }
        }
        let path = directory + "/reshard.yml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Everything a write could change, per database: relations and their storage, manual
    /// analyzes, and row write counters (flushed by the server when a backend exits). Throws when
    /// a database cannot be read: two failed snapshots would otherwise compare equal. A test that
    /// makes a database unreachable on purpose names it in `unreachable`.
    func snapshot(unreachable: [ConnectionString] = []) throws -> [String] {
        let skipped = Set(unreachable.map(\.unsafeRawValue))
        return try (sources + targets + [metadata]).filter { !skipped.contains($0.unsafeRawValue) }.map { dsn in
            let conn = try PGConnection.connect(dsn)
            let result = try conn.query(
                """
                SELECT (SELECT string_agg(format('%s.%s:%s:%s', n.nspname, c.relname, c.relkind, c.relfilenode), ',' ORDER BY 1)
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),
                       (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) || '/' || coalesce(max(last_analyze)::text, '-')
                          FROM pg_stat_user_tables),
                       (SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database)
                """)
            return (0..<3).map { result[0, $0] ?? "" }.joined(separator: " | ")
        }
    }
}
