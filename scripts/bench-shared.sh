#!/usr/bin/env bash
# Building a target that is also the source's database (issue 10): reshard copies the rows that stay
# into reshard_build on the server, in checkpointed key-range batches. Baseline, same run, same rows:
# one plain server-side `INSERT INTO copy SELECT * FROM posts WHERE <shard filter>` into a table of
# the same definition. 1 source -> 2 targets (t0 = the source's database, t1 elsewhere), every row's
# user_id chosen to map to t0, so the backfill is the local copy alone (t1's slice is empty) and both
# sides evaluate the shard filter on every row.
#   BENCH_SHARED_ROWS   posts rows on the source (about; default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
ROWS=${BENCH_SHARED_ROWS:-1000000}
work=$(mktemp -d /tmp/reshard-bench-shared-XXXXXX)

"$BIN" sandbox --clusters 2 --json > "$work/sandbox.json" 2> "$work/sandbox.err" &
sandbox=$!
cleanup() { kill -TERM "$sandbox" 2>/dev/null || true; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open('$work/sandbox.json')); print($1)"; }
export PGPASSFILE=$(field "d['directory']")/pgpass
P0=$(field "d['clusters'][0]['port']"); P1=$(field "d['clusters'][1]['port']")
SRC="host=127.0.0.1 port=$P0 user=postgres dbname=app"
T1="host=127.0.0.1 port=$P1 user=postgres dbname=app"
META="host=127.0.0.1 port=$P1 user=postgres dbname=reshard"
psql -qX "host=127.0.0.1 port=$P0 user=postgres dbname=postgres" -c "CREATE DATABASE app"
psql -qX "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" -c "CREATE DATABASE app" -c "CREATE DATABASE reshard"
echo "shared target: loading posts $ROWS on the source..."
psql -qX "$SRC" -c "CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, created timestamptz NOT NULL)" \
  -c "INSERT INTO posts SELECT g, g, 'post ' || md5(g::text), now() - g * interval '1 s' FROM generate_series(1, 2 * $ROWS) g WHERE hashint8(g) < 0" \
  -c "VACUUM ANALYZE posts"
now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }
# The rows of t0 (Citus range of the first of 2 hash shards).
FILTER="hashint8(user_id) BETWEEN -2147483648 AND -1"

baseline() {
  psql -qX "$SRC" -c "DROP TABLE IF EXISTS posts_copy" \
    -c "CREATE TABLE posts_copy (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, created timestamptz NOT NULL)" \
    -c "CHECKPOINT"
  local start=$(now)
  psql -qX "$SRC" -c "INSERT INTO posts_copy SELECT * FROM posts WHERE $FILTER"
  python3 -c "print($(now) - $start)"
}
# One migration per run, from scratch.
reshard_local() {
  cat > "$work/reshard.yml" <<YML
migration: $1
metadata: "$META"
source:
  shards: [{name: s0, dsn: "$SRC"}]
target:
  function: hash
  shards: [{name: t0, dsn: "$SRC"}, {name: t1, dsn: "$T1"}]
tables:
  - {name: posts, key: user_id}
YML
  PGOPTIONS="-c client_min_messages=warning" psql -qX "$SRC" -c "DROP SCHEMA IF EXISTS reshard_build CASCADE" -c "DROP SCHEMA IF EXISTS reshard_shim CASCADE"
  psql -qX "$T1" -c "DROP TABLE IF EXISTS posts"
  psql -qX "$SRC" -c "CHECKPOINT"
  local start=$(now)
  "$BIN" apply -c "$work/reshard.yml" --until backfilled > /dev/null 2> "$work/apply.err" || { cat "$work/apply.err"; exit 1; }
  echo "$(now) - $start" > "$work/process-$1"
  # The build itself: from the phase backfilling to catching-up, as the metadata server timed them
  # (the process also connects, installs the shim and creates the built table, under a second).
  psql -qAtX "$META" -c "SELECT extract(epoch FROM max(at) FILTER (WHERE message = 'phase catching-up') - max(at) FILTER (WHERE message = 'phase backfilling'))
    FROM reshard.events WHERE migration = '$1'"
  local copied=$(psql -qAtX "$SRC" -c "SELECT count(*) FROM reshard_build.posts")
  local expected=$(psql -qAtX "$SRC" -c "SELECT count(*) FROM posts WHERE $FILTER")
  [ "$copied" = "$expected" ] || { echo "reshard_build.posts holds $copied rows, expected $expected" >&2; exit 1; }
}
echo "apply --until backfilled (the local copy of the staying rows) vs INSERT ... SELECT WHERE <shard filter>, alternately, best of 3..."
b1=$(baseline); r1=$(reshard_local shared-1); b2=$(baseline); r2=$(reshard_local shared-2); b3=$(baseline); r3=$(reshard_local shared-3)
b=$(python3 -c "print(min($b1, $b2, $b3))"); r=$(python3 -c "print(min($r1, $r2, $r3))")
p=$(python3 -c "print(min($(cat "$work/process-shared-1"), $(cat "$work/process-shared-2"), $(cat "$work/process-shared-3")))")
echo "  insert-select ${b}s; reshard backfill ${r}s (whole apply process ${p}s)"
echo "shared target local copy: $(ratio $r $b)   [goal <= 1.2]"
echo "shared target whole apply process: $(ratio $p $b)"
