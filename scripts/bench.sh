#!/usr/bin/env bash
# reshard benchmarks. Every figure is printed next to a baseline measured in the same run, as a
# ratio; the reference data set is the one in ANCHORS.md (users 1M, posts 2M; 1 source -> 2 targets).
#   BENCH_USERS / BENCH_POSTS   row counts (default 1000000 / 2000000)
#   BENCH_SECONDS               length of each pgbench run (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
USERS=${BENCH_USERS:-1000000}
POSTS=${BENCH_POSTS:-2000000}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
work=$(mktemp -d /tmp/reshard-bench-XXXXXX)

"$BIN" sandbox --clusters 3 --json > "$work/sandbox.json" 2> "$work/sandbox.err" &
sandbox=$!
cleanup() { kill -TERM "$sandbox" 2>/dev/null || true; wait "$sandbox" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do [ -s "$work/sandbox.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open('$work/sandbox.json')); print($1)"; }
export PGPASSFILE=$(field "d['directory']")/pgpass
P0=$(field "d['clusters'][0]['port']"); P1=$(field "d['clusters'][1]['port']"); P2=$(field "d['clusters'][2]['port']")
SRC="host=127.0.0.1 port=$P0 user=postgres dbname=app"
T0="host=127.0.0.1 port=$P1 user=postgres dbname=app"
T1="host=127.0.0.1 port=$P2 user=postgres dbname=app"
META="host=127.0.0.1 port=$P0 user=postgres dbname=reshard"
for p in $P0 $P1 $P2; do psql -qX "host=127.0.0.1 port=$p user=postgres dbname=postgres" -c "CREATE DATABASE app"; done
psql -qX "host=127.0.0.1 port=$P0 user=postgres dbname=postgres" -c "CREATE DATABASE reshard"

DDL="CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, bio text, created timestamptz NOT NULL);
     CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, created timestamptz NOT NULL);"
echo "loading users $USERS, posts $POSTS on the source..."
psql -qX "$SRC" -c "$DDL" -c "
  INSERT INTO users SELECT g, 'user number ' || g, 'user' || g || '@example.com', repeat(md5(g::text), 2), now() - g * interval '1 s'
    FROM generate_series(1, $USERS) g;
  INSERT INTO posts SELECT g, 1 + (g::bigint * 7919) % $USERS, 'post ' || md5(g::text), now() - g * interval '1 s'
    FROM generate_series(1, $POSTS) g;" -c "VACUUM ANALYZE users" -c "VACUUM ANALYZE posts"
psql -qAtX "$SRC" -c "SELECT 'average row: users ' || avg(pg_column_size(u.*))::int || ' B' FROM users u"

now() { date +%s.%N; }
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }

# --- 1. Backfill vs hand-written binary COPY pipes -------------------------------------------------
recreate_targets() { for t in "$T0" "$T1"; do PGOPTIONS="-c client_min_messages=warning" psql -qX "$t" -c "DROP TABLE IF EXISTS users, posts" -c "$1" > /dev/null; done; }
pipes() {
  recreate_targets "$DDL"
  local start=$(now)
  for table in users posts; do
    key=id; [ $table = posts ] && key=user_id
    psql -qX "$SRC" -c "COPY (SELECT * FROM $table WHERE hashint8($key) BETWEEN -2147483648 AND -1) TO STDOUT (FORMAT binary)" \
      | psql -qX "$T0" -c "COPY $table FROM STDIN (FORMAT binary)" &
    psql -qX "$SRC" -c "COPY (SELECT * FROM $table WHERE hashint8($key) BETWEEN 0 AND 2147483647) TO STDOUT (FORMAT binary)" \
      | psql -qX "$T1" -c "COPY $table FROM STDIN (FORMAT binary)" &
  done
  wait
  python3 -c "print($(now) - $start)"
}
config() {
  cat > "$work/reshard.yml" <<YML
migration: $1
metadata: "$META"
source:
  shards: ["$SRC"]
target:
  function: hash
  shards: ["$T0", "$T1"]
tables:
  - {name: users, key: id}
  - {name: posts, key: user_id}
YML
}
reshard_backfill() {
  recreate_targets "SELECT 1"   # reshard creates the target tables itself
  config "$1"
  local start=$(now)
  /usr/bin/time -f "%M" -o "$work/rss" "$BIN" apply -c "$work/reshard.yml" --until backfilled > /dev/null 2> "$work/apply.err" \
    || { cat "$work/apply.err"; exit 1; }
  python3 -c "print($(now) - $start)"
}
echo "backfill: 1 source -> 2 targets, pipes and reshard alternately, best of 2..."
p1=$(pipes); r1=$(reshard_backfill bench1); rss1=$(cat "$work/rss")
"$BIN" abort -c "$work/reshard.yml" > /dev/null
p2=$(pipes); r2=$(reshard_backfill bench2); rss2=$(cat "$work/rss")
rows=$(psql -qAtX "$T0" -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)")
rows1=$(psql -qAtX "$T1" -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)")
[ $((rows + rows1)) -eq $((USERS + POSTS)) ] || { echo "error: targets hold $((rows + rows1)) rows, expected $((USERS + POSTS))"; exit 1; }
pbest=$(python3 -c "print(min($p1, $p2))"); rbest=$(python3 -c "print(min($r1, $r2))")
echo "  COPY pipes:       ${p1}s, ${p2}s"
echo "  reshard apply:    ${r1}s, ${r2}s (whole command: plan, shim, copy)"
echo "backfill ratio reshard/pipes (best of 2): $(ratio $rbest $pbest)   [goal <= 1.15]"
echo "coordinator peak RSS during backfill: $(( $(python3 -c "print(max($rss1, $rss2))") / 1024 )) MB   [goal < 150 MB]"

