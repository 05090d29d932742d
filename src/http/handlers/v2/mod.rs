//! KServe V2 / Open Inference Protocol routes: model metadata, readiness, inference (JSON
//! and binary tensors), statistics (Triton's extension) and the repository extension.

pub mod codec;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use self::codec::{
    BadRequest, JsonData, OutputParameters, OutputTensor, RequestHeader, ResponseHeader,
};
use super::models::version_param;
use crate::engine::EngineError;
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};
use crate::registry::{TensorView, VersionView};
use crate::serving::{DeploySettings, Deployment, ServeError};

const HEADER_LENGTH: &str = "inference-header-content-length";

fn model_name(ctx: &Ctx) -> String {
    ctx.param("name").unwrap_or_default().to_owned()
}

fn not_found(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!("no model named {model}"),
    )
}

/// The live deployment of the route's model (and version, when the route names one).
async fn deployment(ctx: &Ctx, version: Option<u32>) -> Result<Arc<Deployment>, ApiError> {
    let model = model_name(ctx);
    let live = ctx.app.serving.get(&model);
    match live {
        Some(d) if version.is_none_or(|v| v == d.settings.version) => Ok(d),
        _ => {
            // Why not: unknown model or version (404) or known but not serving (503).
            let view = ctx
                .app
                .registry
                .model(&model)
                .await
                .map_err(|_| not_found(&model))?;
            if let Some(v) = version
                && !view.versions.iter().any(|x| x.version == v)
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("model {model} has no version {v}"),
                ));
            }
            Err(ServeError::NotReady(match version {
                Some(v) => format!("version {v} of model {model} is not deployed"),
                None => format!("model {model} is not deployed"),
            })
            .into())
        }
    }
}

fn tensor_views(specs: &[crate::engine::TensorSpec]) -> Vec<TensorView> {
    specs.iter().map(TensorView::from).collect()
}

pub async fn metadata(ctx: Ctx, versioned: bool) -> Result<Response, ApiError> {
    let model = model_name(&ctx);
    let view = ctx
        .app
        .registry
        .model(&model)
        .await
        .map_err(|_| not_found(&model))?;
    let ready: Vec<&VersionView> = view
        .versions
        .iter()
        .filter(|v| v.state == "ready")
        .collect();
    let versions: Vec<String> = ready.iter().map(|v| v.version.to_string()).collect();
    let live = ctx.app.serving.get(&model);
    let chosen = if versioned {
        let wanted = version_param(&ctx)?;
        view.versions
            .iter()
            .find(|v| v.version == wanted)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("model {model} has no version {wanted}"),
                )
            })?
    } else {
        let current = live.as_ref().map(|d| d.settings.version);
        current
            .and_then(|c| view.versions.iter().find(|v| v.version == c))
            .or_else(|| ready.last().copied())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!("model {model} has no ready version"),
                )
            })?
    };
    let (inputs, outputs) = match live
        .as_ref()
        .filter(|d| d.settings.version == chosen.version)
    {
        Some(d) => (tensor_views(&d.inputs), tensor_views(&d.outputs)),
        None => (chosen.inputs.clone(), chosen.outputs.clone()),
    };
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "name": model,
            "versions": versions,
            "platform": "onnx_onnxv1",
            "inputs": inputs,
            "outputs": outputs,
        }),
    ))
}

pub async fn ready(ctx: Ctx, versioned: bool) -> Result<Response, ApiError> {
    let version = if versioned {
        Some(version_param(&ctx)?)
    } else {
        None
    };
    // KServe V2: 200 is true, a 4xx false (Triton answers 400); an unknown model or
    // version stays a 404.
    match deployment(&ctx, version).await {
        Ok(_) => Ok(response::json(StatusCode::OK, &json!({ "ready": true }))),
        Err(e) if e.code == "not_ready" => Ok(response::json(
            StatusCode::BAD_REQUEST,
            &json!({ "ready": false, "error": e.message, "code": e.code }),
        )),
        Err(e) => Err(e),
    }
}

