#!/usr/bin/env bash
# The whole flow on one machine: a verifying receiver, the gateway on a fresh redb file,
# a published payment event, its signed delivery and its recorded attempt.
set -euo pipefail
cd "$(dirname "$0")/.."

export WEBHOOK_SECRET="whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
TOKEN="demo-admin-token"
work=target/demo
rm -rf "$work" && mkdir -p "$work"

echo "== building (first run compiles wasmtime: several minutes)"
cargo build --quiet -p hookgate -p hookgate-receiver
bin=${CARGO_TARGET_DIR:-target}/debug

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# wait_for FILE PATTERN: the first line of FILE matching PATTERN, within 30 s.
wait_for() {
  for _ in $(seq 300); do
    if line=$(grep -m1 -E "$2" "$1" 2>/dev/null); then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

"$bin/hookgate-receiver" 127.0.0.1:0 >"$work/receiver.log" 2>&1 &
pids+=($!)
receiver=$(wait_for "$work/receiver.log" 'listening on' | sed 's/.*listening on //')
echo "== receiver verifying signatures at $receiver"

export WEBHOOK_URL="$receiver/webhooks"
"$bin/hookgate" serve --config examples/demo.toml >"$work/gateway.out" 2>"$work/gateway.log" &
pids+=($!)
api=$(wait_for "$work/gateway.out" 'listening on' | sed 's/.*listening on //')
echo "== gateway admin API at $api (store: $work/hookgate.redb)"

echo "== publishing payment.confirmed"
response=$(curl -sS -X POST "$api/v1/events" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  -H "Idempotency-Key: demo-payment-1-confirmed" \
  -d '{"type":"payment.confirmed","data":{"payment_id":"7f0c5a4e-2d0b-4c1e-9a57-3f1f0d2b8c11","status":"confirmed","address":"0x8ba1f109551bd432803012645ac136ddd64dba72","amount":"12.5","amount_raw":"12500000","chain":"ethereum","chain_id":1,"token_id":"usdc","tx_hash":"0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060","block_number":123,"confirmations":12}}')
echo "$response" | jq .
delivery=$(echo "$response" | jq -r '.deliveries[0].id')

wait_for "$work/receiver.log" 'verified|REJECTED' >/dev/null
echo "== the receiver says"
grep -E 'verified|REJECTED' "$work/receiver.log"

echo "== delivery $delivery as the gateway recorded it"
for _ in $(seq 50); do
  status=$(curl -sS "$api/v1/deliveries/$delivery" -H "Authorization: Bearer $TOKEN")
  [ "$(echo "$status" | jq -r .status)" = pending ] || break
  sleep 0.1
done
echo "$status" | jq .
[ "$(echo "$status" | jq -r .status)" = delivered ] || { echo "demo failed: not delivered" >&2; exit 1; }
echo "== demo complete: logs in $work/"
