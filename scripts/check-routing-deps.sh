#!/usr/bin/env bash
# ReshardRouting is what applications link: it must depend on nothing (no libpq, Yams or
# ArgumentParser). Fails when any target in its dependency closure is not its own.
# ReshardRouter (the shard map client) may add libpq (PostgresClient, CLibPQ) and nothing else:
# no ReshardCore, Yams, ArgumentParser or any other package's product anywhere in its closure.
set -euo pipefail
cd "$(dirname "$0")/.."
swift package describe --type json | python3 -c '
import json, sys
pkg = json.load(sys.stdin)
targets = {t["name"]: t for t in pkg["targets"]}

def closure(name):
    seen, todo, products = set(), [name], set()
    while todo:
        t = todo.pop()
        if t in seen:
            continue
        seen.add(t)
        todo += targets[t].get("target_dependencies", [])
        products |= set(targets[t].get("product_dependencies", []))
    return seen - {name}, products

for name in ("ReshardRouting", "ReshardRoutingTests"):
    deps = targets[name].get("target_dependencies", []) + targets[name].get("product_dependencies", [])
    extra = [d for d in deps if d != "ReshardRouting"]
    if extra:
        sys.exit(f"{name} must not depend on {extra}")
print("ReshardRouting: no dependencies")

deps, products = closure("ReshardRouter")
extra = sorted(deps - {"ReshardRouting", "PostgresClient", "CLibPQ"}) + sorted(products)
if extra:
    sys.exit(f"ReshardRouter must depend only on ReshardRouting and PostgresClient, not on {extra}")
print("ReshardRouter: " + ", ".join(sorted(deps)))
'
