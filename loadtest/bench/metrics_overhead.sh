#!/usr/bin/env bash
# Cost of the Prometheus exporter: the 1:1 benchmark (swarm `pairs`, scenario (a) of
# BENCHMARKS.md, with the sweep extended past 800k) and a fixed 80k msg/s load for CPU per
# message, against two Starling processes of the same binary: `admin.metrics = true` (the
# default, scraped every SCRAPE_SECS like a Prometheus would) and `admin.metrics = false`.
# Runs alternate between the two, in the order on, off, off, on, ... so neither always runs first.
#
# Usage: loadtest/bench/metrics_overhead.sh
# Knobs (environment):
#   SCENARIOS="a h c"    a: the sweep; h: the fixed-load CPU run; c: the fixed load against both
#                        nodes at the same time (CONCURRENT_RATE each), so both see the same
#                        machine at the same moment: the least noisy CPU comparison here
#   CONCURRENT_RATE=60000
#   REPEATS=4            runs per setting of each scenario
#   STEP_SECS=2          length of one sweep step
#   RATES=...            offered loads of the sweep (comma separated)
#   FIXED_RATE=80000     offered load of the CPU run; FIXED_SECS=5 its length
#   SCRAPE_SECS=5        scrape interval of /metrics during the runs
#   BIN=target/release   where starling and swarm are (built if absent)
#   PORT_BASE=18940      ports PORT_BASE+1.. are used
#   OUT=target/bench/metrics-<time>
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCENARIOS=${SCENARIOS:-"a h c"}
CONCURRENT_RATE=${CONCURRENT_RATE:-60000}
REPEATS=${REPEATS:-4}
STEP_SECS=${STEP_SECS:-2}
RATES=${RATES:-"200000,400000,600000,800000,1000000,1200000,1400000"}
FIXED_RATE=${FIXED_RATE:-80000}
FIXED_SECS=${FIXED_SECS:-5}
SCRAPE_SECS=${SCRAPE_SECS:-5}
PORT_BASE=${PORT_BASE:-18940}
BIN=${BIN:-$ROOT/target/release}
OUT=${OUT:-$ROOT/target/bench/metrics-$(date +%Y%m%d-%H%M%S)}

log() { printf '[metrics-overhead %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$OUT/bin" "$OUT/logs"
ulimit -n "$(ulimit -Hn)"
if [[ ! -x "$BIN/starling" || ! -x "$BIN/swarm" ]]; then
  (cd "$ROOT" && cargo build --release -p starling-loadtest -p starling-node >&2)
fi
cp "$BIN/starling" "$BIN/swarm" "$OUT/bin/"

declare -A PORT=([on]=$((PORT_BASE + 1)) [off]=$((PORT_BASE + 2)))
declare -A ADMIN=([on]=$((PORT_BASE + 3)) [off]=$((PORT_BASE + 4)))
declare -A PID=()
printf 'version = "1"\n[admin]\nmetrics = true\n' >"$OUT/on.toml"
printf 'version = "1"\n[admin]\nmetrics = false\n' >"$OUT/off.toml"

start() {
  local setting=$1
  rm -rf "$OUT/data-$setting"
  STARLING_LISTEN=127.0.0.1:${PORT[$setting]} STARLING_DATA_DIR=$OUT/data-$setting \
    STARLING_LOG_LEVEL=warn STARLING_ADMIN_BIND=127.0.0.1:${ADMIN[$setting]} \
    "$OUT/bin/starling" --config "$OUT/$setting.toml" >>"$OUT/logs/starling-$setting.log" 2>&1 &
  PID[$setting]=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$setting]}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "starling ($setting) did not start"; return 1
}

