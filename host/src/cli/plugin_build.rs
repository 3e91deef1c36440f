//! `weir plugin build`: builds a plugin (a Rust crate for wasm32-wasip2, a Python project with
//! componentize-py, a JavaScript module with componentize-js) and places the component in the
//! registry folder atomically (write then rename), so a watching host never sees half a file.
//!
//! The Python and JavaScript SDKs and the WIT contract are compiled into `weir`, so a plugin
//! project needs nothing but its own file; the pinned toolchains live in a cache folder that
//! `scripts/ensure-toolchain --plugin-languages` fills.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every plugin is built for: rustc emits a component directly.
pub const PLUGIN_TARGET: &str = "wasm32-wasip2";

/// The componentize-py release Python plugins are built with (installed by ensure-toolchain).
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js release JavaScript plugins are built with (installed by ensure-toolchain).
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The contract every plugin is built against, as this host links it.
const WIT: &str = include_str!("../../../wit/plugin.wit");
/// The Python SDK package `weir_plugin`, file by file.
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/__init__.py"),
    ),
    (
        "config.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/config.py"),
    ),
    (
        "errors.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/errors.py"),
    ),
    (
        "host.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/host.py"),
    ),
    (
        "jsonpath.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/jsonpath.py"),
    ),
    (
        "plugin.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/plugin.py"),
    ),
    (
        "record.py",
        include_str!("../../../plugins/sdk-python/weir_plugin/record.py"),
    ),
];
/// The JavaScript SDK module, placed beside the plugin as `./weir-plugin.js`.
const JS_SDK: &str = include_str!("../../../plugins/sdk-js/weir-plugin.js");

/// The language of a plugin project, from the manifest its folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `Cargo.toml`: a crate built by cargo for wasm32-wasip2.
    Rust,
    /// `pyproject.toml`: a module built by componentize-py.
    Python,
    /// `package.json`: an ES module built by componentize-js.
    JavaScript,
}

impl Language {
    /// The language's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "Rust",
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        }
    }

    /// The language of the project in `dir`, by its manifest.
    pub fn detect(dir: &Path) -> Result<Language, BuildError> {
        [
            ("Cargo.toml", Language::Rust),
            ("pyproject.toml", Language::Python),
            ("package.json", Language::JavaScript),
        ]
        .into_iter()
        .find(|(manifest, _)| dir.join(manifest).is_file())
        .map(|(_, language)| language)
        .ok_or_else(|| BuildError::Manifest {
            manifest: dir.to_owned(),
            reason: "no Cargo.toml (Rust), pyproject.toml (Python) or package.json (JavaScript): pass the folder of a plugin".into(),
        })
    }
}

/// Where the pinned Python and JavaScript toolchains live: `WEIR_TOOLCHAIN`, else
/// `$XDG_CACHE_HOME/weir/toolchain`, else `~/.cache/weir/toolchain`.
pub fn toolchain_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_TOOLCHAIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("weir").join("toolchain")
}

