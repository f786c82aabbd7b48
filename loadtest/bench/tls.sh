#!/usr/bin/env bash
# Idle memory per connection and handshake cost of Starling's TLS listeners, against its plain
# TCP listener in the same run (BENCHMARKS.md, "TLS listeners").
#
# For each repetition and each listener kind (tcp, tls, mtls: TLS with a client certificate), a
# fresh broker is started, `swarm storm` connects CLIENTS clients that subscribe to one topic each
# and stay idle, and the broker's RSS per connection and CPU time are recorded.
#
# Knobs (environment): CLIENTS (5000), REPEATS (3), CONNECTS (max concurrent handshakes, 64),
# KINDS ("tcp tls mtls"), BIN (a directory with starling and swarm; default: build them),
# OUT (results directory). Needs openssl for the certificates (ECDSA P-256).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLIENTS=${CLIENTS:-5000}
REPEATS=${REPEATS:-3}
CONNECTS=${CONNECTS:-64}
KINDS=${KINDS:-tcp tls mtls}
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/bench/tls-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [[ -z "${BIN:-}" ]]; then
  cargo build --release -p starling-node -p starling-loadtest
  # A private copy: another build into the same target directory must not swap binaries mid-run.
  BIN="$OUT/bin"
  mkdir -p "$BIN"
  cp "$TARGET/release/starling" "$TARGET/release/swarm" "$BIN/"
fi

pki="$OUT/pki"
mkdir -p "$pki"
(
  cd "$pki"
  ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  openssl req -x509 $ec -keyout ca.key -out ca.pem -days 30 -subj "/CN=bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  for name in server client; do
    openssl req $ec -keyout $name.key -out $name.csr -subj "/CN=bench $name" 2>/dev/null
  done
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  for name in server client; do
    openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem \
      -days 30 -extfile $name.ext 2>/dev/null
  done
)

cat > "$OUT/starling.toml" <<EOF
version = "1"
[listeners.tcp]
bind = "127.0.0.1:18850"
[listeners.tls]
protocol = "tls"
bind = "127.0.0.1:18851"
cert_file = "$pki/server.pem"
key_file = "$pki/server.key"
[listeners.mtls]
protocol = "tls"
bind = "127.0.0.1:18852"
cert_file = "$pki/server.pem"
key_file = "$pki/server.key"
client_ca_file = "$pki/ca.pem"
[log]
level = "warn"
EOF

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

{
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "date: $(date -u +%FT%TZ)"
  nproc
  grep -m1 'model name' /proc/cpuinfo
  uname -r
} > "$OUT/machine.txt"

results="$OUT/results.jsonl"
: > "$results"
for rep in $(seq "$REPEATS"); do
  for kind in $KINDS; do
    rm -rf "$OUT/data"
    STARLING_ADMIN_BIND=127.0.0.1:0 STARLING_DATA_DIR="$OUT/data" \
      "$BIN/starling" --config "$OUT/starling.toml" > "$OUT/broker-$kind-$rep.log" 2>&1 &
    pid=$!
    sleep 1
    case $kind in
      tcp) port=18850; tls=() ;;
      tls) port=18851; tls=(--tls-ca "$pki/ca.pem") ;;
      mtls) port=18852; tls=(--tls-ca "$pki/ca.pem" --tls-cert "$pki/client.pem" --tls-key "$pki/client.key") ;;
    esac
    before=$(cpu_ticks "$pid")
    "$BIN/swarm" storm --clients "$CLIENTS" --broker "127.0.0.1:$port" --broker-pid "$pid" \
      --max-concurrent-connects "$CONNECTS" --duration 2 --settle-ms 1500 "${tls[@]}" \
      --label "$kind" --tag "rep$rep" --quiet > "$OUT/swarm-$kind-$rep.json"
    after=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" || true
    python3 - "$OUT/swarm-$kind-$rep.json" "$((after - before))" "$(getconf CLK_TCK)" >> "$results" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
broker, connections = run["broker_process"], run["connections"]
print(json.dumps({
    "kind": run["label"], "rep": run["tag"], "clients": run["clients"],
    "established": connections["established"], "failed": connections["failed"],
    "rss_per_connection_bytes": round(broker["rss_per_connection_bytes"]),
    "rss_connected_mib": round(broker["rss_connected_bytes"] / 2**20, 1),
    "connect_rate_per_sec": round(connections["connect_rate"]),
    "connect_p99_ms": round(run["connect_latency"]["p99_us"] / 1000, 1),
    "broker_cpu_secs_whole_run": ticks / hz,
    "broker_cpu_us_per_connection": round(1e6 * ticks / hz / max(connections["established"], 1)),
    "cpu_pressure_pct": run["cpu_pressure_pct"],
}))
PY
    tail -1 "$results"
  done
done
echo "results: $results"
