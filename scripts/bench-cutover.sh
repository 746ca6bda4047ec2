#!/usr/bin/env bash
# Cutover benchmarks (issue 11), each against a baseline or goal measured in the same run:
#   1. the write fence's cost: pgbench inserts+updates on a source with the shim installed, the
#      fence's triggers disabled vs enabled vs enabled with the session declaring its epoch
#      (reshard.epoch, as ReshardRouter does), each run from the same state, the order rotated per
#      round, medians;
#   2. the write stall an application routed by the shard map sees over cutover + rollback pairs
#      at a fixed write rate, 2 -> 4 shards (`reshard demo --cycles`), p50 / p99 / max.
#   BENCH_CUTOVER_ROWS      users on the source for the fence runs (default 200000)
#   BENCH_SECONDS           length of each pgbench run (default 15)
#   BENCH_FENCE_ROUNDS      alternations of the three fence runs (default 3)
#   BENCH_CUTOVER_CYCLES    cutover + rollback pairs (default 10: 21 switches with the last cutover)
#   BENCH_CUTOVER_RATE      the application's writes per second during the switches (default 1000)
#   BENCH_CUTOVER_USERS     users the demo seeds (default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
ROWS=${BENCH_CUTOVER_ROWS:-200000}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CYCLES=${BENCH_CUTOVER_CYCLES:-10}
RATE=${BENCH_CUTOVER_RATE:-1000}
work=$(mktemp -d /tmp/reshard-bench-cutover-XXXXXX)

"$BIN" sandbox --clusters 2 --json > "$work/sandbox.json" 2> "$work/sandbox.err" &
sandbox=$!
cleanup() { kill -TERM "$sandbox" 2>/dev/null || true; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open('$work/sandbox.json')); print($1)"; }
export PGPASSFILE=$(field "d['directory']")/pgpass
P0=$(field "d['clusters'][0]['port']"); P1=$(field "d['clusters'][1]['port']")
SRC="host=127.0.0.1 port=$P0 user=postgres dbname=app"
TGT="host=127.0.0.1 port=$P1 user=postgres dbname=app"
META="host=127.0.0.1 port=$P0 user=postgres dbname=reshard"
for p in $P0 $P1; do psql -qX "host=127.0.0.1 port=$p user=postgres dbname=postgres" -c "CREATE DATABASE app"; done
psql -qX "host=127.0.0.1 port=$P0 user=postgres dbname=postgres" -c "CREATE DATABASE reshard"
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }

# --- 1. Fence cost on single-row writes ------------------------------------------------------------
psql -qX "$SRC" -c "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, created timestamptz NOT NULL)" \
  -c "INSERT INTO users SELECT g, 'user ' || g, 'u' || g || '@example.com', now() FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE users"
cat > "$work/reshard.yml" <<YML
migration: bench-fence
metadata: "$META"
source:
  function: modulo
  shards: ["$SRC"]
target:
  function: hash
  shards: ["$TGT"]
tables:
  - {name: users, key: id}
