//! The token routes: `GET /kubeconfig` and `GET /exec-credential`.

use axum::response::Response;

use super::Svc;
use crate::api::call::Call;
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::render;
use crate::api::service::kubeconfig::Request;
use crate::api::service::local::Progress;

/// GET /kubeconfig: a kubeconfig for the caller's ready sessions, JSON or YAML by `Accept`.
pub async fn kubeconfig(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let (format, exec) = params::format(&call.query)?;
    let (media, yaml) = params::negotiate(&call.headers);
    let req = Request {
        format: params::kubeconfig_format(media, yaml, format),
        exec,
        wait: params::wait(&call.query, svc.settings.wait_cap())?,
    };
    let caller = svc.caller(call.remote, &call.headers).await?;
    match svc.kubeconfig(&caller, req, &call.rid).await? {
        Progress::Ready(doc) => render::kubeconfig(doc, media, yaml),
        Progress::Pending => Ok(render::pending(None, svc.settings.retry_after())),
    }
}

/// GET /exec-credential[?cluster=]: a short-lived token for kubectl's exec plugin.
pub async fn exec_credential(svc: Svc, call: Call) -> Result<Response, ApiError> {
    let api_version = params::exec_api_version(&call.query)?;
    let wait = params::wait(&call.query, svc.settings.wait_cap())?;
    let cluster = params::text(&call.query, "cluster");
    let caller = svc.caller(call.remote, &call.headers).await?;
    let cred = svc
        .credential(&caller, cluster, &api_version, wait, &call.rid)
        .await?;
    Ok(render::progress(cred, svc.settings.retry_after()))
}
