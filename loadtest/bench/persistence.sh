#!/usr/bin/env bash
# Persistence benchmarks of Starling with swarm, per storage engine (see BENCHMARKS.md,
# "Persistence"):
#   (p1) persistent QoS 1 throughput: 50 publishers -> 50 persistent MQTT 5 subscribers (1:1,
#        clean start off, session expiry 1 h), acknowledgements after the durable group commit
#        (fsync = "always"); a sweep of offered loads. The "memory" engine is the in-memory QoS 1
#        baseline.
#   (p2) broker RSS with 19,000 persistent sessions (MQTT 3.1.1, clean session false), each
#        holding 100 queued QoS 1 messages of 64 bytes (1.9 M messages): the sessions subscribe
#        and disconnect, then 19,000 publishers send 100 messages each to their topics.
#   (p3) restart time with that store after kill -9: from spawn to the MQTT listener accepting,
#        and to every session and queued message being back (GET /api/v1/status).
#
# Usage: loadtest/bench/persistence.sh [--quick]
#
# Everything listens on 127.0.0.1 only. Knobs (environment):
#   ENGINES="redb sled memory"   engines of (p1) and (p2); (p3) skips memory (it keeps nothing)
#   PHASES="p1 p2"               p2 includes p3
#   TP_PAIRS=50 TP_RATES=...     (p1) publisher/subscriber pairs and offered loads (msg/s)
#   STEP_SECS=3                  (p1) length of one sweep step
#   TP_MAX_P99_MS=50             (p1) a step passes with p99 (publish to delivery) up to this
#   SESSIONS=19000 QUEUED=100    (p2) persistent sessions and queued messages per session
#   PORT_BASE=19540              MQTT on PORT_BASE+1, admin on PORT_BASE+2 (must be free)
#   OUT=target/bench/persistence-<time>   results.jsonl, summary.md, logs, data directories
#   STARLING_BIN, SWARM_BIN      use these binaries instead of building (copies are taken)
#   KEEP_DATA=0                  1 keeps the data directories (sled's (p2) store is over 1 GiB)
# --quick: SESSIONS=2000, shorter steps, fewer rates.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ "${1:-}" == "--quick" ]]; then
  : "${SESSIONS:=2000}" "${STEP_SECS:=1}" "${TP_RATES:=2000,8000,32000}"