fn header_length(ctx: &Ctx) -> Result<Option<usize>, ApiError> {
    ctx.head
        .headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        "Inference-Header-Content-Length must be a byte count",
                    )
                })
        })
        .transpose()
}

/// A compressed request body, as tritonclient sends with `request_compression_algorithm`.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Gzip,
    /// zlib's format, as HTTP's `deflate` is (and Python's `zlib.compress` writes).
    Deflate,
}

/// The request's `Content-Encoding`: gzip, deflate or none (identity); 415 for another.
fn content_encoding(ctx: &Ctx) -> Result<Option<Encoding>, ApiError> {
    let values: Vec<&HeaderValue> = ctx
        .head
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .collect();
    if values.is_empty() {
        return Ok(None);
    }
    // One coding at most (layered ones, `gzip, gzip` or two headers, are refused).
    let text = match values[..] {
        [value] => value.to_str().map_or_else(
            |_| "(not text)".to_owned(),
            |v| v.trim().to_ascii_lowercase(),
        ),
        _ => "(several)".to_owned(),
    };
    match text.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Encoding::Gzip)),
        "deflate" => Ok(Some(Encoding::Deflate)),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {text:?}: cairn takes gzip, deflate or none"),
        )
        .with_header(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate"),
        )),
    }
}

/// The body decompressed, at most `limit` bytes of it (a small body may expand a
/// thousandfold: the limit holds for what it expands to). Runs on a blocking thread.
fn decompress(body: &[u8], encoding: Encoding, limit: u64) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
    };
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_encoding",
                format!("the body is not valid {encoding:?} data: {e}"),
            )
        })?;
    if out.len() as u64 > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the decompressed request body is larger than the limit of {limit} bytes \
                 (limits.max_body_bytes)"
            ),
        ));
    }
    Ok(Bytes::from(out))
}

pub async fn infer(mut ctx: Ctx, versioned: bool) -> Result<Response, ApiError> {
    let version = if versioned {
        Some(version_param(&ctx)?)
    } else {
        None
    };
    let deployment = deployment(&ctx, version).await?;
    let metrics = &deployment.metrics;
    // Counted down on drop too: a client that goes away mid-request leaves no count behind.
    struct InFlight<'g>(&'g prometheus_client::metrics::gauge::Gauge);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    metrics.in_flight.inc();
    let guard = InFlight(&metrics.in_flight);
    let result = run(&mut ctx, &deployment).await;
    drop(guard);
    match &result {
        Ok(_) => metrics.success.inc(),
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => metrics.busy.inc(),
        // The client's mistakes (a bad body, one too large or too slow), not the model's.
        Err(e) if e.status.is_client_error() => metrics.invalid.inc(),
        Err(_) => metrics.error.inc(),
    };
    result
}

