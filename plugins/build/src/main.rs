//! The one build step for plugins: `cargo run -p hookgate-plugin-build [-- --out DIR]`.
//!
//! It builds the plugin workspaces (`plugins/`: SDK and examples; `tests/plugins/`: the
//! hostile plugins the host's tests load) for WebAssembly and writes one component per plugin
//! crate to `target/plugins/NAME.wasm` (or `--out DIR`):
//!
//! * crates for `wasm32-unknown-unknown` (the default) produce core modules, which are turned
//!   into components with `wit-component`: they import nothing but the plugin world;
//! * crates that set `[package.metadata.hookgate] target = "wasm32-wasip2"` come out of rustc
//!   as components already and are copied.
//!
//! If the rustup target is missing it is installed; if that is impossible (no rustup, no
//! network), Debian's `rustc-web` with its library source builds std from source instead, as
//! `../shared/toolchain.md` describes. Cargo output is shown as it happens; a failed build
//! stops here with cargo's exit status.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// The workspaces holding plugin crates, relative to the repository root.
const WORKSPACES: &[&str] = &["plugins", "tests/plugins"];
const CORE_TARGET: &str = "wasm32-unknown-unknown";
const WASI_TARGET: &str = "wasm32-wasip2";

/// One cdylib crate to turn into a component.
struct PluginCrate {
    name: String,
    target: String,
}

fn main() -> anyhow::Result<()> {
    // `cargo run` sets CARGO_MANIFEST_DIR for the process: prefer it to the path baked in at
    // compile time, which is stale when a shared target dir was built from another checkout.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .context("the build tool lives at plugins/build in the repository")?
        .to_path_buf();
    let out = output_dir(&root)?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Its own target dir: the wasm builds never wait on (or invalidate) the host's build.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let toolchain = Toolchain::detect()?;
    let mut built = 0;
    for workspace in WORKSPACES {
        let manifest = root.join(workspace).join("Cargo.toml");
        let crates = plugin_crates(&manifest)?;
        for target in [CORE_TARGET, WASI_TARGET] {
            let names: Vec<&str> = crates
                .iter()
                .filter(|krate| krate.target == target)
                .map(|krate| krate.name.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            toolchain.build(&manifest, &target_dir, target, &names)?;
            for name in names {
                let artifact = target_dir
                    .join(target)
                    .join("release")
                    .join(format!("{}.wasm", name.replace('-', "_")));
                let bytes = std::fs::read(&artifact)
                    .with_context(|| format!("cargo built no {}", artifact.display()))?;
                let component = if target == CORE_TARGET {
                    componentize(&bytes).with_context(|| format!("componentizing {name}"))?
                } else {
                    bytes
                };
                let destination = out.join(format!("{name}.wasm"));
                std::fs::write(&destination, &component)
                    .with_context(|| format!("cannot write {}", destination.display()))?;
                println!(
                    "plugin {name}: {} bytes -> {}",
                    component.len(),
                    destination.display()
                );
                built += 1;
            }
        }
    }
    println!("built {built} plugin components into {}", out.display());
    Ok(())
}

fn output_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(root.join("target").join("plugins")),
        (Some("--out"), Some(dir)) => Ok(PathBuf::from(dir)),
        _ => bail!("usage: cargo run -p hookgate-plugin-build [-- --out DIR]"),
    }
}

/// The cdylib crates of a workspace and the target each is built for.
fn plugin_crates(manifest: &Path) -> anyhow::Result<Vec<PluginCrate>> {
    let output = Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(
        output.status.success(),
        "cargo metadata failed for {}:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    Ok(packages
        .iter()
        .filter(|package| {
            package["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|target| {
                    target["crate_types"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|kind| kind == "cdylib")
                })
        })
        .map(|package| PluginCrate {
            name: package["name"].as_str().unwrap_or_default().to_owned(),
            target: package["metadata"]["hookgate"]["target"]
                .as_str()
                .unwrap_or(CORE_TARGET)
                .to_owned(),
        })
        .collect())
}

/// Wraps a core module (with its embedded component-type section) into a component.
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .encode()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// How std for wasm32 is obtained on this machine.
enum Toolchain {
    /// rustup has (or just installed) the targets.
    Rustup,
    /// Debian's rustc-web builds std from source (`-Zbuild-std`).
    DebianBuildStd,
}

impl Toolchain {
    fn detect() -> anyhow::Result<Self> {
        let installed = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
        if let Some(installed) = installed {
            let missing: Vec<&str> = [CORE_TARGET, WASI_TARGET]
                .into_iter()
                .filter(|target| !installed.lines().any(|line| line.trim() == *target))
                .collect();
            if missing.is_empty() {
                return Ok(Self::Rustup);
            }
            eprintln!("installing rustup targets: {}", missing.join(" "));
            let added = Command::new("rustup")
                .args(["target", "add"])
                .args(&missing)
                .status();
            if added.is_ok_and(|status| status.success()) {
                return Ok(Self::Rustup);
            }
            eprintln!("rustup could not install the wasm32 targets; trying Debian's rustc-web");
        }
        ensure!(
            Path::new("/usr/bin/rustc").exists(),
            "no wasm32 standard library: run `rustup target add {CORE_TARGET} {WASI_TARGET}`, \
             or `apt-get install -y rustc-web rust-web-src lld-22` to build std from source"
        );
        Ok(Self::DebianBuildStd)
    }

    fn build(
        &self,
        manifest: &Path,
        target_dir: &Path,
        target: &str,
        crates: &[&str],
    ) -> anyhow::Result<()> {
        let mut command = Command::new(cargo());
        command
            .args(["build", "--release", "--target", target, "--manifest-path"])
            .arg(manifest)
            .arg("--target-dir")
            .arg(target_dir);
        for name in crates {
            command.args(["-p", name]);
        }
        if let Self::DebianBuildStd = self {
            command
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .arg("-Zbuild-std=std,panic_abort");
        }
        // The host workspace's settings (e.g. RUSTFLAGS for the native target) do not apply.
        command
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        let status = command
            .status()
            .with_context(|| format!("cannot run cargo for {}", manifest.display()))?;
        ensure!(
            status.success(),
            "cargo build for {target} in {} failed ({status})",
            manifest.display()
        );
        Ok(())
    }
}