fi
ENGINES=${ENGINES:-"redb sled memory"}
PHASES=${PHASES:-"p1 p2"}
TP_PAIRS=${TP_PAIRS:-50}
TP_RATES=${TP_RATES:-"2000,5000,10000,20000,40000,60000,80000,120000,160000,200000"}
TP_MAX_P99_MS=${TP_MAX_P99_MS:-50}
STEP_SECS=${STEP_SECS:-3}
SESSIONS=${SESSIONS:-19000}
QUEUED=${QUEUED:-100}
PORT_BASE=${PORT_BASE:-19540}
PORT=$((PORT_BASE + 1))
ADMIN_PORT=$((PORT_BASE + 2))
OUT=${OUT:-$ROOT/target/bench/persistence-$(date +%Y%m%d-%H%M%S)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PID=""

log() { printf '[persistence %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

mkdir -p "$OUT/bin" "$OUT/logs"
ulimit -n "$(ulimit -Hn)"
command -v jq >/dev/null || { log "jq is required"; exit 1; }
command -v curl >/dev/null || { log "curl is required"; exit 1; }

# --- Binaries --------------------------------------------------------------------------
if [[ -z "${STARLING_BIN:-}" || -z "${SWARM_BIN:-}" ]]; then
  log "building swarm and starling (release)"
  (cd "$ROOT" && cargo build --release -p starling-loadtest -p starling-node >&2)
fi
# Copies, so concurrent rebuilds of the working tree cannot change them mid-run.
cp "${STARLING_BIN:-$TARGET/release/starling}" "$OUT/bin/starling"
cp "${SWARM_BIN:-$TARGET/release/swarm}" "$OUT/bin/swarm"
STARLING=$OUT/bin/starling
SWARM=$OUT/bin/swarm
"$STARLING" config default | grep -q '^\[storage\]' || { log "this starling has no [storage]"; exit 1; }

{
  echo "commit $(cd "$ROOT" && git rev-parse HEAD) ($(cd "$ROOT" && git status --porcelain | wc -l) uncommitted files)"
  echo "cpus $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"
  echo "data directory filesystem: $(df -T "$OUT" | awk 'NR == 2 {print $2, $1}')"
} > "$OUT/machine.txt"

printf 'version = "1"\n[mqtt]\nmax_queued_messages = %d\n' $((QUEUED > 1000 ? QUEUED : 1000)) > "$OUT/starling.toml"

# --- Broker control --------------------------------------------------------------------
port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }

start_starling() { # engine data_dir log_name
  mkdir -p "$2"
  for port in "$PORT" "$ADMIN_PORT"; do
    if port_in_use "$port"; then log "port $port is in use: set PORT_BASE"; exit 1; fi
  done
  STARLING_LISTEN=127.0.0.1:$PORT STARLING_ADMIN_BIND=127.0.0.1:$ADMIN_PORT \
    STARLING_DATA_DIR="$2" STARLING_STORAGE_ENGINE="$1" STARLING_LOG_LEVEL=warn \
    "$STARLING" --config "$OUT/starling.toml" >> "$OUT/logs/$3.log" 2>&1 &
  PID=$!
}

wait_listening() { # timeout_secs
  local deadline=$(($(now_ms) + $1 * 1000))
  until port_in_use "$PORT"; do
    kill -0 "$PID" 2> /dev/null || { log "starling exited"; return 1; }
    (($(now_ms) < deadline)) || { log "starling not listening after $1 s"; return 1; }
    sleep 0.02
  done
}

status() { curl -sf --max-time 5 "http://127.0.0.1:$ADMIN_PORT/api/v1/status"; }

wait_status() { # jq_condition timeout_secs
  local deadline=$(($(now_ms) + $2 * 1000))
  until status 2> /dev/null | jq -e "$1" > /dev/null 2>&1; do
    kill -0 "$PID" 2> /dev/null || { log "starling exited"; return 1; }
    (($(now_ms) < deadline)) || { log "status never satisfied $1: $(status || true)"; return 1; }
    sleep 0.05
  done
}

# SIGTERM, then SIGKILL if the ordered shutdown takes more than STOP_TIMEOUT_SECS (a hang is
# reported in the log and in results.jsonl).
stop_starling() {
  [[ -n "$PID" ]] || return 0
  kill -TERM "$PID" 2> /dev/null || true
  local deadline=$(($(now_ms) + ${STOP_TIMEOUT_SECS:-60} * 1000))
  while kill -0 "$PID" 2> /dev/null && (($(now_ms) < deadline)); do sleep 0.1; done
  if kill -0 "$PID" 2> /dev/null; then
    log "starling $PID still running ${STOP_TIMEOUT_SECS:-60} s after SIGTERM: killed"
    echo "{\"kind\":\"hang\",\"what\":\"shutdown\",\"label\":\"$CURRENT\"}" >> "$OUT/results.jsonl"
    kill -KILL "$PID" 2> /dev/null || true
  fi
  wait "$PID" 2> /dev/null || true
  PID=""
}
trap stop_starling EXIT

rss_kib() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
store_kib() { du -sk "$1" | cut -f1; }

# Runs swarm while checking that the broker still answers its admin API; a broker that does
# not answer for 30 s is reported as stalled, and swarm is stopped.
run_swarm() { # swarm arguments...
  "$SWARM" "$@" > "$OUT/swarm.out" &
  local swarm_pid=$! failures=0
  while kill -0 "$swarm_pid" 2> /dev/null; do
    sleep 5
    if status > /dev/null 2>&1; then failures=0; else failures=$((failures + 1)); fi
    if ((failures >= 6)); then
      log "starling $PID has not answered for 30 s: stalled; stopping swarm"
      echo "{\"kind\":\"hang\",\"what\":\"stall\",\"label\":\"$CURRENT\"}" >> "$OUT/results.jsonl"
      kill "$swarm_pid" 2> /dev/null || true
      wait "$swarm_pid" 2> /dev/null || true
      return 1
    fi
  done
  wait "$swarm_pid" || return 1
  tee -a "$OUT/results.jsonl" < "$OUT/swarm.out" | "$ROOT/loadtest/bench/oneline.sh" >&2
}

# --- (p1) persistent QoS 1 throughput ---------------------------------------------------
cat > "$OUT/p1.toml" <<EOF
name = "persistent qos1 1:1"
protocol = "5"
settle_ms = 200
[publishers]
count = $TP_PAIRS
topic = "bench/tp/{id}"
qos = 1
payload_bytes = 64
max_inflight = 64
[subscribers]
count = $TP_PAIRS
filter = "bench/tp/{id}"
qos = 1
clean_start = false
session_expiry_secs = 3600
EOF

run_p1() { # engine
  log "(p1) $1: persistent QoS 1 sweep $TP_RATES"
  start_starling "$1" "$OUT/data/p1-$1" "p1-$1"
  wait_listening 30 || return 1
  run_swarm run "$OUT/p1.toml" --broker "127.0.0.1:$PORT" --broker-pid "$PID" \
    --duration "$STEP_SECS" --sweep-rates "$TP_RATES" --max-p99-ms "$TP_MAX_P99_MS" \
    --label "starling-$1" --tag p1 --quiet || return 1
  stop_starling
  [[ "${KEEP_DATA:-0}" == 1 ]] || rm -rf "$OUT/data/p1-$1"
}

# --- (p2) RSS with queued persistent sessions, (p3) restart time ------------------------
cat > "$OUT/p2-park.toml" <<EOF
name = "park persistent sessions"
protocol = "3.1.1"
duration_secs = 1
settle_ms = 500
client_id_prefix = "park-"
[subscribers]
count = $SESSIONS
filter = "bench/park/{id}"
qos = 1
clean_start = false
EOF
cat > "$OUT/p2-fill.toml" <<EOF
name = "fill queues"
protocol = "3.1.1"
duration_secs = 600                  # upper bound: the run ends once every publisher sent max_messages
client_id_prefix = "fill-"
[publishers]
count = $SESSIONS
topic = "bench/park/{id}"
qos = 1
max_messages = $QUEUED
payload_bytes = 64
max_inflight = 16
EOF

run_p2() { # engine
  local engine=$1 data=$OUT/data/p2-$1 total=$((SESSIONS * QUEUED))
  log "(p2) $engine: $SESSIONS persistent sessions with $QUEUED queued messages each"
  start_starling "$engine" "$data" "p2-$engine"
  wait_listening 30 || return 1
  local rss_empty; rss_empty=$(rss_kib "$PID" VmRSS)
  run_swarm run "$OUT/p2-park.toml" --broker "127.0.0.1:$PORT" --broker-pid "$PID" \
    --source-addrs 127.0.1.1-127.0.1.4 --label "starling-$engine" --tag p2-park --quiet || return 1
  wait_status ".sessions_offline >= $SESSIONS" 60 || return 1
  local fill_start; fill_start=$(now_ms)
  run_swarm run "$OUT/p2-fill.toml" --broker "127.0.0.1:$PORT" --broker-pid "$PID" \
    --source-addrs 127.0.2.1-127.0.2.4 --label "starling-$engine" --tag p2-fill --quiet || return 1
  wait_status ".queued_messages >= $total" 120 || return 1
  local fill_ms=$(($(now_ms) - fill_start))
  sleep 2 # let allocator and page cache settle before reading RSS
  local rss_full hwm_full store
  rss_full=$(rss_kib "$PID" VmRSS)
  hwm_full=$(rss_kib "$PID" VmHWM)
  store=$(store_kib "$data")
  local listen_ms=null ready_ms=null rss_restarted=null
  if [[ "$engine" != memory ]]; then
    log "(p3) $engine: kill -9 and restart with $total queued messages"
    kill -KILL "$PID"
    wait "$PID" 2> /dev/null || true
    local spawn; spawn=$(now_ms)
    start_starling "$engine" "$data" "p3-$engine"
    wait_listening 120 || return 1
    listen_ms=$(($(now_ms) - spawn))
    wait_status ".sessions_offline >= $SESSIONS and .queued_messages >= $total" 120 || return 1
    ready_ms=$(($(now_ms) - spawn))
    rss_restarted=$(rss_kib "$PID" VmRSS)
  fi
  stop_starling
  [[ "${KEEP_DATA:-0}" == 1 ]] || rm -rf "$data"
  jq -cn --arg engine "$engine" --argjson sessions "$SESSIONS" --argjson queued "$total" \
    --argjson rss_empty_kib "$rss_empty" --argjson rss_full_kib "$rss_full" \
    --argjson hwm_full_kib "$hwm_full" --argjson store_kib "$store" --argjson fill_ms "$fill_ms" \
    --argjson listen_ms "$listen_ms" --argjson ready_ms "$ready_ms" \
    --argjson rss_restarted_kib "$rss_restarted" \
    '{kind: "persistence", tag: "p2", label: ("starling-" + $engine), engine: $engine,
      sessions: $sessions, queued_messages: $queued, rss_empty_kib: $rss_empty_kib,
      rss_full_kib: $rss_full_kib, hwm_full_kib: $hwm_full_kib, store_kib: $store_kib,
      fill_ms: $fill_ms, restart_listen_ms: $listen_ms, restart_ready_ms: $ready_ms,
      rss_restarted_kib: $rss_restarted_kib}' | tee -a "$OUT/results.jsonl" >&2
}