async fn run(ctx: &mut Ctx, deployment: &Deployment) -> Result<Response, ApiError> {
    let header_len = header_length(ctx)?;
    let encoding = content_encoding(ctx)?;
    let body: Bytes = ctx.body().await?;
    let body = match encoding {
        Some(encoding) => {
            let limit = ctx.app.config.limits.max_body_bytes.0;
            tokio::task::spawn_blocking(move || decompress(&body, encoding, limit))
                .await
                .map_err(|e| ApiError::internal(format!("decompression: {e}")))??
        }
        None => body,
    };
    let (json_part, binary): (&[u8], &[u8]) = match header_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!(
                    "Inference-Header-Content-Length is {n}, the body has {} bytes",
                    body.len()
                ),
            ));
        }
        None => (&body[..], &[][..]),
    };
    let mut request: RequestHeader<'_> = serde_json::from_slice(json_part).map_err(|e| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, format!("inference request: {e}"))
    })?;
    let max_elements =
        usize::try_from(ctx.app.config.engine.max_tensor_bytes.0).unwrap_or(usize::MAX);
    let given = std::mem::take(&mut request.inputs);
    let inputs = codec::decode_inputs(given, &deployment.inputs, binary, max_elements)
        .map_err(|BadRequest(m)| ApiError::bad_request("invalid_request", m))?;
    // The request's `binary_data_output` is the default; an output's own `binary_data`,
    // true or false, wins over it (as Triton decides).
    let all_binary = request
        .parameters
        .as_ref()
        .and_then(|p| p.binary_data_output)
        .unwrap_or(false);
    let requested: Option<Vec<(String, bool)>> = request.outputs.as_ref().map(|outs| {
        outs.iter()
            .map(|o| {
                let binary = o
                    .parameters
                    .as_ref()
                    .and_then(|p| p.binary_data)
                    .unwrap_or(all_binary);
                (o.name.clone(), binary)
            })
            .collect()
    });
    if let Some(requested) = &requested {
        for (name, _) in requested {
            if !deployment.outputs.iter().any(|s| s.name == *name) {
                let names: Vec<&str> = deployment.outputs.iter().map(|s| s.name.as_str()).collect();
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "output {name}: the model has no such output; its outputs are {}",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    let started = Instant::now();
    let answer = deployment.infer(inputs).await?;
    let metrics = &deployment.metrics;
    metrics.queue_seconds.observe(answer.queue.as_secs_f64());
    metrics
        .compute_seconds
        .observe(answer.compute.as_secs_f64());
    #[expect(clippy::cast_precision_loss, reason = "batch sizes are small")]
    metrics.batch_rows.observe(answer.batch_rows as f64);
    let outputs = answer.outputs.map_err(|e| {
        // An operator's refusal comes wrapped in the node it happened in.
        let mut cause = &e;
        while let EngineError::Node { cause: inner, .. } = cause {
            cause = inner;
        }
        match cause {
            EngineError::Input(_) => ApiError::bad_request("invalid_request", e.to_string()),
            // An operator refused the shapes these inputs led to (a model exported with
            // a dynamic batch that it fixes inside, say): the request's, not the server's.
            EngineError::Invalid(_) => {
                // Logged too: the same error type also reports an engine inconsistency.
                tracing::warn!(error = %e, "the model refused a request's inputs");
                ApiError::bad_request(
                    "model_rejected_input",
                    format!("the model cannot run on these inputs: {e}"),
                )
            }
            EngineError::Limit(_) => ApiError::bad_request(
                "limit_exceeded",
                format!("{e} (engine.max_tensor_bytes)"),
            ),
            _ => {
                tracing::warn!(error = %e, elapsed_us = started.elapsed().as_micros(), "inference failed");
                ApiError::from(ServeError::Engine(e.to_string()))
            }
        }
    })?;
    let wanted: Vec<(&(String, burn::tensor::TensorData), bool)> = match &requested {
        Some(requested) => requested
            .iter()
            .filter_map(|(name, binary)| {
                outputs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|o| (o, *binary))
            })
            .collect(),
        None => outputs.iter().map(|o| (o, all_binary)).collect(),
    };
    let mut tail: Vec<&[u8]> = Vec::new();
    let tensors = wanted
        .iter()
        .map(|((name, data), binary)| {
            let shape = data.shape().to_vec();
            let datatype = codec::datatype_of(data.dtype());
            if *binary {
                tail.push(data.as_bytes());
                OutputTensor {
                    name,
                    datatype,
                    shape,
                    parameters: Some(OutputParameters {
                        binary_data_size: data.as_bytes().len(),
                    }),
                    data: None,
                }
            } else {
                OutputTensor {
                    name,
                    datatype,
                    shape,
                    parameters: None,
                    data: Some(JsonData(data)),
                }
            }
        })
        .collect();
    let header = ResponseHeader {
        model_name: &deployment.model_name,
        model_version: deployment.settings.version.to_string(),
        id: request.id.as_deref(),
        outputs: tensors,
    };
    let mut out = serde_json::to_vec(&header)
        .map_err(|e| ApiError::internal(format!("the answer does not serialize: {e}")))?;
    if tail.is_empty() {
        return Ok(response::json_bytes(StatusCode::OK, out));
    }
    let json_len = out.len();
    for part in tail {
        out.extend_from_slice(part);
    }
    let mut resp = response::bytes(StatusCode::OK, "application/octet-stream", out);
    resp.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(resp)
}

fn model_stats(d: &Deployment) -> serde_json::Value {
    let s = d.stats();
    let c = &d.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let pair = |count: u64, ns: u64| json!({ "count": count, "ns": ns });
    // Inputs are decoded and outputs encoded on the request's task, outside an
    // execution: their time is counted in the request's total only.
    let batch_stats: Vec<serde_json::Value> = c
        .by_batch
        .lock()
        .map(|by_batch| {
            by_batch
                .iter()
                .map(|(rows, (count, ns))| {
                    json!({
                        "batch_size": rows,
                        "compute_input": pair(*count, 0),
                        "compute_infer": pair(*count, *ns),
                        "compute_output": pair(*count, 0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": d.model_name,
        "version": d.settings.version.to_string(),
        "last_inference": s.last_inference_ms,
        "inference_count": get(&c.inferences),
        "execution_count": s.executions,
        "inference_stats": {
            "success": pair(s.success, get(&c.success_ns)),
            "fail": pair(s.failure, get(&c.failure_ns)),
            "queue": pair(s.success + s.failure, get(&c.queue_ns)),
            "compute_input": pair(s.success + s.failure, 0),
            "compute_infer": pair(s.success + s.failure, get(&c.compute_ns)),
            "compute_output": pair(s.success + s.failure, 0),
            "cache_hit": pair(0, 0),
            "cache_miss": pair(0, 0),
        },
        "batch_stats": batch_stats,
    })
}

pub async fn stats(ctx: Ctx) -> Result<Response, ApiError> {
    let deployment = deployment(&ctx, None).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "model_stats": [model_stats(&deployment)] }),
    ))
}

pub fn all_stats(ctx: &Ctx) -> Response {
    let stats: Vec<serde_json::Value> = ctx
        .app
        .serving
        .all()
        .iter()
        .map(|d| model_stats(d))
        .collect();
    response::json(StatusCode::OK, &json!({ "model_stats": stats }))
}

pub async fn repository_index(ctx: Ctx) -> Result<Response, ApiError> {
    let models = ctx.app.registry.list().await?;
    let index: Vec<serde_json::Value> = models
        .iter()
        .map(|m| match ctx.app.serving.get(&m.name) {
            Some(d) => json!({ "name": m.name, "version": d.settings.version.to_string(), "state": "READY", "reason": "" }),
            None => json!({ "name": m.name, "state": "UNAVAILABLE", "reason": "not deployed" }),
        })
        .collect();
    Ok(response::json(StatusCode::OK, &index))
}

pub async fn repository_load(ctx: Ctx) -> Result<Response, ApiError> {
    let model = model_name(&ctx);
    if ctx.app.serving.get(&model).is_none() {
        let view = ctx.app.registry.model(&model).await?;
        let newest = view
            .versions
            .iter()
            .rev()
            .find(|v| v.state == "ready")
            .ok_or_else(|| {
                ApiError::from(ServeError::Conflict(format!(
                    "model {model} has no ready version to load"
                )))
            })?;
        ctx.app
            .serving
            .deploy(&model, DeploySettings::new(newest.version))
            .await?;
    }
    Ok(response::json(StatusCode::OK, &json!({})))
}

pub async fn repository_unload(ctx: Ctx) -> Result<Response, ApiError> {
    let model = model_name(&ctx);
    ctx.app.registry.model(&model).await?;
    match ctx.app.serving.undeploy(&model).await {
        Ok(()) | Err(ServeError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut resp = response::json(StatusCode::OK, &json!({}));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
