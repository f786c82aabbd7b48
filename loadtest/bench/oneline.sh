#!/usr/bin/env bash
# Prints a one-line digest of a swarm JSON result read from stdin (needs jq; silent without).
command -v jq >/dev/null || exit 0
jq -r '
  if .kind == "sweep" then
    "  (\(.tag)) \(.label): sustained \(.sustained_rate // 0) msg/s (\(.sustained_delivery_rate // 0 | floor) deliveries/s), steps: " +
    ([.steps[] | "\(.offered_rate|floor)\(if .passed then "ok" else "x" end)"] | join(" "))
  else
    "  (\(.tag)) \(.label): delivered \(.messages.delivered_rate|floor)/s loss \(.messages.loss_pct*1000|round/1000) % dups \(.messages.duplicates) p50 \(.latency.p50_us/1000) ms p99 \(.latency.p99_us/1000) ms p99.9 \(.latency.p999_us/1000) ms conn \(.connections.established)/\(.connections.target) at \(.connections.connect_rate|floor)/s RSS/conn \(.broker_process.rss_per_connection_bytes // 0 | floor) B peak \((.broker_process.rss_peak_bytes // 0)/1048576|floor) MiB pressure \(.cpu_pressure_pct // 0) %"
  end'
