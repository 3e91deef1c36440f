//! `weir plugin publish`, `weir plugin prune`, and `weir plugin list`, `rollback`, `promote` and
//! `abort` with `--registry`: the fleet's side of the Kafka registry. A component is validated
//! here as `weir run` would (contract version, type-check, `init` with its manifest's defaults)
//! before any process sees it; rollback writes a head naming an earlier version, which every
//! process deploys; a staged candidate is promoted or aborted by a record every process follows;
//! prune deletes old versions no process uses.

use super::stdout::outln;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use weir::registry::kafka::{
    Catalog, Heartbeat, PublishedVersion, Publisher, RegistryAddress, STALE_AFTER, read_catalog,
    read_heartbeats, valid_plugin_name,
};
use weir::registry::{
    Manifest, ManifestError, PluginFile, PluginVersion, RolloutPlan, read_plugin_file,
};
use weir::runtime::{ComponentLimits, LoadedPlugin, PluginLimits, PluginRuntime, StepRequest};

/// What `weir plugin publish` was asked.
pub struct PublishRequest<'a> {
    /// The component.
    pub file: &'a Path,
    /// Its manifest (default: NAME.toml beside it, when present).
    pub manifest: Option<&'a Path>,
    /// The registry.
    pub registry: &'a RegistryAddress,
    /// The version label (default: the manifest's `version`).
    pub label: Option<&'a str>,
    /// A pipeline's config to validate `init` with, over the manifest's defaults.
    pub config: Option<&'a str>,
    /// The limits `init` runs under in the validation (`--deadline-ms`, `--memory-mib`).
    pub limits: PluginLimits,
    /// The engine's per-component limits (`--max-core-instances`, `--max-memories`,
    /// `--max-tables`).
    pub component_limits: ComponentLimits,
    /// Stage it beside the fleet's version (shadow or canary) instead of making it the head.
    pub stage: Option<RolloutPlan>,
}

