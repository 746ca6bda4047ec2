import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import ReshardRouting
import Yams

/// The servers a rehearsal runs on: throwaway local clusters (one per source, per target that is
/// not a source's database, and one for the metadata), or existing servers named by a map file
/// (`--external map.yml`, e.g. the Docker harness's). Only local clusters can be restarted.
public struct RehearsalTopology: @unchecked Sendable {
    public var sources: [ConnectionString]
    public var targets: [ConnectionString]
    public var metadata: ConnectionString
    /// The source each target shares its database with, if any.
    public var sharedWith: [Int?]
    public var function: ShardFunction
    public var sourceFunction: ShardFunction
    /// For restarts; nil for external servers.
    var sourceClusters: [LocalCluster] = []
    var targetClusters: [LocalCluster?] = []
    var metadataCluster: LocalCluster?
    var clusterSet: LocalClusterSet?

    public var isLocal: Bool { clusterSet != nil }

    /// Local clusters: N sources, M targets of which the first `shared` are the first sources' databases.
    static func local(
        sources n: Int, targets m: Int, sharedWith: [Int?], function: ShardFunction, sourceFunction: ShardFunction
    ) throws -> RehearsalTopology {
        let pure = sharedWith.filter { $0 == nil }.count
        // Rehearsals keep fsync on: a restart must lose nothing a commit acknowledged.
        let set = try LocalClusterSet.start(count: n + pure + 1, options: .init(forTests: false))
        let c = set.clusters
        var sources: [ConnectionString] = []
        for i in 0..<n { sources.append(try c[i].createDatabase("app").labelled("s\(i)")) }
        var targets: [ConnectionString] = [], targetClusters: [LocalCluster?] = []
        var next = n
        for j in 0..<m {
            if let s = sharedWith[j] {
                targets.append(sources[s])
                targetClusters.append(nil)
            } else {
                targets.append(try c[next].createDatabase("app").labelled("t\(j)"))
                targetClusters.append(c[next])
                next += 1
            }
        }
        let metadata = try c[next].createDatabase("reshard").labelled("metadata")
        var topology = RehearsalTopology(
            sources: sources, targets: targets, metadata: metadata, sharedWith: sharedWith, function: function,
            sourceFunction: sourceFunction)
        topology.sourceClusters = Array(c[0..<n])
        topology.targetClusters = targetClusters
        topology.metadataCluster = c[next]
        topology.clusterSet = set
        return topology
    }

    /// `--external map.yml`: existing, empty databases.
    ///
    /// ```yaml
    /// metadata: postgres://postgres@metadata:5432/reshard
    /// sources: [postgres://postgres@source0:5432/app, postgres://postgres@source1:5432/app]
    /// targets: [postgres://postgres@source0:5432/app, postgres://postgres@target1:5432/app]  # equal to a source: shared
    /// function: hash            # optional, the new layout's (default hash)
    /// source_function: modulo   # optional, today's (default modulo for integer keys)
    /// ```
    public struct MapFile: Codable, Sendable {
        public var metadata: String
        public var sources: [String]
        public var targets: [String]
        public var function: String?
        public var source_function: String?
    }

    public static func readMap(_ path: String) throws -> MapFile {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ReshardError.badInput("\(path): cannot read the map file") }
        do { return try YAMLDecoder().decode(MapFile.self, from: text) } catch {
            throw ReshardError.badInput("\(path): not a rehearsal map (metadata, sources, targets): \(error)")
        }
    }

    static func external(_ map: MapFile, path: String, function: ShardFunction, sourceFunction: ShardFunction) throws -> RehearsalTopology {
        func dsn(_ raw: String, _ label: String) throws -> ConnectionString {
            do { return try ConnectionString(ReshardConfig.expandingEnvironment(raw, ProcessInfo.processInfo.environment), label: label) } catch {
                throw ReshardError.badInput("\(path): connection string of \(label): \(error)")
            }
        }
        let sources = try map.sources.enumerated().map { try dsn($1, "s\($0)") }
        let targets = try map.targets.enumerated().map { try dsn($1, "t\($0)") }
        guard !sources.isEmpty, !targets.isEmpty else { throw ReshardError.badInput("\(path): needs at least one source and one target") }
        let shared = targets.map { t in sources.firstIndex { $0.sameDatabase(as: t) } }
        return RehearsalTopology(
            sources: sources, targets: targets.enumerated().map { j, t in shared[j].map { sources[$0] } ?? t },
            metadata: try dsn(map.metadata, "metadata"), sharedWith: shared, function: function, sourceFunction: sourceFunction)
    }

    /// Every distinct database, with the name a user reads.
    var databases: [(name: String, dsn: ConnectionString)] {
        sources.enumerated().map { ("s\($0)", $1) } + targets.enumerated().compactMap { j, t in sharedWith[j] == nil ? ("t\(j)", t) : nil }
    }

    func stop() { clusterSet?.stop() }

    /// The reshard.yml the steps run with.
    func config(migration: String, tables: [TableModel]) -> String {
        func q(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        func ident(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        func function(_ f: ShardFunction) -> String {
            var text = "  function: \(f.kind.rawValue)\n"
            if f.kind == .hash, !f.boundaries.isEmpty { text += "  split_points: [\(f.boundaries.map(String.init).joined(separator: ", "))]\n" }
            if f.kind == .range { text += "  boundaries: [\(f.boundaries.map(String.init).joined(separator: ", "))]\n" }
            return text
        }
        var yaml = "migration: \(migration)\nmetadata: \(q(metadata.unsafeRawValue))\nsource:\n" + function(sourceFunction) + "  shards:\n"
        for (i, s) in sources.enumerated() { yaml += "    - {name: s\(i), dsn: \(q(s.unsafeRawValue))}\n" }
        yaml += "target:\n" + function(self.function) + "  shards:\n"
        for (j, t) in targets.enumerated() { yaml += "    - {name: t\(j), dsn: \(q(t.unsafeRawValue))}\n" }
        yaml += "tables:\n"
        for table in tables {
            let name = (table.name.schema.map { ident($0) + "." } ?? "") + ident(table.name.name)
            yaml += "  - {name: \(q(name)), key: \(q(ident(table.shardKey)))"
            if table.placementKey != table.shardKey { yaml += ", source_key: \(q(ident(table.placementKey)))" }
            yaml += "}\n"
        }
        return yaml
    }
}

extension ConnectionString {
    func labelled(_ label: String) throws -> ConnectionString { try ConnectionString(unsafeRawValue, label: label) }
}
