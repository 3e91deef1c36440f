//! A pipeline tailing a file through one plugin deployed from a watched registry folder, its
//! output captured batch by batch: what the hot-swap and polyglot tests swap plugins under.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use weir::config::PipelineFile;
use weir::connectors::file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig, WriteMode};
use weir::connectors::{ConnectorError, Rejected, Sink};
use weir::pipeline::{self, Connectors, PipelineStats};
use weir::record::Record;
use weir::registry::{Deployer, PluginRegistry, PluginSlots};

use crate::support::{test_runtime, wait_for};

/// Drops a file into the registry the way `weir plugin build` does: write aside, rename in.
pub(crate) fn drop_in(dir: &Path, file: &str, bytes: &[u8]) {
    let temporary = dir.join(format!(".{file}.partial"));
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, dir.join(file)).unwrap();
}

/// An in-process sink that keeps each acknowledged batch, so tests can see batch boundaries.
#[derive(Clone, Default)]
pub(crate) struct CaptureSink {
    batches: Arc<Mutex<Vec<Vec<Record>>>>,
}

impl CaptureSink {
    /// Records acknowledged so far.
    pub(crate) fn count(&self) -> usize {
        self.batches.lock().unwrap().iter().map(Vec::len).sum()
    }
}

#[async_trait]
impl Sink for CaptureSink {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        self.batches.lock().unwrap().push(records.to_vec());
        Ok(Vec::new())
    }
}

/// The running pipeline, its input file and its registry folder.
pub(crate) struct SwappablePipeline {
    _dir: tempfile::TempDir,
    plugin: String,
    /// The watched registry folder: drop `PLUGIN.wasm` here to swap.
    pub(crate) registry: PathBuf,
    /// The file the pipeline tails, one JSON record a line.
    pub(crate) input: PathBuf,
    pub(crate) slots: PluginSlots,
    pub(crate) sink: CaptureSink,
    shutdown: watch::Sender<bool>,
    run: tokio::task::JoinHandle<Result<pipeline::PipelineReport, pipeline::PipelineError>>,
    _watch: weir::registry::WatchHandle,
}

impl SwappablePipeline {
    /// Starts the pipeline with `initial` deployed as `plugin`, in batches of up to 64 records.
    pub(crate) async fn start(plugin: &str, initial: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        std::fs::create_dir(&registry).unwrap();
        drop_in(&registry, &format!("{plugin}.wasm"), initial);
        let input = dir.path().join("input.jsonl");
        std::fs::write(&input, "").unwrap();
        let file = PipelineFile::parse(
            Path::new("swappable.toml"),
            &format!(
                r#"
                [[pipeline]]
                name = "swappable"
                source = {{ type = "file", path = "{}", follow = true }}
                transforms = [{{ plugin = "{plugin}" }}]
                sink = {{ type = "stdout" }}
                dead_letter = {{ type = "file", path = "{}/dlq.jsonl" }}
                batch = {{ size = 64, linger_ms = 5 }}
                "#,
                input.display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let slots = PluginSlots::default();
        let deployer = Deployer::new(
            PluginRegistry::new(&registry),
            test_runtime(),
            slots.clone(),
            &file,
        );
        deployer.deploy(plugin).unwrap();
        let watch_handle = weir::registry::watch(deployer, Duration::from_millis(20)).unwrap();
        let config = file.pipelines.into_iter().next().unwrap();
        let chain = pipeline::build_chain(&config, &slots).unwrap();
        let sink = CaptureSink::default();
        let connectors = Connectors {
            source: Box::new(
                FileSource::open(&FileSourceConfig {
                    path: input.clone(),
                    checkpoint: None,
                    follow: true,
                    max_line_bytes: None,
                })
                .await
                .unwrap(),
            ),
            sink: Box::new(sink.clone()),
            dead_letter: Box::new(
                FileSink::open(
                    &FileSinkConfig {
                        path: dir.path().join("dlq.jsonl"),
                        encoding: None,
                        mode: WriteMode::Append,
                        fsync: false,
                    },
                    true,
                )
                .await
                .unwrap(),
            ),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let run = tokio::spawn(pipeline::run_with(
            config,
            connectors,
            chain,
            Arc::new(PipelineStats::default()),
            shutdown_rx,
        ));
        SwappablePipeline {
            _dir: dir,
            plugin: plugin.to_owned(),
            registry,
            input,
            slots,
            sink,
            shutdown,
            run,
            _watch: watch_handle,
        }
    }

    /// The version the plugin's slot runs now.
    pub(crate) fn current_version(&self) -> String {
        self.slots
            .get(&self.plugin)
            .unwrap()
            .current()
            .1
            .plugin
            .version()
            .to_owned()
    }

    /// Waits until the sink has acknowledged `count` records.
    pub(crate) async fn wait_for_output(&self, count: usize) {
        let sink = self.sink.clone();
        wait_for(
            &format!("{count} records in the sink"),
            Duration::from_secs(300),
            move || sink.count() >= count,
        )
        .await;
    }

    /// Stops the pipeline (it must end cleanly) and returns every acknowledged batch in order.
    pub(crate) async fn stop(self) -> Vec<Vec<Record>> {
        self.shutdown.send(true).unwrap();
        self.run.await.unwrap().unwrap();
        self.sink.batches.lock().unwrap().clone()
    }
}
