//! Request bodies read with a deadline per chunk and a minimum average rate.

use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;

use super::error::ApiError;

/// A request body read chunk by chunk: a chunk must arrive within `limits.body_read_timeout`,
/// and past that much time the average rate must stay above `limits.min_body_rate`, so a
/// client cannot hold a connection and its buffers by trickling (or stalling) a body.
pub struct BodyReader {
    body: Incoming,
    started: Instant,
    received: u64,
    timeout: std::time::Duration,
    min_rate: u64,
}

impl BodyReader {
    #[must_use]
    pub fn new(body: Incoming, timeout: std::time::Duration, min_rate: u64) -> Self {
        Self {
            body,
            started: Instant::now(),
            received: 0,
            timeout,
            min_rate,
        }
    }

    /// The next chunk of data, or `None` at the end of the body.
    ///
    /// # Errors
    /// 408 when the body stalls or is too slow; 400 when the client stops mid-body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ApiError> {
        use http_body_util::BodyExt as _;
        loop {
            let frame = match tokio::time::timeout(self.timeout, self.body.frame()).await {
                Err(_) => {
                    return Err(ApiError::new(
                        http::StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        format!(
                            "the request body stalled for {} s (limits.body_read_timeout)",
                            self.timeout.as_secs()
                        ),
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(
                        "body_incomplete",
                        format!("the request body could not be read to its end: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.received += data.len() as u64;
            let elapsed = self.started.elapsed();
            if elapsed > self.timeout && self.min_rate > 0 {
                let rate = self.received as f64 / elapsed.as_secs_f64();
                #[expect(clippy::cast_precision_loss, reason = "a rate comparison")]
                let too_slow = rate < self.min_rate as f64;
                if too_slow {
                    return Err(ApiError::new(
                        http::StatusCode::REQUEST_TIMEOUT,
                        "body_too_slow",
                        format!(
                            "the request body arrives at {rate:.0} bytes/s, below limits.min_body_rate ({} bytes/s)",
                            self.min_rate
                        ),
                    ));
                }
            }
            return Ok(Some(data));
        }
    }

    /// Bytes received so far.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }
}
