//! `POST /login`, `GET /login`, `POST /logout`.

use axum::response::Response;

use super::Svc;
use crate::api::call::Call;
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::render;
use crate::api::service::login::LoginRequest;

/// POST /login: a session (new or extended) for the caller's node, with `wait` until it is ready and with
/// `include` the kubeconfig, credential and cluster info in the same answer.
pub async fn login(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let q = &call.query;
    let wait = params::wait(q, svc.settings.wait_cap())?;
    let (format, exec) = params::format(q)?;
    let req = LoginRequest {
        role: params::text(q, "role").map(str::to_string),
        only: params::clusters(call.raw_query.as_deref()),
        wait,
        replace: params::flag(q, "replace")?,
        include: params::include(q, wait)?,
        format,
        exec,
    };
    let caller = svc.caller(call.remote, &call.headers).await?;
    let answer = svc.login(&caller, &req, &call.rid).await?;
    let retry = svc.settings.retry_after();
    Ok(render::login(answer, req.include.any(), retry))
}

/// GET /login: the state of the caller's session on this node, with `wait` until it settles.
pub async fn get_login(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let wait = params::wait(&call.query, svc.settings.wait_cap())?;
    let caller = svc.caller(call.remote, &call.headers).await?;
    let answer = svc.login_state(&caller, wait).await?;
    Ok(render::login(answer, false, svc.settings.retry_after()))
}

/// POST /logout: needs identity only, so a user whose grant was revoked can still log out.
pub async fn logout(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let all = params::flag(&call.query, "all")?;
    let caller = svc.caller(call.remote, &call.headers).await?;
    Ok(render::ok(svc.logout(&caller, all, &call.rid).await?))
}
