//! Hostile: a WASI p2 component that tries to read a host file and an environment variable.
//! The host gives WASI no preopened directories and no environment, so `filter` reports what
//! it got as an error: a test asserts it got nothing.

use hookgate_plugin::{Event, Plugin, export_plugin};

struct WasiSnoop;

impl Plugin for WasiSnoop {
    fn filter(_event: &Event, _config: &str) -> Result<bool, String> {
        let file = match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("fs: read {} bytes", text.len()),
            Err(err) => format!("fs: denied ({err})"),
        };
        let env = match std::env::var("HOME") {
            Ok(value) => format!("env: HOME={value}"),
            Err(_) => "env: none".to_owned(),
        };
        let vars = std::env::vars().count();
        println!("wasi-snoop looked around: {file}; {env}; {vars} variables");
        Err(format!("{file}; {env}; vars: {vars}"))
    }
}

export_plugin!(WasiSnoop);
