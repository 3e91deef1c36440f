//! `weir bench swap`: how long a hot swap takes, from the component landing in the watched
//! folder (renamed into place) to the first record processed by the new version, and the longest
//! pause in output while it happens, against the pipeline's usual pause between batches.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;

use super::{BenchError, quantile};
use weir::config::PipelineFile;
use weir::connectors::{ConnectorError, Rejected, Sink};
use weir::pipeline::{self, Connectors, PipelineStats};
use weir::record::{Record, headers};
use weir::registry::{Deployer, PluginRegistry, PluginSlots};
use weir::runtime::{CompiledCache, PluginRuntime};

/// What the swap benchmark measured.
#[derive(Debug, Clone)]
pub struct SwapReport {
    /// Each swap's latency, landing to first record on the new version.
    pub latencies: Vec<Duration>,
    /// The longest time between two sink writes while a swap was under way.
    pub longest_gap: Duration,
    /// The median time between two sink writes outside swaps.
    pub usual_gap: Duration,
    /// The folder watcher's debounce, part of every latency.
    pub debounce: Duration,
}

impl SwapReport {
    /// The latency at quantile `q`.
    pub fn latency(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        quantile(&sorted, q).unwrap_or_default()
    }
}

/// The time and plugin version of every write.
#[derive(Clone, Default)]
struct WriteLog {
    writes: Arc<Mutex<Vec<(Instant, String)>>>,
}

#[async_trait]
impl Sink for WriteLog {
    async fn write(&mut self, records: &[Record]) -> Result<Vec<Rejected>, ConnectorError> {
        let version = records
            .first()
            .and_then(|r| r.header_str(&format!("{}swap", headers::VERSION_PREFIX)))
            .unwrap_or_default()
            .to_owned();
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((Instant::now(), version));
        Ok(Vec::new())
    }
}

/// The component with a custom section appended: the same code under a new content hash, so
/// every swap compiles and deploys a genuinely new version.
fn variant(component: &[u8], tag: u32) -> Vec<u8> {
    let name = b"weir-bench";
    let payload_len = 1 + name.len() + 4;
    let mut out = component.to_vec();
    out.push(0);
    out.push(payload_len as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&tag.to_le_bytes());
    out
}

/// Runs a generated stream at `rate` records/s through `component` (deployed as plugin `swap`)
/// and swaps it `swaps` times through the watched folder.
pub async fn swap_latency(
    component: &[u8],
    swaps: u32,
    debounce: Duration,
    rate: f64,
) -> Result<SwapReport, BenchError> {
    let setup = |e: &dyn std::fmt::Display| BenchError::Setup(e.to_string());
    let dir = tempfile_dir().map_err(|e| setup(&e))?;
    let registry = dir.join("registry");
    std::fs::create_dir_all(&registry).map_err(|e| setup(&e))?;
    drop_in(&registry, &variant(component, 0)).map_err(|e| setup(&e))?;
    let toml = format!(
        r#"
        [[pipeline]]
        name = "swap-bench"
        source = {{ type = "generate", rate = {rate} }}
        transforms = [{{ plugin = "swap" }}]
        sink = {{ type = "stdout" }}
        dead_letter = {{ type = "file", path = "{}/dead_letter.jsonl" }}
        batch = {{ size = 64, linger_ms = 10 }}
        "#,
        dir.display()
    );
    let file = PipelineFile::parse(Path::new("swap-bench.toml"), &toml).map_err(|e| setup(&e))?;
    let runtime =
        PluginRuntime::new(Some(CompiledCache::new(dir.join("cache")))).map_err(|e| setup(&e))?;
    let slots = PluginSlots::default();
    let deployer = Deployer::new(
        PluginRegistry::new(&registry),
        runtime,
        slots.clone(),
        &file,
    );
    deployer.deploy("swap").map_err(|e| setup(&e))?;
    let watching = weir::registry::watch(deployer, debounce).map_err(|e| setup(&e))?;
    let config = file
        .pipelines
        .into_iter()
        .next()
        .ok_or_else(|| setup(&"no pipeline"))?;
    let chain = pipeline::build_chain(&config, &slots).map_err(|e| setup(&e))?;
    let log = WriteLog::default();
    let connectors = Connectors {
        source: config.source.build().await.map_err(|e| setup(&e))?,
        sink: Box::new(log.clone()),
        dead_letter: config
            .dead_letter
            .build(true)
            .await
            .map_err(|e| setup(&e))?,
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let run = tokio::spawn(pipeline::run_with(
        config,
        connectors,
        chain,
        Arc::new(PipelineStats::default()),
        shutdown_rx,
    ));
    // Let the stream settle before the first swap.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    let mut windows = Vec::new();
    let progress = weir::progress::start("bench swap", Some(u64::from(swaps)), "swaps");
    for swap in 1..=swaps {
        let slot = slots
            .get("swap")
            .ok_or_else(|| setup(&"plugin slot vanished"))?;
        let before = slot.current().1.plugin.version().to_owned();
        let landed = Instant::now();
        drop_in(&registry, &variant(component, swap)).map_err(|e| setup(&e))?;
        let deadline = landed + Duration::from_secs(60);
        let first_new = loop {
            let seen = log
                .writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .rev()
                .take_while(|(at, _)| *at >= landed)
                .filter(|(_, version)| *version != before && !version.is_empty())
                .map(|(at, _)| *at)
                .last();
            if let Some(at) = seen {
                break at;
            }
            if Instant::now() > deadline {
                return Err(setup(&format!(
                    "swap {swap} did not reach the output within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(first_new - landed);
        windows.push((landed, first_new));
        progress.advance(
            1,
            &format!(
                "landing -> first record {:.1} ms",
                (first_new - landed).as_secs_f64() * 1000.0
            ),
        );
        // Space swaps apart so each starts from a steady stream.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    progress.finish("swapped");
    let _ = shutdown.send(true);
    let _ = run.await;
    drop(watching);

    let writes: Vec<Instant> = log
        .writes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(at, _)| *at)
        .collect();
    let mut longest_gap = Duration::ZERO;
    let mut usual = Vec::new();
    for pair in writes.windows(2) {
        let gap = pair[1] - pair[0];
        let during_swap = windows
            .iter()
            .any(|(start, end)| pair[1] >= *start && pair[0] <= *end);
        if during_swap {
            longest_gap = longest_gap.max(gap);
        } else {
            usual.push(gap);
        }
    }
    usual.sort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SwapReport {
        latencies,
        longest_gap,
        usual_gap: quantile(&usual, 0.5).unwrap_or_default(),
        debounce,
    })
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("weir-bench-swap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn drop_in(registry: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = registry.join(".swap.wasm.partial");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, registry.join("swap.wasm"))
}
