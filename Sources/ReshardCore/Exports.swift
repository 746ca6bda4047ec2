// Users of the core (the CLI, tests) see the routing types without importing them separately.
@_exported import ReshardRouting
