//! `weir plugin new`: writes a plugin project that `weir plugin build` and `weir plugin test`
//! accept as it is, from templates compiled into the binary, so a user needs nothing but `weir`.
//!
//! A Rust project gets the SDK as a path dependency: by default a copy of the SDK compiled into
//! this `weir` (in `weir-plugin/` inside the project, so it matches this host's contract and
//! builds from any folder), or the checkout named by `--sdk-path`. Python and JavaScript
//! projects need no SDK in their folder: `weir plugin build` supplies it.

mod python_names;

use super::stdout::outln;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The language a new plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NewLanguage {
    /// A Rust crate built for wasm32-wasip2.
    Rust,
    /// A Python module built with componentize-py.
    Python,
    /// A JavaScript module built with componentize-js.
    Js,
}

const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml.tmpl");
const RUST_LIB: &str = include_str!("../../templates/rust/lib.rs.tmpl");
const RUST_GITIGNORE: &str = include_str!("../../templates/rust/gitignore.tmpl");
const RUST_SDK_CARGO: &str = include_str!("../../templates/rust/sdk-Cargo.toml.tmpl");
const PYTHON_PROJECT: &str = include_str!("../../templates/python/pyproject.toml.tmpl");
const PYTHON_PLUGIN: &str = include_str!("../../templates/python/plugin.py.tmpl");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json.tmpl");
const JS_PLUGIN: &str = include_str!("../../templates/js/plugin.js.tmpl");
const MANIFEST: &str = include_str!("../../templates/common/manifest.toml.tmpl");
const SAMPLE_INPUT: &str = include_str!("../../templates/common/input.jsonl.tmpl");
const SAMPLE_EXPECTED: &str = include_str!("../../templates/common/expected.jsonl.tmpl");

/// The Rust SDK's sources, written into `weir-plugin/` of a new Rust project.
const RUST_SDK: &[(&str, &str)] = &[
    (
        "src/arena.rs",
        include_str!("../../../plugins/sdk/src/arena.rs"),
    ),
    (
        "src/batch.rs",
        include_str!("../../../plugins/sdk/src/batch.rs"),
    ),
    (
        "src/config.rs",
        include_str!("../../../plugins/sdk/src/config.rs"),
    ),
    (
        "src/copy.rs",
        include_str!("../../../plugins/sdk/src/copy.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../plugins/sdk/src/error.rs"),
    ),
    (
        "src/guest.rs",
        include_str!("../../../plugins/sdk/src/guest.rs"),
    ),
    (
        "src/json.rs",
        include_str!("../../../plugins/sdk/src/json.rs"),
    ),
    (
        "src/json_in.rs",
        include_str!("../../../plugins/sdk/src/json_in.rs"),
    ),
    (
        "src/json_in/tests.rs",
        include_str!("../../../plugins/sdk/src/json_in/tests.rs"),
    ),
    (
        "src/json_out.rs",
        include_str!("../../../plugins/sdk/src/json_out.rs"),
    ),
    (
        "src/log.rs",
        include_str!("../../../plugins/sdk/src/log.rs"),
    ),
    (
        "src/record.rs",
        include_str!("../../../plugins/sdk/src/record.rs"),
    ),
    (
        "src/swar.rs",
        include_str!("../../../plugins/sdk/src/swar.rs"),
    ),
    (
        "src/test_random.rs",
        include_str!("../../../plugins/sdk/src/test_random.rs"),
    ),
    (
        "src/utf8.rs",
        include_str!("../../../plugins/sdk/src/utf8.rs"),
    ),
    (
        "src/vector.rs",
        include_str!("../../../plugins/sdk/src/vector.rs"),
    ),
    ("wit/plugin.wit", include_str!("../../../wit/plugin.wit")),
];
const RUST_SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
/// Where the SDK in this repository finds the contract, and where its copy does.
const SDK_WIT_PATH: (&str, &str) = (r#"path: "../../wit""#, r#"path: "wit""#);
/// The wit-bindgen the SDK is built with (the workspace's pin; a unit test keeps them equal).
const WIT_BINDGEN: &str = "0.63.0";

/// What `weir plugin new` was asked for.
#[derive(Debug)]
pub struct NewPlugin<'a> {
    /// The plugin's name.
    pub name: &'a str,
    /// Its language.
    pub language: NewLanguage,
    /// The folder to create (default `./NAME`).
    pub dir: Option<&'a Path>,
    /// A Rust SDK checkout to depend on instead of the copy compiled into `weir`.
    pub sdk_path: Option<&'a Path>,
}

