//! `weir plugin build`: compiles a plugin crate for wasm32-wasip2 and places the component in the
//! registry folder atomically (write then rename), so a watching host never sees half a file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target every plugin is built for: rustc emits a component directly.
pub const PLUGIN_TARGET: &str = "wasm32-wasip2";

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
}

/// Builds the crate at `crate_dir` in release mode for wasm32-wasip2 and copies the component
/// to `registry/NAME.wasm`.
pub fn build_plugin(crate_dir: &Path, registry: &Path) -> Result<BuiltPlugin, BuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    let name = package_name(&manifest)?;
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", PLUGIN_TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest);
    let (success, messages) = run_cargo(cargo, &name).map_err(BuildError::Cargo)?;
    if !success {
        return Err(BuildError::Failed { manifest });
    }
    let artifact = wasm_artifact(&messages).ok_or_else(|| BuildError::NoArtifact {
        manifest: manifest.clone(),
    })?;
    let place_error = |source| BuildError::Place {
        dir: registry.to_owned(),
        source,
    };
    std::fs::create_dir_all(registry).map_err(place_error)?;
    let destination = registry.join(format!("{name}.wasm"));
    // A hidden temporary name: the registry ignores it, and rename is atomic.
    let temporary = registry.join(format!(".{name}.wasm.partial"));
    std::fs::copy(&artifact, &temporary).map_err(place_error)?;
    std::fs::rename(&temporary, &destination).map_err(place_error)?;
    let size = std::fs::metadata(&destination).map_err(place_error)?.len();
    Ok(BuiltPlugin {
        name,
        path: destination,
        size,
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
