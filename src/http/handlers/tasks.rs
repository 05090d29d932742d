//! The task scheduler over REST: `/api/v1/tasks...` and `/api/v1/schedules...`.
//!
//! Live changes come from `GET /api/v1/tasks/events`: a Server-Sent Events stream for a
//! client that sends `Accept: text/event-stream` (`task_events.rs`), else a long poll
//! (`?after=SEQ&wait=25s`) answering a page of changes as JSON.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::service::Ctx;
use crate::http::{ApiError, Response, response};
use crate::scheduler::kinds::Kind;
use crate::scheduler::{DepRef, NewSchedule, NewTask, Status, TaskError};
use crate::store::TaskFilter;

const MAX_LIMIT: usize = 500;
const MAX_WAIT: Duration = Duration::from_secs(60);
const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(untagged)]
enum Priority {
    Number(u8),
    Name(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Dependency {
    Id(u64),
    /// `"#3"`: entry 3 of the same batch.
    Entry(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    kind: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    priority: Option<Priority>,
    /// Not before this unix time in milliseconds.
    #[serde(default)]
    run_at_ms: Option<u64>,
    /// Or: not before this many milliseconds from now.
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    depends_on: Vec<Dependency>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    soft_time_limit_ms: Option<u64>,
    #[serde(default)]
    hard_time_limit_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SubmitBody {
    Batch { tasks: Vec<Submit> },
    One(Box<Submit>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSchedule {
    name: String,
    cron: String,
    kind: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    priority: Option<Priority>,
    /// `skip` (default) or `run_once`.
    #[serde(default)]
    missed: Option<String>,
}

pub(super) fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message.into())
}

fn priority(p: Option<Priority>) -> Result<u8, ApiError> {
    match p {
        None => Ok(5),
        Some(Priority::Number(n)) if n <= 9 => Ok(n),
        Some(Priority::Name(name)) => match name.as_str() {
            "low" => Ok(2),
            "normal" => Ok(5),
            "high" => Ok(8),
            _ => Err(invalid(
                "priority: 0 (lowest) to 9 (highest), or low, normal, high",
            )),
        },
        Some(Priority::Number(_)) => Err(invalid("priority: 0 (lowest) to 9 (highest)")),
    }
}

fn new_task(ctx: &Ctx, submit: Submit, index: usize, batch: usize) -> Result<NewTask, ApiError> {
    let kind = Kind::parse(&submit.kind, &submit.payload).map_err(invalid)?;
    let mut task = NewTask::new(kind, priority(submit.priority)?);
    task.run_at_ms = match (submit.run_at_ms, submit.delay_ms) {
        (Some(_), Some(_)) => return Err(invalid("give run_at_ms or delay_ms, not both")),
        (Some(at), None) => Some(at),
        (None, Some(delay)) => Some(crate::scheduler::wall_ms().saturating_add(delay)),
        (None, None) => None,
    };
    for dep in submit.depends_on {
        task.depends_on.push(match dep {
            Dependency::Id(id) => DepRef::Task(id),
            Dependency::Entry(text) => {
                let entry = text
                    .strip_prefix('#')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n < batch)
                    .ok_or_else(|| {
                        invalid(format!(
                            "task {index}: dependency `{}` is neither a task id nor #N for an entry of this batch",
                            text.chars().take(20).collect::<String>()
                        ))
                    })?;
                DepRef::Batch(entry)
            }
        });
    }
    if let Some(key) = &submit.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(invalid("idempotency_key: 1 to 200 bytes"));
    }
    task.idempotency_key = submit.idempotency_key;
    if submit.max_attempts == Some(0) || submit.max_attempts.is_some_and(|n| n > 100) {
        return Err(invalid("max_attempts: 1 to 100"));
    }
    task.max_attempts = submit.max_attempts;
    let section = &ctx.app.config.scheduler;
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let soft = submit
        .soft_time_limit_ms
        .unwrap_or_else(|| millis(section.soft_time_limit));
    let hard = submit
        .hard_time_limit_ms
        .unwrap_or_else(|| millis(section.hard_time_limit));
    if soft == 0 || hard <= soft {
        return Err(invalid(
            "the hard time limit must be longer than the soft one (soft_time_limit_ms, hard_time_limit_ms)",
        ));
    }
    task.soft_limit_ms = submit.soft_time_limit_ms.map(|_| soft);
    task.hard_limit_ms = submit.hard_time_limit_ms.map(|_| hard);
    if task.soft_limit_ms.is_some() || task.hard_limit_ms.is_some() {
        task.soft_limit_ms = Some(soft);
        task.hard_limit_ms = Some(hard);
    }
    Ok(task)
}

fn id_param(ctx: &Ctx) -> Result<u64, ApiError> {
    let text = ctx.param("id").unwrap_or_default();
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "`{}` is not an id",
                text.chars().take(40).collect::<String>()
            ),
        )
    })
}

