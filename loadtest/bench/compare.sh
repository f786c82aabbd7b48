#!/usr/bin/env bash
# Side-by-side benchmark of Starling, Mosquitto 2.0 and rumqttd (plus the raw relay ceiling)
# with swarm: the same scenarios against each broker in the same run, interleaved, then a
# Markdown summary with medians, spread and ratios (see BENCHMARKS.md).
#
# Usage: loadtest/bench/compare.sh [--quick]
#
# Everything listens on 127.0.0.1 only. Knobs (environment):
#   SCENARIOS="a b c d e f g h" which scenarios run (letters as in BENCHMARKS.md)
#   BROKERS="starling mosquitto rumqttd relay"
#   REPEATS=3                   runs per broker of fixed-load scenarios (d, e, f, g, h)
#   SWEEP_REPEATS=2             runs per broker of sweeps (a, b, c)
#   STEP_SECS=2                 length of one sweep step; D_SECS=5, F_SECS=10, G_SECS=8
#   A_RATES, B_RATES, C_RATES   offered loads of the sweeps (comma separated)
#   PORT_BASE=18840             ports PORT_BASE+1.. are used
#   OUT=target/bench/<time>     results.jsonl, summary.md, logs, broker configs
#   INSTALL=1                   install a missing mosquitto (apt-get) or rumqttd (cargo install)
# --quick: REPEATS=1 SWEEP_REPEATS=1 STEP_SECS=1, shorter fixed runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ "${1:-}" == "--quick" ]]; then
  : "${REPEATS:=1}" "${SWEEP_REPEATS:=1}" "${STEP_SECS:=1}" "${D_SECS:=3}" "${F_SECS:=6}" "${G_SECS:=5}"
fi
SCENARIOS=${SCENARIOS:-"a b c d e f g h"}
BROKERS=${BROKERS:-"starling mosquitto rumqttd relay"}
REPEATS=${REPEATS:-3}
SWEEP_REPEATS=${SWEEP_REPEATS:-2}
STEP_SECS=${STEP_SECS:-2}
D_SECS=${D_SECS:-5}
F_SECS=${F_SECS:-10}
G_SECS=${G_SECS:-8}
A_RATES=${A_RATES:-"25000,50000,100000,150000,200000,300000,400000,600000,800000"}
B_RATES=${B_RATES:-"5000,10000,20000,30000,40000,60000,80000,120000"}
C_RATES=${C_RATES:-"20,50,100,200,300,400,600,800"}
PORT_BASE=${PORT_BASE:-18840}
OUT=${OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)}
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
RUMQTTD=${RUMQTTD:-$(command -v rumqttd || echo "$HOME/.cargo/bin/rumqttd")}

declare -A PORT=([mosquitto]=$((PORT_BASE + 1)) [rumqttd]=$((PORT_BASE + 2)) [starling]=$((PORT_BASE + 3)) [relay]=$((PORT_BASE + 4)))
STARLING_ADMIN_PORT=$((PORT_BASE + 5))
declare -A PID=()

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT/bin" "$OUT/logs"
ulimit -n "$(ulimit -Hn)"

# --- Binaries --------------------------------------------------------------------------
log "building swarm and starling (release)"
(cd "$ROOT" && cargo build --release -p starling-loadtest -p starling-node >&2)
# Copies, so concurrent rebuilds of the working tree cannot change them mid-run.
cp "$ROOT/target/release/swarm" "$ROOT/target/release/starling" "$OUT/bin/"
SWARM=$OUT/bin/swarm
if [[ ! -x "$MOSQUITTO" && "${INSTALL:-0}" == 1 ]]; then
  log "installing mosquitto"; apt-get install -y mosquitto >&2; MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi
if [[ ! -x "$RUMQTTD" && "${INSTALL:-0}" == 1 ]]; then
  log "installing rumqttd"; cargo install rumqttd --version 0.20.0 >&2; RUMQTTD=$HOME/.cargo/bin/rumqttd
fi
available=()
for broker in $BROKERS; do
  case $broker in
    mosquitto) [[ -x "$MOSQUITTO" ]] || { log "mosquitto not found ($MOSQUITTO): skipped (INSTALL=1 installs it)"; continue; } ;;
    rumqttd) [[ -x "$RUMQTTD" ]] || { log "rumqttd not found ($RUMQTTD): skipped (INSTALL=1 installs it)"; continue; } ;;
  esac
  available+=("$broker")
