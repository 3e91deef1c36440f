//! `weir plugin dev`: the author's inner loop. Watches a plugin project, and after each burst of
//! saves rebuilds it into a private staging folder, runs its golden test there, and only when
//! that passes places the component (and its manifest) in the registry folder, where a running
//! `weir run` hot-swaps it. A failing build or test leaves the registry's file alone. Changes in
//! the registry and staging folders never start a round, so a registry inside the project (the
//! default `plugin-registry` when run in the project's folder) does not loop.

use super::stdout::{StdoutError, outln};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use weir::registry::{PluginFile, read_plugin_file};

use super::plugin_build::build_plugin;
use super::plugin_test::{
    Golden, TestRequest, check_component, print_report, runtime, write_atomically,
};

/// What wakes the loop.
enum Wake {
    /// A file of the project changed.
    Changed(PathBuf),
    /// The watcher failed.
    WatchError(notify::Error),
    /// Ctrl-C.
    Stop,
}

/// How one round ended; printed as `[weir plugin dev] round N: ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Deployed,
    BuildFailed,
    TestFailed,
    DeployFailed,
    /// Ctrl-C or SIGTERM came during the round: nothing was deployed.
    Stopped,
}

/// Runs `weir plugin dev` until Ctrl-C. `test` carries the golden-test options (its `target`
/// is the project folder and its `registry` the folder to deploy into).
pub fn dev(test: &TestRequest, debounce: Duration) -> anyhow::Result<ExitCode> {
    let project = std::path::absolute(&test.target)
        .with_context(|| format!("resolving {}", test.target.display()))?;
    let name = super::plugin_build::project_name(&project)?;
    // Created now, so that its real path is known and its changes can be told apart.
    std::fs::create_dir_all(&test.registry)
        .with_context(|| format!("creating the registry folder {}", test.registry.display()))?;
    let registry = std::path::absolute(&test.registry)
        .with_context(|| format!("resolving {}", test.registry.display()))?;
    let staging = Staging::new(&name)?;
    // Deploys and builds write there: neither is an edit of the project.
    let ignored: Vec<PathBuf> = [&registry, &staging.0]
        .into_iter()
        .flat_map(|dir| {
            [
                dir.clone(),
                std::fs::canonicalize(dir).unwrap_or(dir.clone()),
            ]
        })
        .collect();
    let runtime = runtime()?;
    let (sender, receiver) = mpsc::channel();
    let watched = project.clone();
    let events = sender.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => match event
                .paths
                .into_iter()
                .find(|p| relevant(&watched, &ignored, p))
            {
                Some(path) => Wake::Changed(path),
                None => return,
            },
            Err(error) => Wake::WatchError(error),
        };
        // The loop has ended when this fails; nothing to tell.
        let _ = events.send(wake);
    })
    .context("starting the file watcher")?;
    watcher
        .watch(&project, RecursiveMode::Recursive)
        .with_context(|| format!("watching {}", project.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    spawn_ctrl_c(sender, Arc::clone(&stop))?;
    let destination = registry.join(format!("{name}.wasm"));
    outln!(
        "[weir plugin dev] watching {} (Ctrl-C to stop); passing builds go to {}",
        project.display(),
        destination.display()
    )?;
    let mut round = 0u64;
    loop {
        round += 1;
        let outcome = one_round(
            &project, &name, &staging.0, &registry, &runtime, test, &stop,
        )?;
        let text = match outcome {
            Round::Deployed => format!("deployed to {}", destination.display()),
            Round::BuildFailed => {
                "build failed (errors above); the registry keeps its version".to_owned()
            }
            Round::TestFailed => {
                "golden test failed (differences above); the registry keeps its version".to_owned()
            }
            Round::DeployFailed => format!(
                "the build passed its golden test but deploying it to {} failed (error above); fix that and save again",
                destination.display()
            ),
            Round::Stopped => {
                outln!(
                    "[weir plugin dev] round {round}: stopped before deploying; the registry keeps its version"
                )?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        outln!("[weir plugin dev] round {round}: {text}")?;
        // Wait for the next change, then for the saves around it to settle.
        let first = match receiver.recv() {
            Ok(wake) => wake,
            Err(_) => return Ok(ExitCode::SUCCESS),
        };
        if !settle(first, &receiver, debounce)? {
            outln!("[weir plugin dev] stopped")?;
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Handles a wake-up and any that follow within `debounce` of the last; false on Ctrl-C.
fn settle(
    first: Wake,
    receiver: &mpsc::Receiver<Wake>,
    debounce: Duration,
) -> anyhow::Result<bool> {
    let mut wake = first;
    loop {
        match wake {
            Wake::Stop => return Ok(false),
            Wake::WatchError(error) => {
                tracing::warn!(%error, "File watcher error; changes may be missed.");
            }
            Wake::Changed(path) => tracing::debug!(path = %path.display(), "Changed."),
        }
        wake = match receiver.recv_timeout(debounce) {
            Ok(next) => next,
            Err(mpsc::RecvTimeoutError::Timeout) => return Ok(true),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
        };
    }
}

fn one_round(
    project: &Path,
    name: &str,
    staging: &Path,
    registry: &Path,
    runtime: &weir::runtime::PluginRuntime,
    test: &TestRequest,
    stop: &AtomicBool,
) -> Result<Round, StdoutError> {
    let built = match build_plugin(project, staging) {
        Ok(built) => built,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Round::BuildFailed);
        }
    };
    // Read once: the bytes tested are the bytes deployed.
    let component = match read_plugin_file(&built.path, PluginFile::Component) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!(
                "error: cannot read the build {}: {error}",
                built.path.display()
            );
            return Ok(Round::BuildFailed);
        }
    };
    let golden = match Golden::for_project(project, built.path.clone()) {
        Ok(mut golden) => {
            if let Some(input) = &test.input {
                golden.input.clone_from(input);
            }
            if let Some(expect) = &test.expect {
                golden.expect.clone_from(expect);
            }
            golden
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Round::TestFailed);
        }
    };
    match check_component(runtime, &golden, test, &component) {
        Ok(report) => {
            print_report(&golden, &report)?;
            if !report.passed() {
                return Ok(Round::TestFailed);
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(Round::TestFailed);
        }
    }
    // A stop during the build or the test: the user no longer wants this version deployed.
    if stop.load(Ordering::SeqCst) {
        return Ok(Round::Stopped);
    }
    Ok(match deploy(project, name, &component, registry) {
        Ok(()) => Round::Deployed,
        Err(error) => {
            eprintln!("error: {error:#}");
            Round::DeployFailed
        }
    })
}

/// Places the manifest (when the project has one) and then the component in the registry, each
/// through a temporary name and a rename, so a watching host sees whole files only, and the
/// component's new manifest before the component itself.
fn deploy(project: &Path, name: &str, component: &[u8], registry: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(registry)
        .with_context(|| format!("creating the registry folder {}", registry.display()))?;
    let manifest = project.join(format!("{name}.toml"));
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        write_atomically(&registry.join(format!("{name}.toml")), &text)?;
    }
    let destination = registry.join(format!("{name}.wasm"));
    let temporary = registry.join(format!(".{name}.wasm.partial"));
    std::fs::write(&temporary, component)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &destination)
        .with_context(|| format!("replacing {}", destination.display()))
}

