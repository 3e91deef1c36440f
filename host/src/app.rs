//! A running Weir process: the plugin runtime, the live plugin slots, the folder watcher, the
//! admin server and the pipelines, started together and stopped together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::Histories;
use crate::admin::auth::{self, AdminToken, AuthError, Guard};
use crate::admin::history::RunState;
use crate::admin::{self, AdminState};
use crate::config::PipelineFile;
use crate::pipeline::{self, PipelineError, PipelineReport, PipelineStats};
use crate::registry::kafka::{FollowHandle, HeartbeatHandle, KafkaRegistryError, RegistryAddress};
use crate::registry::{
    Deployer, PluginRegistry, PluginSlots, RegistryError, RollbackPolicy, WatchHandle,
};
use crate::runtime::{CompiledCache, ComponentLimits, PluginError, PluginRuntime};

/// Runtime knobs of `weir run`: everything that is not pipeline configuration.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The plugin registry folder.
    pub registry: PathBuf,
    /// Deploy plugins dropped into the folder while running.
    pub watch: bool,
    /// Quiet time a plugin file needs before it is loaded.
    pub debounce: Duration,
    /// Where the admin API listens; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// The admin API's bearer token. `None` on a loopback address: one is generated and
    /// written to [`auth::token_path`] for the CLI; `None` beyond loopback refuses to start.
    pub admin_token: Option<AdminToken>,
    /// Extra `Host` names the admin API answers to, besides loopback and its own address.
    pub admin_hosts: Vec<String>,
    /// A Kafka registry (`weir run --registry kafka://...`) that replaces the folder as the
    /// source of plugins: its heads are deployed at start and followed while running.
    pub kafka_registry: Option<RegistryAddress>,
    /// Where compiled plugins are cached; `None` disables the cache. Never inside the plugin
    /// folder: whoever can write there could plant native code.
    pub cache: Option<PathBuf>,
    /// When a new plugin version is rolled back automatically.
    pub rollback: RollbackPolicy,
    /// Per-component limits from the command line; the engine takes, for each, the largest of
    /// these and every pipeline's `limits` table.
    pub component_limits: ComponentLimits,
}

impl RunOptions {
    /// Defaults for a registry folder: watching, the user's compiled cache
    /// ([`default_cache_dir`](crate::runtime::default_cache_dir)), no admin server.
    pub fn for_registry(registry: impl Into<PathBuf>) -> Self {
        RunOptions {
            cache: crate::runtime::default_cache_dir(),
            registry: registry.into(),
            watch: true,
            kafka_registry: None,
            debounce: Duration::from_millis(200),
            admin: None,
            admin_token: None,
            admin_hosts: Vec::new(),
            rollback: RollbackPolicy::default(),
            component_limits: ComponentLimits::default(),
        }
    }
}