/// Creates the project and returns its folder.
pub fn create(request: &NewPlugin<'_>) -> anyhow::Result<PathBuf> {
    validate_name(request.name, request.language)?;
    let dir = request
        .dir
        .map_or_else(|| PathBuf::from(request.name), Path::to_owned);
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty: pass --dir with a new folder, or remove it",
                dir.display()
            );
        }
    }
    let files = files(request)?;
    for (relative, text) in &files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

/// Prints what was created and what to run next.
pub fn new(request: &NewPlugin<'_>) -> anyhow::Result<std::process::ExitCode> {
    let dir = create(request)?;
    let shown = dir.display();
    outln!(
        "created {:?} plugin `{}` in {shown}",
        request.language,
        request.name
    )?;
    outln!("next:")?;
    outln!(
        "  weir plugin build {shown}     # builds {}.wasm into the registry folder",
        request.name
    )?;
    outln!(
        "  weir plugin test {shown}      # runs samples/input.jsonl, compares with samples/expected.jsonl"
    )?;
    outln!(
        "  weir plugin dev {shown}       # rebuilds and tests on every save, deploys what passes"
    )?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Type names a Rust plugin's type must not take: the SDK's items the template imports, the
/// prelude's names its code uses as they are (`Result<..>`, `Vec<..>`, `Ok(..)`), and `Self`.
/// (Other prelude names, `Option` or `String`, the template's code does not use: they build.)
const RUST_TAKEN_TYPES: &[&str] = &[
    "Record", "Config", "Error", "Plugin", "Result", "Vec", "Ok", "Self",
];

/// A plugin name becomes a file name (`NAME.wasm`), a crate or package name and, for Python, a
/// module name: lower-case letters, digits, `-` and `_`, starting with a letter, at most 64.
/// Anything else (a path, `..`, spaces) is refused, and so is a name whose project would not
/// build in `language`: its type (`record` -> `Record`) or module (`weir_plugin`) would clash
/// with a name the template's code uses, or its Python module (`json`, `wit_world`) with one
/// the interpreter finds first.
pub fn validate_name(name: &str, language: NewLanguage) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{}` cannot name a plugin: use lower-case letters, digits, `-` and `_`, starting with a letter (at most 64), e.g. `mask-emails`",
            name.escape_debug()
        );
    }
    if name == "weir-plugin" || name == "weir_plugin" {
        bail!("`{name}` is the SDK's name: choose another name for the plugin, e.g. `my-plugin`");
    }
    if language == NewLanguage::Python {
        validate_python_module(name)?;
    }
    let type_name = type_name(name);
    let taken = match language {
        NewLanguage::Rust => RUST_TAKEN_TYPES.contains(&type_name.as_str()),
        // `class Plugin extends Plugin` would redeclare the SDK's class it imports.
        NewLanguage::Js => type_name == "Plugin",
        NewLanguage::Python => false,
    };
    if taken {
        bail!(
            "`{name}` cannot name a {language:?} plugin: its type would be `{type_name}`, a name the generated code already uses, so the project would not build; choose another name, e.g. `my-{name}`"
        );
    }
    Ok(())
}

/// Refuses a Python plugin whose module (the name with `-` as `_`) the interpreter would find
/// elsewhere first: a standard-library module (`json`), or one of componentize-py's bindings
/// (`wit_world`). The build would import that module instead of the plugin's and fail, e.g.
/// with `module 'json' has no attribute 'WitWorld'`.
fn validate_python_module(name: &str) -> anyhow::Result<()> {
    let module = name.replace('-', "_");
    let reason = if python_names::STDLIB.contains(&module.as_str()) {
        "a module of Python's standard library"
    } else if python_names::BINDINGS.contains(&module.as_str()) {
        "a module of the bindings componentize-py generates"
    } else {
        return Ok(());
    };
    let shown = if module == name {
        format!("`{name}`")
    } else {
        format!("`{name}` (module `{module}`)")
    };
    bail!(
        "{shown} cannot name a Python plugin: `{module}` is {reason}, which Python would import instead of the plugin's module, so the project would not build; choose another name, e.g. `{name}-plugin`"
    );
}

/// `mask-emails` -> `MaskEmails`, the plugin's type or class name.
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn fill(template: &str, name: &str, extra: &[(&str, &str)]) -> String {
    let mut text = template
        .replace("{{name}}", name)
        .replace("{{type}}", &type_name(name))
        .replace("{{module}}", &name.replace('-', "_"))
        .replace("{{version}}", env!("CARGO_PKG_VERSION"))
        .replace("{{wit_bindgen}}", WIT_BINDGEN);
    for (key, value) in extra {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    text
}

/// The project's files, relative to its folder.
fn files(request: &NewPlugin<'_>) -> anyhow::Result<Vec<(String, String)>> {
    let name = request.name;
    let mut files = vec![
        (format!("{name}.toml"), fill(MANIFEST, name, &[])),
        ("samples/input.jsonl".to_owned(), SAMPLE_INPUT.to_owned()),
        (
            "samples/expected.jsonl".to_owned(),
            SAMPLE_EXPECTED.to_owned(),
        ),
    ];
    match request.language {
        NewLanguage::Rust => {
            let sdk = match request.sdk_path {
                Some(path) => {
                    let path = std::path::absolute(path)
                        .with_context(|| format!("resolving --sdk-path {}", path.display()))?;
                    if !path.join("Cargo.toml").is_file() {
                        bail!(
                            "--sdk-path {}: no Cargo.toml there; pass the SDK crate's folder (plugins/sdk in Weir's repository)",
                            path.display()
                        );
                    }
                    path.to_string_lossy().replace('\\', "/")
                }
                None => {
                    files.extend(vendored_sdk());
                    "weir-plugin".to_owned()
                }
            };
            let sdk = toml::Value::String(sdk).to_string();
            // The path goes in quoted by TOML's own rules; the template has it inside quotes.
            let cargo = fill(RUST_CARGO, name, &[]).replace("\"{{sdk}}\"", &sdk);
            files.push(("Cargo.toml".into(), cargo));
            files.push(("src/lib.rs".into(), fill(RUST_LIB, name, &[])));
            files.push((".gitignore".into(), RUST_GITIGNORE.to_owned()));
        }
        NewLanguage::Python => {
            files.push(("pyproject.toml".into(), fill(PYTHON_PROJECT, name, &[])));
            files.push((
                format!("{}.py", name.replace('-', "_")),
                fill(PYTHON_PLUGIN, name, &[]),
            ));
        }
        NewLanguage::Js => {
            files.push(("package.json".into(), fill(JS_PACKAGE, name, &[])));
            files.push((format!("{name}.js"), fill(JS_PLUGIN, name, &[])));
        }
    }
    Ok(files)
}

/// The SDK compiled into this binary, as a crate in `weir-plugin/`.
fn vendored_sdk() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = RUST_SDK
        .iter()
        .map(|(path, text)| (format!("weir-plugin/{path}"), (*text).to_owned()))
        .collect();
    files.push((
        "weir-plugin/src/lib.rs".into(),
        RUST_SDK_LIB.replace(SDK_WIT_PATH.0, SDK_WIT_PATH.1),
    ));
    files.push((
        "weir-plugin/Cargo.toml".into(),
        fill(RUST_SDK_CARGO, "weir-plugin", &[]),
    ));
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "", "../x", "a/b", "..", "a\\b", "A", "1a", "a b", "a.b", "-a", "a\0",
        ] {
            assert!(
                validate_name(name, NewLanguage::Rust).is_err(),
                "{name:?} was accepted"
            );
        }
        validate_name("mask-emails_2", NewLanguage::Rust).unwrap();
        assert!(validate_name(&"a".repeat(65), NewLanguage::Rust).is_err());
    }

    /// A name whose generated project would not build: its type or module clashes with one the
    /// template uses.
    #[test]
    fn names_whose_project_would_not_build_are_refused() {
        let refused = |name: &str, language: NewLanguage| {
            let error = validate_name(name, language)
                .err()
                .unwrap_or_else(|| panic!("{name:?} was accepted for {language:?}"))
                .to_string();
            assert!(error.contains(&format!("`{name}`")), "{error}");
            assert!(error.contains("another name"), "{error}");
        };
        for name in [
            "record", "config", "error", "plugin", "result", "vec", "ok", "self", "record_", "ok-",
        ] {
            refused(name, NewLanguage::Rust);
        }
        refused("plugin", NewLanguage::Js);
        for language in [NewLanguage::Rust, NewLanguage::Python, NewLanguage::Js] {
            refused("weir_plugin", language);
            refused("weir-plugin", language);
        }
        // Fine where nothing clashes: another language, or a longer name.
        validate_name("record", NewLanguage::Js).unwrap();
        validate_name("plugin", NewLanguage::Python).unwrap();
        validate_name("record-filter", NewLanguage::Rust).unwrap();
        // Prelude names the template does not use build as types (checked with `weir plugin
        // build`).
        for name in ["option", "some", "none", "box", "string", "err"] {
            validate_name(name, NewLanguage::Rust).unwrap();
        }
        validate_name("my-plugin", NewLanguage::Js).unwrap();
    }

    /// componentize-py imports the plugin's module by name, and finds a standard-library module
    /// or one of its own bindings first.
    #[test]
    fn python_names_of_standard_or_binding_modules_are_refused() {
        for (name, module, reason) in [
            ("json", "json", "standard library"),
            ("re", "re", "standard library"),
            ("math", "math", "standard library"),
            ("typing", "typing", "standard library"),
            ("email", "email", "standard library"),
            ("annotationlib", "annotationlib", "standard library"),
            ("py-compile", "py_compile", "standard library"),
            (
                "wit-world",
                "wit_world",
                "bindings componentize-py generates",
            ),
            ("componentize_py_types", "componentize_py_types", "bindings"),
            (
                "componentize-py-runtime",
                "componentize_py_runtime",
                "bindings",
            ),
        ] {
            let error = validate_name(name, NewLanguage::Python)
                .err()
                .unwrap_or_else(|| panic!("{name:?} was accepted"))
                .to_string();
            assert!(
                error.contains(&format!("`{module}` is")) && error.contains(reason),
                "{error}"
            );
            assert!(error.contains(&format!("e.g. `{name}-plugin`")), "{error}");
            // The name suggested is accepted.
            validate_name(&format!("{name}-plugin"), NewLanguage::Python).unwrap();
            // Other languages import no module of that name.
            validate_name(name, NewLanguage::Js).unwrap();
        }
        // The list is CPython's, whole: a few it must hold.
        for module in [
            "__future__",
            "asyncio",
            "os",
            "sys",
            "tomllib",
            "zoneinfo",
            "cgi",
        ] {
            assert!(python_names::STDLIB.contains(&module), "{module}");
        }
        for name in ["json-tools", "my-plugin", "mask-emails", "reformat"] {
            validate_name(name, NewLanguage::Python).unwrap();
        }
    }

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("mask-emails_2"), "MaskEmails2");
        assert_eq!(type_name("x"), "X");
    }

    #[test]
    fn the_sdk_copy_finds_its_contract_and_pins_the_workspace_wit_bindgen() {
        assert!(
            RUST_SDK_LIB.contains(SDK_WIT_PATH.0),
            "the SDK moved its wit path"
        );
        let workspace = include_str!("../../../Cargo.toml");
        assert!(
            workspace.contains(&format!("wit-bindgen = {{ version = \"={WIT_BINDGEN}\"")),
            "WIT_BINDGEN differs from the workspace's wit-bindgen pin"
        );
    }

    /// A new SDK module left out of the vendored copy breaks every `weir plugin new` project.
    #[test]
    fn the_vendored_sdk_holds_every_source_file_of_the_sdk() {
        let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
        // Every file under src/, submodules' folders included.
        let mut on_disk = Vec::new();
        let mut folders = vec![sdk.join("src")];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    let relative = path.strip_prefix(&sdk).unwrap().to_string_lossy();
                    on_disk.push(relative.replace('\\', "/"));
                }
            }
        }
        on_disk.retain(|path| path != "src/lib.rs");
        on_disk.sort();
        let mut vendored: Vec<String> = RUST_SDK
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .filter(|path| path.starts_with("src/"))
            .collect();
        vendored.sort();
        assert_eq!(vendored, on_disk);
    }

    #[test]
    fn every_placeholder_is_filled() {
        for language in [NewLanguage::Rust, NewLanguage::Python, NewLanguage::Js] {
            let request = NewPlugin {
                name: "my-plugin",
                language,
                dir: None,
                sdk_path: None,
            };
            // The vendored SDK is copied as it is (its Rust source has `{{` in format strings);
            // placeholders live only in the templates.
            let vendored: Vec<String> = vendored_sdk().into_iter().map(|(p, _)| p).collect();
            for (path, text) in files(&request).unwrap() {
                if vendored.contains(&path) {
                    continue;
                }
                assert!(!text.contains("{{"), "{path} keeps a placeholder");
            }
        }
    }

    #[test]
    fn an_existing_folder_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let request = NewPlugin {
            name: "p",
            language: NewLanguage::Rust,
            dir: Some(dir.path()),
            sdk_path: None,
        };
        assert!(create(&request).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep")).unwrap(),
            "x"
        );
    }
}
