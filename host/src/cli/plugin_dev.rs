//! `weir plugin dev`: the author's inner loop. Watches a plugin project, and after each burst of
//! saves rebuilds it into a private staging folder, runs its golden test there, and only when
//! that passes places the component (and its manifest) in the registry folder, where a running
//! `weir run` hot-swaps it. A failing build or test leaves the registry's file alone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use notify::{RecursiveMode, Watcher};

use super::plugin_build::build_plugin;
use super::plugin_test::{Golden, TestRequest, check, print_report, runtime, write_atomically};

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
}

/// Runs `weir plugin dev` until Ctrl-C. `test` carries the golden-test options (its `target`
/// is the project folder and its `registry` the folder to deploy into).
pub fn dev(test: &TestRequest, debounce: Duration) -> anyhow::Result<ExitCode> {
    let project = std::path::absolute(&test.target)
        .with_context(|| format!("resolving {}", test.target.display()))?;
    let name = super::plugin_build::project_name(&project)?;
    let staging = Staging::new(&name)?;
    let runtime = runtime()?;
    let (sender, receiver) = mpsc::channel();
    let watched = project.clone();
    let events = sender.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let wake = match event {
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => match event.paths.into_iter().find(|p| relevant(&watched, p)) {
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
    spawn_ctrl_c(sender)?;
    println!(
        "[weir plugin dev] watching {} (Ctrl-C to stop); passing builds go to {}",
        project.display(),
        test.registry.join(format!("{name}.wasm")).display()
    );
    let mut round = 0u64;
    loop {
        round += 1;
        let outcome = one_round(&project, &name, &staging.0, &runtime, test);
        let text = match outcome {
            Round::Deployed => format!(
                "deployed to {}",
                test.registry.join(format!("{name}.wasm")).display()
            ),
            Round::BuildFailed => {
                "build failed (errors above); the registry keeps its version".to_owned()
            }
            Round::TestFailed => {
                "golden test failed (differences above); the registry keeps its version".to_owned()
            }
        };
        println!("[weir plugin dev] round {round}: {text}");
        // Wait for the next change, then for the saves around it to settle.
        let first = match receiver.recv() {
            Ok(wake) => wake,
            Err(_) => return Ok(ExitCode::SUCCESS),
        };
        if !settle(first, &receiver, debounce)? {
            println!("[weir plugin dev] stopped");
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
    runtime: &weir::runtime::PluginRuntime,
    test: &TestRequest,
) -> Round {
    let built = match build_plugin(project, staging) {
        Ok(built) => built,
        Err(error) => {
            eprintln!("error: {error}");
            return Round::BuildFailed;
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
            return Round::TestFailed;
        }
    };
    match check(runtime, &golden, test) {
        Ok(report) => {
            print_report(&golden, &report);
            if !report.passed() {
                return Round::TestFailed;
            }
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return Round::TestFailed;
        }
    }
    match deploy(project, name, &built.path, &test.registry) {
        Ok(()) => Round::Deployed,
        Err(error) => {
            eprintln!("error: {error:#}");
            Round::BuildFailed
        }
    }
}

/// Places the manifest (when the project has one) and then the component in the registry, each
/// through a temporary name and a rename, so a watching host sees whole files only, and the
/// component's new manifest before the component itself.
fn deploy(project: &Path, name: &str, component: &Path, registry: &Path) -> anyhow::Result<()> {
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
    std::fs::copy(component, &temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &destination)
        .with_context(|| format!("replacing {}", destination.display()))
}

/// Whether a change at `path` can change the build: not build output, caches, dependencies,
/// lock files or editors' hidden and backup files.
fn relevant(project: &Path, path: &Path) -> bool {
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

/// Sends [`Wake::Stop`] on Ctrl-C (or SIGTERM), so the loop ends between rounds.
fn spawn_ctrl_c(sender: mpsc::Sender<Wake>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            runtime.block_on(async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async {
                        match terminate.as_mut() {
                            Some(signal) => { signal.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {}
                }
            });
            let _ = sender.send(Wake::Stop);
        })
        .context("starting the Ctrl-C handler")?;
    Ok(())
}

/// A private folder builds are placed in before their test passes; removed on exit.
struct Staging(PathBuf);

impl Staging {
    fn new(name: &str) -> anyhow::Result<Staging> {
        let dir = std::env::temp_dir().join(format!("weir-dev-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Staging(dir))
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
        assert!(relevant(project, Path::new("/p/src/lib.rs")));
        assert!(relevant(project, Path::new("/p/samples/expected.jsonl")));
        for ignored in [
            "/p/target/release/x.wasm",
            "/p/.git/index",
            "/p/src/.lib.rs.swp",
            "/p/src/lib.rs~",
            "/p/Cargo.lock",
            "/p/__pycache__/m.pyc",
            "/elsewhere/lib.rs",
        ] {
            assert!(!relevant(project, Path::new(ignored)), "{ignored}");
        }
    }
}
