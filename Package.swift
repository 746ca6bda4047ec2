// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "reshard",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "reshard", targets: ["reshard"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // libpq, found through pkg-config; the apt provider tells a newcomer what to install.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // The libpq layer: connections, results, COPY streaming, cancellation, quoting, errors.
        .target(name: "PostgresClient", dependencies: ["CLibPQ"]),
        // Throwaway local PostgreSQL clusters for tests, demos and `reshard rehearse`.
        .target(name: "LocalCluster", dependencies: ["PostgresClient"]),
        // Topology, shard functions, plans, phases and the metadata schema.
        .target(name: "ReshardCore", dependencies: ["PostgresClient", "Yams"]),
        // The command-line interface.
        .executableTarget(
            name: "reshard",
            dependencies: [
                "ReshardCore", "LocalCluster", "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Pure logic, no database.
        .testTarget(name: "ReshardCoreTests", dependencies: ["ReshardCore", "PostgresClient"]),
        // Everything that talks to real PostgreSQL clusters started by LocalCluster.
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ReshardCore", "LocalCluster", "PostgresClient", "reshard"]
        ),
    ]
)
