//! `GET /api/pipelines/{name}/tap?stage=S`: records leaving a stage, streamed as JSON lines for
//! `weir tap`, at most a set number per second so that watching never floods a terminal.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use crate::observe::tap::SINK_STAGE;
use crate::observe::{TapSubscription, Tapped};

/// Records per second a watcher gets unless it asks otherwise.
const DEFAULT_MAX_PER_SECOND: u32 = 100;

/// The query of a tap request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapQuery {
    /// The stage to watch: `source`, a plugin's name, `sink` (default) or `dead_letter`.
    stage: Option<String>,
    /// Records per second sent at most; the rest are counted as skipped.
    max_per_second: Option<u32>,
}

/// Streams the records leaving a stage until the client goes away.
pub async fn tap(
    State(state): State<AdminState>,
    Path(pipeline): Path<String>,
    Query(query): Query<TapQuery>,
) -> Response {
    let Some(stats) = state.pipelines.get(&pipeline) else {
        let known: Vec<&String> = state.pipelines.keys().collect();
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!("no pipeline `{pipeline}`; running pipelines: {known:?}")
            })),
        )
            .into_response();
    };
    let stage = query.stage.unwrap_or_else(|| SINK_STAGE.to_owned());
    let Some(point) = stats.taps().find(&stage) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!(
                    "pipeline `{pipeline}` has no stage `{stage}`; its stages: {:?}",
                    stats.taps().stages()
                )
            })),
        )
            .into_response();
    };
    let limit = query
        .max_per_second
        .unwrap_or(DEFAULT_MAX_PER_SECOND)
        .max(1);
    tracing::info!(pipeline, stage, max_per_second = limit, "Tap opened.");
    let lines = futures::stream::unfold(
        Sampler::new(point.watch(), limit),
        |mut sampler| async move {
            let line = sampler.next_line().await?;
            Some((Ok::<_, Infallible>(line), sampler))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Turns a subscription into JSON lines, passing at most `limit` records per second.
struct Sampler {
    subscription: TapSubscription,
    limit: u32,
    window_start: Instant,
    sent_in_window: u32,
    skipped: u64,
}

impl Sampler {
    fn new(subscription: TapSubscription, limit: u32) -> Self {
        Sampler {
            subscription,
            limit,
            window_start: Instant::now(),
            sent_in_window: 0,
            skipped: 0,
        }
    }

    /// The count of records skipped since the last such line, as a line.
    fn skipped_line(&mut self) -> Bytes {
        let line = json!({ "skipped": self.skipped });
        self.skipped = 0;
        to_line(&line)
    }

    /// The next line to send: a record, or the count of records skipped before it. `None`
    /// once the pipeline is gone, after the count of any records skipped since the last one.
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if self.skipped > 0 && self.window_start.elapsed() >= Duration::from_secs(1) {
                return Some(self.skipped_line());
            }
            match self.subscription.next().await {
                // The subscription stays closed, so the next call ends the stream.
                Tapped::Closed if self.skipped > 0 => return Some(self.skipped_line()),
                Tapped::Closed => return None,
                Tapped::Skipped(count) => self.skipped += count,
                Tapped::Record(record) => {
                    if self.window_start.elapsed() >= Duration::from_secs(1) {
                        self.window_start = Instant::now();
                        self.sent_in_window = 0;
                    }
                    if self.sent_in_window < self.limit {
                        self.sent_in_window += 1;
                        return Some(to_line(&*record));
                    }
                    self.skipped += 1;
                }
            }
        }
    }
}

fn to_line(value: &impl serde::Serialize) -> Bytes {
    let mut line = serde_json::to_vec(value).unwrap_or_else(|error| {
        // Serialising plain data cannot fail; say so on the stream rather than panic if it does.
        format!("{{\"error\":\"cannot serialise a tapped record: {error}\"}}").into_bytes()
    });
    line.push(b'\n');
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::TapHub;
    use crate::record::Record;

    #[tokio::test]
    async fn the_records_skipped_last_are_counted_before_the_stream_ends() {
        let hub = TapHub::new("p");
        let point = hub.point(SINK_STAGE);
        let mut sampler = Sampler::new(point.watch(), 1);
        // A window that never ends: one record is sent, the rest are skipped however slowly
        // the test runs.
        sampler.window_start = Instant::now() + Duration::from_secs(3600);
        let records: Vec<Record> = (0..3)
            .map(|n| Record::from_value(format!("{{\"n\":{n}}}")))
            .collect();
        point.offer(records.iter().map(|r| (r, None)));
        hub.close();
        let mut lines = Vec::new();
        while let Some(line) = sampler.next_line().await {
            lines.push(serde_json::from_slice::<serde_json::Value>(&line).unwrap());
        }
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["value"]["n"], 0);
        assert_eq!(lines[1], json!({ "skipped": 2 }));
    }
}
