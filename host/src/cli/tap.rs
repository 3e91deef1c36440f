//! `weir tap PIPELINE`: prints sample records leaving a stage of a running pipeline, one JSON
//! object per line, as `vector tap` does; a client of the admin server's tap stream.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

use crate::AdminTokenArgs;
use crate::cli::admin::{authorize, client_token, refusal};

/// What to watch and how much of it.
#[derive(Debug)]
pub struct TapRequest {
    /// The pipeline.
    pub pipeline: String,
    /// The stage.
    pub stage: String,
    /// Stop after this many records.
    pub count: Option<u64>,
    /// Records per second the server sends at most.
    pub max_per_second: u32,
}

/// Streams records from the weir at `admin` to stdout until `count` is reached, the pipeline
/// ends or the user interrupts.
pub fn tap(
    request: &TapRequest,
    admin: SocketAddr,
    token: &AdminTokenArgs,
) -> anyhow::Result<ExitCode> {
    let token = client_token(token, admin)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(stream(request, admin, token.as_ref()))
}

async fn stream(
    request: &TapRequest,
    admin: SocketAddr,
    token: Option<&weir::admin::auth::AdminToken>,
) -> anyhow::Result<ExitCode> {
    let query = [
        ("stage", request.stage.clone()),
        ("max_per_second", request.max_per_second.to_string()),
    ];
    let mut url = reqwest::Url::parse(&format!("http://{admin}/api/pipelines"))
        .context("invalid admin address")?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("invalid admin address {admin}"))?
        .push(&request.pipeline)
        .push("tap");
    let mut response = authorize(reqwest::Client::new().get(url).query(&query), token)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach the weir admin API at {admin}; is `weir run` running with --admin {admin}?")
        })?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        anyhow::bail!(
            "{}",
            refusal(
                status,
                body["error"].as_str().unwrap_or("the tap was refused"),
                admin
            )
        );
    }
    eprintln!(
        "tapping pipeline {} at stage {} (Ctrl-C to stop)",
        request.pipeline, request.stage
    );
    let mut stdout = std::io::stdout().lock();
    let mut pending = Vec::new();
    let mut printed = 0u64;
    while let Some(chunk) = response.chunk().await.with_context(|| {
        format!(
            "the tap stream broke off: the pipeline's process stopped, or this reader stopped reading (the admin server ends a tap whose stream waits {} s for its reader)",
            weir::admin::WRITE_TIMEOUT.as_secs()
        )
    })? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if is_skip_notice(&line) {
                // Sampling notices go to stderr, so stdout stays pure JSON lines.
                eprint!("{}", String::from_utf8_lossy(&line));
                continue;
            }
            stdout.write_all(&line).context("cannot write to stdout")?;
            stdout.flush().context("cannot write to stdout")?;
            printed += 1;
            if request.count.is_some_and(|count| printed >= count) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    eprintln!("the pipeline ended after {printed} record(s)");
    Ok(ExitCode::SUCCESS)
}

/// `{"skipped": N}`: records the server sampled away.
fn is_skip_notice(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|value| {
            value
                .as_object()
                .map(|o| o.len() == 1 && o.contains_key("skipped"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sampling_notices_count_as_skip_notices() {
        assert!(is_skip_notice(b"{\"skipped\":12}\n"));
        assert!(!is_skip_notice(b"{\"skipped\":12,\"stage\":\"sink\"}\n"));
        assert!(!is_skip_notice(b"{\"value\":{}}\n"));
        assert!(!is_skip_notice(b"not json\n"));
    }
}