done

# --- Broker configs: loopback only, limits raised -------------------------------------------
# Mosquitto keeps its Debian defaults otherwise. Not `set_tcp_nodelay true`: with it, Mosquitto
# 2.0.11 stalls for seconds delivering to a resumed persistent QoS 1 session and loses most of
# scenario (f) (see BENCHMARKS.md).
cat > "$OUT/mosquitto.conf" <<EOF
listener ${PORT[mosquitto]} 127.0.0.1
allow_anonymous true
max_connections -1
persistence false
log_dest file $OUT/logs/mosquitto.log
log_type error
log_type warning
EOF
cat > "$OUT/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 40000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:${PORT[rumqttd]}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF

start_broker() {
  local broker=$1
  case $broker in
    mosquitto) "$MOSQUITTO" -c "$OUT/mosquitto.conf" >>"$OUT/logs/mosquitto.out" 2>&1 & ;;
    rumqttd) "$RUMQTTD" -q -c "$OUT/rumqttd.toml" >>"$OUT/logs/rumqttd.log" 2>&1 & ;;
    starling)
      rm -rf "$OUT/starling-data"
      STARLING_LISTEN=127.0.0.1:${PORT[starling]} STARLING_DATA_DIR=$OUT/starling-data \
        STARLING_LOG_LEVEL=warn STARLING_ADMIN_BIND=127.0.0.1:$STARLING_ADMIN_PORT \
        "$OUT/bin/starling" >>"$OUT/logs/starling.log" 2>&1 & ;;
    relay) "$SWARM" relay --listen "127.0.0.1:${PORT[relay]}" --threads 2 >>"$OUT/logs/relay.log" 2>&1 & ;;
  esac
  PID[$broker]=$!
  local port=${PORT[$broker]}
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$broker did not open 127.0.0.1:$port (see $OUT/logs)"; return 1
}

stop_broker() {
  local broker=$1 pid=${PID[$1]:-}
  [[ -n "$pid" ]] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PID[$broker]"
}

cleanup() { for broker in "${!PID[@]}"; do stop_broker "$broker"; done; }
trap cleanup EXIT INT TERM

restart_all() { for broker in "$@"; do stop_broker "$broker"; start_broker "$broker"; done; sleep 0.5; }

# Runs swarm against one broker and appends its JSON line (or an error line) to results.jsonl.
run() {
  local tag=$1 broker=$2; shift 2
  local pid=${PID[$broker]}
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$broker (pid $pid) is gone before ($tag): restarting it"
    echo "{\"kind\":\"error\",\"tag\":\"$tag\",\"label\":\"$broker\",\"error\":\"broker process was gone before the run\"}" >>"$OUT/errors.jsonl"
    start_broker "$broker"; pid=${PID[$broker]}
  fi
  local line
  if line=$("$SWARM" "$@" --broker "127.0.0.1:${PORT[$broker]}" --broker-pid "$pid" \
      --label "$broker" --tag "$tag" --quiet 2>>"$OUT/logs/swarm.log"); then
    echo "$line" >>"$OUT/results.jsonl"
    printf '%s\n' "$line" | "$ROOT/loadtest/bench/oneline.sh" >&2 || true
  else
    log "($tag) $broker: swarm failed (see $OUT/logs/swarm.log)"
    echo "{\"kind\":\"error\",\"tag\":\"$tag\",\"label\":\"$broker\",\"error\":\"swarm failed\"}" >>"$OUT/errors.jsonl"
  fi
}

# Brokers in a different order on each repetition, so no broker always runs first.
rotated() {
  local rep=$1; shift
  local list=("$@") n=$#
  for ((i = 0; i < n; i++)); do echo "${list[$(((i + rep) % n))]}"; done
}

without_relay() { local b; for b in "$@"; do [[ $b == relay ]] || echo "$b"; done; }

