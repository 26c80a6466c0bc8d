//! `hookgate plugin new NAME`: a plugin crate a merchant builds outside this repository.
//!
//! The crate must build with nothing but `cargo build --release --target wasm32-wasip2` and
//! produce a component the gateway loads as it is, so it carries its own copy of the guest SDK
//! and of the WIT contract, taken from this build of the gateway (`include_str!`): the plugin
//! is generated against exactly the world the gateway that made it implements. The SDK's
//! bindings read `../../wit` from its own folder, hence `vendor/hookgate-plugin/` beside `wit/`.
//! The crate's own files are templates under `scaffold/` with `{{name}}`-style placeholders.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::is_plugin_name;

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("scaffold/lib.rs.tmpl");
const README: &str = include_str!("scaffold/README.md.tmpl");
const GITIGNORE: &str = include_str!("scaffold/gitignore.tmpl");
const SDK_CARGO_TOML: &str = include_str!("scaffold/sdk-Cargo.toml.tmpl");
const SDK_LIB_RS: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// Rust keywords (strict and reserved, every edition): none can name a library crate.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Crate names the plugin would clash with: Rust's own libraries and the crate's dependencies.
const TAKEN: &[&str] = &[
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "hookgate_plugin",
    "serde",
    "serde_json",
    "wit_bindgen",
];

/// Why no plugin crate was made. Nothing is left on disk in any case.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("`{name}` cannot name a plugin crate: {reason}; pick a name like `acme-filter`")]
    InvalidName { name: String, reason: String },
    #[error(
        "{path} already exists; pick another name or another --dir, or move it away first \
         (nothing was written)"
    )]
    Exists { path: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Creates the plugin crate `parent/name/` (and `parent` if need be) and returns its path.
/// Refuses a name that is not both a plugin name and a crate name, and a path that exists.
pub fn scaffold(parent: &Path, name: &str) -> Result<PathBuf, ScaffoldError> {
    let names = Names::new(name)?;
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let root = parent.join(name);
    match fs::create_dir(&root) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {
            return Err(ScaffoldError::Exists {
                path: root.display().to_string(),
            });
        }
        Err(err) => return Err(io_error(&root)(err)),
    }
    if let Err(err) = write_files(&root, &names) {
        // Half a crate helps nobody, and would make the next attempt fail as `Exists`.
        let _ = fs::remove_dir_all(&root);
        return Err(err);
    }
    Ok(root)
}

/// Where `cargo build --release --target wasm32-wasip2` writes the component, relative to
/// the crate: Cargo names the file after the library, `-` turned into `_`.
pub fn wasm_path(name: &str) -> PathBuf {
    Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")))
}

/// What `plugin new` prints: what was made and the commands from here to a running plugin.
pub fn next_steps(root: &Path, name: &str) -> String {
    let wasm = wasm_path(name);
    let wasm = wasm.display();
    format!(
        "created {root}: a plugin crate (src/lib.rs, the SDK in vendor/, the contract in wit/)\n\
         next:\n  \
         cd {root}\n  \
         cargo test\n  \
         cargo build --release --target wasm32-wasip2   # once before: rustup target add wasm32-wasip2\n  \
         curl -X PUT --data-binary @{wasm} -H 'content-type: application/wasm' \
         -H \"Authorization: Bearer $HOOKGATE_ADMIN_TOKEN\" http://127.0.0.1:8600/v1/plugins/{name}\n\
         the component is {wasm}; {root}/README.md has the dry run and the config to use it",
        root = root.display(),
    )
}

/// The crate's files, relative to its root, with their contents.
fn files(names: &Names) -> [(&'static str, String); 7] {
    [
        ("Cargo.toml", names.render(CARGO_TOML)),
        ("src/lib.rs", names.render(LIB_RS)),
        ("README.md", names.render(README)),
        (".gitignore", GITIGNORE.to_owned()),
        (
            "vendor/hookgate-plugin/Cargo.toml",
            SDK_CARGO_TOML.to_owned(),
        ),
        ("vendor/hookgate-plugin/src/lib.rs", SDK_LIB_RS.to_owned()),
        ("wit/plugin.wit", WIT.to_owned()),
    ]
}

fn write_files(root: &Path, names: &Names) -> Result<(), ScaffoldError> {
    for (relative, contents) in files(names) {
        let path = root.join(relative);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder).map_err(io_error(folder))?;
        }
        fs::write(&path, contents).map_err(io_error(&path))?;
    }
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError {
    let path = path.display().to_string();
    move |source| ScaffoldError::Io { path, source }
}

/// The names one plugin goes by: the plugin and Cargo package name (`acme-filter`), the library
/// and `.wasm` file name (`acme_filter`), and the type that implements `Plugin`
/// (`AcmeFilterPlugin`).
struct Names {
    package: String,
    library: String,
    type_name: String,
}