/// Validates the component and publishes it to the registry.
pub fn publish(request: &PublishRequest<'_>) -> anyhow::Result<ExitCode> {
    let file = request.file;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|name| valid_plugin_name(name))
        .with_context(|| {
            format!(
                "{}: the file name must be NAME.wasm, NAME letters, digits, `-` and `_` (at most 64), the name pipelines give the plugin",
                file.display()
            )
        })?
        .to_owned();
    // Each file is read once, within the registry's caps and only if it is a regular file (not
    // a FIFO or a device, which could block or never end), and what is validated is what is
    // published.
    let bytes = read_plugin_file(file, PluginFile::Component)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let manifest_path = request
        .manifest
        .map_or_else(|| file.with_extension("toml"), Path::to_path_buf);
    let manifest_text = match read_plugin_file(&manifest_path, PluginFile::Manifest) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|e| ManifestError {
            path: manifest_path.clone(),
            reason: format!("it is not UTF-8 text ({e}): save it as UTF-8"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && request.manifest.is_none() => {
            String::new()
        }
        Err(e) => anyhow::bail!("cannot read the manifest {}: {e}", manifest_path.display()),
    };
    let manifest = Manifest::parse(&manifest_text).map_err(|reason| ManifestError {
        path: manifest_path.clone(),
        reason,
    })?;
    let config = request
        .config
        .map(|text| match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err(anyhow::anyhow!(
                "--config must be a JSON object, like '{{\"field\": \"email\"}}'"
            )),
        })
        .transpose()?;
    let validation = Validation {
        config: config.as_ref(),
        limits: request.limits,
        component_limits: request.component_limits,
    };
    validate(&name, &bytes, &manifest, &validation).with_context(|| {
        format!(
            "{}: not published, the fleet would reject it",
            file.display()
        )
    })?;
    let label = request
        .label
        .map(str::to_owned)
        .or_else(|| manifest.version.clone());
    let published = block_on(async {
        let publisher = Publisher::new(request.registry)?;
        publisher.ensure_topics().await?;
        publisher
            .publish(
                &name,
                &bytes,
                &manifest_text,
                label.as_deref(),
                request.stage.as_ref(),
            )
            .await
    })?;
    outln!(
        "published {name} {}{} ({} KiB in {} chunk(s)) to {}",
        published.version,
        label.map(|l| format!(" ({l})")).unwrap_or_default(),
        published.size.div_ceil(1024),
        published.chunks,
        request.registry
    )?;
    if let Some(rollout) = &request.stage {
        outln!(
            "staged on every process as {}; `weir plugin promote {name} --registry {}` or `weir plugin abort {name} --registry {}`",
            rollout.describe(),
            request.registry,
            request.registry
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The candidate of `name` staged in `registry`, as published.
fn staged_candidate(
    catalog: &Catalog,
    name: &str,
    registry: &RegistryAddress,
) -> anyhow::Result<weir::registry::kafka::PublishedVersion> {
    let (record, _) = catalog.staged(name).with_context(|| {
        format!(
            "plugin `{name}` has no candidate staged in {registry}; stage one with `weir plugin publish {name}.wasm --registry {registry} --shadow N` (or --canary)"
        )
    })?;
    catalog
        .published(name, &record.sha256)
        .cloned()
        .with_context(|| {
            format!(
                "plugin `{name}`'s candidate {} has no version record in {registry}",
                record.version
            )
        })
}

/// Promotes `name`'s staged candidate on every process: a head naming it, then the rollout's end.
pub fn promote(name: &str, registry: &RegistryAddress) -> anyhow::Result<ExitCode> {
    let (catalog, _) = read_catalog(registry, Some(Default::default()))?;
    let candidate = staged_candidate(&catalog, name, registry)?;
    block_on(async { Publisher::new(registry)?.promote(&candidate).await })?;
    outln!(
        "plugin {name} promoted: every process of the fleet runs {}",
        candidate.version
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Aborts `name`'s staged candidate on every process.
pub fn abort(name: &str, reason: &str, registry: &RegistryAddress) -> anyhow::Result<ExitCode> {
    let (catalog, _) = read_catalog(registry, Some(Default::default()))?;
    let candidate = staged_candidate(&catalog, name, registry)?;
    block_on(async { Publisher::new(registry)?.abort(&candidate, reason).await })?;
    let head = catalog
        .heads()
        .get(name)
        .map_or("the fleet's version", |h| h.version.as_str());
    outln!(
        "plugin {name}: candidate {} aborted on every process; {head} runs every record",
        candidate.version
    )?;
    Ok(ExitCode::SUCCESS)
}

/// What [`validate`] runs `init` with.
struct Validation<'a> {
    /// The config over the manifest's defaults (`--config`).
    config: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// The deadline and memory of `init`.
    limits: PluginLimits,
    /// The engine's per-component limits.
    component_limits: ComponentLimits,
}

/// What a running process does with a new version: compile under the engine's per-component
/// limits, type-check against the contract, and `init` with the manifest's defaults (under
/// the config when given) within the deadline and memory given, granting what the manifest
/// asks (each pipeline decides its own grants when it deploys).
fn validate(
    name: &str,
    bytes: &[u8],
    manifest: &Manifest,
    validation: &Validation<'_>,
) -> anyhow::Result<()> {
    let runtime = PluginRuntime::with_limits(None, validation.component_limits)?;
    let plugin = LoadedPlugin::from_bytes(&runtime, name, bytes)?;
    let version = PluginVersion {
        plugin,
        manifest: std::sync::Arc::new(manifest.clone()),
    };
    version.instantiate(StepRequest {
        config: validation.config,
        allow: &manifest.capabilities,
        limits: validation.limits,
    })?;
    Ok(())
}

/// Publishes a head naming an earlier version of `name`: `to` (a version, sha256 or label), or
/// the previous head (see [`Catalog::previous_head`]): never a candidate that was only staged,
/// nor a version the fleet was rolled back from.
pub fn rollback(
    name: &str,
    to: Option<&str>,
    registry: &RegistryAddress,
) -> anyhow::Result<ExitCode> {
    let (catalog, _) = read_catalog(registry, Some(Default::default()))?;
    let head = catalog
        .heads()
        .get(name)
        .with_context(|| format!("plugin `{name}` was never published to {registry}"))?;
    let target = match to {
        Some(wanted) => catalog.find(name, wanted).with_context(|| {
            format!(
                "plugin `{name}` has no version `{wanted}` in {registry}; `weir plugin list --registry {registry}` shows them"
            )
        })?,
        None => catalog.previous_head(name).with_context(|| {
            no_previous_head(
                name,
                &head.version,
                catalog.versions().get(name).map_or(&[], Vec::as_slice),
                registry,
            )
        })?,
    };
    anyhow::ensure!(
        target.sha256 != head.sha256,
        "plugin `{name}` already runs {}",
        target.version
    );
    block_on(async { Publisher::new(registry)?.roll_back_to(target).await })?;
    outln!(
        "plugin {name}: the fleet rolls back from {} to {}{}",
        head.version,
        target.version,
        target
            .label
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Why `weir plugin rollback NAME --registry` without `--to` refuses: the head records left
/// name no earlier head (the head is the first, or compaction kept only the last head record,
/// and the order versions were published in does not say which was rolled back from), with the
/// versions the topic still has, newest first, to name one with `--to`.
fn no_previous_head(
    name: &str,
    head: &str,
    versions: &[PublishedVersion],
    registry: &RegistryAddress,
) -> String {
    let others: Vec<String> = versions
        .iter()
        .rev()
        .filter(|v| v.version != head)
        .map(|v| match &v.label {
            Some(label) => format!("{} ({label})", v.version),
            None => v.version.clone(),
        })
        .collect();
    let still = if others.is_empty() {
        "the topic has no other version of it".to_owned()
    } else {
        format!(
            "name a version with --to; the topic still has (newest first): {}",
            others.join(", ")
        )
    };
    format!(
        "plugin `{name}` has no earlier head in {registry} to return to from {head}: either {head} is its first head, or compaction removed the earlier head records (the topic keeps only the last), and which version the fleet was rolled back from is not known without them; {still}"
    )
}

/// Deletes `name`'s versions beyond the `keep` newest, except the head, a staged candidate and
/// what live processes run or stage; with `dry_run`, only says which.
pub fn prune(
    name: &str,
    keep: usize,
    dry_run: bool,
    registry: &RegistryAddress,
) -> anyhow::Result<ExitCode> {
    let (catalog, _) = read_catalog(registry, Some(Default::default()))?;
    anyhow::ensure!(
        catalog.versions().contains_key(name),
        "plugin `{name}` has no versions in {registry}; `weir plugin list --registry {registry}` shows what it holds"
    );
    let heartbeats = read_heartbeats(registry)?;
    let in_use = versions_in_use(name, &heartbeats, now_millis());
    let doomed = catalog.prunable(name, keep, &in_use);
    let kept = catalog.versions()[name].len() - doomed.len();
    if doomed.is_empty() {
        outln!("plugin {name}: nothing to prune; {kept} versions kept")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !dry_run {
        block_on(async { Publisher::new(registry)?.prune(&doomed).await })?;
    }
    let bytes: usize = doomed.iter().map(|v| v.size).sum();
    outln!(
        "plugin {name}: {} {} versions ({} KiB), kept {kept}",
        if dry_run { "would prune" } else { "pruned" },
        doomed.len(),
        bytes.div_ceil(1024)
    )?;
    for version in doomed {
        outln!(
            "  {:<14} {}",
            version.version,
            version.label.as_deref().unwrap_or("-")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The 12-digit versions of `name` that processes whose heartbeat is fresh run or stage.
fn versions_in_use(name: &str, heartbeats: &[Heartbeat], now: u64) -> BTreeSet<String> {
    heartbeats
        .iter()
        .filter(|h| Duration::from_millis(now.saturating_sub(h.at)) <= STALE_AFTER)
        .flat_map(|h| [h.plugins.get(name), h.candidates.get(name)])
        .flatten()
        .cloned()
        .collect()
}

/// Lists, per plugin, the published versions and the processes that run each.
pub fn list(registry: &RegistryAddress) -> anyhow::Result<ExitCode> {
    let (catalog, _) = read_catalog(registry, Some(Default::default()))?;
    let heartbeats = read_heartbeats(registry)?;
    outln!(
        "{}",
        render(&catalog, &heartbeats, now_millis()).trim_end_matches('\n')
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs one registry request to completion on a runtime of its own (the CLI has none).
fn block_on<T>(
    request: impl std::future::Future<Output = Result<T, weir::registry::kafka::KafkaRegistryError>>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(request)?)
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The listing: one block per plugin, its versions newest first, the head marked, and the
/// processes whose latest heartbeat names each version (stale ones marked).
fn render(catalog: &Catalog, heartbeats: &[Heartbeat], now: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if catalog.versions().is_empty() {
        out.push_str("no plugins published yet; publish one with `weir plugin publish NAME.wasm --registry ...`\n");
    }
    let mut running: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for heartbeat in heartbeats {
        let age = Duration::from_millis(now.saturating_sub(heartbeat.at));
        let who = if age > STALE_AFTER {
            format!("{} (stale, {}s ago)", heartbeat.process, age.as_secs())
        } else {
            heartbeat.process.clone()
        };
        for (plugin, version) in &heartbeat.plugins {
            running
                .entry((plugin.as_str(), version.as_str()))
                .or_default()
                .push(who.clone());
        }
    }
    let mut candidates: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for heartbeat in heartbeats {
        for (plugin, version) in &heartbeat.candidates {
            candidates
                .entry((plugin.as_str(), version.as_str()))
                .or_default()
                .push(heartbeat.process.clone());
        }
    }
    for (name, versions) in catalog.versions() {
        let head = catalog.heads().get(name);
        let _ = writeln!(
            out,
            "{name}  (head {})",
            head.map_or("-", |h| h.version.as_str())
        );
        if let Some((record, rollout)) = catalog.staged(name) {
            let staged_on = candidates
                .get(&(name.as_str(), record.version.as_str()))
                .map_or_else(|| "no process yet".to_owned(), |p| p.join(", "));
            let _ = writeln!(
                out,
                "  candidate {}: {}, staged on {staged_on}",
                record.version,
                rollout.describe()
            );
        }
        let _ = writeln!(
            out,
            "  {:<14} {:<12} {:>9}  {:<20} PROCESSES",
            "VERSION", "LABEL", "SIZE", "PUBLISHER"
        );
        for version in versions.iter().rev() {
            let marker = if head.is_some_and(|h| h.sha256 == version.sha256) {
                "*"
            } else {
                " "
            };
            let processes = running
                .get(&(name.as_str(), version.version.as_str()))
                .map_or_else(|| "-".to_owned(), |p| p.join(", "));
            let _ = writeln!(
                out,
                "{marker} {:<14} {:<12} {:>5} KiB  {:<20} {processes}",
                version.version,
                version.label.as_deref().unwrap_or("-"),
                version.size.div_ceil(1024),
                version.publisher,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(version: &str, label: Option<&str>) -> PublishedVersion {
        PublishedVersion {
            name: "p".into(),
            sha256: format!("{version}{}", "0".repeat(52)),
            version: version.into(),
            label: label.map(str::to_owned),
            manifest: String::new(),
            publisher: "h".into(),
            size: 1,
            chunks: 1,
            published_at: 0,
        }
    }

    #[test]
    fn a_rollback_with_no_earlier_head_names_compaction_and_the_versions_to_choose_from() {
        let registry: RegistryAddress = "kafka://localhost:9092/weir-plugins".parse().unwrap();
        let versions = [
            version("111111111111", Some("v1")),
            version("222222222222", None),
            version("333333333333", Some("v3")),
        ];
        let said = no_previous_head("p", "333333333333", &versions, &registry);
        assert!(
            said.contains("compaction removed the earlier head records"),
            "{said}"
        );
        assert!(said.contains("--to"), "{said}");
        assert!(
            said.contains("222222222222, 111111111111 (v1)"),
            "the others, newest first, with labels: {said}"
        );
        assert!(!said.contains("(v3)"), "not the head: {said}");

        let said = no_previous_head("p", "111111111111", &versions[..1], &registry);
        assert!(said.contains("no other version"), "{said}");
    }
}
