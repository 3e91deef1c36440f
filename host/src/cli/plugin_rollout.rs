//! `weir plugin stage`, `promote`, `abort` and `diff`: staged rollouts of a running weir's
//! plugins, through its admin API with its token like `weir plugin rollback`.

use super::stdout::outln;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use weir::registry::rollout::{RolloutInfo, canary_partitions, validate};
use weir::registry::{Rollout, RolloutError, RolloutPlan};

use crate::AdminTokenArgs;
use crate::cli::admin::{authorize, client_token, refusal};

/// How a candidate is rolled out: at most one of a shadow or a canary (`weir plugin stage`
/// requires one; `weir plugin publish` without one makes the version the head).
#[derive(Debug, clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("rollout").multiple(false)))]
pub struct StageArgs {
    /// Shadow: run the candidate beside the live version on every Nth batch (1: every batch),
    /// compare its outputs and write none of them.
    #[arg(long, value_name = "N", group = "rollout")]
    shadow: Option<u32>,
    /// Canary: route this share of the source's partitions to the candidate, e.g. `33%`:
    /// partitions p with p * 100 / COUNT < 33, COUNT given by --partitions or else each
    /// process's sources (the largest partition count of the pipelines using the plugin).
    #[arg(long, value_name = "PCT%", group = "rollout")]
    canary: Option<String>,
    /// Canary: route exactly these partitions to the candidate, e.g. `0,1`.
    #[arg(long, value_name = "LIST", value_delimiter = ',', group = "rollout")]
    canary_partitions: Option<Vec<i32>>,
    /// The source's partition count, to resolve --canary's percentage here rather than in
    /// each process.
    #[arg(long, value_name = "COUNT", requires = "canary")]
    partitions: Option<u32>,
}

impl StageArgs {
    /// The rollout the flags ask for; `None` when they ask for none. Refuses one that every
    /// process would refuse (`weir::registry::rollout::validate`), so that none is published
    /// or staged.
    pub fn rollout(&self) -> anyhow::Result<Option<RolloutPlan>> {
        if let Some(every_nth_batch) = self.shadow {
            let rollout = Rollout::Shadow { every_nth_batch };
            check(&rollout, &format!("--shadow {every_nth_batch}"))?;
            return Ok(Some(rollout.into()));
        }
        if let Some(list) = &self.canary_partitions {
            let rollout = Rollout::Canary {
                partitions: list.iter().copied().collect(),
            };
            check(
                &rollout,
                &format!("--canary-partitions {}", join_list(list)),
            )?;
            return Ok(Some(rollout.into()));
        }
        let Some(share) = self.canary.as_deref() else {
            return Ok(None);
        };
        let percent: u32 = share
            .trim()
            .trim_end_matches('%')
            .parse()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .with_context(|| {
                format!("--canary {share}: give a share of partitions from 1% to 100%, e.g. 33%")
            })?;
        let Some(count) = self.partitions else {
            return Ok(Some(RolloutPlan::CanaryShare { percent }));
        };
        let partitions: BTreeSet<i32> = canary_partitions(percent, count);
        anyhow::ensure!(
            !partitions.is_empty(),
            "--canary {share} of {count} partitions takes none; give a larger share or --canary-partitions"
        );
        Ok(Some(RolloutPlan::Canary { partitions }))
    }

    /// The rollout the flags ask for, which must be one.
    pub fn required_rollout(&self) -> anyhow::Result<RolloutPlan> {
        self.rollout()?.context(
            "say how the candidate rolls out: --shadow N, --canary PCT%, or --canary-partitions LIST",
        )
    }
}

/// Refuses a rollout every process would refuse, naming the flag (`flag`) that asked for it.
fn check(rollout: &Rollout, flag: &str) -> anyhow::Result<()> {
    match validate("", rollout) {
        Ok(()) => Ok(()),
        Err(RolloutError::Invalid { reason, .. }) => anyhow::bail!("{flag}: {reason}"),
        Err(other) => Err(other.into()),
    }
}

