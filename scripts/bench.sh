#!/usr/bin/env bash
# reshard benchmarks. Every figure is printed next to a baseline measured in the same run, as a
# ratio; the reference data set is the one in ANCHORS.md (users 1M, posts 2M; 1 source -> 2 targets).
#   BENCH_USERS / BENCH_POSTS   row counts (default 1000000 / 2000000)
#   BENCH_SECONDS               length of each pgbench run (default 15)
#   BENCH_CHANGES               changes queued per table for the catch-up drain (default 200000)
#   BENCH_ONLY=drain            only section 6 (catch-up drain and the catch-up under load)
#   BENCH_ONLY=backfill         only section 1 (backfill vs binary COPY pipes)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
USERS=${BENCH_USERS:-1000000}
POSTS=${BENCH_POSTS:-2000000}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CHANGES=${BENCH_CHANGES:-200000}
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

ONLY=${BENCH_ONLY:-}
if [ "$ONLY" != drain ]; then
DDL="CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, bio text, created timestamptz NOT NULL);
     CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, created timestamptz NOT NULL);"
echo "loading users $USERS, posts $POSTS on the source..."
psql -qX "$SRC" -c "$DDL" -c "
  INSERT INTO users SELECT g, 'user number ' || g, 'user' || g || '@example.com', repeat(md5(g::text), 2), now() - g * interval '1 s'
    FROM generate_series(1, $USERS) g;
  INSERT INTO posts SELECT g, 1 + (g::bigint * 7919) % $USERS, 'post ' || md5(g::text), now() - g * interval '1 s'
    FROM generate_series(1, $POSTS) g;" -c "VACUUM ANALYZE users" -c "VACUUM ANALYZE posts"
psql -qAtX "$SRC" -c "SELECT 'average row: users ' || avg(pg_column_size(u.*))::int || ' B' FROM users u"
fi

now() { date +%s.%N; }
# sample_ages PID DSN LOGS: while PID (a load) runs, the age of the oldest unapplied change in the
# union LOGS (rows with a column `at`), every 100 ms, into $work/ages; then waits for PID.
sample_ages() {
  : > "$work/ages"
  while kill -0 "$1" 2>/dev/null; do
    psql -qAtX "$2" -c "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0) FROM ($3) logs" >> "$work/ages"
    sleep 0.1
  done
  wait "$1" || true
}
# wait_in_sync CONFIG: until status says in-sync (at most a minute).
wait_in_sync() {
  for _ in $(seq 1 300); do
    phase=$("$BIN" status -c "$1" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)['phase'])" || true)
    [ "$phase" = "in-sync" ] && break; sleep 0.2
  done
}
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }

if [ "$ONLY" != drain ]; then
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
# config NAME [FILE [TARGETS]]: users and posts from the source to TARGETS (default: both targets).
config() {
  cat > "${2:-$work/reshard.yml}" <<YML
migration: $1
metadata: "$META"
source:
  shards: ["$SRC"]
target:
  function: hash
  shards: [${3:-"\"$T0\", \"$T1\""}]
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
# apply_steps MIGRATION SECONDS: what apply spent besides the copy, from its events (planning,
# startup, prepare's and finish's steps, the copy itself, stopping the workers); the rest of the
# whole command's SECONDS is process start, config, exiting.
apply_steps() {
  psql -qAtX "$META" -c "WITH steps AS (SELECT id, message, substring(message FROM '^[a-z ]+ in ([0-9.]+) s')::float8 AS seconds
      FROM reshard.events WHERE migration = '$1'
      AND (message LIKE 'planned in %' OR message LIKE 'started in %' OR message LIKE 'prepared in %' OR message LIKE 'workers stopped in %'
           OR message LIKE 'every slice copied in %' OR message LIKE 'target tables finished in %'))
    SELECT string_agg(message, '; ' ORDER BY id) || format('; rest (process start, config, exit) %s s', round(($2 - sum(seconds))::numeric, 3)) FROM steps"
}
echo "backfill: 1 source -> 2 targets, pipes and reshard alternately, best of 2 (after one unmeasured pipes run:"
echo "  the first bulk load into fresh databases is faster than any later one, for either side)..."
_=$(pipes)   # in a subshell: a bare `wait` here would also wait for the sandbox
p1=$(pipes); r1=$(reshard_backfill bench1); rss1=$(cat "$work/rss")
"$BIN" abort -c "$work/reshard.yml" > /dev/null
p2=$(pipes); r2=$(reshard_backfill bench2); rss2=$(cat "$work/rss")
rows=$(psql -qAtX "$T0" -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)")
rows1=$(psql -qAtX "$T1" -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM posts)")
[ $((rows + rows1)) -eq $((USERS + POSTS)) ] || { echo "error: targets hold $((rows + rows1)) rows, expected $((USERS + POSTS))"; exit 1; }
pbest=$(python3 -c "print(min($p1, $p2))"); rbest=$(python3 -c "print(min($r1, $r2))")
echo "  COPY pipes:       ${p1}s, ${p2}s"
echo "  reshard apply:    ${r1}s, ${r2}s (whole command: plan, shim, copy)"
echo "    run 1: $(apply_steps bench1 "$r1")"
echo "    run 2: $(apply_steps bench2 "$r2")"
echo "backfill ratio reshard/pipes (best of 2): $(ratio $rbest $pbest)   [goal <= 1.10]"
echo "coordinator peak RSS during backfill: $(( $(python3 -c "print(max($rss1, $rss2))") / 1024 )) MB   [goal < 150 MB]"
[ "$ONLY" = backfill ] && exit 0

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
wait_in_sync "$work/reshard.yml"
echo "catch-up: pgbench at 1000 transactions/s (2 writes each) for ${SECONDS_PER_RUN}s, sampling the oldest unapplied change every 100 ms..."
pgbench -n -c 4 -j 2 -R 1000 -T "$SECONDS_PER_RUN" -f "$work/writes.sql" "$SRC" > "$work/pgbench.out" 2>&1 &
sample_ages $! "$SRC" "$logs"
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
    config "$1" "$work/one.yml" "\"host=127.0.0.1 port=$P1 user=postgres dbname=copy2\""
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
fi
# --- 6. Catch-up drain rate vs the rate the application produces changes --------------------------
# Own databases, so the shim of the sections above plays no part: a 3-column key (lines) and a
# bigint key (accounts), 1 source -> 2 targets. A backlog is built with the coordinator stopped and
# only the drain is timed, from the first entry gone to the log's end, by counting the log.
CS="host=127.0.0.1 port=$P0 user=postgres dbname=cu"
CT0="host=127.0.0.1 port=$P1 user=postgres dbname=cu"
CT1="host=127.0.0.1 port=$P2 user=postgres dbname=cu"
for p in $P0 $P1 $P2; do psql -qX "host=127.0.0.1 port=$p user=postgres dbname=postgres" -c "CREATE DATABASE cu"; done
CUSTOMERS=$(( USERS / 10 > 1000 ? USERS / 10 : 1000 ))
psql -qX "$CS" -c "
  CREATE TABLE lines (customer_id bigint, order_no int, line int, qty int NOT NULL, note text, PRIMARY KEY (customer_id, order_no, line));
  CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, name text NOT NULL);
  INSERT INTO lines SELECT c, o, l, 1, 'line ' || l FROM generate_series(1, $CUSTOMERS) c, generate_series(1, 5) o, generate_series(1, 2) l;
  INSERT INTO accounts SELECT g, 0, 'account ' || g FROM generate_series(1, $USERS) g;" -c "VACUUM ANALYZE lines" -c "VACUUM ANALYZE accounts"
cat > "$work/catchup.yml" <<YML
migration: catchup-bench
metadata: "$META"
source:
  shards: ["$CS"]
target:
  function: hash
  shards: ["$CT0", "$CT1"]
tables:
  - {name: lines, key: customer_id}
  - {name: accounts, key: id}