pub(super) fn number(ctx: &Ctx, name: &str) -> Result<Option<u64>, ApiError> {
    ctx.query(name)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| invalid(format!("query parameter `{name}` must be a whole number")))
        })
        .transpose()
}

fn wait_param(ctx: &Ctx) -> Result<Option<Duration>, ApiError> {
    ctx.query("wait")
        .filter(|v| !v.is_empty())
        .map(|text| {
            humantime::parse_duration(&text)
                .map(|d| d.min(MAX_WAIT))
                .map_err(|_| invalid("wait: a duration such as 30s"))
        })
        .transpose()
}

pub async fn submit(mut ctx: Ctx) -> Result<Response, ApiError> {
    let body: SubmitBody = ctx.json().await?;
    let (entries, batch) = match body {
        SubmitBody::One(one) => (vec![*one], false),
        SubmitBody::Batch { tasks } => (tasks, true),
    };
    if entries.is_empty() || entries.len() > MAX_BATCH {
        return Err(invalid(format!("a batch holds 1 to {MAX_BATCH} tasks")));
    }
    let count = entries.len();
    let tasks = entries
        .into_iter()
        .enumerate()
        .map(|(i, s)| new_task(&ctx, s, i, count))
        .collect::<Result<Vec<_>, _>>()?;
    let creator = ctx.principal()?.username.clone();
    let ids = ctx.app.scheduler.submit(tasks, &creator).await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        views.push(ctx.app.scheduler.get(id).await?);
    }
    if batch {
        Ok(response::json(
            StatusCode::CREATED,
            &json!({ "tasks": views }),
        ))
    } else {
        Ok(response::json(StatusCode::CREATED, &views[0]))
    }
}

pub async fn list(ctx: Ctx) -> Result<Response, ApiError> {
    let limit = number(&ctx, "limit")?.map_or(50, |l| usize::try_from(l).unwrap_or(MAX_LIMIT));
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let mut statuses = Vec::new();
    for name in ctx
        .query("status")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
    {
        let status = Status::parse(name).ok_or_else(|| {
            invalid(format!(
                "status: one or more (comma-separated) of {}",
                Status::ALL.map(Status::as_str).join(", ")
            ))
        })?;
        statuses.push(status.code());
    }
    let priority = number(&ctx, "priority")?
        .map(|p| {
            u8::try_from(p)
                .ok()
                .filter(|p| *p <= 9)
                .ok_or_else(|| invalid("priority: 0 to 9"))
        })
        .transpose()?;
    let filter = TaskFilter {
        statuses,
        kind: ctx.query("kind").filter(|k| !k.is_empty()),
        priority,
        created_after_ms: number(&ctx, "created_after")?,
        created_before_ms: number(&ctx, "created_before")?,
        before_id: number(&ctx, "cursor")?,
        limit,
    };
    let (tasks, next) = ctx.app.scheduler.list(filter).await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "tasks": tasks, "next_cursor": next }),
    ))
}

pub async fn get(ctx: Ctx) -> Result<Response, ApiError> {
    let id = id_param(&ctx)?;
    let view = match wait_param(&ctx)? {
        Some(wait) => ctx.app.scheduler.wait(id, wait).await?,
        None => ctx.app.scheduler.get(id).await?,
    };
    Ok(response::json(StatusCode::OK, &view))
}

