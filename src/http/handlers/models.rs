//! The model registry and deployments over REST: `/api/v1/models...`.

use std::collections::HashMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::device::{DeviceChoice, Precision};
use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};
use crate::registry::{ModelView, RegistryError};
use crate::serving::{DeploySettings, DeploymentView, ServeError};

/// A model with its deployment, as every route of this file answers.
#[derive(Serialize)]
struct ModelWithDeployment {
    #[serde(flatten)]
    model: ModelView,
    deployment: Option<DeploymentView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateModel {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateModel {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deploy {
    version: u32,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    precision: Option<String>,
    #[serde(default)]
    instances: Option<u32>,
    #[serde(default)]
    max_batch_size: Option<u32>,
    #[serde(default)]
    max_batch_delay_us: Option<u32>,
    #[serde(default)]
    queue_capacity: Option<u32>,
}

fn name(ctx: &Ctx) -> String {
    ctx.param("name").unwrap_or_default().to_owned()
}

pub(super) fn version_param(ctx: &Ctx) -> Result<u32, ApiError> {
    let text = ctx.param("version").unwrap_or_default();
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "version `{}` is not a version number",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

async fn with_deployment(ctx: &Ctx, model: ModelView) -> Result<Response, ApiError> {
    let deployment = ctx.app.serving.view(&model.name).await?;
    Ok(response::json(
        StatusCode::OK,
        &ModelWithDeployment { model, deployment },
    ))
}

async fn current(ctx: &Ctx, model: &str) -> Result<Response, ApiError> {
    let view = ctx.app.registry.model(model).await?;
    with_deployment(ctx, view).await
}

pub async fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let models = ctx.app.registry.list().await?;
    let mut deployments: HashMap<String, DeploymentView> = ctx.app.serving.views().await?;
    let models: Vec<ModelWithDeployment> = models
        .into_iter()
        .map(|model| ModelWithDeployment {
            deployment: deployments.remove(&model.name),
            model,
        })
        .collect();
    Ok(response::json(StatusCode::OK, &json!({ "models": models })))
}

pub async fn create(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: CreateModel = ctx.json().await?;
    let view = ctx
        .app
        .registry
        .create_model(request.name, request.description, request.tags)
        .await?;
    Ok(response::json(
        StatusCode::CREATED,
        &ModelWithDeployment {
            model: view,
            deployment: None,
        },
    ))
}

pub async fn get(ctx: Ctx) -> Result<Response, ApiError> {
    current(&ctx, &name(&ctx)).await
}

pub async fn update(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: UpdateModel = ctx.json().await?;
    let view = ctx
        .app
        .registry
        .update_model(&name(&ctx), request.description, request.tags)
        .await?;
    with_deployment(&ctx, view).await
}

pub async fn delete(ctx: Ctx) -> Result<Response, ApiError> {
    let model = name(&ctx);
    ctx.app.registry.delete_model(&model).await?;
    Ok(response::json(StatusCode::OK, &json!({ "deleted": model })))
}

pub async fn upload(mut ctx: Ctx) -> Result<Response, ApiError> {
    let model = name(&ctx);
    let signature = ctx
        .head
        .headers
        .get("x-cairn-signature")
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::bad_request("signature_invalid", "X-Cairn-Signature is not ASCII base64")
            })
        })
        .transpose()?;
    let creator = ctx.principal()?.username.clone();
    let mut upload = ctx.app.registry.begin_upload(&model).await?;
    let mut body = ctx.body_reader()?;
    // Any early return drops `upload`, which deletes the partial file.
    while let Some(chunk) = body.next().await? {
        upload.push(chunk).await?;
    }
    let version = upload.finish(signature, creator).await?;
    Ok(response::json(StatusCode::CREATED, &version))
}

pub async fn get_version(ctx: Ctx) -> Result<Response, ApiError> {
    let version = version_param(&ctx)?;
    let (view, _) = ctx.app.registry.version(&name(&ctx), version).await?;
    Ok(response::json(StatusCode::OK, &view))
}

pub async fn delete_version(ctx: Ctx) -> Result<Response, ApiError> {
    let version = version_param(&ctx)?;
    let model = name(&ctx);
    ctx.app.registry.delete_version(&model, version).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "deleted": { "model": model, "version": version } }),
    ))
}

pub async fn deploy(mut ctx: Ctx) -> Result<Response, ApiError> {
    let request: Deploy = ctx.json().await?;
    let model = name(&ctx);
    let mut settings = DeploySettings::new(request.version);
    if let Some(device) = request.device {
        settings.device = match device.as_str() {
            "auto" => DeviceChoice::Auto,
            "gpu" => DeviceChoice::Gpu,
            "cpu" => DeviceChoice::Cpu,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "device: auto, gpu or cpu",
                ));
            }
        };
    }
    if let Some(precision) = request.precision {
        settings.precision = Precision::parse(&precision).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                format!("precision: f32 or f16, not {precision:?}"),
            )
        })?;
    }
    settings.instances = request.instances.unwrap_or(settings.instances);
    settings.max_batch_size = request.max_batch_size.unwrap_or(settings.max_batch_size);
    settings.max_batch_delay_us = request
        .max_batch_delay_us
        .unwrap_or(settings.max_batch_delay_us);
    settings.queue_capacity = request.queue_capacity.unwrap_or(settings.queue_capacity);
    ctx.app.serving.deploy(&model, settings).await?;
    current(&ctx, &model).await
}

pub async fn undeploy(ctx: Ctx) -> Result<Response, ApiError> {
    let model = name(&ctx);
    ctx.app.serving.undeploy(&model).await?;
    current(&ctx, &model).await
}

pub async fn rollback(ctx: Ctx) -> Result<Response, ApiError> {
    let model = name(&ctx);
    ctx.app.serving.rollback(&model).await?;
    current(&ctx, &model).await
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let message = e.to_string();
        match e {
            RegistryError::Invalid(_) => Self::bad_request("invalid_request", message),
            RegistryError::SignatureRequired(_) => {
                Self::new(StatusCode::FORBIDDEN, "signature_required", message)
            }
            RegistryError::SignatureInvalid(_) => {
                Self::new(StatusCode::FORBIDDEN, "signature_invalid", message)
            }
            RegistryError::TooLarge(_) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            }
            RegistryError::Incomplete(_) => Self::bad_request("body_incomplete", message),
            RegistryError::Io(_) => {
                tracing::error!(error = %message, "registry I/O failure");
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage_failed", message)
            }
            RegistryError::Store(store) => store.into(),
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        let message = e.to_string();
        match e {
            ServeError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            ServeError::NotReady(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
                    .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(1))
            }
            ServeError::Invalid(_) | ServeError::Input(_) => {
                Self::bad_request("invalid_request", message)
            }
            ServeError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            ServeError::MemoryExceeded(_) => {
                Self::new(StatusCode::CONFLICT, "memory_exceeded", message)
            }
            ServeError::LoadFailed(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "deploy_failed", message)
            }
            ServeError::Busy(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", message)
                .with_header(http::header::RETRY_AFTER, http::HeaderValue::from(1)),
            ServeError::Engine(_) => Self::internal(message),
            ServeError::Registry(r) => r.into(),
            ServeError::Store(s) => s.into(),
        }
    }
}
