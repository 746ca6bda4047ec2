import PostgresClient
import ReshardRouting
import XCTest

@testable import ReshardCore

/// The catch-up's SQL read as text: keys are joined column by column (index lookups), never a
/// row-value IN list, and every table column is qualified and quoted.
final class CatchUpSQLTests: XCTestCase {
    private func sql(uniqueKey: [String] = ["customer_id", "pk", "li\"ne"], identityAlways: Bool = false, target: Int = 0) throws -> CatchUpSQL {
        let columns = [
            TableSchema.Column(name: "customer_id", type: "bigint", notNull: true),
            TableSchema.Column(name: "pk", type: "integer", notNull: true),
            TableSchema.Column(name: "li\"ne", type: "text", notNull: true),
            TableSchema.Column(name: "total", type: "numeric", notNull: false, isGenerated: true),
        ]
        var table = Plan.Table(
            name: QualifiedName(schema: "app", "or\"ders"), key: "customer_id", keyType: .bigint, columns: columns,
            uniqueKey: uniqueKey, fingerprint: "f", estimateMethod: "exact", slices: [])
        table.identityAlways = identityAlways
        let shard = { (name: String, same: String?) in Plan.Shard(name: name, endpoint: "", dsn: "", sameAsSource: same) }
        let plan = Plan(
            migration: "m", metadata: "", function: try ShardFunction(kind: .hash, shardCount: 2),
            sources: [shard("s0", nil), shard("s1", nil)], targets: [shard("t0", nil), shard("t1", "s1")], tables: [table])
        return CatchUpSQL(plan: plan, table: table, target: target)
    }

