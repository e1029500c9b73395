//! Federation routes under `/federation/v1alpha1/`: the primary's heartbeat, and a member's session and
//! token endpoints, which only its primary may call.

use axum::body::Bytes;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::Svc;
use crate::api::call::Call;
use crate::api::error::ApiError;
use crate::api::params;
use crate::api::render;
use crate::federation::FedError;
use crate::identity::PeerIdentity;

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| FedError::InvalidBody(e.to_string()).into())
}

/// POST /heartbeat (primary): a member announces itself.
pub async fn heartbeat(svc: Svc, call: Call, body: Bytes) -> Result<Response, ApiError> {
    if svc.federation().is_member() {
        return Err(FedError::WrongRole("primary").into());
    }
    let peer = svc.peer(call.remote, &call.headers).await?;
    let ack = svc.heartbeat(&peer, decode(&body)?).await?;
    svc.admitted(call.peer);
    Ok(render::ok(ack))
}

/// The primary behind this call, checked; from now on its address has the admitted peers' budget.
async fn checked_primary(svc: &Svc, call: &Call) -> Result<PeerIdentity, ApiError> {
    let primary = svc.peer(call.remote, &call.headers).await?;
    svc.from_primary(&primary).await?;
    svc.admitted(call.peer);
    Ok(primary)
}

/// POST /sessions (member): provision a session the primary asks for.
pub async fn create_session(svc: Svc, call: Call, body: Bytes) -> Result<Response, ApiError> {
    let primary = checked_primary(&svc, &call).await?;
    let wait = params::wait(&call.query, svc.settings.wait_cap())?;
    let answer = svc
        .member_signin(&primary, decode(&body)?, wait, &call.rid)
        .await?;
    Ok(render::login(answer, false, svc.settings.retry_after()))
}

/// GET /sessions (member): `?login_name=&node_id=` or `?origin=federation`.
pub async fn list_sessions(svc: Svc, call: Call) -> Result<Response, ApiError> {
    checked_primary(&svc, &call).await?;
    Ok(render::ok(svc.member_sessions(&call.query)))
}

/// DELETE /sessions (member): only sessions the federation created.
pub async fn delete_sessions(svc: Svc, call: Call, body: Bytes) -> Result<Response, ApiError> {
    checked_primary(&svc, &call).await?;
    Ok(render::ok(
        svc.member_signout(decode(&body)?, &call.rid).await?,
    ))
}

/// POST /tokens (member): a token for a ready federated session.
pub async fn tokens(svc: Svc, call: Call, body: Bytes) -> Result<Response, ApiError> {
    checked_primary(&svc, &call).await?;
    let token = svc.member_mint(decode(&body)?, &call.rid).await?;
    Ok(render::progress(token, svc.settings.retry_after()))
}
