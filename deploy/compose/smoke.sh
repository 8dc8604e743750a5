#!/usr/bin/env bash
# `make compose-smoke`, for a host with Docker: build the image, start the compose stack in a
# throw-away project, wait until the gateway says every service is ready, play the demo through
# the gateway (from inside the image, on the stack's network), then tear everything down,
# volumes included. Exits non-zero on the first failure, after printing the stack's logs.
set -euo pipefail
cd "$(dirname "$0")/../.."

if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
project="yellowcart-smoke-$$"
port="${YELLOWCART_PORT:-18000}"
export YELLOWCART_PORT="$port"
run=("${compose[@]}" -p "$project" -f docker-compose.yml)

deploy/compose/secrets.sh >/dev/null
cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then "${run[@]}" logs --no-color --tail=200 || true; fi
  "${run[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
  exit "$status"
}
trap cleanup EXIT

"${run[@]}" build
"${run[@]}" up -d

echo "waiting for http://127.0.0.1:$port/health ..."
deadline=$((SECONDS + ${SMOKE_TIMEOUT_S:-300}))
until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "not ready in time" >&2; exit 1; fi
  sleep 5
done
echo "ready after ${SECONDS}s"

# the demo runs in the order service's container definition, so it signs its payment callbacks
# with the stack's own secret; its tokens are signed with the key whose public half the JWKS holds
"${run[@]}" run --rm --no-deps \
  -v "$PWD/deploy/compose/secrets/token_signing_key:/run/secrets/token_signing_key:ro" \
  -e YELLOWCART_TOKEN_SIGNING_KEY=/run/secrets/token_signing_key \
  -e YELLOWCART_TOKEN_SIGNING_KID=compose-1 \
  order demo --url http://gateway:8000
echo "compose smoke passed"
