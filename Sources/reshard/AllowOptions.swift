import ArgumentParser
import ReshardCore

/// What `plan` (and `apply`, which plans again) would otherwise refuse (`Planner+Refusals`).
struct AllowOptions: ParsableArguments {
    @Flag(name: .long, help: "Leave foreign keys to or from tables outside the migration out on the targets instead of refusing.")
    var ignoreForeignKeysOutside = false

    @Flag(name: .long, help: "Move unlogged tables (into unlogged tables) instead of refusing.")
    var allowUnlogged = false

    var allowances: Planner.Allowances { .init(foreignKeysOutside: ignoreForeignKeysOutside, unlogged: allowUnlogged) }
}
