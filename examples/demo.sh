#!/usr/bin/env bash
# The whole flow on one machine: a local anvil chain, a verifying receiver, the gateway on a
# fresh redb file with example WASM plugins; a payment is created, paid on-chain and confirmed,
# and the signed payment events arrive (one reshaped by a plugin, one filtered out by another).
# Then examples/api-tour.sh drives the admin API with curl. With --keep, everything stays up
# afterwards for your own curl commands (the README's "Try the API"), until Ctrl-C.
set -euo pipefail
keep=false
[ "${1:-}" = --keep ] && keep=true
cd "$(dirname "$0")/.."

export WEBHOOK_SECRET="whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
export HOOKGATE_ADMIN_TOKEN="demo-admin-token-for-the-local-demo"
PAYER=0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199   # anvil's account 19
work=$PWD/target/demo
rm -rf "$work" && mkdir -p "$work/plugins"

echo "== building the gateway, the receiver and the plugins (the first run takes minutes)"
cargo build --quiet -p hookgate -p hookgate-receiver
cargo run --quiet -p hookgate-plugin-build >"$work/plugin-build.log" 2>&1 \
  || { cat "$work/plugin-build.log"; exit 1; }
bin=${CARGO_TARGET_DIR:-target}/debug
cp target/plugins/legacy-flat.wasm target/plugins/min-amount.wasm "$work/plugins/"
anvil=${HOOKGATE_ANVIL:-node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil}
if [ ! -x "$anvil" ]; then
  echo "== installing anvil from npm (@foundry-rs/anvil-linux-amd64)"
  npm install --no-save --silent @foundry-rs/anvil-linux-amd64@1.7.1
fi

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
# rpc METHOD PARAMS: one JSON-RPC call to anvil, prints the result.
rpc() {
  curl -sS -X POST "$RPC" -H 'Content-Type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"'"$1"'","params":'"$2"'}' | jq -c '.result'
}

"$anvil" --host 127.0.0.1 --port 0 --accounts 20 >"$work/anvil.log" 2>&1 &
pids+=($!)
RPC=http://$(wait_for "$work/anvil.log" 'Listening on' | sed 's/.*Listening on //')
start=$(( $(rpc eth_blockNumber '[]' | tr -d '"') ))
echo "== anvil (chain 31337) at $RPC, head block $start"

"$bin/hookgate-receiver" 127.0.0.1:0 >"$work/receiver.log" 2>&1 &
pids+=($!)
receiver=$(wait_for "$work/receiver.log" 'listening on' | sed 's/.*listening on //')
echo "== receiver verifying signatures at $receiver"

sed -e "s|@RECEIVER@|$receiver|g" -e "s|@WORK@|$work|g" -e "s|@RPC@|$RPC|g" -e "s|@START@|$start|g" \
  examples/demo.toml >"$work/hookgate.toml"
"$bin/hookgate" serve --config "$work/hookgate.toml" >"$work/gateway.out" 2>"$work/gateway.log" &
pids+=($!)
export HOOKGATE_API
HOOKGATE_API=$(wait_for "$work/gateway.out" 'listening on' | sed 's/.*listening on //')
echo "== gateway admin API at $HOOKGATE_API (store: $work/hookgate.redb)"

echo "== hookgate payment create --chain anvil --amount 1.5   (the address is derived from the xpub)"
payment=$("$bin/hookgate" payment create --chain anvil --amount 1.5 --metadata '{"order":"A-1001"}')
echo "$payment" | jq -c '{payment_id, status, address, amount, amount_raw, expires_at}'
id=$(echo "$payment" | jq -r .payment_id)
address=$(echo "$payment" | jq -r .address)

echo "== paying 1.5 ETH to $address on-chain"
tx=$(rpc eth_sendTransaction '[{"from":"'"$PAYER"'","to":"'"$address"'","value":"0x14d1120d7b160000"}]')
echo "   transaction $tx"
wait_for "$work/receiver.log" '/webhooks .*"payment.detected"' >/dev/null
echo "== payment.detected arrived; mining 3 blocks for the confirmations"
rpc anvil_mine '[3]' >/dev/null
wait_for "$work/receiver.log" '/legacy .*payment.confirmed' >/dev/null
wait_for "$work/receiver.log" '/webhooks .*"payment.confirmed"' >/dev/null

echo "== the receiver says (every delivery's two signatures checked)"
grep -E 'verified|REJECTED' "$work/receiver.log" | cut -c1-300
if grep -q REJECTED "$work/receiver.log"; then echo "demo failed: a signature did not verify" >&2; exit 1; fi
if grep -q '/big ' "$work/receiver.log"; then echo "demo failed: min-amount let a 1.5 payment through" >&2; exit 1; fi
echo "== the legacy endpoint got the original service's flat body from the legacy-flat plugin:"
grep '/legacy ' "$work/receiver.log" | sed 's/.*: {/{/' | jq .
echo "== big-payments got nothing: min-amount (10) dropped the 1.5 ETH payment"

echo "== hookgate payment get $id"
"$bin/hookgate" payment get "$id" | jq '{payment_id, status, amount, amount_paid, transfers: [.transfers[] | {tx_hash, block_number}]}'

echo "== the admin API, with curl (examples/api-tour.sh)"
RECEIVER=$receiver HOOKGATE_API=$HOOKGATE_API examples/api-tour.sh
if grep -q REJECTED "$work/receiver.log"; then echo "demo failed: a signature did not verify" >&2; exit 1; fi
echo "== demo complete: logs and the redb file in $work/"
if $keep; then
  echo "== still running (Ctrl-C stops it). In another shell:"
  echo "export HOOKGATE_API=$HOOKGATE_API HOOKGATE_ADMIN_TOKEN=$HOOKGATE_ADMIN_TOKEN RECEIVER=$receiver WEBHOOK_SECRET=$WEBHOOK_SECRET"
  wait
fi
