#!/usr/bin/env bash
# The whole flow on one machine: a verifying receiver, the gateway on a fresh redb file with
# example WASM plugins, two published payment events, their signed deliveries (one reshaped by
# a plugin, one filtered out) and the attempts the gateway recorded.
set -euo pipefail
cd "$(dirname "$0")/.."

export WEBHOOK_SECRET="whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
TOKEN="demo-admin-token"
work=$PWD/target/demo
rm -rf "$work" && mkdir -p "$work/plugins"

echo "== building the gateway, the receiver and the plugins (the first run takes minutes)"
cargo build --quiet -p hookgate -p hookgate-receiver
cargo run --quiet -p hookgate-plugin-build >"$work/plugin-build.log" 2>&1 \
  || { cat "$work/plugin-build.log"; exit 1; }
bin=${CARGO_TARGET_DIR:-target}/debug
cp target/plugins/legacy-flat.wasm target/plugins/min-amount.wasm "$work/plugins/"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

# wait_for FILE PATTERN [COUNT]: waits (30 s at most) until FILE has COUNT lines matching PATTERN.
wait_for() {
  for _ in $(seq 300); do
    if [ "$(grep -cE "$2" "$1" 2>/dev/null)" -ge "${3:-1}" ]; then grep -m1 -E "$2" "$1"; return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

"$bin/hookgate-receiver" 127.0.0.1:0 >"$work/receiver.log" 2>&1 &
pids+=($!)
receiver=$(wait_for "$work/receiver.log" 'listening on' | sed 's/.*listening on //')
echo "== receiver verifying signatures at $receiver"

sed -e "s|@RECEIVER@|$receiver|g" -e "s|@WORK@|$work|g" examples/demo.toml >"$work/hookgate.toml"
"$bin/hookgate" serve --config "$work/hookgate.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
pids+=($!)
api=$(wait_for "$work/gateway.out" 'listening on' | sed 's/.*listening on //')
echo "== gateway admin API at $api (store: $work/hookgate.redb)"
curl -sS "$api/v1/plugins" -H "Authorization: Bearer $TOKEN" | jq -c '.plugins[] | {name, version, from_cache}'

publish() { # publish KEY AMOUNT
  curl -sS -X POST "$api/v1/events" \
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -H "Idempotency-Key: $1" \
    -d '{"type":"payment.confirmed","data":{"payment_id":"7f0c5a4e-2d0b-4c1e-9a57-3f1f0d2b8c11","status":"confirmed","address":"0x8ba1f109551bd432803012645ac136ddd64dba72","amount":"'"$2"'","amount_raw":"0","chain":"ethereum","chain_id":1,"token_id":"usdc","tx_hash":"0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060","block_number":123,"confirmations":12}}'
}

echo "== publishing payment.confirmed for 12.5 USDC (goes to all three endpoints)"
big=$(publish demo-payment-1 12.5)
echo "$big" | jq .
echo "== publishing payment.confirmed for 2.5 USDC (min-amount drops it for big-payments)"
small=$(publish demo-payment-2 2.5)
echo "$small" | jq -c '{id, deliveries: [.deliveries[].endpoint_id], dropped}'

wait_for "$work/receiver.log" 'verified|REJECTED' 5 >/dev/null
echo "== the receiver says (every delivery's two signatures checked)"
grep -E 'verified|REJECTED' "$work/receiver.log"
if grep -q REJECTED "$work/receiver.log"; then echo "demo failed: a signature did not verify" >&2; exit 1; fi

delivery=$(echo "$big" | jq -r '.deliveries[] | select(.endpoint_id=="legacy") | .id')
echo "== delivery $delivery (legacy endpoint) as the gateway recorded it"
for _ in $(seq 50); do
  status=$(curl -sS "$api/v1/deliveries/$delivery" -H "Authorization: Bearer $TOKEN")
  [ "$(echo "$status" | jq -r .status)" = pending ] || break
  sleep 0.1
done
echo "$status" | jq .
[ "$(echo "$status" | jq -r .status)" = delivered ] || { echo "demo failed: not delivered" >&2; exit 1; }
echo "== demo complete: logs and the redb file in $work/"
