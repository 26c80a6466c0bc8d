#!/usr/bin/env bash
# The test command: builds every plugin component, then runs the plugin crates' own tests and
# every unit, end-to-end and example test of the workspace (the gateway on redb), then the
# end-to-end delivery and crash suites again with the gateway on PostgreSQL (a throwaway
# cluster the tests start; see tests/support/postgres.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --locked -p hookgate-plugin-build
cargo test --locked --manifest-path plugins/Cargo.toml
cargo test --workspace --locked
HOOKGATE_TEST_BACKEND=postgres cargo test --locked -p hookgate --test delivery --test crash_safety