/// Whether a change at `path` can change the build: not build output, caches, dependencies,
/// lock files, editors' hidden and backup files, nor anything under the `ignored` folders (the
/// registry deployed into and the staging folder, which may sit inside the project).
fn relevant(project: &Path, ignored: &[PathBuf], path: &Path) -> bool {
    if ignored.iter().any(|dir| path.starts_with(dir)) {
        return false;
    }
    let Ok(relative) = path.strip_prefix(project) else {
        return false;
    };
    let ignored_dir = |part: &str| matches!(part, "target" | "node_modules" | "__pycache__");
    let parts: Vec<&str> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect();
    let Some(file) = parts.last() else {
        return false;
    };
    !parts
        .iter()
        .any(|part| part.starts_with('.') || ignored_dir(part))
        && !file.ends_with('~')
        && !file.ends_with(".swp")
        && *file != "Cargo.lock"
}

/// On Ctrl-C (or SIGTERM) raises `stop`, so a round under way deploys nothing, and sends
/// [`Wake::Stop`], so the loop ends between rounds. Both signals are caught from when this
/// returns, before the first round.
fn spawn_ctrl_c(sender: mpsc::Sender<Wake>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut interrupt, mut terminate) = {
        let _entered = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("catching Ctrl-C")?,
            signal(SignalKind::terminate()).context("catching SIGTERM")?,
        )
    };
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            });
            stop.store(true, Ordering::SeqCst);
            let _ = sender.send(Wake::Stop);
        })
        .context("starting the Ctrl-C handler")?;
    Ok(())
}

/// A private folder builds are placed in before their test passes; removed on exit.
struct Staging(PathBuf);

impl Staging {
    /// A new folder `weir-dev-NAME-RANDOM` in the temp dir, readable by this user only. Made
    /// with mkdir, which fails on anything already at that path (a folder or a symlink someone
    /// else placed there), rather than reused.
    fn new(name: &str) -> anyhow::Result<Staging> {
        use std::os::unix::fs::DirBuilderExt;
        let temp = std::env::temp_dir();
        let mut attempts = 0;
        loop {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random)
                .map_err(|e| anyhow::anyhow!("cannot name a staging folder: {e}"))?;
            let dir = temp.join(format!("weir-dev-{name}-{}", hex::encode(random)));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Staging(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 10 => {
                    attempts += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "creating the staging folder {} (set TMPDIR to a folder of your own to use another)",
                            dir.display()
                        )
                    });
                }
            }
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Best effort: a leftover folder in the temp dir harms nothing.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_editor_files_do_not_trigger_a_build() {
        let project = Path::new("/p");
        let ignored = [
            PathBuf::from("/p/plugin-registry"),
            PathBuf::from("/tmp/stage"),
        ];
        let relevant = |path: &str| relevant(project, &ignored, Path::new(path));
        assert!(relevant("/p/src/lib.rs"));
        assert!(relevant("/p/samples/expected.jsonl"));
        // A file whose name starts like the registry's is the project's.
        assert!(relevant("/p/plugin-registry.md"));
        for ignored in [
            "/p/target/release/x.wasm",
            "/p/.git/index",
            "/p/src/.lib.rs.swp",
            "/p/src/lib.rs~",
            "/p/Cargo.lock",
            "/p/__pycache__/m.pyc",
            "/elsewhere/lib.rs",
            // The registry inside the project, deployed into, and the staging folder.
            "/p/plugin-registry",
            "/p/plugin-registry/p.wasm",
            "/p/plugin-registry/.p.wasm.partial",
            "/p/plugin-registry/p.toml",
            "/tmp/stage/p.wasm",
        ] {
            assert!(!relevant(ignored), "{ignored}");
        }
    }
}
