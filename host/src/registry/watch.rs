//! Hot deployment: watches the registry folder and deploys a plugin when its `NAME.wasm` or
//! `NAME.toml` is created, modified or renamed into place. Events are debounced per plugin so a
//! file still being written is not loaded mid-write; a truncated file that slips through fails
//! validation and is rejected, and the finished write triggers another attempt. A staged
//! candidate's files (`NAME.candidate.wasm`, `NAME.candidate.toml`) are never deployed here.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::RegistryError;
use super::deploy::{Deployer, Deployment};

/// Keeps the watcher alive; dropping it stops watching.
#[derive(Debug)]
pub struct WatchHandle {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a file event means for a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// NAME.wasm or NAME.toml was written: try to deploy NAME.
    Updated(String),
    /// NAME.wasm disappeared: keep running the last version, and say so.
    Removed(String),
}

/// Starts watching the deployer's registry folder. Must be called inside a tokio runtime.
pub fn watch(deployer: Deployer, debounce: Duration) -> Result<WatchHandle, RegistryError> {
    let dir = deployer.registry().dir().to_owned();
    // Watching needs the folder; an empty one is a valid registry to drop plugins into later.
    std::fs::create_dir_all(&dir).map_err(|e| watch_error(&dir, notify::Error::io(e)))?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                for change in classify(&event) {
                    let _ = events_tx.send(change);
                }
            }
            Err(error) => tracing::warn!(%error, "Plugin folder watch error."),
        })
        .map_err(|e| watch_error(&dir, e))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(&dir, e))?;
    tracing::info!(dir = %dir.display(), debounce_ms = debounce.as_millis() as u64, "Watching the plugin folder.");
    let task = tokio::spawn(debounce_and_deploy(deployer, events_rx, debounce));
    Ok(WatchHandle {
        _watcher: watcher,
        task,
    })
}

fn watch_error(dir: &Path, error: notify::Error) -> RegistryError {
    RegistryError::List {
        dir: dir.display().to_string(),
        source: std::io::Error::other(format!("cannot watch: {error}")),
    }
}

/// The plugin changes an event stands for. Hidden files (temporary names of atomic writers,
/// the compiled cache) and other extensions are ignored.
fn classify(event: &notify::Event) -> Vec<Change> {
    let relevant = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    );
    if !relevant {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter_map(|path| {
            let file = path.file_name()?.to_str()?;
            if file.starts_with('.') {
                return None;
            }
            let (name, extension) = file.rsplit_once('.')?;
            // A staged candidate's files are loaded only by `weir plugin stage`.
            if super::rollout::is_candidate(name) {
                return None;
            }
            match extension {
                "wasm" if !path.exists() => Some(Change::Removed(name.to_owned())),
                "wasm" | "toml" => Some(Change::Updated(name.to_owned())),
                _ => None,
            }
        })
        .collect()
}

async fn debounce_and_deploy(
    deployer: Deployer,
    mut events: mpsc::UnboundedReceiver<Change>,
    debounce: Duration,
) {
    // Plugin name -> when it has been quiet long enough to load.
    let mut due: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let next = due.values().min().copied();
        tokio::select! {
            change = events.recv() => match change {
                Some(Change::Updated(name)) => {
                    due.insert(name, Instant::now() + debounce);
                }
                Some(Change::Removed(name)) => {
                    due.remove(&name);
                    if let Some(slot) = deployer.slots().get(&name) {
                        tracing::warn!(plugin = %name, version = slot.current().1.plugin.version(), "Plugin file deleted; pipelines keep running its last version.");
                    }
                }
                None => return,
            },
            _ = sleep_until_or_forever(next) => {
                let now = Instant::now();
                let ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
                for name in ready {
                    due.remove(&name);
                    if !deployer.is_used(&name) {
                        // A shared folder holds other processes' plugins: compiling them here
                        // would cost CPU and memory for nothing, and a broken one would count
                        // as this process's rejection.
                        tracing::info!(plugin = %name, file = %deployer.registry().path_of(&name).display(), "Plugin file changed; no pipeline of this process uses it, so it is not loaded.");
                        continue;
                    }
                    deploy_in_background(&deployer, name).await;
                }
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn deploy_in_background(deployer: &Deployer, name: String) {
    let worker = deployer.clone();
    let file = deployer.registry().path_of(&name);
    let outcome = tokio::task::spawn_blocking(move || worker.deploy(&name)).await;
    match outcome {
        Ok(Ok(Deployment::Activated { .. })) => {}
        Ok(Ok(Deployment::Unchanged | Deployment::Staged { .. })) => {
            tracing::debug!(file = %file.display(), "Plugin file unchanged.");
        }
        Ok(Err(error)) => {
            tracing::error!(file = %file.display(), reason = %error, "Plugin rejected; the running version keeps running.");
        }
        Err(error) => {
            tracing::error!(file = %file.display(), %error, "Plugin deployment panicked; the running version keeps running.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    fn event(kind: EventKind, path: &Path) -> notify::Event {
        notify::Event::new(kind).add_path(path.to_owned())
    }

    #[test]
    fn classifies_writes_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("user-profile.wasm");
        std::fs::write(&wasm, b"x").unwrap();
        assert_eq!(
            classify(&event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                &wasm
            )),
            [Change::Updated("user-profile".into())]
        );
        assert_eq!(
            classify(&event(
                EventKind::Create(CreateKind::File),
                &dir.path().join("m.toml")
            )),
            [Change::Updated("m".into())]
        );
        let gone = dir.path().join("gone.wasm");
        assert_eq!(
            classify(&event(EventKind::Remove(RemoveKind::File), &gone)),
            [Change::Removed("gone".into())]
        );
    }

    /// A plugin no pipeline uses is not loaded when its file changes: neither compiled nor, when
    /// broken, counted as rejected. A used one beside it is.
    #[tokio::test]
    async fn a_file_of_a_plugin_no_pipeline_uses_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::PipelineFile::parse(
            Path::new("p.toml"),
            "[[pipeline]]\nname = \"p\"\nsource = { type = \"generate\" }\ntransforms = [{ plugin = \"used\" }]\nsink = { type = \"blackhole\" }\ndead_letter = { type = \"stdout\" }\n",
        )
        .unwrap();
        let slots = super::super::PluginSlots::default();
        let deployer = Deployer::new(
            super::super::PluginRegistry::new(dir.path().to_owned()),
            crate::runtime::PluginRuntime::new(None).unwrap(),
            slots.clone(),
            &config,
        );
        let handle = watch(deployer, Duration::from_millis(20)).unwrap();
        // Not components: a deployment rejects them.
        std::fs::write(dir.path().join("unused.wasm"), b"not wasm").unwrap();
        std::fs::write(dir.path().join("used.wasm"), b"not wasm").unwrap();
        // Changes are taken in the order they came, so once the used plugin's file was judged,
        // the unused one's was too.
        let deadline = Instant::now() + Duration::from_secs(60);
        while slots.last_rejection("used").is_none() {
            assert!(
                Instant::now() < deadline,
                "the used plugin's file was never judged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(slots.last_rejection("unused").is_none());
        assert!(slots.get("unused").is_none());
        drop(handle);
    }

    #[test]
    fn ignores_hidden_and_foreign_files_and_staged_candidates() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".user-profile.wasm.partial",
            "notes.txt",
            ".cache",
            "user-profile.candidate.wasm",
            "user-profile.candidate.toml",
        ] {
            let path = dir.path().join(name);
            assert!(
                classify(&event(EventKind::Create(CreateKind::File), &path)).is_empty(),
                "{name}"
            );
        }
    }
}