/// The process could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The Wasm engine could not be built.
    #[error(transparent)]
    Runtime(#[from] PluginError),
    /// A plugin could not be deployed at startup.
    #[error("plugin `{name}`: {source}")]
    Plugin {
        /// The plugin.
        name: String,
        /// Why.
        source: RegistryError,
    },
    /// The Kafka registry could not be read, or its version of a plugin could not be deployed.
    #[error(transparent)]
    Registry(#[from] KafkaRegistryError),
    /// The folder watcher could not start.
    #[error(transparent)]
    Watch(RegistryError),
    /// A pipeline could not start.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The admin server could not listen.
    #[error(
        "cannot start the admin server on {addr}: {source}; pass another address with --admin or disable it with --no-admin"
    )]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The admin API's token is missing or unusable.
    #[error(transparent)]
    AdminAuth(#[from] AuthError),
    /// A blocking task panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A started process.
pub struct RunningApp {
    slots: PluginSlots,
    admin_addr: Option<SocketAddr>,
    admin_token: Option<AdminToken>,
    /// A token file this process generated, removed at exit.
    generated_token: Option<std::path::PathBuf>,
    shutdown: Arc<watch::Sender<bool>>,
    pipelines: Vec<(
        String,
        tokio::task::JoinHandle<Result<PipelineReport, PipelineError>>,
    )>,
    _watch: Option<WatchHandle>,
    /// Following the Kafka registry and beating in its fleet topic, when it is the source.
    fleet: Option<(FollowHandle, HeartbeatHandle)>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    histories: Histories,
    history_task: tokio::task::JoinHandle<()>,
}

impl RunningApp {
    /// Deploys the plugins, starts the watcher and the admin server, and starts every pipeline.
    pub async fn start(config: PipelineFile, options: RunOptions) -> Result<Self, AppError> {
        Self::start_until(config, options, Arc::new(watch::channel(false).0)).await
    }

    /// As [`RunningApp::start`], stopping when `shutdown` turns true. When it already is true
    /// once the plugins are ready (a signal came during start-up), no pipeline starts.
    pub async fn start_until(
        config: PipelineFile,
        options: RunOptions,
        shutdown: Arc<watch::Sender<bool>>,
    ) -> Result<Self, AppError> {
        // Checked before anything is compiled or bound, so a misconfiguration fails at once.
        if let Some(addr) = options.admin
            && options.admin_token.is_none()
            && !addr.ip().is_loopback()
        {
            return Err(AuthError::NoTokenBeyondLoopback { addr }.into());
        }
        let limits = config.component_limits(options.component_limits);
        let runtime =
            PluginRuntime::with_limits(options.cache.clone().map(CompiledCache::new), limits)?;
        let slots = PluginSlots::new(options.rollback);
        let deployer = Deployer::new(
            PluginRegistry::new(&options.registry),
            runtime,
            slots.clone(),
            &config,
        );
        let fleet = match options.kafka_registry.clone() {
            Some(address) => Some(start_fleet(deployer.clone(), address, &config).await?),
            None => None,
        };
        let startup = deployer.clone();
        let stager = deployer.clone();
        let from_folder = fleet.is_none();
        tokio::task::spawn_blocking(move || {
            if !from_folder {
                return Ok(());
            }
            for name in startup.used_plugins() {
                startup.deploy(name).map_err(|source| AppError::Plugin {
                    name: name.to_owned(),
                    source,
                })?;
            }
            Ok::<_, AppError>(())
        })
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;

        let watch_handle = if options.watch && from_folder {
            let handle = crate::registry::watch(deployer.clone(), options.debounce)
                .map_err(AppError::Watch)?;
            // A file that landed between the start-up deploy and the watch starting raised no
            // event the watcher saw: a second pass deploys it (an unchanged file costs a hash).
            tokio::task::spawn_blocking(move || {
                for name in deployer.used_plugins() {
                    if let Err(error) = deployer.deploy(name) {
                        tracing::error!(plugin = name, %error, "Plugin rejected; the running version keeps running.");
                    }
                }
            })
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
            Some(handle)
        } else {
            None
        };

        // Bound before any pipeline starts, so a busy port stops the process before it reads.
        let admin_listener = match options.admin {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| AppError::Admin { addr, source })?,
            ),
            None => None,
        };

        let shutdown_rx = shutdown.subscribe();
        let mut stats = BTreeMap::new();
        let mut pipelines = Vec::new();
        let histories = Histories::new(&config.pipelines);
        let configs = if *shutdown_rx.borrow() {
            tracing::info!(
                "Shutdown requested during start-up; no pipeline started, nothing to drain."
            );
            Vec::new()
        } else {
            config.pipelines
        };
        for pipeline_config in configs {
            let chain = {
                let (pipeline_config, slots) = (pipeline_config.clone(), slots.clone());
                tokio::task::spawn_blocking(move || pipeline::build_chain(&pipeline_config, &slots))
                    .await
                    .map_err(|e| AppError::Internal(e.to_string()))??
            };
            let pipeline_stats = Arc::new(PipelineStats::new(&pipeline_config.name));
            stats.insert(pipeline_config.name.clone(), Arc::clone(&pipeline_stats));
            let name = pipeline_config.name.clone();
            let stop_others = Arc::clone(&shutdown);
            let shutdown_rx = shutdown_rx.clone();
            let history = histories.get(&name).cloned();
            pipelines.push((
                name,
                tokio::spawn(async move {
                    let result =
                        pipeline::run(pipeline_config, chain, pipeline_stats, shutdown_rx).await;
                    if let Some(history) = history {
                        history.set_state(match &result {
                            Ok(_) => RunState::Finished,
                            Err(error) => RunState::Failed {
                                reason: error.to_string(),
                            },
                        });
                    }
                    if let Err(error) = &result {
                        // One pipeline failing stops the process, so a supervisor restarts it whole.
                        tracing::error!(%error, "Pipeline failed; stopping the others.");
                        let _ = stop_others.send(true);
                    }
                    result
                }),
            ));
        }

        let history_task = tokio::spawn(histories.clone().record(stats.clone(), slots.clone()));
        let mut admin_token = None;
        let mut generated_token = None;
        let (admin_addr, admin_task) = match (admin_listener, options.admin) {
            (Some(listener), Some(addr)) => {
                let bound = listener
                    .local_addr()
                    .map_err(|source| AppError::Admin { addr, source })?;
                let token = match options.admin_token {
                    Some(token) => token,
                    None => {
                        // Loopback without a token: a fresh one per start, in a file only
                        // this user can read, where the CLI finds it by the port.
                        let token = AdminToken::generate();
                        let path = auth::write_generated(&token, bound.port())?;
                        tracing::info!(
                            path = %path.display(),
                            "Admin token generated; `weir plugin rollback`, `weir tap` and `weir plugin list` read it from this file."
                        );
                        generated_token = Some(path);
                        token
                    }
                };
                let guard = Guard::new(token.clone(), bound, &options.admin_hosts);
                admin_token = Some(token);
                let mut state = AdminState::new(slots.clone(), stats, shutdown_rx.clone(), guard)
                    .with_history(histories.clone())
                    .with_deployer(stager);
                if let Some(address) = &options.kafka_registry {
                    state = state.with_fleet_registry(address.to_string());
                }
                tracing::info!(addr = %bound, "Admin API listening.");
                (
                    Some(bound),
                    Some(tokio::spawn(admin::serve(listener, state))),
                )
            }
            _ => (None, None),
        };

        Ok(RunningApp {
            slots,
            admin_addr,
            admin_token,
            generated_token,
            shutdown,
            pipelines,
            _watch: watch_handle,
            fleet,
            admin_task,
            histories,
            history_task,
        })
    }

    /// The live plugin versions.
    pub fn slots(&self) -> &PluginSlots {
        &self.slots
    }

    /// Where the admin API listens, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The last minutes of every pipeline, sampled once a second.
    pub fn histories(&self) -> &Histories {
        &self.histories
    }

    /// The admin API's bearer token, if the admin API is enabled.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    /// A handle that requests a graceful shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> Arc<watch::Sender<bool>> {
        Arc::clone(&self.shutdown)
    }

    /// Waits for every pipeline to end; the results are in pipeline order.
    pub async fn wait(mut self) -> Vec<(String, Result<PipelineReport, PipelineError>)> {
        let mut results = Vec::new();
        for (name, handle) in std::mem::take(&mut self.pipelines) {
            let result = handle.await.unwrap_or_else(|e| {
                Err(PipelineError::Stage {
                    pipeline: name.clone(),
                    stage: "pipeline",
                    reason: format!("panicked: {e}"),
                })
            });
            results.push((name, result));
        }
        if let Some((follow, heartbeat)) = self.fleet.take() {
            drop(follow);
            heartbeat.finish().await;
        }
        if let Some(task) = self.admin_task.take() {
            task.abort();
        }
        self.history_task.abort();
        if let (Some(path), Some(token)) = (&self.generated_token, &self.admin_token) {
            auth::remove_generated(path, token);
        }
        results
    }
}

/// Deploys the Kafka registry's head of every plugin the pipelines use, then follows the
/// registry and starts the heartbeat in its fleet topic.
async fn start_fleet(
    deployer: Deployer,
    address: RegistryAddress,
    config: &PipelineFile,
) -> Result<(FollowHandle, HeartbeatHandle), AppError> {
    let (startup, from) = (deployer.clone(), address.clone());
    let (catalog, follower) = tokio::task::spawn_blocking(move || {
        crate::registry::kafka::deploy_from_registry(&startup, &from)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))??;
    let slots = deployer.slots().clone();
    let follow = crate::registry::kafka::follow(deployer, catalog, follower, address.clone());
    let pipelines = config.pipelines.iter().map(|p| p.name.clone()).collect();
    let heartbeat = crate::registry::kafka::start_heartbeat(&address, pipelines, slots).await?;
    Ok((follow, heartbeat))
}