    /// The lane's key set is emptied and refilled in one simple query (one round trip), the
    /// server's ctids as a literal: no parameter is left, a quote in the text cannot end it.
    func testKeysAreReloadedInOneQueryWithTheCtidsAsALiteral() throws {
        let sql = try sql()
        let reload = sql.reloadKeys(fromLog: "reshard.log_m_1", target: 1, ctids: #"{"(0,1)","(0,2)"}"#)
        XCTAssertEqual(
            reload,
            #"TRUNCATE pg_temp.reshard_keys; INSERT INTO pg_temp.reshard_keys (pk) SELECT DISTINCT pk FROM reshard.log_m_1 WHERE ctid = ANY('{"(0,1)","(0,2)"}'::tid[]) AND (hashint8((shard_key)::bigint) >= 0)"#
        )
        XCTAssertFalse(sql.reloadKeys(fromLog: "l", target: 0, ctids: "{'}").contains("$1"))
        XCTAssertTrue(sql.reloadKeys(fromLog: "l", target: 0, ctids: "{'}").contains("ANY('{''}'::tid[])"))
    }

    /// One read of the log gives the batch and, per target, how many entries concern it, by the
    /// same filter on the logged shard key as the lane's key set.
    func testTheBatchReadCountsTheEntriesOfEveryTarget() throws {
        let sql = try sql()
        let plan = Plan(
            migration: "m", metadata: "", function: sql.function,
            sources: [Plan.Shard(name: "s0", endpoint: "", dsn: "", sameAsSource: nil)],
            targets: [Plan.Shard(name: "t0", endpoint: "", dsn: "", sameAsSource: nil), Plan.Shard(name: "t1", endpoint: "", dsn: "", sameAsSource: nil)],
            tables: [sql.sql.table])
        XCTAssertEqual(
            CatchUpSQL.readBatch(plan: plan, table: sql.sql.table, log: "reshard.log_m_1", limit: 500),
            "SELECT count(*), array_agg(ctid)::text, count(*) FILTER (WHERE (hashint8((shard_key)::bigint) < 0)), count(*) FILTER (WHERE (hashint8((shard_key)::bigint) >= 0)) FROM (SELECT ctid, shard_key FROM reshard.log_m_1 LIMIT 500) e"
        )
    }

    func testKeysAreJoinedColumnByColumnNeverAsARowValueList() throws {
        let sql = try sql()
        XCTAssertEqual(
            sql.currentRows(target: 0),
            #"SELECT t."customer_id", t."pk", t."li""ne" FROM "app"."or""ders" t JOIN pg_temp.reshard_keys k ON t."customer_id" = (k.pk[1])::bigint AND t."pk" = (k.pk[2])::integer AND t."li""ne" = (k.pk[3])::text WHERE (hashint8(t."customer_id") < 0)"#
        )
        XCTAssertEqual(
            sql.deleteKeys(target: 1),
            #"DELETE FROM "app"."or""ders" t USING unnest($1::text[], $2::text[], $3::text[]) AS e(k0, k1, k2) WHERE t."customer_id" = e.k0::bigint AND t."pk" = e.k1::integer AND t."li""ne" = e.k2::text AND (hashint8(t."customer_id") >= 0) AND NOT EXISTS (SELECT 1 FROM \#(sql.staging) s WHERE s."customer_id" = t."customer_id" AND s."pk" = t."pk" AND s."li""ne" = t."li""ne")"#
        )
        XCTAssertEqual(
            CatchUpSQL.loadKeys(columns: 3),
            "INSERT INTO pg_temp.reshard_keys (pk) SELECT ARRAY[e.k0, e.k1, e.k2] FROM unnest($1::text[], $2::text[], $3::text[]) AS e(k0, k1, k2)")
        for statement in [
            sql.currentRows(target: 0), sql.deleteKeys(target: 0), sql.currentRowsIntoStaging(target: 0), CatchUpSQL.loadKeys(columns: 3),
            sql.deleteCandidates(target: 0), sql.upsertStaging, sql.upsertStagingOnePerKey,
        ] {
            XCTAssertFalse(statement.contains(" IN ("), statement)
        }
    }

    func testDeleteCandidatesAndKeySetsFollowTheLoggedShardKey() throws {
        let sql = try sql()
        let candidates = sql.deleteCandidates(target: 0)
        XCTAssertTrue(candidates.contains("unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS e(k0, k1, k2, sk)"), candidates)
        // The shard key is part of this unique key: the key join matches it already.
        XCTAssertFalse(candidates.contains("e.sk::bigint"), candidates)
        let byOtherKey = try self.sql(uniqueKey: ["pk"]).deleteCandidates(target: 1)
        XCTAssertTrue(byOtherKey.contains(#"ON t."pk" = e.k0::integer AND t."customer_id" = e.sk::bigint"#), byOtherKey)
        XCTAssertTrue(candidates.contains("WHERE (hashint8((e.sk)::bigint) < 0) AND (hashint8(t.\"customer_id\") < 0)"), candidates)
        XCTAssertTrue(candidates.contains(#"NOT EXISTS (SELECT 1 FROM \#(sql.staging) s WHERE s."customer_id" = t."customer_id" AND s."pk" = t."pk""#), candidates)
        XCTAssertEqual(
            sql.loadKeys(fromLog: "reshard_shim.log_1", target: 1),
            "INSERT INTO pg_temp.reshard_keys (pk) SELECT DISTINCT pk FROM reshard_shim.log_1 WHERE ctid = ANY($1::tid[]) AND (hashint8((shard_key)::bigint) >= 0)")
    }

    func testStagingNeverWritesGeneratedColumnsAndKeepsOneRowPerKey() throws {
        let sql = try sql()
        XCTAssertFalse(sql.upsertStaging.contains("total"))
        XCTAssertTrue(sql.upsertStagingOnePerKey.contains(#"(SELECT DISTINCT ON ("customer_id", "pk", "li""ne") * FROM \#(sql.staging)) s"#), sql.upsertStagingOnePerKey)
        XCTAssertTrue(sql.staging.hasPrefix("pg_temp.reshard_staging_"))
        XCTAssertFalse(sql.upsertStaging.contains("OVERRIDING"))
        let identity = try self.sql(identityAlways: true)
        for statement in [identity.upsertStaging, identity.upsertStagingOnePerKey] {
            XCTAssertTrue(statement.contains(") OVERRIDING SYSTEM VALUE SELECT "), statement)
        }
    }

    /// On a target that is a source's database every write goes to the table built beside the
    /// live one; current rows are read from the live table, on the same server when it is the source's.
    func testASharedTargetIsWrittenInTheBuildSchemaOnly() throws {
        let shared = try sql(target: 1), pure = try sql(target: 0)
        for statement in [shared.upsertStaging, shared.upsertStagingOnePerKey, shared.deleteKeys(target: 1), shared.deleteCandidates(target: 1)] {
            XCTAssertTrue(statement.contains(#""reshard_build"."or""ders""#), statement)
            XCTAssertFalse(statement.contains(#""app"."or""ders""#), statement)
        }
        XCTAssertTrue(shared.createStaging.contains(#"(LIKE "reshard_build"."or""ders")"#), shared.createStaging)
        XCTAssertTrue(shared.currentRows(target: 1).contains(#"FROM "app"."or""ders" t JOIN"#))
        XCTAssertTrue(
            shared.currentRowsIntoStaging(target: 1).hasPrefix(#"INSERT INTO \#(shared.staging) ("customer_id", "pk", "li""ne") SELECT t."customer_id""#),
            shared.currentRowsIntoStaging(target: 1))
        XCTAssertTrue(pure.upsertStaging.hasPrefix(#"INSERT INTO "app"."or""ders" "#), pure.upsertStaging)
    }
}