scenario() {
  local tag=$1 repeats=$2; shift 2
  local -a brokers=("$@")
  log "scenario ($tag): ${brokers[*]}, $repeats repetitions"
  restart_all "${brokers[@]}"
  for ((rep = 0; rep < repeats; rep++)); do
    for broker in $(rotated "$rep" "${brokers[@]}"); do
      case $tag in
        a) run a "$broker" pairs --settle-ms 200 --pairs 100 --qos 0 --payload-bytes 64 --duration "$STEP_SECS" --sweep-rates "$A_RATES" --name "(a) 1:1 QoS 0, 100 pairs, 64 B" ;;
        b) run b "$broker" fan-in --settle-ms 200 --publishers 1000 --subscribers 1 --qos 1 --payload-bytes 64 --duration "$STEP_SECS" --sweep-rates "$B_RATES" --name "(b) fan-in 1000 -> 1, QoS 1" ;;
        c) run c "$broker" fan-out --settle-ms 200 --publishers 1 --subscribers 1000 --qos 0 --payload-bytes 64 --duration "$STEP_SECS" --sweep-rates "$C_RATES" --name "(c) fan-out 1 -> 1000, QoS 0" ;;
        d) run d "$broker" pairs --pairs 100 --qos 0 --payload-bytes 64 --total-rate 20000 --duration "$D_SECS" --name "(d) latency at 20000 msg/s, 1:1, QoS 0" ;;
        e) restart_all "$broker"
           # Fresh source addresses per run: ports of the previous run may still be in TIME_WAIT.
           E_RUN=$((${E_RUN:-0} + 1))
           run e "$broker" storm --clients 19000 --workers 2 --source-addrs "127.0.$E_RUN.1-127.0.$E_RUN.4" --duration 2 --settle-ms 1500 --name "(e) 19000 idle connections, one subscription each" ;;
        f) run f "$broker" fleet --cars 5000 --backends 1 --persistent --qos 1 --reconnect-every-secs 2 --offline-ms 100 --duration "$F_SECS" --name "(f) fleet telemetry: 5000 cars at 1 msg/s, QoS 1, persistent sessions, backend offline 100 ms every 2 s" ;;
        h) run h "$broker" pairs --pairs 100 --qos 0 --payload-bytes 64 --total-rate 80000 --duration "$D_SECS" --name "(h) broker CPU at a fixed 80000 msg/s, 1:1, QoS 0" ;;
        g) run g "$broker" fan-in --publishers 100 --subscribers 1 --qos 1 --consume-rate 5000 --duration "$G_SECS" --drain-timeout-ms 5000 --drain-quiet-ms 2000 --name "(g) fan-in flood: 100 unthrottled QoS 1 publishers -> 1 subscriber reading 5000 msg/s" ;;
      esac
    done
  done
  for broker in "${brokers[@]}"; do stop_broker "$broker"; done
}

log "results in $OUT"
{
  echo "commit $(cd "$ROOT" && git rev-parse HEAD) ($(cd "$ROOT" && git status --porcelain | wc -l) changed files in the working tree)"
  echo "kernel $(uname -r)"; lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)'
  echo "mosquitto $("$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
  echo "rumqttd $("$RUMQTTD" -V 2>/dev/null || true)"
  echo "settings REPEATS=$REPEATS SWEEP_REPEATS=$SWEEP_REPEATS STEP_SECS=$STEP_SECS A_RATES=$A_RATES B_RATES=$B_RATES C_RATES=$C_RATES"
} | tee "$OUT/machine.txt" >&2
started=$(date +%s)
for tag in $SCENARIOS; do
  case $tag in
    a | b | c) mapfile -t brokers < <(printf '%s\n' "${available[@]}"); scenario "$tag" "$SWEEP_REPEATS" "${brokers[@]}" ;;
    d | h) mapfile -t brokers < <(printf '%s\n' "${available[@]}"); scenario "$tag" "$REPEATS" "${brokers[@]}" ;;
    e | f | g) mapfile -t brokers < <(without_relay "${available[@]}"); scenario "$tag" "$REPEATS" "${brokers[@]}" ;;
    *) log "unknown scenario $tag" ;;
  esac
done
log "done in $(($(date +%s) - started)) s"
"$SWARM" summary "$OUT/results.jsonl" --subject starling --baselines mosquitto,rumqttd,relay | tee "$OUT/summary.md"
