import ArgumentParser
import ReshardCore

/// `--config/-c FILE`, shared by every command that reads `reshard.yml`.
struct ConfigOptions: ParsableArguments {
    @Option(name: [.customShort("c"), .long], help: "The migration's config file.")
    var config = "reshard.yml"

    func load() throws -> ReshardConfig { try ReshardConfig.load(path: config) }
}
