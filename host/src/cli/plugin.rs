//! `weir plugin build`, `weir plugin list` and `weir plugin rollback`. Listing and rollback talk
//! to a running host's admin API; listing falls back to the folder when no host runs.

use super::stdout::{StdoutError, outln};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use super::plugin_build::build_plugin;
use anyhow::Context;
use weir::admin::auth::AdminToken;
use weir::registry::{PluginRegistry, SlotInfo};

use crate::AdminTokenArgs;
use crate::cli::admin::{authorize, client_token, refusal};

/// Builds the plugin project (Rust, Python or JavaScript) at `path` into `registry`.
pub fn build(path: &Path, registry: &Path) -> anyhow::Result<ExitCode> {
    let built = build_plugin(path, registry)?;
    outln!(
        "built {} plugin {} -> {} ({} KiB)",
        built.language.as_str(),
        built.name,
        built.path.display(),
        built.size.div_ceil(1024)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Lists the plugins of the host at `admin`, or of the folder when no host answers.
pub fn list(
    registry: &Path,
    admin: SocketAddr,
    token: &AdminTokenArgs,
) -> anyhow::Result<ExitCode> {
    let token = client_token(token, admin)?;
    match fetch_plugins(admin, token.as_ref()) {
        Ok(slots) => {
            // The admin API names versions; their language is read from the folder's files.
            let languages: std::collections::HashMap<String, String> =
                PluginRegistry::new(registry)
                    .list()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|entry| Some((entry.version, entry.language?)))
                    .collect();
            print_running(&slots, admin, &languages)?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) if error.is_connect() => {
            eprintln!(
                "no running weir at {admin} ({error}); listing the folder {}",
                registry.display()
            );
        }
        Err(error) => return Err(error).context(format!("asking the weir at {admin}")),
    }
    let entries = PluginRegistry::new(registry).list().with_context(|| {
        format!(
            "listing plugins; create {} or pass --plugins DIR",
            registry.display()
        )
    })?;
    if entries.is_empty() {
        outln!(
            "no plugins in {}; build one with `weir plugin build PATH`",
            registry.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24} {:<14} {:<10} {:>10}  PATH",
        "NAME",
        "VERSION",
        "LANGUAGE",
        "SIZE"
    )?;
    for entry in entries {
        outln!(
            "{:<24} {:<14} {:<10} {:>7} KiB  {}",
            entry.name,
            entry.version,
            entry.language.as_deref().unwrap_or("-"),
            entry.size.div_ceil(1024),
            entry.path.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the host at `admin` to return plugin `name` to its previous version.
pub fn rollback(name: &str, admin: SocketAddr, token: &AdminTokenArgs) -> anyhow::Result<ExitCode> {
    let token = client_token(token, admin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut url = reqwest::Url::parse(&format!("http://{admin}/api/plugins"))
        .context("invalid admin address")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("invalid admin address {admin}"))?
        .push(name)
        .push("rollback");
    let response: serde_json::Value = runtime.block_on(async {
        let response = authorize(reqwest::Client::new().post(url), token.as_ref())
            .send()
            .await
            .with_context(|| format!("cannot reach the weir admin API at {admin}; is `weir run` running with --admin {admin}?"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            Ok(body)
        } else {
            anyhow::bail!(
                "{}",
                refusal(
                    status,
                    body["error"].as_str().unwrap_or("rollback refused"),
                    admin
                )
            )
        }
    })?;
    outln!(
        "plugin {name} rolled back to {}",
        response["version"].as_str().unwrap_or("?")
    )?;
    Ok(ExitCode::SUCCESS)
}

fn fetch_plugins(
    admin: SocketAddr,
    token: Option<&AdminToken>,
) -> Result<Vec<SlotInfo>, reqwest::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(async {
        authorize(
            reqwest::Client::new().get(format!("http://{admin}/api/plugins")),
            token,
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
    })
}

fn print_running(
    slots: &[SlotInfo],
    admin: SocketAddr,
    languages: &std::collections::HashMap<String, String>,
) -> Result<(), StdoutError> {
    outln!("plugins of the weir at {admin}:")?;
    outln!(
        "{:<24} {:<14} {:<10} {:<10} {:>6}  HISTORY",
        "NAME",
        "VERSION",
        "LANGUAGE",
        "LABEL",
        "SWAPS"
    )?;
    for slot in slots {
        let history: Vec<&str> = slot.history.iter().map(|v| v.version.as_str()).collect();
        outln!(
            "{:<24} {:<14} {:<10} {:<10} {:>6}  {}",
            slot.name,
            slot.current.version,
            languages
                .get(&slot.current.version)
                .map_or("-", String::as_str),
            slot.current.label.as_deref().unwrap_or("-"),
            slot.swaps,
            if history.is_empty() {
                "-".to_owned()
            } else {
                history.join(", ")
            }
        )?;
        if let Some(rollback) = &slot.last_rollback {
            outln!("{:<24} last rollback: {rollback}", "")?;
        }
        if let Some(rejection) = &slot.last_rejection {
            outln!("{:<24} last rejected file: {}", "", rejection.reason)?;
        }
        if let Some(staged) = &slot.staged {
            let how = match &staged.rollout {
                weir::registry::Rollout::Shadow { every_nth_batch } => {
                    format!("shadow on every {every_nth_batch} batch(es)")
                }
                weir::registry::Rollout::Canary { partitions } => {
                    format!("canary on partitions {partitions:?}")
                }
            };
            outln!("{:<24} staged: {} as {how}", "", staged.version)?;
        }
        if let Some(abort) = &slot.last_abort {
            outln!("{:<24} last rollout: {abort}", "")?;
        }
    }
    Ok(())
}