/// A plugin could not be built or placed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The path holds no readable Cargo.toml with a package name.
    #[error("{manifest}: {reason}")]
    Manifest {
        /// The manifest.
        manifest: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// cargo could not be started.
    #[error("cannot run cargo: {0}; is the Rust toolchain installed?")]
    Cargo(std::io::Error),
    /// cargo failed; its diagnostics were printed.
    #[error(
        "cargo build failed for {manifest} (see the errors above). If the target is missing, run `rustup target add {PLUGIN_TARGET}`"
    )]
    Failed {
        /// The manifest.
        manifest: PathBuf,
    },
    /// The pinned toolchain for the language is not installed.
    #[error(
        "{tool} {version} is not installed at {path}: run `scripts/ensure-toolchain --plugin-languages` (it installs componentize-py and componentize-js into {dir}; set WEIR_TOOLCHAIN to use another folder)"
    )]
    Toolchain {
        /// The tool.
        tool: &'static str,
        /// Its pinned version.
        version: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The toolchain folder.
        dir: PathBuf,
    },
    /// A tool could not be started.
    #[error("cannot run {tool}: {source}")]
    Run {
        /// The tool.
        tool: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// componentize-py or componentize-js failed; its diagnostics were printed.
    #[error("{tool} failed for {dir} (see the errors above)")]
    Componentize {
        /// The tool.
        tool: &'static str,
        /// The plugin folder.
        dir: PathBuf,
    },
    /// The build folder could not be prepared.
    #[error("cannot prepare the build folder {dir}: {source}")]
    Stage {
        /// The folder.
        dir: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// cargo built no .wasm file.
    #[error("cargo built no .wasm for {manifest}; is it a `cdylib` crate?")]
    NoArtifact {
        /// The manifest.
        manifest: PathBuf,
    },
    /// The component could not be copied into the registry.
    #[error("cannot place the component in {dir}: {source}")]
    Place {
        /// The registry folder.
        dir: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
}

/// A built plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPlugin {
    /// The plugin's name (the crate's package name).
    pub name: String,
    /// Where the component now lives.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The language it was written in.
    pub language: Language,
}

/// Builds the plugin project at `dir`, whatever its language, and places the component at
/// `registry/NAME.wasm`.
pub fn build_plugin(dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    match Language::detect(dir)? {
        Language::Rust => build_rust(dir, registry),
        Language::Python => build_python(dir, registry),
        Language::JavaScript => build_javascript(dir, registry),
    }
}

/// The name of the plugin project at `dir` (the `NAME` of the `NAME.wasm` it builds into), read
/// from its manifest without building it.
pub fn project_name(dir: &Path) -> Result<String, BuildError> {
    match Language::detect(dir)? {
        Language::Rust => package_name(&dir.join("Cargo.toml")),
        Language::Python => {
            let manifest = dir.join("pyproject.toml");
            let table = read_toml(&manifest)?;
            plugin_name(&manifest, table.get("project").and_then(|p| p.get("name")))
        }
        Language::JavaScript => {
            let manifest = dir.join("package.json");
            let text = std::fs::read_to_string(&manifest).map_err(|e| BuildError::Manifest {
                manifest: manifest.clone(),
                reason: format!("cannot read it: {e}"),
            })?;
            let package: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| BuildError::Manifest {
                    manifest: manifest.clone(),
                    reason: e.to_string(),
                })?;
            plugin_name(&manifest, package.get("name"))
        }
    }
}

/// The release profile a Rust plugin is built with, over its project's own: link-time
/// optimisation across the SDK, serde and the plugin in one codegen unit, and LLVM inlining
/// more than its default (threshold 1000, not 225). Measured with `weir bench plugin` on
/// `user-profile` (docs/performance.md): LTO 5 to 10% more records/s as Wasm; the inlining
/// about 7% more again, for a component 30% larger, since every call a Wasm function makes
/// costs a deadline check and a frame that native code does not pay; and Wasm's 128-bit vectors
/// (`simd128`), with which the SDK scans strings sixteen bytes a step (8% fewer instructions per
/// `user-profile` record as Wasm). Given as `--config`, so it
/// applies to a plugin inside a workspace too, where a package's own `[profile]` is ignored,
/// and leaves the target folder's other builds alone. As cargo documents, `RUSTFLAGS` replaces
/// the rustflags entry, a project's `build.rustflags` is then not used for this target, and its
/// `target.wasm32-wasip2.rustflags` are joined with ours (README says so to plugin authors).
const PLUGIN_PROFILE: [&str; 3] = [
    "profile.release.lto=true",
    "profile.release.codegen-units=1",
    "target.wasm32-wasip2.rustflags=[\"-C\", \"llvm-args=-inline-threshold=1000\", \"-C\", \"target-feature=+simd128\"]",
];

