import ReshardRouting
import Foundation
import PostgresClient
import Yams

/// Loading `reshard.yml`. Every mistake is reported as `file:line: what, naming the key`, and
/// unknown keys are errors (a misspelt `split_point` must not silently mean "even split").
extension ReshardConfig {
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ReshardConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ReshardError.badInput("\(path): cannot read the config file")
        }
        return try parse(String(decoding: data, as: UTF8.self), file: path, environment: environment)
    }

    public static func parse(_ yaml: String, file: String, environment: [String: String] = [:]) throws -> ReshardConfig {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: yaml) else { throw ReshardError.badInput("\(file): the config file is empty") }
            root = node
        } catch let error as YamlError {
            throw ReshardError.badInput("invalid YAML: \(yamlErrorProblem(error))", at: .init(file: file, line: yamlErrorLocation(error)))
        }
        let reader = YAMLReader(file: file, environment: environment)
        let top = try reader.mapping(root, "the config file", keys: ["migration", "metadata", "source", "target", "tables"])

        let migration = try reader.string(top, "migration")
        guard !migration.isEmpty, migration.count <= 63 else {
            throw ReshardError.badInput("migration must be a name of 1 to 63 characters", at: reader.location(top["migration"]!))
        }
        // Without a `metadata` key the metadata database comes from RESHARD_METADATA, as for
        // `init`: one place for it, outside the file and off the command line.
        let metadata: ConnectionString
        if top["metadata"] == nil, let fromEnvironment = environment[metadataVariable], !fromEnvironment.isEmpty {
            do { metadata = try ConnectionString(fromEnvironment, label: "metadata") } catch let error as PostgresError {
                throw ReshardError.badInput("\(metadataVariable): \(error.message)")
            }
        } else {
            do {
                metadata = try reader.dsn(try reader.required(top, "metadata"), label: "metadata")
            } catch let error as ReshardError where top["metadata"] == nil {
                throw ReshardError.badInput(error.message + " (or set \(metadataVariable))", at: error.location)
            }
        }

        let sourceNode = try reader.mapping(
            try reader.required(top, "source"), "source", keys: ["shards", "function", "split_points", "boundaries"])
        let sources = try reader.shards(try reader.required(sourceNode, "shards", in: "source"), prefix: "s", list: "source")
        let sourceFunction = sourceNode["function"] == nil
            ? nil : try reader.function(sourceNode, shardCount: sources.count, what: "source", fallback: top["source"]!)

        let targetNode = try reader.mapping(
            try reader.required(top, "target"), "target", keys: ["function", "shards", "split_points", "boundaries"])
        let targets = try reader.shards(try reader.required(targetNode, "shards", in: "target"), prefix: "t", list: "target")
        let function = try reader.function(targetNode, shardCount: targets.count, what: "target", fallback: top["target"]!)

        let tablesNode = try reader.required(top, "tables")
        guard case .sequence(let tableList) = tablesNode, !tableList.isEmpty else {
            throw ReshardError.badInput("tables must be a list of {name, key}", at: reader.location(tablesNode))
        }
        var tables: [Table] = []
        for item in tableList {
            let entry = try reader.mapping(item, "tables entry", keys: ["name", "key", "source_key"])
            let nameNode = try reader.required(entry, "name", in: "tables entry")
            let keyNode = try reader.required(entry, "key", in: "tables entry")
            let name: QualifiedName, key: String, sourceKey: String?
            do {
                name = try QualifiedName.parse(try reader.scalar(nameNode, "tables.name"))
                key = try QualifiedName.parseIdentifier(try reader.scalar(keyNode, "tables.key"))
                sourceKey = try entry["source_key"].map { try QualifiedName.parseIdentifier(try reader.scalar($0, "tables.source_key")) }
            } catch let error as ReshardError {
                throw error.located(at: reader.location(item))
            }
            if let earlier = tables.first(where: { $0.name == name }) {
                throw ReshardError.badInput("table \(name) is listed twice (first at line \(earlier.line))", at: reader.location(item))
            }
            if let node = entry["source_key"], sourceFunction == nil {
                throw ReshardError.badInput("source_key needs source.function (how rows are placed today)", at: reader.location(node))
            }
            tables.append(Table(name: name, key: key, sourceKey: sourceKey, line: item.mark?.line ?? 0))
        }
        return ReshardConfig(
            file: file, migration: migration, metadata: metadata, sources: sources, targets: targets, function: function,
            sourceFunction: sourceFunction, tables: tables)
    }

    private static func yamlErrorLocation(_ error: YamlError) -> Int {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default: return 1
        }
    }

    private static func yamlErrorProblem(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): return problem
        default: return "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
        }
    }
}