# --- 2. Verify vs a plain server-side checksum scan -----------------------------------------------
# The baseline reads the same tables on the source and both targets at once, one session each:
# SELECT count(*), sum(hashtextextended(t::text, 0)) FROM t. Verify needs the catch-up done first.
"$BIN" apply -c "$work/reshard.yml" --until caught-up > /dev/null 2>&1
scan() {
  local start=$(now)
  for dsn in "$SRC" "$T0" "$T1"; do
    psql -qAtX "$dsn" -c "SELECT count(*), sum(hashtextextended(t::text, 0)) FROM users t" \
                      -c "SELECT count(*), sum(hashtextextended(t::text, 0)) FROM posts t" > /dev/null &
  done
  wait
  python3 -c "print($(now) - $start)"
}
reshard_verify() {
  local start=$(now)
  "$BIN" verify -c "$work/reshard.yml" > "$work/verify.out" 2> "$work/verify.err" || { cat "$work/verify.out" "$work/verify.err"; exit 1; }
  python3 -c "print($(now) - $start)"
}
echo "verify: users + posts on the source and both targets, scan and verify alternately, best of 2..."
s1=$(scan); v1=$(reshard_verify); s2=$(scan); v2=$(reshard_verify)
sbest=$(python3 -c "print(min($s1, $s2))"); vbest=$(python3 -c "print(min($v1, $v2))")
echo "  checksum scans:   ${s1}s, ${s2}s"
echo "  reshard verify:   ${v1}s, ${v2}s (whole command: plan, chunking, compare; $(tail -n 1 "$work/verify.out"))"
echo "verify ratio reshard/scan (best of 2): $(ratio $vbest $sbest)   [goal <= 1.4]"

# --- 3. Shim cost on single-row writes ----------------------------------------------------------
cat > "$work/writes.sql" <<'SQL'
\set id random(1, 1000000)
\set fresh random(2000000, 2000000000)
INSERT INTO users (id, name, email, created) VALUES (:fresh, 'new', 'n@x', now()) ON CONFLICT (id) DO NOTHING;
UPDATE users SET name = 'renamed' WHERE id = :id;
SQL
triggers() { psql -qX "$SRC" -c "ALTER TABLE users $1 TRIGGER USER"; }
bench_tps() { pgbench -n -c 4 -j 2 -T "$SECONDS_PER_RUN" -f "$work/writes.sql" "$SRC" 2>/dev/null | awk '/^tps/ {print $3; exit}'; }
echo "shim cost: pgbench inserts+updates, 4 clients, ${SECONDS_PER_RUN}s runs, alternating..."
triggers DISABLE; a1=$(bench_tps); triggers ENABLE; b1=$(bench_tps)
triggers DISABLE; a2=$(bench_tps); triggers ENABLE; b2=$(bench_tps)
without=$(python3 -c "print(($a1 + $a2) / 2)"); with=$(python3 -c "print(($b1 + $b2) / 2)")
echo "  tps without shim: $a1, $a2; with shim: $b1, $b2"
echo "write throughput with/without shim: $(ratio $with $without)   [goal >= 0.75]"

