#!/usr/bin/env bash
# What metrics and logging cost the backfill: `apply --until backfilled` of one table from one source
# to two targets, plain and with `--metrics-listen` + `--log-format json` (scraped every second while it
# runs), in ABBA order, BENCH_OPERATE_RUNS times each (default 5); prints the ratio of the medians.
#   BENCH_OPERATE_ROWS   rows in the table (default 1000000)
#   RESHARD_BIN          the binary (default .build/release/reshard)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${RESHARD_BIN:-.build/release/reshard}
ROWS=${BENCH_OPERATE_ROWS:-1000000}
RUNS=${BENCH_OPERATE_RUNS:-5}
work=$(mktemp -d /tmp/reshard-bench-operate-XXXXXX)

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
echo "loading users $ROWS on the source..."
psql -qX "$SRC" -c "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, bio text, created timestamptz NOT NULL)" \
  -c "INSERT INTO users SELECT g, 'user number ' || g, 'user' || g || '@example.com', repeat(md5(g::text), 2), now() - g * interval '1 s'
      FROM generate_series(1, $ROWS) g" -c "VACUUM ANALYZE users"

now() { date +%s.%N; }
# backfill [OPTIONS...]: seconds for one backfill into emptied targets, under a new migration name
# (it runs in a subshell: the name comes from the clock, not a counter).
backfill() {
  for t in "$T0" "$T1"; do PGOPTIONS="-c client_min_messages=warning" psql -qX "$t" -c "DROP TABLE IF EXISTS users" > /dev/null; done
  cat > "$work/reshard.yml" <<YML
migration: operate$(date +%s%N)
metadata: "$META"
source:
  shards: ["$SRC"]
target:
  function: hash
  shards: ["$T0", "$T1"]
tables:
  - {name: users, key: id}
YML
  local start=$(now)
  # The end is taken when apply exits, not when the scrape loop notices.
  ( "$BIN" apply -c "$work/reshard.yml" --until backfilled "$@" > /dev/null 2> "$work/apply.err"; echo $? > "$work/rc"; now > "$work/end" ) &
  local apply=$!
  local scraped="" url="" second line
  while kill -0 $apply 2>/dev/null; do
    # With --metrics-listen, scraped once a second, as Prometheus would. The polling is the same
    # either way and forks nothing but the scrape (`curl`) and `sleep`: a `date` or `sed` per
    # poll would cost the observed run alone a few percent of a core on a small machine.
    printf -v second '%(%s)T' -1
    if [ $# -gt 0 ] && [ -z "$url" ]; then
      while IFS= read -r line; do [[ $line == "metrics: http"* ]] && url=${line#metrics: }; done < "$work/apply.err"
    fi
    if [ -n "$url" ] && [ "$second" != "$scraped" ]; then
      curl -s --max-time 1 "$url" > /dev/null || true
      scraped=$second
    fi
    sleep 0.1
  done
  wait $apply || true
  [ "$(cat "$work/rc")" = 0 ] || { cat "$work/apply.err" >&2; exit 1; }
  local took=$(python3 -c "print($(cat "$work/end") - $start)")
  "$BIN" abort -c "$work/reshard.yml" > /dev/null 2>&1
  echo "$took"
}
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
echo "backfill of $ROWS rows, plain and with --metrics-listen + --log-format json, in ABBA order, $RUNS each (after one unmeasured run)..."
_=$(backfill)
plain=(); observed=()
# ABBA order: whichever side runs second after an abort gets a warmer (or more vacuumed) server.
for i in $(seq 1 "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then
    plain+=("$(backfill)"); observed+=("$(backfill --metrics-listen 127.0.0.1:0 --log-format json)")
  else
    observed+=("$(backfill --metrics-listen 127.0.0.1:0 --log-format json)"); plain+=("$(backfill)")
  fi
done
echo "  plain:                ${plain[*]} s"
echo "  metrics + json logs:  ${observed[*]} s"
mp=$(median "${plain[@]}"); mo=$(median "${observed[@]}")
echo "backfill throughput with/without metrics and json logs (median of $RUNS): $(python3 -c "print(f'{$mp/$mo:.3f}')")   [goal >= 0.98]"
