import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Acceptance: the Swift and SQL forms of every shard function agree bit for bit, for at least
/// 100,000 keys per supported type, including 0, -1, the type's limits, empty and non-ASCII text
/// and random uuids.
final class ShardFunctionParityTests: XCTestCase {
    let functions: [ShardFunction] = [
        try! ShardFunction(kind: .hash, shardCount: 3),
        try! ShardFunction(kind: .hash, shardCount: 16),
        try! ShardFunction(kind: .hash, shardCount: 4, boundaries: [-1_000_000_000, -1, 5]),
        try! ShardFunction(kind: .modulo, shardCount: 5),
        try! ShardFunction(kind: .range, shardCount: 3, boundaries: [-10, 1_000_000]),
    ]

    func testIntegerTypes() throws {
        for (type, limit) in [(KeyType.smallint, "32767"), (.integer, "2147483647"), (.bigint, "9223372036854775807")] {
            let min = type == .smallint ? "-32768" : type == .integer ? "-2147483648" : "-9223372036854775808"
            let conn = try connection()
            try conn.execute(
                """
                CREATE TABLE k (id serial PRIMARY KEY, v \(type.rawValue));
                INSERT INTO k (v) VALUES (0), (-1), (1), (\(min)), (\(limit)), (\(min) + 1), (\(limit) - 1);
                INSERT INTO k (v) SELECT g FROM generate_series(-30000, 30000) g;
                INSERT INTO k (v) SELECT (random() * (\(limit)::float8 * 2) - \(limit)::float8)::numeric::\(type.rawValue)
                  FROM generate_series(1, 45000);
                """)
            try compare(conn, type: type, minimumRows: 100_000)
        }
    }

    func testTextAndVarchar() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [Character] = Array("abcXYZ019 _-'\"\\;é中文😀ßøΩ€")
        var strings = ["", " ", "a", "é", "中文", "😀", "abcdefghijk", "abcdefghijkl", "abcdefghijklm", String(repeating: "x", count: 300)]
        while strings.count < 100_000 {
            let length = Int.random(in: 0...40, using: &generator)
            strings.append(String((0..<length).map { _ in alphabet.randomElement(using: &generator)! }))
        }
        for type in [KeyType.text, .varchar] {
            let conn = try connection()
            try conn.execute("CREATE TABLE k (id int PRIMARY KEY, v \(type == .text ? "text" : "varchar(400)"))")
            try conn.copyIn("COPY k (id, v) FROM STDIN") { writer in
                for (i, s) in strings.enumerated() {
                    try writer.write("\(i)\t\(s.replacingOccurrences(of: "\\", with: "\\\\"))\n")
                }
            }
            try compare(conn, type: type, minimumRows: 100_000) { id, _ in strings[id] }
        }
    }

    func testUUID() throws {
        let conn = try connection()
        try conn.execute(
            """
            CREATE TABLE k (id serial PRIMARY KEY, v uuid);
            INSERT INTO k (v) VALUES ('00000000-0000-0000-0000-000000000000'), ('ffffffff-ffff-ffff-ffff-ffffffffffff');
            INSERT INTO k (v) SELECT gen_random_uuid() FROM generate_series(1, 100000);
            """)
        try compare(conn, type: .uuid, minimumRows: 100_000)
    }

    private func connection() throws -> PGConnection {
        try PGConnection.connect(try freshDatabase(on: try TestClusters.shared.clusters()[0]))
    }

    /// Streams id, value, the SQL hash and every function's SQL shard index, and checks each row
    /// against the Swift forms. `value` maps an id (and the printed value) to the exact key.
    private func compare(
        _ conn: PGConnection, type: KeyType, minimumRows: Int, value: ((Int, String) -> String)? = nil
    ) throws {
        let column = try conn.quoteIdentifier("v")
        let indexes = functions.filter { $0.supports(type) }
        // Each function's index, and the index again as the per-target filters see it.
        let select = (["id", "v", "\(type.hashFunction)(v)"] + indexes.map { $0.sqlShardIndex(quotedColumn: column, type: type) }
            + indexes.map { f in
                // sum of t over the filters that hold, plus 1000 unless exactly one holds
                let holds = (0..<f.shardCount).map { "(\(f.sqlShardFilter(quotedColumn: column, type: type, target: $0)))::int" }
                let index = holds.enumerated().map { "\($0.element) * \($0.offset)" }.joined(separator: " + ")
                return "(\(index) + CASE WHEN \(holds.joined(separator: " + ")) = 1 THEN 0 ELSE 1000 END)"
            })
            .joined(separator: ", ")
        var rows = 0
        var mismatches: [String] = []
        let result = try conn.query("SELECT \(select) FROM k")
        for row in 0..<result.rowCount {
            let id = try result.get(row, 0, as: Int.self)
            let printed = result[row, 1] ?? ""
            let text = value?(id, printed) ?? printed
            guard let key = ShardKey(text: text, type: type) else {
                mismatches.append("cannot parse \(text)")
                continue
            }
            let sqlHash = try result.get(row, 2, as: Int32.self)
            if key.postgresHash != sqlHash, mismatches.count < 5 {
                mismatches.append("\(type) \(text.debugDescription): swift hash \(key.postgresHash), sql \(sqlHash)")
            }
            for (i, function) in indexes.enumerated() {
                let sqlIndex = try result.get(row, 3 + i, as: Int.self)
                let swiftIndex = try function.shard(for: key)
                if sqlIndex != swiftIndex, mismatches.count < 5 {
                    mismatches.append("\(type) \(text.debugDescription) \(function.kind) M=\(function.shardCount): swift \(swiftIndex), sql \(sqlIndex)")
                }
                // Exactly one filter holds, and it is the one of the row's shard.
                let filtered = try result.get(row, 3 + indexes.count + i, as: Int.self)
                if filtered != swiftIndex, mismatches.count < 5 {
                    mismatches.append("\(type) \(text.debugDescription) \(function.kind) M=\(function.shardCount): filters say \(filtered), swift \(swiftIndex)")
                }
            }
            rows += 1
        }
        XCTAssertGreaterThanOrEqual(rows, minimumRows)
        XCTAssertEqual(mismatches, [], "\(type)")
    }
}