/// Builds the crate at `crate_dir` in release mode (with [`PLUGIN_PROFILE`]) for wasm32-wasip2
/// and copies the component to `registry/NAME.wasm`.
fn build_rust(crate_dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    let name = package_name(&manifest)?;
    let (success, messages) = run_cargo(rust_build(&manifest), &name).map_err(BuildError::Cargo)?;
    if !success {
        return Err(BuildError::Failed { manifest });
    }
    let artifact = wasm_artifact(&messages).ok_or_else(|| BuildError::NoArtifact {
        manifest: manifest.clone(),
    })?;
    place(&artifact, registry, name, Language::Rust)
}

/// The cargo command that builds the crate of `manifest` into a component.
fn rust_build(manifest: &Path) -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", PLUGIN_TARGET])
        .args(
            PLUGIN_PROFILE
                .iter()
                .flat_map(|setting| ["--config", setting]),
        )
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(manifest);
    cargo
}

/// Copies `artifact` to `registry/NAME.wasm` through a hidden temporary name.
fn place(
    artifact: &Path,
    registry: &Path,
    name: String,
    language: Language,
) -> Result<BuiltPlugin, BuildError> {
    let place_error = |source| BuildError::Place {
        dir: registry.to_owned(),
        source,
    };
    std::fs::create_dir_all(registry).map_err(place_error)?;
    let destination = registry.join(format!("{name}.wasm"));
    // A hidden temporary name: the registry ignores it, and rename is atomic.
    let temporary = registry.join(format!(".{name}.wasm.partial"));
    std::fs::copy(artifact, &temporary).map_err(place_error)?;
    std::fs::rename(&temporary, &destination).map_err(place_error)?;
    let size = std::fs::metadata(&destination).map_err(place_error)?.len();
    Ok(BuiltPlugin {
        name,
        path: destination,
        size,
        language,
    })
}

/// Runs cargo, counting the crates it compiles as progress, with its own output (diagnostics,
/// `Compiling` lines) passed through; returns whether it succeeded and its JSON messages.
fn run_cargo(mut cargo: Command, name: &str) -> std::io::Result<(bool, Vec<u8>)> {
    use std::io::{BufRead, BufReader};
    let progress = weir::progress::start(&format!("building {name}"), None, "crates");
    let mut child = cargo
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("cargo's output was not captured"));
    };
    let (messages, status) = std::thread::scope(|scope| {
        // Read on their own thread, so that neither pipe fills while the other is read.
        scope.spawn(|| {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                progress.println(&line);
            }
        });
        let mut messages = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(message) = serde_json::from_str::<serde_json::Value>(&line)
                && message["reason"] == "compiler-artifact"
            {
                progress.advance(1, message["target"]["name"].as_str().unwrap_or(""));
            }
            messages.extend_from_slice(line.as_bytes());
            messages.push(b'\n');
        }
        (messages, child.wait())
    });
    let success = status?.success();
    progress.finish(if success { "built" } else { "failed" });
    Ok((success, messages))
}

/// A build folder removed when dropped, so a failed build leaves nothing behind.
struct Stage(PathBuf);

