//! `weir plugin build`: builds a plugin (a Rust crate for wasm32-wasip2, a Python project with
//! componentize-py, a JavaScript module with componentize-js) and places the component in the
//! registry folder atomically (write then rename), so a watching host never sees half a file.
//!
//! The Python and JavaScript SDKs and the WIT contract are compiled into `weir`, so a plugin
//! project needs nothing but its own file; the pinned toolchains live in a cache folder that
//! `scripts/ensure-toolchain --plugin-languages` fills.

use std::ffi::OsString;
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
pub fn toolchain_dir() -> Result<PathBuf, BuildError> {
    toolchain_dir_from(
        std::env::var_os("WEIR_TOOLCHAIN"),
        std::env::var_os("XDG_CACHE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`toolchain_dir`] from those variables' values, made absolute: the tools run in other working
/// folders. With none of them set it is an error, not a shared folder such as /tmp, from which
/// another user could have us run their componentize-py.
fn toolchain_dir_from(
    weir_toolchain: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, BuildError> {
    let nonempty = |value: Option<OsString>| value.filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = nonempty(weir_toolchain)
        .or_else(|| nonempty(xdg_cache_home).map(|cache| cache.join("weir/toolchain")))
        .or_else(|| nonempty(home).map(|home| home.join(".cache/weir/toolchain")))
        .ok_or(BuildError::NoToolchainDir)?;
    std::path::absolute(&dir).map_err(|source| BuildError::ToolchainPath { dir, source })
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
    /// No folder for the toolchains: none of WEIR_TOOLCHAIN, XDG_CACHE_HOME, HOME is set.
    #[error(
        "no folder for the Python and JavaScript toolchains: WEIR_TOOLCHAIN, XDG_CACHE_HOME and HOME are all unset. Set WEIR_TOOLCHAIN to a folder only you can write, and run `scripts/ensure-toolchain --plugin-languages`"
    )]
    NoToolchainDir,
    /// The toolchain folder could not be made absolute (the current folder is unreadable).
    #[error(
        "cannot make the toolchain folder {dir} absolute: {source}; set WEIR_TOOLCHAIN to an absolute path"
    )]
    ToolchainPath {
        /// The folder as given.
        dir: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The installed toolchain is not the pinned release.
    #[error(
        "{tool} {found} is installed at {path}, but weir builds with {tool} {pinned}: run `scripts/ensure-toolchain --plugin-languages` to install the pinned release (into {dir})"
    )]
    ToolchainVersion {
        /// The tool.
        tool: &'static str,
        /// The version installed (or what its version query gave).
        found: String,
        /// The pinned version.
        pinned: &'static str,
        /// Where it was found.
        path: PathBuf,
        /// The toolchain folder.
        dir: PathBuf,
    },
    /// A plugin's source file could not be read.
    #[error("cannot read {file}: {source}; a plugin's source must be UTF-8 text")]
    Source {
        /// The file.
        file: PathBuf,
        /// The IO error.
        source: std::io::Error,
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
            let package = read_package(&manifest)?;
            plugin_name(&manifest, package.get("name"))
        }
    }
}

/// A JavaScript project's `package.json`, parsed.
fn read_package(manifest: &Path) -> Result<serde_json::Value, BuildError> {
    let text = std::fs::read_to_string(manifest).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: format!("cannot read it: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason: e.to_string(),
    })
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
    let tool = componentize_py(&toolchain_dir()?)?;
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