pub async fn events(ctx: Ctx) -> Result<Response, ApiError> {
    if crate::http::sse::wanted(&ctx.head.headers) {
        return super::task_events::stream(&ctx);
    }
    let after = number(&ctx, "after")?.unwrap_or(0);
    let limit = number(&ctx, "limit")?
        .map_or(500, |l| usize::try_from(l).unwrap_or(MAX_LIMIT))
        .clamp(1, 4096);
    let wait = wait_param(&ctx)?.unwrap_or(Duration::ZERO);
    let events = ctx.app.scheduler.events(after, wait, limit).await;
    // The cursor for the next call: after the events returned (a client that is too far
    // behind starts again from the oldest event kept).
    let last = events.last().map_or(after, |e| e.seq);
    Ok(response::json(
        StatusCode::OK,
        &json!({ "events": events, "last": last, "latest": ctx.app.scheduler.last_event() }),
    ))
}

async fn act(ctx: Ctx, action: &str) -> Result<Response, ApiError> {
    let id = id_param(&ctx)?;
    let scheduler = &ctx.app.scheduler;
    match action {
        "cancel" => scheduler.cancel(id).await?,
        "pause" => scheduler.pause(id).await?,
        "resume" => scheduler.resume(id).await?,
        "retry" => scheduler.retry(id).await?,
        _ => return Err(ApiError::not_found()),
    }
    Ok(response::json(StatusCode::OK, &scheduler.get(id).await?))
}

pub async fn cancel(ctx: Ctx) -> Result<Response, ApiError> {
    act(ctx, "cancel").await
}

pub async fn pause(ctx: Ctx) -> Result<Response, ApiError> {
    act(ctx, "pause").await
}

pub async fn resume(ctx: Ctx) -> Result<Response, ApiError> {
    act(ctx, "resume").await
}

pub async fn retry(ctx: Ctx) -> Result<Response, ApiError> {
    act(ctx, "retry").await
}

pub async fn delete(ctx: Ctx) -> Result<Response, ApiError> {
    let id = id_param(&ctx)?;
    ctx.app.scheduler.delete(id).await?;
    Ok(response::json(StatusCode::OK, &json!({ "deleted": id })))
}

pub async fn list_schedules(ctx: Ctx) -> Result<Response, ApiError> {
    let schedules = ctx.app.scheduler.schedules().await?;
    Ok(response::json(
        StatusCode::OK,
        &json!({ "schedules": schedules }),
    ))
}

pub async fn create_schedule(mut ctx: Ctx) -> Result<Response, ApiError> {
    let body: CreateSchedule = ctx.json().await?;
    if body.name.is_empty() || body.name.len() > 100 {
        return Err(invalid("name: 1 to 100 bytes"));
    }
    let run_missed = match body.missed.as_deref() {
        None | Some("skip") => false,
        Some("run_once") => true,
        Some(_) => return Err(invalid("missed: skip or run_once")),
    };
    let spec = NewSchedule {
        name: body.name,
        cron: body.cron,
        kind: Kind::parse(&body.kind, &body.payload).map_err(invalid)?,
        priority: priority(body.priority)?,
        run_missed,
    };
    let creator = ctx.principal()?.username.clone();
    let id = ctx.app.scheduler.create_schedule(spec, &creator).await?;
    let view = ctx
        .app
        .scheduler
        .schedules()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::internal("the new schedule is missing"))?;
    Ok(response::json(StatusCode::CREATED, &view))
}

pub async fn delete_schedule(ctx: Ctx) -> Result<Response, ApiError> {
    let id = id_param(&ctx)?;
    ctx.app.scheduler.delete_schedule(id).await?;
    Ok(response::json(StatusCode::OK, &json!({ "deleted": id })))
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        let message = e.to_string();
        match e {
            TaskError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            TaskError::Invalid(_) => Self::bad_request("invalid_request", message),
            TaskError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            TaskError::Full(_) => Self::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", message)
                .with_header(header::RETRY_AFTER, HeaderValue::from(5)),
            TaskError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
                    .with_header(header::RETRY_AFTER, HeaderValue::from(5))
            }
            TaskError::Store(_) => {
                tracing::error!(error = %message, "task store failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    message,
                )
            }
        }
    }
}
