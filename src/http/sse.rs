//! Server-Sent Events (`text/event-stream`): the framing, and the response head every
//! stream answers with.
//!
//! An event is `id:`, `event:` and one `data:` line per line of its data, then an empty
//! line; a line that starts with `:` is a comment (keep-alives). A streamed response ends
//! when its producer does (shutdown, a client gone, credentials no longer valid); browsers'
//! `EventSource` then reconnects by itself, sending the last `id` it saw as
//! `Last-Event-ID`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{Body, Response};

/// The comment sent when nothing else was for a while: it keeps proxies and clients from
/// taking a quiet stream for a dead one, and tells cairn when the client has gone.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Whether the client asks for an event stream (`Accept: text/event-stream`).
#[must_use]
pub fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/event-stream")
        })
}

/// Appends one event to `out`. Every line of `data` (split at `\n`, `\r\n` or `\r`, as a
/// client splits them) becomes its own `data:` line, so no line break in the data can end
/// the event early or forge a field.
pub fn write_event(out: &mut Vec<u8>, id: Option<u64>, event: &str, data: &str) {
    debug_assert!(!event.contains(['\n', '\r']), "an event name is one line");
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    let mut rest = data;
    loop {
        let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
}

/// Appends the reconnection delay a client should use (`retry:`).
pub fn write_retry(out: &mut Vec<u8>, millis: u64) {
    out.extend_from_slice(format!("retry: {millis}\n\n").as_bytes());
}

/// A `200 text/event-stream` response over `chunks`: not cached, not buffered by proxies.
pub fn response(chunks: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    let mut response = Response::new(Body::stream(chunks));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and friends would otherwise hold events back in their buffers.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<u64>, name: &str, data: &str) -> String {
        let mut out = Vec::new();
        write_event(&mut out, id, name, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn framing() {
        assert_eq!(
            event(Some(7), "task", r#"{"seq":7}"#),
            "id: 7\nevent: task\ndata: {\"seq\":7}\n\n"
        );
        // Every line of the data is its own data line, whatever the line break.
        assert_eq!(
            event(None, "reset", "a\nb\r\nc\rd"),
            "event: reset\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(None, "x", ""), "event: x\ndata: \n\n");
        assert_eq!(event(None, "x", "a\n"), "event: x\ndata: a\ndata: \n\n");
        // A blank line in the data cannot end the event: no "\n\n" before the end.
        let text = event(Some(1), "task", "one\n\nid: 99\nevent: forged");
        assert_eq!(text.find("\n\n"), Some(text.len() - 2));
        assert!(text.contains("data: id: 99\n"));
        // The task events' JSON is one line already: serde_json escapes line breaks.
        let json = serde_json::to_string(&serde_json::json!({"message": "two\nlines"})).unwrap();
        assert_eq!(
            event(None, "task", &json),
            "event: task\ndata: {\"message\":\"two\\nlines\"}\n\n"
        );
        let mut out = Vec::new();
        write_retry(&mut out, 3000);
        assert_eq!(out, b"retry: 3000\n\n");
    }

    #[test]
    fn accept_negotiation() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
            wanted(&headers)
        };
        assert!(accept("text/event-stream"));
        assert!(accept("application/json, Text/Event-Stream;q=0.9"));
        assert!(!accept("application/json"));
        assert!(!accept("*/*"));
        assert!(!wanted(&HeaderMap::new()));
    }
}
