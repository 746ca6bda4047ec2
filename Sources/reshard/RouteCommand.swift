import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore
import ReshardRouter

/// `reshard route`: which shard a key belongs to now, by the current shard map epoch.
struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route", abstract: "Print the shard a key of a table belongs to in the current shard map epoch.",
        discussion: """
            KEY is written as PostgreSQL prints the table's key type (42, alice, a uuid; a negative one after --: \
            reshard route --table users -- -42). Routes as the \
            ReshardRouter library does; reads only the metadata database.
            """)

    @OptionGroup var migration: MigrationOptions
    @Option(name: .long, help: "The table, as the config names it (users, app.users; unquoted names fold to lower case).")
    var table: String
    @Argument(help: "The shard key value.")
    var key: String
    @OptionGroup var output: OutputOptions

    func run() throws {
        let (name, metadata) = try migration.metadataOnly()
        let meta = try PGConnection.connect(metadata, applicationName: "reshard route", settings: ["default_transaction_read_only": "on"])
        let epochs = try ShardMap.publishedEpochs(name, on: meta)
        let map = (epochs.first(where: \.isCurrent) ?? epochs.last!).map
        // The map names tables as the config wrote them; parsed like SQL, `Users` finds `users`.
        let wanted = try? QualifiedName.parse(table)
        let tableName = map.tables.first { $0.name == table || (wanted != nil && (try? QualifiedName.parse($0.name)) == wanted) }?.name ?? table
        let route: ReshardRouter.Route
        do { route = try map.route(table: tableName, keyText: key) } catch let error as RouterError {
            throw ReshardError.badInput(error.message)
        }
        if output.json {
            try Console.json(RouteResult(
                migration: name, epoch: route.epoch, table: tableName, key: key, index: route.index, shard: route.shard.name,
                dsn: route.shard.dsn, replicas: route.shard.replicas))
        } else {
            Console.out("\(tableName) \(key) -> \(route.shard.name) (shard \(route.index) of epoch \(route.epoch)): \(route.shard.dsn)")
            for replica in route.shard.replicas { Console.out("  replica: \(replica)") }
        }
    }
}

/// Printed by `reshard route --json`.
struct RouteResult: Codable {
    var migration: String
    var epoch: Int64
    var table: String
    var key: String
    var index: Int
    var shard: String
    var dsn: String
    var replicas: [String]
}