/// The pinned componentize-py in the toolchain folder `toolchain`: an error when it is missing,
/// or when `--version` (a few milliseconds) names another release.
fn componentize_py(toolchain: &Path) -> Result<PathBuf, BuildError> {
    let tool = toolchain.join("python/bin/componentize-py");
    if !tool.is_file() {
        return Err(BuildError::Toolchain {
            tool: "componentize-py",
            version: COMPONENTIZE_PY,
            path: tool,
            dir: toolchain.to_owned(),
        });
    }
    let output = Command::new(&tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BuildError::Run {
            tool: tool.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let found = text.trim().trim_start_matches("componentize-py").trim();
    if !output.status.success() || found != COMPONENTIZE_PY {
        return Err(BuildError::ToolchainVersion {
            tool: "componentize-py",
            found: if found.is_empty() {
                "(no version given)".into()
            } else {
                found.to_owned()
            },
            pinned: COMPONENTIZE_PY,
            path: tool,
            dir: toolchain.to_owned(),
        });
    }
    Ok(tool)
}

/// The pinned componentize-js library in the toolchain folder `toolchain`: an error when it is
/// missing, or when its package.json names another release.
fn componentize_js(toolchain: &Path) -> Result<PathBuf, BuildError> {
    let package = toolchain.join("js/node_modules/@bytecodealliance/componentize-js");
    let library = package.join("src/componentize.js");
    if !library.is_file() {
        return Err(BuildError::Toolchain {
            tool: "componentize-js",
            version: COMPONENTIZE_JS,
            path: library,
            dir: toolchain.to_owned(),
        });
    }
    let found = std::fs::read_to_string(package.join("package.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|manifest| manifest["version"].as_str().map(str::to_owned));
    if found.as_deref() != Some(COMPONENTIZE_JS) {
        return Err(BuildError::ToolchainVersion {
            tool: "componentize-js",
            found: found.unwrap_or_else(|| "(no readable package.json version)".into()),
            pinned: COMPONENTIZE_JS,
            path: package,
            dir: toolchain.to_owned(),
        });
    }
    Ok(library)
}

/// The file `main` names in the JavaScript project at `dir` (`index.js` when absent): a `.js` or
/// `.mjs` file in the project's own folder, other than weir-plugin.js, that exists.
fn javascript_main(
    dir: &Path,
    manifest: &Path,
    package: &serde_json::Value,
) -> Result<String, BuildError> {
    let main = package
        .get("main")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("index.js")
        .trim_start_matches("./")
        .to_owned();
    let refuse = |reason: String| BuildError::Manifest {
        manifest: manifest.to_owned(),
        reason,
    };
    if main.contains('/') || main == "weir-plugin.js" {
        return Err(refuse(format!(
            "`main` is `{main}`: it must name a file in the plugin's folder, other than weir-plugin.js"
        )));
    }
    if !(main.ends_with(".js") || main.ends_with(".mjs")) {
        return Err(refuse(format!(
            "`main` is `{main}`: it must name a JavaScript module, a `.js` or `.mjs` file"
        )));
    }
    if !dir.join(&main).is_file() {
        return Err(refuse(format!(
            "`main` is `{main}`, but {} is not a file",
            dir.join(&main).display()
        )));
    }
    Ok(main)
}

/// The top-level `.js`/`.mjs` files of the JavaScript project at `dir` (weir-plugin.js aside),
/// as (file name, text) pairs; an error naming the file that is not UTF-8.
fn javascript_sources(dir: &Path) -> Result<Vec<(String, String)>, BuildError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BuildError::Stage {
        dir: dir.to_owned(),
        source,
    })?;
    let mut sources = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_source = path.extension().is_some_and(|e| e == "js" || e == "mjs");
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if is_source && path.is_file() && file != "weir-plugin.js" {
            let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Source {
                file: path.clone(),
                source,
            })?;
            sources.push((file.to_owned(), text));
        }
    }
    Ok(sources)
}

