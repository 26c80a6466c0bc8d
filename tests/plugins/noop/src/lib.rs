//! `noop`: keeps every event and passes the body through; the benchmark's trivial plugin.

use hookgate_plugin::{Plugin, export_plugin};

struct Noop;

impl Plugin for Noop {}

export_plugin!(Noop);
