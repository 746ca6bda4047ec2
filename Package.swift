// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "reshard",
    products: [
        .executable(name: "reshard", targets: ["reshard"]),
        // What applications link to route keys the way reshard places them: no libpq, no YAML,
        // no argument parsing (`scripts/check-routing-deps.sh` keeps it so).
        .library(name: "ReshardRouting", targets: ["ReshardRouting"]),
        // The shard map client for applications: loads the current epoch, routes keys, follows
        // cutovers. libpq (PostgresClient) and ReshardRouting only: no ReshardCore, Yams or
        // ArgumentParser (`scripts/check-routing-deps.sh`).
        .library(name: "ReshardRouter", targets: ["ReshardRouter"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
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
        // Shard functions, key types and PostgreSQL's hashes in Swift: pure, dependency-free.
        .target(name: "ReshardRouting"),
        // Routes keys by the shard map in the metadata database, for applications.
        .target(name: "ReshardRouter", dependencies: ["PostgresClient", "ReshardRouting"]),
        // Throwaway local PostgreSQL clusters for tests, demos and `reshard rehearse`.
        .target(name: "LocalCluster", dependencies: ["PostgresClient"]),
        // Config, plan, SQL, phases, metadata, apply and verify.
        // It logs and emits metrics through swift-log and swift-metrics only; the CLI picks the backends.
        .target(
            name: "ReshardCore",
            dependencies: [
                "PostgresClient", "ReshardRouting", "Yams", .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // `reshard rehearse`: synthetic data, a ledger workload, faults, and the checker that proves nothing was lost.
        .target(
            name: "ReshardRehearse", dependencies: ["ReshardCore", "ReshardRouting", "ReshardRouter", "LocalCluster", "PostgresClient", "Yams"]),
        // The command-line interface.
        .executableTarget(
            name: "reshard",
            dependencies: [
                "ReshardCore", "ReshardRouting", "ReshardRouter", "LocalCluster", "PostgresClient", "ReshardRehearse",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "FlyingFox", package: "FlyingFox"),
            ]
        ),
        // The routing module alone: builds and runs without libpq.
        .testTarget(name: "ReshardRoutingTests", dependencies: ["ReshardRouting"]),
        // The router against real clusters (ReshardCore only publishes the maps it loads).
        .testTarget(
            name: "ReshardRouterTests", dependencies: ["ReshardRouter", "ReshardRouting", "PostgresClient", "LocalCluster", "ReshardCore"]),
        // Pure logic, no database.
        .testTarget(name: "ReshardCoreTests", dependencies: ["ReshardCore", "ReshardRouting", "PostgresClient"]),
        // The rehearsal's pure parts: generator, fault schedule, ledger checker.
        .testTarget(name: "ReshardRehearseTests", dependencies: ["ReshardRehearse", "ReshardRouting"]),
        // Everything that talks to real PostgreSQL clusters started by LocalCluster.
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ReshardCore", "ReshardRouting", "LocalCluster", "PostgresClient", "ReshardRehearse", "Yams", "reshard"]
        ),
    ]
)
