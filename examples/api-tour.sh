#!/usr/bin/env bash
# A tour of the admin API with curl, against a running gateway: the commands of the README's
# "Try the API" section, in order. examples/demo.sh runs it after the payment flow; run it
# yourself against `examples/demo.sh --keep`, which prints the variables to export:
#   HOOKGATE_API, HOOKGATE_ADMIN_TOKEN, RECEIVER (a receiver URL the gateway may reach) and
#   WEBHOOK_SECRET (the secret that receiver verifies with).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${HOOKGATE_API:?} ${HOOKGATE_ADMIN_TOKEN:?} ${RECEIVER:?} ${WEBHOOK_SECRET:?}"

step() { printf '\n== %s\n' "$*"; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# api STATUS METHOD PATH [CURL ARGS…]: one call with the admin token; stops the tour unless the
# answer has STATUS; prints the answer on one line and leaves it in $out.
api() {
  local expected=$1 method=$2 path=$3 status
  shift 3
  : >"$out"
  status=$(curl -sS -X "$method" "$HOOKGATE_API$path" \
    -H "Authorization: Bearer $HOOKGATE_ADMIN_TOKEN" -o "$out" -w '%{http_code}' "$@")
  if [ "$status" != "$expected" ]; then
    echo "$method $path: expected HTTP $expected, got $status:" >&2; cat "$out" >&2; exit 1
  fi
  if [ -s "$out" ]; then jq -c . "$out" 2>/dev/null | cut -c1-400 || head -c 400 "$out"; fi
}
field() { jq -r "$1" "$out"; }

step "health, readiness and the OpenAPI document (no token needed)"
curl -sS "$HOOKGATE_API/healthz"; echo
curl -sS "$HOOKGATE_API/readyz" | jq -c .status
curl -sS "$HOOKGATE_API/openapi.json" | jq -c '{openapi, paths: (.paths | length)}'

step "create an endpoint (the secret is shown once; Idempotency-Key makes a retry safe)"
api 201 POST /v1/endpoints -H 'Idempotency-Key: tour-crm-1' \
  -d '{"id":"crm","url":"'"$RECEIVER"'/crm","secret":"'"$WEBHOOK_SECRET"'","event_types":["order.shipped"]}'

step "publish an event to it, then read the delivery and the event"
api 201 POST /v1/events -d '{"type":"order.shipped","data":{"order":"A-1001","carrier":"DHL"}}'
event=$(field .id)
delivery=$(field '.deliveries[0].id')
for _ in $(seq 100); do
  api 200 GET "/v1/deliveries/$delivery" >/dev/null
  [ "$(field .status)" = delivered ] && break
  sleep 0.1
done
api 200 GET "/v1/deliveries/$delivery"
api 200 GET "/v1/events/$event"

step "change it at run time, rotate its secret, send it a test event"
api 200 PATCH /v1/endpoints/crm -d '{"concurrency":2,"retry_schedule":["0s","10s","1m"]}'
api 200 POST /v1/endpoints/crm/rotate-secret -d '{"previous_secret_valid_for":"24h"}'
api 202 POST /v1/endpoints/crm/test

step "upload a plugin, dry-run it, put it in the endpoint's chain"
api 201 PUT /v1/plugins/big-orders --data-binary @target/plugins/min-amount.wasm
api 200 POST /v1/plugins/big-orders/test \
  -d '{"event":{"type":"order.shipped","data":{"amount":"5"}},"config":{"default":"10"}}'
api 200 PATCH /v1/endpoints/crm -d '{"plugins":[{"name":"big-orders","config":{"default":"10"}}]}'
api 200 GET /v1/plugins

step "create a payment (retry-safe) and cancel it"
api 201 POST /v1/payments -H 'Idempotency-Key: checkout-A-1002' \
  -d '{"chain":"anvil","amount":"0.25","metadata":{"order":"A-1002"}}'
payment=$(field .payment_id)
api 200 POST "/v1/payments/$payment/cancel"

step "lists: events by type, dead letters, payments by status"
api 200 GET '/v1/events?type=order.shipped&limit=5'
api 200 GET '/v1/deliveries?status=dead_lettered&limit=5'
api 200 GET '/v1/payments?status=canceled'

step "after a receiver outage: re-queue an endpoint's dead letters"
api 200 POST /v1/endpoints/crm/recover -d '{"since":"2026-01-01T00:00:00Z"}'

step "metrics"
curl -sS "$HOOKGATE_API/metrics" | grep -E '^hookgate_delivery_attempts_total' | head -5

step "clean up: the endpoint, then its plugin"
api 204 DELETE /v1/endpoints/crm
api 204 DELETE /v1/plugins/big-orders
echo
echo "== API tour complete"
