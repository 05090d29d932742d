//! The serving ceiling for the load benchmark (issue 8): a bare hyper 1 + tokio HTTP/1.1 server
//! that does only what any KServe V2 server must do for a JSON infer request — read the body,
//! parse it with serde_json into the V2 request shape (`inputs: [{name, shape, datatype,
//! data: [f32]}]`) — and answers a fixed JSON body. No routing, auth, batching or inference:
//! whatever cairn loses against it is cairn's own overhead.
//!
//! It serves until killed. The address comes from the first argument that parses as a socket
//! address, else `CEILING_ADDR`, else `127.0.0.1:18090`; the bound address is printed on
//! stdout as `ceiling listening on ADDR` (port 0 picks a free port).
//!
//!     cargo bench --bench ceiling --no-run     # prints the binary's path
//!     target/release/deps/ceiling-<hash> 127.0.0.1:0
//!     cargo bench --bench ceiling              # serves on CEILING_ADDR or the default
//!
//! `benches/load/compare.sh` runs it beside cairn and MLServer. Under `cargo bench` (argv has
//! `--bench`) it serves as well — it is not a measuring harness, stop it with Ctrl-C.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:18090";

/// A V2 infer response of the digits model's size ([1, 10] probabilities).
const RESPONSE: &str = r#"{"model_name":"ceiling","model_version":"1","outputs":[{"name":"probabilities","shape":[1,10],"datatype":"FP32","data":[0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]}]}"#;

#[derive(Deserialize)]
struct InferRequest {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Input {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Vec<f32>,
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"{\"error\":\"body\"}"),
            ));
        }
    };
    match serde_json::from_slice::<InferRequest>(&body) {
        Ok(r) if !r.inputs.is_empty() => {
            std::hint::black_box(&r);
            Ok(reply(
                StatusCode::OK,
                Bytes::from_static(RESPONSE.as_bytes()),
            ))
        }
        _ => Ok(reply(
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"{\"error\":\"invalid request\"}"),
        )),
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn address() -> SocketAddr {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| {
            std::env::var("CEILING_ADDR")
                .ok()
                .and_then(|a| a.parse().ok())
        })
        .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("default address"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(address()).await?;
    let local = listener.local_addr()?;
    println!("ceiling listening on {local}");
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
