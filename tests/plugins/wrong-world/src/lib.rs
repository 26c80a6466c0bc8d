//! Hostile: a valid component for a different world (`acme:other` exporting `run`). The host
//! must refuse to load it, saying it does not fit the plugin world.

wit_bindgen::generate!({ world: "runner", path: "wit" });

struct Runner;

impl Guest for Runner {
    fn run() {}
}

export!(Runner);
