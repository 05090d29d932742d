//! `GET /api/v1/tasks/events` as a Server-Sent Events stream, for a client that sends
//! `Accept: text/event-stream` (others get the long poll in `tasks.rs`).
//!
//! The stream starts with `retry:` and a `ready` event (`{"after", "latest"}`), then sends
//! each change as `id: SEQ`, `event: task`, `data: <the long poll's JSON of the change>`,
//! from the cursor on: `Last-Event-ID` (what `EventSource` sends when it reconnects), else
//! `?after=SEQ`, else the newest change (only what happens from now on). A cursor the
//! feed no longer covers (more than its ring behind, or from before a restart) gets a
//! `reset` event (`id: LATEST`, `{"latest", "reason"}`): reload, then follow on, since
//! nothing is skipped silently. A quiet stream gets a `: keep-alive` comment every
//! [`KEEP_ALIVE_EVERY`], and its credentials are checked again as often (a revoked key, an
//! ended session or a lost scope ends it). It ends when shutdown begins.
//!
//! Everything that can fail (the cursor, the stream limit, shutdown) is checked before the
//! answer, so those failures are JSON errors like any other; the stream itself cannot fail.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::tasks::{invalid, number};
use crate::app::App;
use crate::http::routes::Route;
use crate::http::service::{Ctx, Peer, still_admitted};
use crate::http::{ApiError, Response, sse};
use crate::scheduler::{FeedRead, TaskError};

/// How long a stream stays quiet before a keep-alive comment, and how often its
/// credentials are checked again.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Changes sent in one chunk at most.
const BATCH: usize = 256;
/// The reconnection delay clients are asked to use.
const RETRY_MS: u64 = 2000;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The cursor a stream starts after: `Last-Event-ID`, else `?after=`.
fn cursor(ctx: &Ctx) -> Result<Option<u64>, ApiError> {
    if let Some(value) = ctx.head.headers.get(LAST_EVENT_ID) {
        let text = value.to_str().unwrap_or("?").trim();
        if !text.is_empty() {
            return text.parse().map(Some).map_err(|_| {
                invalid("Last-Event-ID: the id of an event of this stream (a whole number)")
            });
        }
    }
    number(ctx, "after")
}

/// Answers the stream (see the module docs).
///
/// # Errors
/// 400 for a malformed cursor; 503 `too_many_streams` past `limits.max_event_streams`;
/// 503 `shutting_down` once shutdown has begun.
pub fn stream(ctx: &Ctx) -> Result<Response, ApiError> {
    let after = cursor(ctx)?;
    let scheduler = &ctx.app.scheduler;
    let closing = scheduler.closing();
    if *closing.borrow() {
        return Err(TaskError::ShuttingDown.into());
    }
    let slot = Arc::clone(&ctx.app.event_streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "{} event streams are open (limits.max_event_streams); follow the long poll \
                     (GET /api/v1/tasks/events?after=SEQ&wait=25s) or retry later",
                    ctx.app.config.limits.max_event_streams
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(30))
        })?;
    // Marked seen before the first read: any change after it wakes the stream.
    let mut seq = scheduler.event_seq();
    let latest = *seq.borrow_and_update();
    let after = after.unwrap_or(latest);
    let mut first = Vec::new();
    sse::write_retry(&mut first, RETRY_MS);
    sse::write_event(
        &mut first,
        Some(after),
        "ready",
        &json!({ "after": after, "latest": latest }).to_string(),
    );
    let start = Instant::now() + KEEP_ALIVE_EVERY;
    let mut keep_alive = tokio::time::interval_at(start, KEEP_ALIVE_EVERY);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let follow = Follow {
        app: Arc::clone(&ctx.app),
        headers: ctx.head.headers.clone(),
        route: ctx.route,
        peer: ctx.peer,
        cursor: after,
        seq,
        closing,
        keep_alive,
        checked: Instant::now(),
        first: Some(Bytes::from(first)),
        _slot: slot,
    };
    Ok(sse::response(futures_util::stream::unfold(
        follow,
        |mut follow| async move {
            let chunk = follow.next().await?;
            Some((chunk, follow))
        },
    )))
}

/// One open stream.
struct Follow {
    app: Arc<App>,
    /// The request's headers, to authenticate it again.
    headers: HeaderMap,
    route: &'static Route,
    peer: Peer,
    /// The last change sent.
    cursor: u64,
    seq: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    keep_alive: Interval,
    /// When the credentials were last found valid.
    checked: Instant,
    first: Option<Bytes>,
    /// The stream's place under `limits.max_event_streams`, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

impl Follow {
    /// The next chunk to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        loop {
            if *self.closing.borrow() {
                return None;
            }
            if self.checked.elapsed() >= KEEP_ALIVE_EVERY {
                if !still_admitted(&self.app, &self.headers, self.route, self.peer).await {
                    tracing::debug!("an event stream's credentials no longer admit it; ending it");
                    return None;
                }
                self.checked = Instant::now();
            }
            self.seq.borrow_and_update();
            let mut out = Vec::new();
            match self.app.scheduler.read_events(self.cursor, BATCH) {
                FeedRead::Behind { latest } => {
                    let reason = if self.cursor > latest {
                        "the sequence started again (cairn restarted): reload"
                    } else {
                        "changes after the cursor are no longer kept: reload"
                    };
                    self.cursor = latest;
                    let data = json!({ "latest": latest, "reason": reason }).to_string();
                    sse::write_event(&mut out, Some(latest), "reset", &data);
                }
                FeedRead::Events(events) => {
                    for event in &events {
                        let data = serde_json::to_string(event).unwrap_or_default();
                        sse::write_event(&mut out, Some(event.seq), "task", &data);
                        self.cursor = event.seq;
                    }
                }
            }
            if !out.is_empty() {
                self.keep_alive.reset();
                return Some(Bytes::from(out));
            }
            tokio::select! {
                changed = self.seq.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.closing.wait_for(|closing| *closing) => return None,
                _ = self.keep_alive.tick() => return Some(Bytes::from_static(sse::KEEP_ALIVE)),
            }
        }
    }
}