CURRENT=""
for phase in $PHASES; do
  for engine in $ENGINES; do
    CURRENT="$phase starling-$engine"
    if ! "run_$phase" "$engine"; then
      log "$CURRENT failed (see $OUT/logs and the \"hang\" lines of results.jsonl); going on"
      stop_starling
      rm -rf "$OUT/data/$phase-$engine"
    fi
  done
done

# --- Summary -----------------------------------------------------------------------------
{
  echo "# Persistence benchmark $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  sed 's/^/    /' "$OUT/machine.txt"
  echo
  echo "| engine | (p1) sustained QoS 1 msg/s, p99 <= $TP_MAX_P99_MS ms | (p2) RSS empty | RSS with queues | peak | store on disk | fill time | (p3) listening after kill -9 | all sessions back | RSS after restart |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for engine in $ENGINES; do
    jq -rs --arg lbl "starling-$engine" '
      def mib: if . == null then "-" else "\(. / 1024 | floor) MiB" end;
      def secs: if . == null then "-" else "\(. / 100 | round / 10) s" end;
      (map(select(.label == $lbl and .kind == "sweep")) | last | .sustained_rate // null) as $rate
      | (map(select(.label == $lbl and .kind == "persistence")) | last) as $p
      | "| \($lbl | ltrimstr("starling-")) | \($rate // "-") | \($p.rss_empty_kib | mib) | \($p.rss_full_kib | mib) | \($p.hwm_full_kib | mib) | \($p.store_kib | mib) | \($p.fill_ms | secs) | \($p.restart_listen_ms | secs) | \($p.restart_ready_ms | secs) | \($p.rss_restarted_kib | mib) |"
    ' "$OUT/results.jsonl"
  done
} > "$OUT/summary.md"
cat "$OUT/summary.md" >&2
log "results in $OUT"
