#!/usr/bin/env bash
# Fails if the test run left a local cluster (directory or postmaster) behind.
# The harness's watchdog may need a moment after a test process exits, so wait up to 30 s.
set -u
tmp=${TMPDIR:-/tmp}
for _ in $(seq 1 150); do
  dirs=$(ls -d "$tmp"/reshard-cluster-* 2>/dev/null)
  procs=$(pgrep -f "postgres -D $tmp/reshard-cluster-" 2>/dev/null)
  [ -z "$dirs$procs" ] && { echo "no local clusters left behind"; exit 0; }
  sleep 0.2
done
echo "error: local clusters left behind:" >&2
echo "$dirs" >&2
[ -n "$procs" ] && ps -o pid,args -p $procs >&2
exit 1