impl Names {
    fn new(name: &str) -> Result<Self, ScaffoldError> {
        let invalid = |reason: String| ScaffoldError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if !is_plugin_name(name) {
            return Err(invalid(
                "use 1 to 64 ASCII letters, digits, `-` and `_` (the gateway names the plugin \
                 after it)"
                    .to_owned(),
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(invalid(
                "it must start with a letter (it is also the Rust crate name)".to_owned(),
            ));
        }
        let library = name.replace('-', "_");
        if KEYWORDS.contains(&library.as_str()) {
            return Err(invalid(format!(
                "`{library}` is a Rust keyword, which cannot name a crate"
            )));
        }
        if let Some(taken) = TAKEN
            .iter()
            .find(|taken| taken.eq_ignore_ascii_case(&library))
        {
            return Err(invalid(format!(
                "it clashes with the crate `{taken}`, which every plugin builds with"
            )));
        }
        let mut type_name: String = library
            .split('_')
            .flat_map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase())
                    .into_iter()
                    .chain(chars)
            })
            .collect();
        type_name.push_str("Plugin");
        Ok(Self {
            package: name.to_owned(),
            library,
            type_name,
        })
    }

    fn render(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.package)
            .replace("{{lib_name}}", &self.library)
            .replace("{{type_name}}", &self.type_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(root: &Path, relative: &str) -> String {
        fs::read_to_string(root.join(relative))
            .unwrap_or_else(|err| panic!("reading {relative}: {err}"))
    }

    #[test]
    fn a_new_plugin_has_every_file_with_its_names_filled_in() {
        let parent = tempfile::tempdir().unwrap();
        let root = scaffold(parent.path(), "acme-filter").unwrap();
        assert_eq!(root, parent.path().join("acme-filter"));

        let names = Names::new("acme-filter").unwrap();
        for (relative, _) in files(&names) {
            let text = read(&root, relative);
            assert!(!text.contains("{{name}}"), "{relative}: {text}");
            assert!(!text.contains("{{lib_name}}"), "{relative}: {text}");
            assert!(!text.contains("{{type_name}}"), "{relative}: {text}");
        }
        assert!(read(&root, "Cargo.toml").contains("name = \"acme-filter\"\n"));
        let lib = read(&root, "src/lib.rs");
        assert!(lib.contains("struct AcmeFilterPlugin;"), "{lib}");
        assert!(lib.contains("export_plugin!(AcmeFilterPlugin);"), "{lib}");
        let readme = read(&root, "README.md");
        assert!(
            readme.contains("target/wasm32-wasip2/release/acme_filter.wasm"),
            "{readme}"
        );
        assert!(readme.contains("/v1/plugins/acme-filter/test"), "{readme}");
        assert_eq!(read(&root, ".gitignore"), "/target\n");
        assert_eq!(read(&root, "vendor/hookgate-plugin/src/lib.rs"), SDK_LIB_RS);
        assert_eq!(read(&root, "wit/plugin.wit"), WIT);
    }

    #[test]
    fn the_vendored_sdk_finds_the_contract_where_its_bindings_look() {
        let parent = tempfile::tempdir().unwrap();
        let root = scaffold(parent.path(), "acme-filter").unwrap();
        assert!(
            SDK_LIB_RS.contains(r#"path: "../../wit","#),
            "the SDK no longer reads ../../wit: move `wit/` in the scaffold to match"
        );
        let contract = root.join("vendor/hookgate-plugin/../../wit/plugin.wit");
        assert_eq!(fs::read_to_string(contract).unwrap(), WIT);
    }

    #[test]
    fn the_vendored_sdk_pins_what_the_plugins_workspace_builds_with() {
        let workspace: toml::Table =
            toml::from_str(include_str!("../../../plugins/Cargo.toml")).unwrap();
        let sdk: toml::Table = toml::from_str(SDK_CARGO_TOML).unwrap();
        for dependency in ["serde", "serde_json", "wit-bindgen"] {
            assert_eq!(
                sdk["dependencies"][dependency], workspace["workspace"]["dependencies"][dependency],
                "vendor/hookgate-plugin/Cargo.toml and plugins/Cargo.toml disagree on {dependency}"
            );
        }
        for field in ["edition", "rust-version", "version"] {
            assert_eq!(
                sdk["package"][field], workspace["workspace"]["package"][field],
                "vendor/hookgate-plugin/Cargo.toml and plugins/Cargo.toml disagree on {field}"
            );
        }
    }

    #[test]
    fn an_existing_directory_is_refused_and_left_as_it_was() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("acme-filter");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("notes.txt"), "mine").unwrap();

        let err = scaffold(parent.path(), "acme-filter").unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists { .. }), "{err:?}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(read(&root, "notes.txt"), "mine");
        assert!(!root.join("Cargo.toml").exists());
    }

    #[test]
    fn names_that_cannot_be_a_plugin_or_a_crate_are_refused_before_anything_is_written() {
        let parent = tempfile::tempdir().unwrap();
        let too_long = "a".repeat(65);
        for name in [
            "",
            "has space",
            "../escape",
            "a/b",
            "1password",
            "-dash",
            "_underscore",
            "fn",
            "std",
            "serde_json",
            "hookgate-plugin",
            too_long.as_str(),
        ] {
            let err = scaffold(parent.path(), name).unwrap_err();
            assert!(
                matches!(err, ScaffoldError::InvalidName { .. }),
                "`{name}`: {err:?}"
            );
            assert!(err.to_string().contains("pick a name like"), "{err}");
        }
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_plugin_type_is_the_name_in_camel_case() {
        assert_eq!(
            Names::new("acme-filter").unwrap().type_name,
            "AcmeFilterPlugin"
        );
        assert_eq!(Names::new("a_b-c2").unwrap().type_name, "ABC2Plugin");
        assert_eq!(Names::new("Shop__x").unwrap().type_name, "ShopXPlugin");
    }

    #[test]
    fn next_steps_name_the_built_file_and_the_upload_route() {
        let steps = next_steps(Path::new("plugins/acme-filter"), "acme-filter");
        assert!(steps.contains("cd plugins/acme-filter"), "{steps}");
        assert!(
            steps.contains("@target/wasm32-wasip2/release/acme_filter.wasm"),
            "{steps}"
        );
        assert!(steps.contains("/v1/plugins/acme-filter\n"), "{steps}");
    }
}
