#!/usr/bin/env bash
# The test command: builds every plugin component, then runs the plugin crates' own tests and
# every unit, end-to-end and example test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --locked -p hookgate-plugin-build
cargo test --locked --manifest-path plugins/Cargo.toml
cargo test --workspace --locked
