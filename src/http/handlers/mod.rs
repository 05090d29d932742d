//! Handlers, one file per domain. [`dispatch`] is the one place a [`RouteId`] meets its
//! handler; the match is exhaustive, so a new route without a handler does not compile.

mod audit;
mod auth;
mod health;
mod keys;
mod models;
mod openapi;
mod static_files;
mod system;
mod task_events;
mod tasks;
mod users;
pub mod v2;

use super::Response;
use super::error::ApiError;
use super::routes::RouteId;
use super::service::Ctx;

pub async fn dispatch(id: RouteId, ctx: Ctx) -> Result<Response, ApiError> {
    match id {
        RouteId::Healthz => Ok(health::healthz()),
        RouteId::Readyz => Ok(health::readyz(&ctx).await),
        RouteId::V2Live => Ok(health::v2_live()),
        RouteId::V2Ready => Ok(health::v2_ready(&ctx).await),
        RouteId::V2Metadata => Ok(system::v2_metadata()),
        RouteId::Metrics => Ok(system::metrics(&ctx)),
        RouteId::SystemInfo => system::info(&ctx).await,
        RouteId::ConsoleIndex => static_files::serve(&ctx, "console/index.html"),
        RouteId::Asset => {
            let path = ctx.param("path").unwrap_or_default().to_owned();
            static_files::serve(&ctx, &path)
        }
        RouteId::OpenApi => Ok(openapi::document()),
        RouteId::SetupStatus => auth::setup_status(&ctx),
        RouteId::Setup => auth::setup(ctx).await,
        RouteId::Login => auth::login(ctx).await,
        RouteId::Logout => auth::logout(ctx).await,
        RouteId::Session => auth::session(&ctx),
        RouteId::ListUsers => users::list(ctx).await,
        RouteId::CreateUser => users::create(ctx).await,
        RouteId::Me => users::me(ctx).await,
        RouteId::UpdateMe => users::update_me(ctx).await,
        RouteId::ChangePassword => users::change_password(ctx).await,
        RouteId::GetUser => users::get(ctx).await,
        RouteId::UpdateUser => users::update(ctx).await,
        RouteId::DeleteUser => users::delete(ctx).await,
        RouteId::ListKeys => keys::list(&ctx),
        RouteId::CreateKey => keys::create(ctx).await,
        RouteId::GetKey => keys::get(&ctx),
        RouteId::RevokeKey => keys::revoke(ctx).await,
        RouteId::Audit => audit::list(ctx).await,
        RouteId::ListModels => models::list(ctx).await,
        RouteId::CreateModel => models::create(ctx).await,
        RouteId::GetModel => models::get(ctx).await,
        RouteId::UpdateModel => models::update(ctx).await,
        RouteId::DeleteModel => models::delete(ctx).await,
        RouteId::UploadVersion => models::upload(ctx).await,
        RouteId::GetVersion => models::get_version(ctx).await,
        RouteId::DeleteVersion => models::delete_version(ctx).await,
        RouteId::Deploy => models::deploy(ctx).await,
        RouteId::Undeploy => models::undeploy(ctx).await,
        RouteId::Rollback => models::rollback(ctx).await,
        RouteId::V2ModelMetadata => v2::metadata(ctx, false).await,
        RouteId::V2VersionMetadata => v2::metadata(ctx, true).await,
        RouteId::V2ModelReady => v2::ready(ctx, false).await,
        RouteId::V2VersionReady => v2::ready(ctx, true).await,
        RouteId::V2Infer => v2::infer(ctx, false).await,
        RouteId::V2VersionInfer => v2::infer(ctx, true).await,
        RouteId::V2ModelStats => v2::stats(ctx).await,
        RouteId::V2AllStats => Ok(v2::all_stats(&ctx)),
        RouteId::V2RepositoryIndex => v2::repository_index(ctx).await,
        RouteId::V2RepositoryLoad => v2::repository_load(ctx).await,
        RouteId::V2RepositoryUnload => v2::repository_unload(ctx).await,
        RouteId::ListTasks => tasks::list(ctx).await,
        RouteId::SubmitTask => tasks::submit(ctx).await,
        RouteId::TaskEvents => tasks::events(ctx).await,
        RouteId::GetTask => tasks::get(ctx).await,
        RouteId::DeleteTask => tasks::delete(ctx).await,
        RouteId::CancelTask => tasks::cancel(ctx).await,
        RouteId::PauseTask => tasks::pause(ctx).await,
        RouteId::ResumeTask => tasks::resume(ctx).await,
        RouteId::RetryTask => tasks::retry(ctx).await,
        RouteId::ListSchedules => tasks::list_schedules(ctx).await,
        RouteId::CreateSchedule => tasks::create_schedule(ctx).await,
        RouteId::DeleteSchedule => tasks::delete_schedule(ctx).await,
    }
}