YML
"$BIN" apply -c "$work/reshard.yml" --until caught-up > /dev/null 2> "$work/apply.err" || { cat "$work/apply.err"; exit 1; }
fence=$(psql -qAtX "$SRC" -c "SELECT tgname FROM pg_trigger WHERE tgrelid = 'users'::regclass AND tgname LIKE 'reshard_fence_%'")
[ -n "$fence" ] || { echo "no fence trigger on users" >&2; exit 1; }
cat > "$work/writes.sql" <<'SQL'
\set id random(1, 200000)
\set fresh random(2000000, 2000000000)
INSERT INTO users (id, name, email, created) VALUES (:fresh, 'new', 'n@x', now()) ON CONFLICT (id) DO NOTHING;
UPDATE users SET name = 'renamed' WHERE id = :id;
SQL
fence() { psql -qX "$SRC" -c "ALTER TABLE users $1 TRIGGER $fence"; }
# Every run starts from the same state: the rows the last run inserted deleted, the shim's
# changelogs (nothing drains them here) emptied, the table vacuumed, a checkpoint taken. Without
# this each run is slower than the one before it (the changelog and the table grow by ~1M rows
# per run) and the first run of each round, always the one without the fence, was favoured.
reset() {
  psql -qX "$SRC" -c "DELETE FROM users WHERE id > $ROWS" > /dev/null
  logs=$(psql -qAtX "$SRC" -c "SELECT string_agg(c.oid::regclass::text, ', ') FROM pg_class c WHERE c.relnamespace = 'reshard_shim'::regnamespace AND c.relkind = 'r'")
  [ -z "$logs" ] || psql -qX "$SRC" -c "TRUNCATE $logs" > /dev/null
  psql -qX "$SRC" -c "VACUUM ANALYZE users" -c "CHECKPOINT" > /dev/null
}
bench_tps() { reset; pgbench -n -c 4 -j 2 -T "$SECONDS_PER_RUN" -f "$work/writes.sql" "$SRC" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
echo "fence cost: pgbench inserts+updates with the shim installed, 4 clients, ${SECONDS_PER_RUN}s runs, alternating..."
without=(); with=(); declared=()
# The three kinds in a different order each round (ABC, CAB, BCA): none always goes first.
run_kind() {
  case $1 in
    0) fence DISABLE; without+=("$(bench_tps)") ;;
    1) fence ENABLE; with+=("$(bench_tps)") ;;
    2) fence ENABLE; declared+=("$(PGOPTIONS='-c reshard.epoch=1' bench_tps)") ;;
  esac
}
for round in $(seq 0 $(( ${BENCH_FENCE_ROUNDS:-3} - 1 ))); do
  for k in 0 1 2; do run_kind $(( (k + 3 - round % 3) % 3 )); done
done
echo "  tps without fence: ${without[*]}; with fence: ${with[*]}; with fence, epoch declared: ${declared[*]}"
echo "write throughput with/without fence: $(ratio "$(median "${with[@]}")" "$(median "${without[@]}")")   [goal >= 0.95] (medians)"
echo "  ...sessions declaring their epoch: $(ratio "$(median "${declared[@]}")" "$(median "${without[@]}")")"
kill -TERM "$sandbox" 2>/dev/null || true; wait "$sandbox" 2>/dev/null || true

# --- 2. Write stall over cutovers and rollbacks ---------------------------------------------------------
echo "write stall: reshard demo, 2 -> 4 shards, $CYCLES cutover + rollback pairs and a last cutover at $RATE writes/s..."
"$BIN" demo --users "${BENCH_CUTOVER_USERS:-5000}" --targets 4 --cycles "$CYCLES" --writes-per-second "$RATE" > "$work/demo.out" 2>&1 || { tail -20 "$work/demo.out"; exit 1; }
line=$(grep 'write stall seen by the application over' "$work/demo.out")
echo "  $line"
python3 - "$line" <<'PY'
import re, sys
p50, p99, mx = (float(x) for x in re.search(r"p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms", sys.argv[1]).groups())
print(f"write stall p99 / goal 300 ms: {p99 / 300:.3f}   [goal < 1]  (p50 {p50:.0f} ms, max {mx:.0f} ms)")
PY
# Where the coordinator's stall went: the median of each stalling step over the switches.
python3 - "$work/demo.out" <<'PY'
import re, statistics, sys
steps = {}
by = {}
command = None
for line in open(sys.argv[1]):
    if line.startswith("$ reshard "):
        command = line.split()[2]
    if re.match(r"\s+barrier \d+ ms", line):
        for name, ms in re.findall(r"([a-z-]+) (\d+) ms", line):
            steps.setdefault(name, []).append(int(ms))
            by.setdefault(command, {}).setdefault(name, []).append(int(ms))
print("  coordinator's steps, median ms: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in steps.items()))
for command, named in by.items():
    print(f"    {command}s: " + ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in named.items()))
held = [(float(c), float(a)) for c, a in re.findall(r"writes held (\d+) ms by the coordinator's clock, the application's longest write (\d+) ms", open(sys.argv[1]).read())]
if held:
    print("  per switch (coordinator/application ms): " + " ".join(f"{c:.0f}/{a:.0f}" for c, a in held))
    print(f"  median per switch: coordinator's stall {statistics.median(c for c, _ in held):.0f} ms, the application's longest write {statistics.median(a for _, a in held):.0f} ms")
PY