SCRAPER=
cleanup() {
  [[ -n "$SCRAPER" ]] && kill "$SCRAPER" 2>/dev/null
  for setting in "${!PID[@]}"; do kill "${PID[$setting]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Scrapes both nodes like a Prometheus would (the node without the exporter answers 404).
scrape_loop() {
  while true; do
    for setting in on off; do
      curl -s -o /dev/null "http://127.0.0.1:${ADMIN[$setting]}/metrics" || true
    done
    sleep "$SCRAPE_SECS"
  done
}

run() {
  local tag=$1 setting=$2; shift 2
  local line
  if line=$("$OUT/bin/swarm" "$@" --broker "127.0.0.1:${PORT[$setting]}" --broker-pid "${PID[$setting]}" \
      --label "metrics-$setting" --tag "$tag" --quiet 2>>"$OUT/logs/swarm.log"); then
    echo "$line" >>"$OUT/results.jsonl"
    printf '%s\n' "$line" | "$ROOT/loadtest/bench/oneline.sh" >&2 || true
  else
    log "($tag) metrics-$setting: swarm failed (see $OUT/logs/swarm.log)"
  fi
}

{
  echo "commit $(cd "$ROOT" && git rev-parse HEAD) ($(cd "$ROOT" && git status --porcelain | wc -l) changed files)"
  echo "nproc $(nproc)"; lscpu | grep -E '^(Model name|CPU\(s\))'
  echo "settings REPEATS=$REPEATS STEP_SECS=$STEP_SECS RATES=$RATES FIXED_RATE=$FIXED_RATE FIXED_SECS=$FIXED_SECS SCRAPE_SECS=$SCRAPE_SECS"
} | tee "$OUT/machine.txt" >&2
start on
start off
scrape_loop &
SCRAPER=$!
log "results in $OUT"
for ((rep = 0; rep < REPEATS; rep++)); do
  if ((rep % 2 == 0)); then order="on off"; else order="off on"; fi
  for setting in $order; do
    [[ " $SCENARIOS " == *" a "* ]] || break
    run a "$setting" pairs --settle-ms 200 --pairs 100 --qos 0 --payload-bytes 64 --duration "$STEP_SECS" \
      --sweep-rates "$RATES" --name "(a) 1:1 QoS 0, 100 pairs, 64 B"
  done
  if [[ " $SCENARIOS " == *" c "* ]]; then
    swarms=()
    for setting in on off; do
      run c "$setting" pairs --pairs 100 --qos 0 --payload-bytes 64 --total-rate "$CONCURRENT_RATE" \
        --duration "$FIXED_SECS" --name "(c) both nodes at once, $CONCURRENT_RATE msg/s each, 1:1, QoS 0" &
      swarms+=($!)
    done
    wait "${swarms[@]}"
  fi
  for setting in $order; do
    [[ " $SCENARIOS " == *" h "* ]] || break
    run h "$setting" pairs --pairs 100 --qos 0 --payload-bytes 64 --total-rate "$FIXED_RATE" \
      --duration "$FIXED_SECS" --name "(h) broker CPU at a fixed $FIXED_RATE msg/s, 1:1, QoS 0"
  done
done
"$OUT/bin/swarm" summary "$OUT/results.jsonl" --subject metrics-on --baselines metrics-off | tee "$OUT/summary.md"
# Paired: each on run against the off run next to it (same repetition), which cancels the
# machine's slow drift in load; median and range of on ÷ off.
if command -v jq >/dev/null; then
  for tag in a h c; do
    jq -rs --arg tag "$tag" '
      [.[] | select(.tag == $tag)] as $runs
      | if ($runs | length) == 0 then empty else
        [range(0; ($runs | length) / 2 | floor) as $i | $runs[2 * $i: 2 * $i + 2]
         | (map(select(.label == "metrics-on"))[0]) as $on | (map(select(.label == "metrics-off"))[0]) as $off
         | select($on != null and $off != null)
         | select($tag != "a" or (($on.sustained_rate // 0) > 0 and ($off.sustained_rate // 0) > 0))
         | if $tag == "a" then ($on.sustained_rate / $off.sustained_rate)
           else ($on.broker_process.messages_per_cpu_sec / $off.broker_process.messages_per_cpu_sec) end]
        | sort | if length == 0 then "paired (\($tag)): no pair where both passed a step" else "paired (\($tag)) on ÷ off, \(if $tag == "a" then "sustained msg/s" else "messages per broker CPU s" end): median \((if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end) * 1000 | round / 1000), range \(.[0] * 1000 | round / 1000)–\(.[-1] * 1000 | round / 1000), \(length) pairs: \(map(. * 1000 | round / 1000))" end
        end' "$OUT/results.jsonl" | tee -a "$OUT/summary.md"
  done
fi