/// Typed reading of YAML nodes with `file:line` in every error.
struct YAMLReader {
    let file: String
    let environment: [String: String]

    func at(_ node: Node) -> String { location(node).description }

    func location(_ node: Node) -> ReshardError.Location { .init(file: file, line: node.mark?.line ?? 0) }

    func mapping(_ node: Node, _ what: String, keys: Set<String>) throws -> [String: Node] {
        guard case .mapping(let mapping) = node else { throw ReshardError.badInput("\(what) must be a mapping", at: location(node)) }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw ReshardError.badInput("keys must be strings", at: location(keyNode)) }
            guard keys.contains(key) else {
                throw ReshardError.badInput(
                    "\(at(keyNode)): unknown key '\(key)' in \(what) (expected \(keys.sorted().joined(separator: ", ")))")
            }
            guard result[key] == nil else { throw ReshardError.badInput("key '\(key)' appears twice", at: location(keyNode)) }
            result[key] = value
        }
        return result
    }

    func required(_ mapping: [String: Node], _ key: String, in what: String = "the config file") throws -> Node {
        guard let node = mapping[key] else {
            let line = mapping.values.compactMap { $0.mark?.line }.min().map { max($0 - 1, 1) } ?? 1
            throw ReshardError.badInput("missing key '\(key)' in \(what)", at: .init(file: file, line: line))
        }
        return node
    }

    /// A scalar as text, with `${VAR}` replaced from the environment.
    func scalar(_ node: Node, _ what: String) throws -> String {
        guard case .scalar(let scalar) = node else { throw ReshardError.badInput("\(what) must be a single value", at: location(node)) }
        return try expand(scalar.string, node)
    }

    func string(_ mapping: [String: Node], _ key: String) throws -> String {
        try scalar(try required(mapping, key), key)
    }

    func integers(_ node: Node, _ what: String) throws -> [Int64] {
        guard case .sequence(let items) = node else { throw ReshardError.badInput("\(what) must be a list of integers", at: location(node)) }
        return try items.map { item in
            guard let value = Int64(try scalar(item, what)) else {
                throw ReshardError.badInput("\(what) must hold integers, not '\(item.string ?? "?")'", at: location(item))
            }
            return value
        }
    }

    /// `function` with its `split_points` or `boundaries`, for the shards of `what` (source or target).
    func function(_ node: [String: Node], shardCount: Int, what: String, fallback: Node) throws -> ShardFunction {
        var kind = ShardFunction.Kind.hash
        if let functionNode = node["function"] {
            let text = try scalar(functionNode, "\(what).function")
            guard let parsed = ShardFunction.Kind(rawValue: text) else {
                throw ReshardError.badInput("\(what).function must be hash, modulo or range, not '\(text)'", at: location(functionNode))
            }
            kind = parsed
        }
        let splitPoints = try node["split_points"].map { try integers($0, "\(what).split_points") }
        let boundaries = try node["boundaries"].map { try integers($0, "\(what).boundaries") }
        do {
            switch kind {
            case .hash:
                if let misplaced = node["boundaries"] {
                    throw ReshardError.badInput("\(what).boundaries is for range; hash takes split_points", at: location(misplaced))
                }
                return try ShardFunction(kind: .hash, shardCount: shardCount, boundaries: splitPoints)
            case .range:
                if let misplaced = node["split_points"] {
                    throw ReshardError.badInput("\(what).split_points is for hash; range takes boundaries", at: location(misplaced))
                }
                return try ShardFunction(kind: .range, shardCount: shardCount, boundaries: boundaries)
            case .modulo:
                if let misplaced = node["split_points"] ?? node["boundaries"] {
                    throw ReshardError.badInput("modulo takes neither split_points nor boundaries", at: location(misplaced))
                }
                return try ShardFunction(kind: .modulo, shardCount: shardCount)
            }
        } catch let error as ShardFunctionError {
            let culprit = node["split_points"] ?? node["boundaries"] ?? node["function"] ?? fallback
            throw ReshardError.badInput("\(what): \(error.message)", at: location(culprit))
        }
    }

    func dsn(_ node: Node, label: String) throws -> ConnectionString {
        let text = try scalar(node, label)
        do {
            var dsn = try ConnectionString(text, label: label)
            if case .scalar(let written) = node, written.string.contains("${") { dsn.template = written.string }
            return dsn
        } catch let error as PostgresError {
            throw ReshardError.badInput("\(error.message)", at: location(node))
        }
    }

    /// A list of shards, each a connection string or `{name, dsn}`; default names s0, s1... / t0, t1...
    func shards(_ node: Node, prefix: String, list: String) throws -> [ReshardConfig.Shard] {
        guard case .sequence(let items) = node, !items.isEmpty else {
            throw ReshardError.badInput("\(list).shards must be a non-empty list", at: location(node))
        }
        var shards: [ReshardConfig.Shard] = []
        for (index, item) in items.enumerated() {
            var name = "\(prefix)\(index)"
            let dsnNode: Node
            var replicaNodes: [Node] = []
            if case .mapping = item {
                let entry = try mapping(item, "\(list) shard", keys: ["name", "dsn", "replicas"])
                if let nameNode = entry["name"] { name = try scalar(nameNode, "name") }
                dsnNode = try required(entry, "dsn", in: "\(list) shard")
                if let node = entry["replicas"] {
                    guard case .sequence(let items) = node else {
                        throw ReshardError.badInput("replicas of shard \(name) must be a list of connection strings", at: location(node))
                    }
                    replicaNodes = Array(items)
                }
            } else {
                dsnNode = item
            }
            guard !name.isEmpty, !name.contains(where: { $0.isWhitespace }) else {
                throw ReshardError.badInput("shard name '\(name)' must be a non-empty word", at: location(item))
            }
            if shards.contains(where: { $0.name == name }) {
                throw ReshardError.badInput("shard name '\(name)' is used twice in \(list).shards", at: location(item))
            }
            shards.append(.init(
                name: name, dsn: try dsn(dsnNode, label: name), line: item.mark?.line ?? 0,
                replicas: try replicaNodes.map { try dsn($0, label: "replica of \(name)") }))
        }
        return shards
    }

    private func expand(_ text: String, _ node: Node) throws -> String {
        do { return try ReshardConfig.expandingEnvironment(text, environment) } catch let error as ReshardError {
            throw error.located(at: location(node))
        }
    }
}

extension ReshardConfig {
    /// The environment variable that names the metadata database when the config does not.
    public static let metadataVariable = "RESHARD_METADATA"

    /// `text` with every `${VAR}` replaced from `environment` (config values, and the connection
    /// strings a plan file keeps as the config wrote them).
    public static func expandingEnvironment(_ text: String, _ environment: [String: String]) throws -> String {
        guard text.contains("${") else { return text }
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw ReshardError.badInput("unterminated ${ in value")
            }
            let name = String(rest[start.upperBound..<end])
            guard let value = environment[name] else {
                throw ReshardError.badInput("environment variable \(name) is not set")
            }
            out += value
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }
}
