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
        let body = error_body(&mut response).await;
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
    let mut lines = Lines::default();
    let mut printed = 0u64;
    while let Some(chunk) = response.chunk().await.with_context(|| {
        format!(
            "the tap stream broke off: the pipeline's process stopped, or this reader stopped reading (the admin server ends a tap whose stream waits {} s for its reader)",
            weir::admin::WRITE_TIMEOUT.as_secs()
        )
    })? {
        lines.push(&chunk)?;
        while let Some(line) = lines.next_line() {
            if is_skip_notice(&line) {
                // Sampling notices go to stderr, so stdout stays pure JSON lines.
                eprint!("{}", String::from_utf8_lossy(&line));
                continue;
            }
            match stdout.write_all(&line).and_then(|()| stdout.flush()) {
                Ok(()) => {}
                // The reader went away (`weir tap ... | head`): nobody is left to print for,
                // which ends a tap as its `--count` does.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e).context("cannot write to stdout"),
            }
            printed += 1;
            if request.count.is_some_and(|count| printed >= count) {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    eprintln!("the pipeline ended after {printed} record(s)");
    Ok(ExitCode::SUCCESS)
}

/// The longest line taken from the tap stream. A tapped record is at most its pipeline's
/// `limits.max_record_bytes` (1 MiB by default) written as JSON; a longer line is not weir's.
const MAX_LINE_BYTES: usize = 256 << 20;

/// The most of an error answer read: the admin API's errors are a sentence of JSON.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// The JSON of a refusal, read up to [`MAX_ERROR_BYTES`]; `null` past that or when unreadable.
async fn error_body(response: &mut reqwest::Response) -> serde_json::Value {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BYTES {
            return serde_json::Value::Null;
        }
    }
    serde_json::from_slice(&body).unwrap_or_default()
}

/// The tap stream cut into lines as its chunks arrive, each byte searched for a line end once.
#[derive(Default)]
struct Lines {
    pending: Vec<u8>,
    /// Bytes at the start of `pending` known to hold no line end.
    searched: usize,
}

impl Lines {
    /// Adds a chunk; an unfinished line longer than [`MAX_LINE_BYTES`] is an error.
    fn push(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.pending.extend_from_slice(chunk);
        let unfinished = match memchr::memrchr(b'\n', &self.pending[self.searched..]) {
            Some(last) => self.pending.len() - (self.searched + last + 1),
            None => self.pending.len(),
        };
        if unfinished > MAX_LINE_BYTES {
            anyhow::bail!(
                "the tap stream sent a line of more than {} MiB: is --admin the address of a weir?",
                MAX_LINE_BYTES >> 20
            );
        }
        Ok(())
    }

    /// The next whole line, with its line end.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        match memchr::memchr(b'\n', &self.pending[self.searched..]) {
            Some(offset) => {
                let line = self.pending.drain(..=self.searched + offset).collect();
                self.searched = 0;
                Some(line)
            }
            None => {
                self.searched = self.pending.len();
                None
            }
        }
    }
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
    fn lines_are_cut_where_they_end_whatever_the_chunks() {
        let mut lines = Lines::default();
        lines.push(b"{\"a\":1}\n{\"b\"").unwrap();
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"a\":1}\n"[..]));
        assert_eq!(lines.next_line(), None);
        lines.push(b":2}").unwrap();
        assert_eq!(lines.next_line(), None);
        lines.push(b"\n\n").unwrap();
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"b\":2}\n"[..]));
        assert_eq!(lines.next_line().as_deref(), Some(&b"\n"[..]));
        assert_eq!(lines.next_line(), None);
    }

    #[test]
    fn a_line_longer_than_the_bound_is_refused() {
        let mut lines = Lines::default();
        let mib = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_LINE_BYTES >> 20) {
            lines.push(&mib).unwrap();
            assert_eq!(lines.next_line(), None);
        }
        let error = lines.push(b"x").unwrap_err().to_string();
        assert!(error.contains("more than 256 MiB"), "{error}");
        // Whole lines before an unfinished one do not count against it.
        let mut lines = Lines::default();
        lines.push(&[&mib[..], b"\n"].concat()).unwrap();
        lines.push(b"short").unwrap();
    }

    #[test]
    fn only_sampling_notices_count_as_skip_notices() {
        assert!(is_skip_notice(b"{\"skipped\":12}\n"));
        assert!(!is_skip_notice(b"{\"skipped\":12,\"stage\":\"sink\"}\n"));
        assert!(!is_skip_notice(b"{\"value\":{}}\n"));
        assert!(!is_skip_notice(b"not json\n"));
    }
}