fn join_list(list: &[i32]) -> String {
    if list.is_empty() {
        return "(none)".to_owned();
    }
    list.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Stages plugin `name`'s candidate (NAME.candidate.wasm in the running weir's registry folder).
pub fn stage(
    name: &str,
    args: &StageArgs,
    admin: SocketAddr,
    token: &AdminTokenArgs,
) -> anyhow::Result<ExitCode> {
    let rollout = args.required_rollout()?;
    let body = serde_json::to_value(&rollout)?;
    let answer = call(admin, token, name, "stage", Some(body))?;
    let info: RolloutInfo = serde_json::from_value(answer["staged"].clone())
        .context("the admin API's answer has no staged candidate")?;
    match &info.rollout {
        Rollout::Shadow { every_nth_batch } => outln!(
            "plugin {name}: candidate {} runs in shadow on every {every_nth_batch} batch(es); see `weir plugin diff {name}`",
            info.version
        ),
        Rollout::Canary { partitions } => outln!(
            "plugin {name}: candidate {} takes partitions {}; `weir plugin promote {name}` or `weir plugin abort {name}`",
            info.version,
            join(partitions)
        ),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Makes plugin `name`'s candidate its live version.
pub fn promote(name: &str, admin: SocketAddr, token: &AdminTokenArgs) -> anyhow::Result<ExitCode> {
    let answer = call(admin, token, name, "promote", None)?;
    outln!(
        "plugin {name} promoted: {} is live",
        answer["version"].as_str().unwrap_or("?")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Drops plugin `name`'s candidate.
pub fn abort(name: &str, admin: SocketAddr, token: &AdminTokenArgs) -> anyhow::Result<ExitCode> {
    let answer = call(admin, token, name, "abort", None)?;
    outln!(
        "plugin {name}: candidate {} aborted; {} runs every record",
        answer["aborted"].as_str().unwrap_or("?"),
        answer["version"].as_str().unwrap_or("the live version")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what plugin `name`'s candidate did so far, with the sample of differing records.
pub fn diff(name: &str, admin: SocketAddr, token: &AdminTokenArgs) -> anyhow::Result<ExitCode> {
    let answer = call(admin, token, name, "diff", None)?;
    let info: RolloutInfo = serde_json::from_value(answer["staged"].clone())
        .context("the admin API's answer has no staged candidate")?;
    let live = answer["live"].as_str().unwrap_or("?");
    outln!("plugin {name}: live {live}, candidate {}", info.version)?;
    if let Some(canary) = &info.canary {
        if let Rollout::Canary { partitions } = &info.rollout {
            outln!("canary on partitions {}", join(partitions))?;
        }
        outln!(
            "{} of its first {} records failed by its fault{}",
            canary.failed,
            canary.records,
            if canary.passed_window {
                " (abort window passed)"
            } else {
                ""
            }
        )?;
    }
    if let Some(shadow) = &info.shadow {
        outln!(
            "shadow: {} batches, {} records compared, {} differ ({:.2}%), {} failed in the candidate",
            shadow.batches,
            shadow.compared,
            shadow.differing,
            shadow.differing_share * 100.0,
            shadow.failed
        )?;
        for sample in &shadow.samples {
            outln!("\n@ {}", sample.position)?;
            outln!(
                "- live:      {}",
                sample.live.replace('\n', "\n             ")
            )?;
            outln!(
                "+ candidate: {}",
                sample.candidate.replace('\n', "\n             ")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn join(partitions: &BTreeSet<i32>) -> String {
    partitions
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `POST` (or `GET` for `diff`) `/api/plugins/NAME/ACTION` with the token; the answer's JSON.
fn call(
    admin: SocketAddr,
    token: &AdminTokenArgs,
    name: &str,
    action: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let token = client_token(token, admin)?;
    let mut url = reqwest::Url::parse(&format!("http://{admin}/api/plugins"))
        .context("invalid admin address")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("invalid admin address {admin}"))?
        .push(name)
        .push(action);
    let client = reqwest::Client::new();
    let request = match (action, body) {
        ("diff", _) => client.get(url),
        (_, Some(body)) => client.post(url).json(&body),
        (_, None) => client.post(url),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let response = authorize(request, token.as_ref())
            .send()
            .await
            .with_context(|| format!("cannot reach the weir admin API at {admin}; is `weir run` running with --admin {admin}?"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            Ok(answer)
        } else {
            anyhow::bail!(
                "{}",
                refusal(
                    status,
                    answer["error"].as_str().unwrap_or("refused"),
                    admin
                )
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        shadow: Option<u32>,
        canary: Option<&str>,
        list: Option<Vec<i32>>,
        count: Option<u32>,
    ) -> StageArgs {
        StageArgs {
            shadow,
            canary: canary.map(str::to_owned),
            canary_partitions: list,
            partitions: count,
        }
    }

    #[test]
    fn flags_resolve_to_a_rollout() {
        assert_eq!(
            args(Some(10), None, None, None).required_rollout().unwrap(),
            RolloutPlan::Shadow {
                every_nth_batch: 10
            }
        );
        assert_eq!(
            args(None, Some("33%"), None, Some(6))
                .required_rollout()
                .unwrap(),
            RolloutPlan::Canary {
                partitions: BTreeSet::from([0, 1])
            }
        );
        assert_eq!(
            args(None, None, Some(vec![4, 1]), None)
                .required_rollout()
                .unwrap(),
            RolloutPlan::Canary {
                partitions: BTreeSet::from([1, 4])
            }
        );
        // None asked: publish makes a head, stage refuses.
        assert_eq!(args(None, None, None, None).rollout().unwrap(), None);
        assert!(args(None, None, None, None).required_rollout().is_err());
        assert!(args(None, Some("0%"), None, Some(6)).rollout().is_err());
        assert!(args(None, Some("many"), None, Some(6)).rollout().is_err());
        // Any share takes partition 0 of a non-empty stream; none of an empty one.
        assert_eq!(
            args(None, Some("10%"), None, Some(3))
                .required_rollout()
                .unwrap(),
            RolloutPlan::Canary {
                partitions: BTreeSet::from([0])
            }
        );
        assert!(args(None, Some("10%"), None, Some(0)).rollout().is_err());
        // Without a count, each process resolves the share against its own sources.
        assert_eq!(
            args(None, Some("33%"), None, None)
                .required_rollout()
                .unwrap(),
            RolloutPlan::CanaryShare { percent: 33 }
        );
        assert!(args(None, Some("0%"), None, None).rollout().is_err());
    }

    /// What every process refuses is refused here, before anything is published or staged.
    #[test]
    fn rollouts_every_process_refuses_are_refused() {
        let refused = |args: StageArgs, flag: &str| {
            let error = args.rollout().unwrap_err().to_string();
            assert!(error.starts_with(flag), "{error}");
            error
        };
        let error = refused(args(Some(0), None, None, None), "--shadow 0:");
        assert!(error.contains("at least 1"), "{error}");
        let error = refused(
            args(None, None, Some(vec![-1]), None),
            "--canary-partitions -1:",
        );
        assert!(error.contains("start at 0"), "{error}");
        refused(
            args(None, None, Some(vec![]), None),
            "--canary-partitions (none):",
        );
        assert!(args(Some(0), None, None, None).required_rollout().is_err());
        // A bad share, with and without a partition count.
        for share in ["0%", "101%", "-5%", "x%", ""] {
            assert!(
                args(None, Some(share), None, None).rollout().is_err(),
                "{share}"
            );
            assert!(
                args(None, Some(share), None, Some(4)).rollout().is_err(),
                "{share}"
            );
        }
        assert_eq!(
            args(Some(1), None, None, None).rollout().unwrap(),
            Some(RolloutPlan::Shadow { every_nth_batch: 1 })
        );
    }
}