impl Stage {
    fn new(name: &str) -> Result<Stage, BuildError> {
        let dir = std::env::temp_dir().join(format!(
            "weir-build-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let stage = Stage(dir);
        stage.write("wit/plugin.wit", WIT)?;
        Ok(stage)
    }

    fn write(&self, relative: &str, text: &str) -> Result<(), BuildError> {
        let path = self.0.join(relative);
        let error = |source| BuildError::Stage {
            dir: self.0.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(error)?;
        }
        std::fs::write(&path, text).map_err(error)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // Best effort: a leftover folder in the temp dir harms nothing.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the Python project at `dir` (`pyproject.toml` with `project.name`, and
/// `tool.weir.module`, the module defining `WitWorld`) with componentize-py.
fn build_python(dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    let manifest = dir.join("pyproject.toml");
    let table = read_toml(&manifest)?;
    let name = plugin_name(&manifest, table.get("project").and_then(|p| p.get("name")))?;
    let module = table
        .get("tool")
        .and_then(|t| t.get("weir"))
        .and_then(|w| w.get("module"))
        .and_then(|m| m.as_str())
        .map_or_else(|| name.replace('-', "_"), str::to_owned);
    let tool = toolchain_dir().join("python/bin/componentize-py");
    if !tool.is_file() {
        return Err(BuildError::Toolchain {
            tool: "componentize-py",
            version: COMPONENTIZE_PY,
            path: tool,
            dir: toolchain_dir(),
        });
    }
    let stage = Stage::new(&name)?;
    for (file, text) in PYTHON_SDK {
        stage.write(&format!("sdk/weir_plugin/{file}"), text)?;
    }
    let output = stage.0.join(format!("{name}.wasm"));
    let status = Command::new(&tool)
        .arg("--quiet")
        .arg("--wit-path")
        .arg(stage.0.join("wit"))
        .args(["--world", "transformer", "componentize", &module])
        .arg("--python-path")
        .arg(dir)
        .arg("--python-path")
        .arg(stage.0.join("sdk"))
        .arg("--output")
        .arg(&output)
        // componentize-py adds a virtualenv's site-packages to the plugin: keep builds to what
        // the project and the SDK hold.
        .env_remove("VIRTUAL_ENV")
        // Compiled bytecode would land in the plugin's source folder.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|source| BuildError::Run {
            tool: tool.display().to_string(),
            source,
        })?;
    if !status.success() {
        return Err(BuildError::Componentize {
            tool: "componentize-py",
            dir: dir.to_owned(),
        });
    }
    place(&output, registry, name, Language::Python)
}

/// Builds the JavaScript project at `dir` (`package.json` with `name` and `main`) with
/// componentize-js. The project's top-level `.js`/`.mjs` files are staged beside the SDK, so a
/// plugin imports it as `./weir-plugin.js`.
fn build_javascript(dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    let manifest = dir.join("package.json");
    let text = std::fs::read_to_string(&manifest).map_err(|e| BuildError::Manifest {
        manifest: manifest.clone(),
        reason: format!("cannot read it: {e}"),
    })?;
    let package: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BuildError::Manifest {
            manifest: manifest.clone(),
            reason: e.to_string(),
        })?;
    let name = plugin_name(&manifest, package.get("name"))?;
    let main = package
        .get("main")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("index.js")
        .trim_start_matches("./")
        .to_owned();
    if main.contains('/') || main == "weir-plugin.js" {
        return Err(BuildError::Manifest {
            manifest,
            reason: format!(
                "`main` is `{main}`: it must name a file in the plugin's folder, other than weir-plugin.js"
            ),
        });
    }
    let library = toolchain_dir()
        .join("js/node_modules/@bytecodealliance/componentize-js/src/componentize.js");
    if !library.is_file() {
        return Err(BuildError::Toolchain {
            tool: "componentize-js",
            version: COMPONENTIZE_JS,
            path: library,
            dir: toolchain_dir(),
        });
    }
    let stage = Stage::new(&name)?;
    let sources = std::fs::read_dir(dir).map_err(|source| BuildError::Stage {
        dir: dir.to_owned(),
        source,
    })?;
    for entry in sources.flatten() {
        let path = entry.path();
        let is_source = path.extension().is_some_and(|e| e == "js" || e == "mjs");
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if is_source && path.is_file() && file != "weir-plugin.js" {
            let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Stage {
                dir: dir.to_owned(),
                source,
            })?;
            stage.write(&format!("src/{file}"), &text)?;
        }
    }
    stage.write("src/weir-plugin.js", JS_SDK)?;
    let output = stage.0.join(format!("{name}.wasm"));
    // componentize-js is a library: called from a short script, not through the `jco componentize`
    // command, which fails with "failed to get path metadata" on the same files. Run from the
    // staged folder, the plugin's relative imports resolve inside it.
    let script = r#"
const [library, source, wit, output] = process.argv.slice(1);
const { pathToFileURL } = await import("node:url");
const { writeFile } = await import("node:fs/promises");
const { componentize } = await import(pathToFileURL(library).href);
const { component } = await componentize({
  sourcePath: source,
  witPath: wit,
  worldName: "transformer",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(output, component);
"#;
    let status = Command::new("node")
        .current_dir(stage.0.join("src"))
        .args(["--input-type=module", "-e", script])
        .arg(&library)
        .arg(stage.0.join("src").join(&main))
        .arg(stage.0.join("wit"))
        .arg(&output)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|source| BuildError::Run {
            tool: "node (install Node.js 18 or later)".into(),
            source,
        })?;
    if !status.success() {
        return Err(BuildError::Componentize {
            tool: "componentize-js",
            dir: dir.to_owned(),
        });
    }
    place(&output, registry, name, Language::JavaScript)
}

fn read_toml(manifest: &Path) -> Result<toml::Table, BuildError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: format!("cannot read it: {e}"),
    })?;
    toml::from_str(&text).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: e.to_string(),
    })
}

