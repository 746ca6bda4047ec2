#!/usr/bin/env bash
# The exact key-collision check of `plan` (issue 10): per pair of sources, the first source's keys
# in key order with their target, looked up in the second's key index. Measured as the difference
# between `plan` and `plan --fast` (which samples the keys) on 2 sources of BENCH_FAITHFUL_ROWS
# posts each; baseline, same run: reading the same keys with their target on the first source and
# looking them up on the second by hand (psql: COPY out, then a join against them), the least any
# exact check must do.
#   BENCH_FAITHFUL_ROWS   posts rows per source (default 500000)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
ROWS=${BENCH_FAITHFUL_ROWS:-500000}
work=$(mktemp -d /tmp/reshard-bench-faithful-XXXXXX)

"$BIN" sandbox --clusters 2 --json > "$work/sandbox.json" 2> "$work/sandbox.err" &
sandbox=$!
cleanup() { kill -TERM "$sandbox" 2>/dev/null || true; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open('$work/sandbox.json')); print($1)"; }
export PGPASSFILE=$(field "d['directory']")/pgpass
P0=$(field "d['clusters'][0]['port']"); P1=$(field "d['clusters'][1]['port']")
S0="host=127.0.0.1 port=$P0 user=postgres dbname=app"
S1="host=127.0.0.1 port=$P1 user=postgres dbname=app"
T0="host=127.0.0.1 port=$P0 user=postgres dbname=t0"
T1="host=127.0.0.1 port=$P1 user=postgres dbname=t1"
META="host=127.0.0.1 port=$P1 user=postgres dbname=reshard"
psql -qX "host=127.0.0.1 port=$P0 user=postgres dbname=postgres" -c "CREATE DATABASE app" -c "CREATE DATABASE t0"
psql -qX "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" -c "CREATE DATABASE app" -c "CREATE DATABASE t1" -c "CREATE DATABASE reshard"
echo "key check: loading posts $ROWS per source..."
for k in 0 1; do
  dsn=$([ $k = 0 ] && echo "$S0" || echo "$S1")
  psql -qX "$dsn" -c "CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL)" \
    -c "INSERT INTO posts SELECT g + $k * $ROWS, 2 * g + $k, 'post ' || g FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE posts"
done
cat > "$work/reshard.yml" <<YML
migration: bench-faithful
metadata: "$META"
source:
  shards: [{name: s0, dsn: "$S0"}, {name: s1, dsn: "$S1"}]
target:
  function: hash
  shards: [{name: t0, dsn: "$T0"}, {name: t1, dsn: "$T1"}]
tables:
  - {name: posts, key: user_id}
YML
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
timed() { local start=$(now); "$@" > /dev/null; python3 -c "print($(now) - $start)"; }
INDEX="CASE WHEN hashint8(user_id) < 0 THEN 0 ELSE 1 END"
baseline() {
  local start=$(now)
  psql -qAtX "$S0" -c "COPY (SELECT id, $INDEX FROM posts ORDER BY id) TO STDOUT" > "$work/keys"
  psql -qAtX "$S1" -c "CREATE TEMP TABLE k (id bigint, t int)" -c "\\copy k FROM '$work/keys'" \
    -c "SELECT count(*) FROM k WHERE EXISTS (SELECT 1 FROM posts x WHERE x.id = k.id AND ($INDEX) = k.t)" > /dev/null
  python3 -c "print($(now) - $start)"
}
echo "plan (exact key check) minus plan --fast vs COPY of the keys and a join on the other source, best of 3..."
e=(); f=(); b=()
for i in 1 2 3; do
  e+=($(timed "$BIN" plan -c "$work/reshard.yml")); f+=($(timed "$BIN" plan -c "$work/reshard.yml" --fast)); b+=($(baseline))
done
E=$(python3 -c "print(min(${e[0]}, ${e[1]}, ${e[2]}))"); F=$(python3 -c "print(min(${f[0]}, ${f[1]}, ${f[2]}))"); B=$(python3 -c "print(min(${b[0]}, ${b[1]}, ${b[2]}))")
echo "  plan ${E}s, plan --fast ${F}s, baseline ${B}s"
echo "plan exact key check: $(ratio $(python3 -c "print(max($E - $F, 0.001))") $B)"