/// Builds the JavaScript project at `dir` (`package.json` with `name` and `main`) with
/// componentize-js. The project's top-level `.js`/`.mjs` files are staged beside the SDK, so a
/// plugin imports it as `./weir-plugin.js`.
fn build_javascript(dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    let manifest = dir.join("package.json");
    let package = read_package(&manifest)?;
    let name = plugin_name(&manifest, package.get("name"))?;
    let main = javascript_main(dir, &manifest, &package)?;
    let sources = javascript_sources(dir)?;
    let library = componentize_js(&toolchain_dir()?)?;
    let stage = Stage::new(&name)?;
    for (file, text) in &sources {
        stage.write(&format!("src/{file}"), text)?;
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
    fn the_toolchain_folder_is_absolute_and_never_a_shared_fallback() {
        let dir = |weir: Option<&str>, xdg: Option<&str>, home: Option<&str>| {
            toolchain_dir_from(
                weir.map(Into::into),
                xdg.map(Into::into),
                home.map(Into::into),
            )
        };
        let cwd = std::env::current_dir().unwrap();
        // Relative: node runs componentize-js in the build folder, where it would not resolve.
        assert_eq!(
            dir(Some("tc"), Some("/x"), Some("/h")).unwrap(),
            cwd.join("tc")
        );
        assert_eq!(
            dir(None, Some("/x"), Some("/h")).unwrap(),
            Path::new("/x/weir/toolchain")
        );
        assert_eq!(
            dir(None, None, Some("/h")).unwrap(),
            Path::new("/h/.cache/weir/toolchain")
        );
        assert_eq!(
            dir(Some(""), Some(""), Some("/h")).unwrap(),
            Path::new("/h/.cache/weir/toolchain")
        );
        let error = dir(None, None, None).unwrap_err();
        assert!(matches!(error, BuildError::NoToolchainDir), "{error}");
        assert!(error.to_string().contains("WEIR_TOOLCHAIN"), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn a_toolchain_other_than_the_pinned_release_is_refused_naming_both_versions() {
        use std::os::unix::fs::PermissionsExt;
        let toolchain = tempfile::tempdir().unwrap();
        let tool = toolchain.path().join("python/bin/componentize-py");
        std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
        let fake = |version: &str| {
            std::fs::write(
                &tool,
                format!("#!/bin/sh\necho componentize-py {version}\n"),
            )
            .unwrap();
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // A script just written may be busy ("text file busy") while another test's thread forks
        // holding it open: such a run is repeated.
        let check = || loop {
            match componentize_py(toolchain.path()) {
                Err(BuildError::Run { source, .. })
                    if source.kind() == std::io::ErrorKind::ExecutableFileBusy => {}
                result => break result,
            }
        };
        fake("0.1.0");
        let error = check().unwrap_err().to_string();
        for part in ["0.1.0", COMPONENTIZE_PY, "scripts/ensure-toolchain"] {
            assert!(error.contains(part), "{error}");
        }
        fake(COMPONENTIZE_PY);
        assert_eq!(check().unwrap(), tool);

        let package = toolchain
            .path()
            .join("js/node_modules/@bytecodealliance/componentize-js");
        std::fs::create_dir_all(package.join("src")).unwrap();
        std::fs::write(package.join("src/componentize.js"), "").unwrap();
        std::fs::write(package.join("package.json"), r#"{"version": "0.1.0"}"#).unwrap();
        let error = componentize_js(toolchain.path()).unwrap_err().to_string();
        for part in ["0.1.0", COMPONENTIZE_JS, "scripts/ensure-toolchain"] {
            assert!(error.contains(part), "{error}");
        }
        let manifest = format!(r#"{{"version": "{COMPONENTIZE_JS}"}}"#);
        std::fs::write(package.join("package.json"), manifest).unwrap();
        assert!(componentize_js(toolchain.path()).is_ok());
    }

    #[test]
    fn a_javascript_main_that_is_missing_or_no_module_is_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("package.json");
        std::fs::write(dir.path().join("plugin.js"), "").unwrap();
        std::fs::write(dir.path().join("plugin.ts"), "").unwrap();
        let main = |main: &str| {
            javascript_main(dir.path(), &manifest, &serde_json::json!({ "main": main }))
        };
        assert_eq!(main("./plugin.js").unwrap(), "plugin.js");
        let error = main("plugin.ts").unwrap_err().to_string();
        assert!(error.contains("`.js` or `.mjs`"), "{error}");
        let error = main("absent.js").unwrap_err().to_string();
        assert!(
            error.contains("absent.js") && error.contains("not a file"),
            "{error}"
        );
    }

    #[test]
    fn a_javascript_source_that_is_not_utf8_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.js"), "export {};").unwrap();
        std::fs::write(dir.path().join("bad.mjs"), b"\xff\xfe").unwrap();
        let error = javascript_sources(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("bad.mjs") && error.contains("UTF-8"),
            "{error}"
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
