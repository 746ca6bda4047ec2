#!/usr/bin/env bash
# ReshardRouting is what applications link: it must depend on nothing (no libpq, Yams or
# ArgumentParser). Fails when any target in its dependency closure is not its own.
set -euo pipefail
cd "$(dirname "$0")/.."
swift package describe --type json | python3 -c '
import json, sys
pkg = json.load(sys.stdin)
targets = {t["name"]: t for t in pkg["targets"]}
for name in ("ReshardRouting", "ReshardRoutingTests"):
    deps = targets[name].get("target_dependencies", []) + targets[name].get("product_dependencies", [])
    extra = [d for d in deps if d != "ReshardRouting"]
    if extra:
        sys.exit(f"{name} must not depend on {extra}")
print("ReshardRouting: no dependencies")
'
