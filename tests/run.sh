#!/usr/bin/env bash
# The test command: every unit, end-to-end and example test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