# --- 4. Catch-up lag at 1,000 writes/s ------------------------------------------------------------
logs=$(psql -qAtX "$SRC" -c "SELECT string_agg(format('SELECT min(at) AS at FROM %s', oid::regclass), ' UNION ALL ') FROM pg_class WHERE relnamespace = 'reshard_shim'::regnamespace AND relkind = 'r'")
psql -qAtX "$SRC" -c "SELECT format('TRUNCATE %s;', oid::regclass) FROM pg_class WHERE relnamespace = 'reshard_shim'::regnamespace AND relkind = 'r'" | psql -qX "$SRC" > /dev/null
"$BIN" apply -c "$work/reshard.yml" > /dev/null 2> "$work/catchup.err" &
apply=$!
for _ in $(seq 1 300); do
  phase=$("$BIN" status -c "$work/reshard.yml" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['phase'])" || true)
  [ "$phase" = "in-sync" ] && break; sleep 0.2
done
echo "catch-up: pgbench at 1000 transactions/s (2 writes each) for ${SECONDS_PER_RUN}s, sampling the oldest unapplied change every 100 ms..."
pgbench -n -c 4 -j 2 -R 1000 -T "$SECONDS_PER_RUN" -f "$work/writes.sql" "$SRC" > "$work/pgbench.out" 2>&1 &
load=$!
: > "$work/ages"
while kill -0 $load 2>/dev/null; do
  psql -qAtX "$SRC" -c "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0) FROM ($logs) logs" >> "$work/ages"
  sleep 0.1
done
wait $load || true
rss=$(awk '/VmHWM/ {print $2}' /proc/$apply/status)
kill -TERM $apply; wait $apply || true
python3 - "$work/ages" "$(awk '/^tps/ {print $3; exit}' "$work/pgbench.out")" <<'PY'
import sys
ages = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
p = lambda q: ages[min(len(ages) - 1, int(q * len(ages)))]
print(f"  achieved {float(sys.argv[2]):.0f} tps; {len(ages)} samples; oldest unapplied change p50 {p(0.5):.3f}s, p99 {p(0.99):.3f}s, max {ages[-1]:.3f}s   [goal p99 < 1 s]")
PY
echo "coordinator peak RSS while catching up: $((rss / 1024)) MB   [goal < 150 MB]"

# --- 5. Backfill 1 -> 1 vs pgcopydb ------------------------------------------------------------------
# The same two tables into one fresh database each: pgcopydb clone (2 table jobs, 2 index jobs; it
# builds the primary keys after the copy) and reshard apply --until backfilled to a single target.
if ! command -v pgcopydb > /dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgcopydb > /dev/null 2>&1 || true
fi
if command -v pgcopydb > /dev/null; then
  printf '[include-only-table]\npublic.users\npublic.posts\n' > "$work/filters.ini"
  one_db() { psql -qX "host=127.0.0.1 port=$P1 user=postgres dbname=postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" > /dev/null 2>&1; }
  pgcopydb_run() {
    one_db copy1; rm -rf "$work/pgcopydb"
    local start=$(now)
    pgcopydb clone --source "postgres://postgres@127.0.0.1:$P0/app" --target "postgres://postgres@127.0.0.1:$P1/copy1" \
      --dir "$work/pgcopydb" --table-jobs 2 --index-jobs 2 --filters "$work/filters.ini" --no-owner --no-acl \
      --skip-extensions > "$work/pgcopydb.log" 2>&1 || { tail -n 5 "$work/pgcopydb.log"; exit 1; }
    python3 -c "print($(now) - $start)"
  }
  reshard_1to1() {
    one_db copy2
    cat > "$work/one.yml" <<YML
migration: $1
metadata: "$META"
source:
  shards: ["$SRC"]
target:
  function: hash
  shards: ["host=127.0.0.1 port=$P1 user=postgres dbname=copy2"]
tables:
  - {name: users, key: id}
  - {name: posts, key: user_id}
YML
    local start=$(now)
    "$BIN" apply -c "$work/one.yml" --until backfilled > /dev/null 2> "$work/one.err" || { cat "$work/one.err"; exit 1; }
    python3 -c "print($(now) - $start)"
    "$BIN" abort -c "$work/one.yml" > /dev/null 2>&1 || true
  }
  echo "backfill 1 -> 1: pgcopydb clone and reshard apply alternately, best of 2..."
  c1=$(pgcopydb_run); o1=$(reshard_1to1 one1); c2=$(pgcopydb_run); o2=$(reshard_1to1 one2)
  cbest=$(python3 -c "print(min($c1, $c2))"); obest=$(python3 -c "print(min($o1, $o2))")
  echo "  pgcopydb clone:   ${c1}s, ${c2}s"
  echo "  reshard apply:    ${o1}s, ${o2}s"
  echo "backfill 1 -> 1 ratio reshard/pgcopydb (best of 2): $(ratio $obest $cbest)   [goal < 1.0]"
else
  echo "backfill 1 -> 1 vs pgcopydb: skipped (pgcopydb is not installed: apt-get install pgcopydb)"
fi