/// The plugin's name from its manifest: it becomes the file name `NAME.wasm`, so only letters,
/// digits, `-` and `_` are accepted.
fn plugin_name<V: NameValue>(manifest: &Path, value: Option<&V>) -> Result<String, BuildError> {
    let name = value
        .and_then(NameValue::text)
        .ok_or_else(|| BuildError::Manifest {
            manifest: manifest.to_owned(),
            reason: "no package name (`project.name` in pyproject.toml, `name` in package.json)"
                .into(),
        })?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(BuildError::Manifest {
            manifest: manifest.to_owned(),
            reason: format!(
                "the name `{name}` cannot name a plugin file: use letters, digits, `-` and `_` (at most 64)"
            ),
        })
    }
}

/// A manifest value that may hold a name.
trait NameValue {
    fn text(&self) -> Option<&str>;
}

impl NameValue for toml::Value {
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
}

impl NameValue for serde_json::Value {
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
}

fn package_name(manifest: &Path) -> Result<String, BuildError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: format!("cannot read it: {e}; pass the folder of a plugin crate"),
    })?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: e.to_string(),
    })?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(String::from)
        .ok_or_else(|| BuildError::Manifest {
            manifest: manifest.to_owned(),
            reason: "no `package.name`: pass the folder of a plugin crate, not a workspace".into(),
        })
}

/// The `.wasm` file named by cargo's `compiler-artifact` messages.
fn wasm_artifact(messages: &[u8]) -> Option<PathBuf> {
    String::from_utf8_lossy(messages)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .rfind(|file| file.extension().is_some_and(|e| e == "wasm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_plugins_build_in_release_with_lto_in_one_codegen_unit_more_inlining_and_simd128() {
        let command = rust_build(Path::new("/p/Cargo.toml"));
        let args: Vec<&str> = command.get_args().map(|a| a.to_str().unwrap()).collect();
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w == pair);
        assert!(has(["--target", PLUGIN_TARGET]), "{args:?}");
        assert!(args.contains(&"--release"), "{args:?}");
        assert!(has(["--config", "profile.release.lto=true"]), "{args:?}");
        assert!(
            has(["--config", "profile.release.codegen-units=1"]),
            "{args:?}"
        );
        assert!(
            has([
                "--config",
                r#"target.wasm32-wasip2.rustflags=["-C", "llvm-args=-inline-threshold=1000", "-C", "target-feature=+simd128"]"#
            ]),
            "{args:?}"
        );
        assert!(has(["--manifest-path", "/p/Cargo.toml"]), "{args:?}");
    }

    #[test]
    fn finds_the_wasm_artifact_in_cargo_messages() {
        let messages = br#"{"reason":"compiler-artifact","filenames":["/t/libdep.rlib"]}
{"reason":"compiler-artifact","filenames":["/t/wasm32-wasip2/release/my_plugin.wasm","/t/libmy_plugin.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            wasm_artifact(messages),
            Some(PathBuf::from("/t/wasm32-wasip2/release/my_plugin.wasm"))
        );
    }

    #[test]
    fn manifest_without_package_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let error = build_plugin(dir.path(), dir.path()).unwrap_err();
        assert!(error.to_string().contains("package.name"), "{error}");
    }
}