YML
"$BIN" apply -c "$work/catchup.yml" --until caught-up > /dev/null 2> "$work/cu.err" || { cat "$work/cu.err"; exit 1; }
cu_log() { psql -qAtX "$CS" -c "SELECT format('%s', c.oid::regclass) FROM pg_class c JOIN pg_trigger g ON g.tgname = 'reshard_capture_' || substr(c.relname, 5) WHERE c.relnamespace = 'reshard_shim'::regnamespace AND g.tgrelid = '$1'::regclass"; }
LINES_LOG=$(cu_log lines); ACCOUNTS_LOG=$(cu_log accounts)
count_log() { psql -qAtX "$CS" -c "SELECT count(*) FROM $1"; }
# Drains a backlog built by $2 (SQL) in table log $1; prints changes/s.
drain() {
  psql -qX "$CS" -c "$2" > /dev/null
  local queued=$(count_log "$1") start="" left
  "$BIN" apply -c "$work/catchup.yml" --until caught-up > /dev/null 2> "$work/cu.err" &
  local apply=$!
  while true; do
    left=$(count_log "$1")
    if [ -z "$start" ] && [ "$left" -lt "$queued" ]; then start=$(now); from=$left; fi
    [ "$left" -eq 0 ] && break
    kill -0 $apply 2>/dev/null || { cat "$work/cu.err"; exit 1; }
    sleep 0.05
  done
  local end=$(now)
  wait $apply || { cat "$work/cu.err"; exit 1; }
  # The first sample already saw $((queued - from)) entries gone: counted from a sample apart.
  python3 -c "print(f'{$from / max($end - $start, 1e-3):.0f}')"
}
n=$(( CHANGES < CUSTOMERS * 10 ? CHANGES : CUSTOMERS * 10 ))
echo "catch-up drain without load: $n changes queued per table with the coordinator stopped..."
rl=$(drain "$LINES_LOG" "UPDATE lines SET qty = qty + 1 WHERE (customer_id, order_no, line) IN (SELECT customer_id, order_no, line FROM lines ORDER BY random() LIMIT $n)")
ra=$(drain "$ACCOUNTS_LOG" "UPDATE accounts SET balance = balance + 1 WHERE id IN (SELECT id FROM accounts ORDER BY random() LIMIT $n)")
echo "  lines (3-column key): $rl changes/s; accounts (bigint key): $ra changes/s   [goal >= 30000]"
cat > "$work/cu.sql" <<SQL
\set c random(1, $CUSTOMERS)
\set a random(1, $USERS)
\set fresh random(100000000, 2000000000)
UPDATE lines SET qty = qty + 1 WHERE customer_id = :c AND order_no = 1 AND line = 1;
INSERT INTO lines VALUES (:c, 100 + :fresh % 1000, 1, 1, 'new') ON CONFLICT DO NOTHING;
UPDATE accounts SET balance = balance + 1 WHERE id = :a;
INSERT INTO accounts VALUES (:fresh, 0, 'new') ON CONFLICT DO NOTHING;
SQL
echo "application change rate: pgbench 4 clients unthrottled for ${SECONDS_PER_RUN}s, coordinator stopped..."
psql -qX "$CS" -c "TRUNCATE $LINES_LOG, $ACCOUNTS_LOG"
pgbench -n -c 4 -j 2 -T "$SECONDS_PER_RUN" -f "$work/cu.sql" "$CS" > "$work/pgbench.out" 2>&1
produced=$(python3 -c "print(f'{($(count_log "$LINES_LOG") + $(count_log "$ACCOUNTS_LOG")) / $SECONDS_PER_RUN:.0f}')")
slowest=$(python3 -c "print(min($rl, $ra))")
echo "  $produced changes/s produced; drain/production (slower table): $(ratio $slowest $produced)   [goal >= 3]"
"$BIN" apply -c "$work/catchup.yml" --until caught-up > /dev/null 2> "$work/cu.err" || { cat "$work/cu.err"; exit 1; }
"$BIN" apply -c "$work/catchup.yml" > /dev/null 2> "$work/cu.err" &
apply=$!
wait_in_sync "$work/catchup.yml"
echo "catch-up under that load: pgbench unthrottled for ${SECONDS_PER_RUN}s with the coordinator running, oldest unapplied change every 100 ms..."
pgbench -n -c 4 -j 2 -T "$SECONDS_PER_RUN" -f "$work/cu.sql" "$CS" > "$work/pgbench.out" 2>&1 &
sample_ages $! "$CS" "SELECT min(at) AS at FROM $LINES_LOG UNION ALL SELECT min(at) FROM $ACCOUNTS_LOG"
kill -TERM $apply; wait $apply || true
python3 - "$work/ages" "$(awk '/^tps/ {print $3; exit}' "$work/pgbench.out")" <<'PY'
import sys
ages = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
p = lambda q: ages[min(len(ages) - 1, int(q * len(ages)))]
print(f"  {float(sys.argv[2]):.0f} tps (4 changes each); {len(ages)} samples; oldest unapplied change p50 {p(0.5):.3f}s, p99 {p(0.99):.3f}s, max {ages[-1]:.3f}s   [goal p99 < 2 s]")
PY
RESHARD_BIN="$BIN" ./scripts/bench-shared.sh
RESHARD_BIN="$BIN" ./scripts/bench-operate.sh
RESHARD_BIN="$BIN" ./scripts/bench-cutover.sh
RESHARD_BIN="$BIN" ./scripts/bench-faithful.sh
RESHARD_BIN="$BIN" ./scripts/bench-rehearse.sh
