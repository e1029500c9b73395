//! TokenRequest for a session. Tokens are bound to the session Secret, so deleting it revokes them; they are
//! never stored or logged.

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use super::crd::TkaSignin;
use super::error::is_status;
use crate::model::naming;

/// The apiserver's minimum token lifetime.
pub const MIN_TOKEN_SECONDS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the session is not provisioned yet")]
    NotReady,
    #[error("the session's bound Secret is gone or was replaced")]
    SecretGone,
    #[error("TokenRequest failed: {0}")]
    Kube(#[from] kube::Error),
}

/// A minted token and the expiry the apiserver actually granted (it may shorten the request).
pub struct Minted {
    pub token: String,
    pub expires_at: Timestamp,
    /// The JWT's `jti`, joins apiserver audit events to the tailnet identity (Kubernetes ≥ 1.30).
    pub jti: Option<String>,
}

/// Token lifetime for a kubeconfig: the rest of the session, but never below the apiserver's floor. The
/// controller deletes the Secret at `valid_until`, so the floor cannot extend a session.
pub fn kubeconfig_seconds(valid_until: Timestamp, now: Timestamp) -> i64 {
    let left = valid_until.duration_since(now).as_secs_f64().ceil() as i64;
    left.clamp(MIN_TOKEN_SECONDS, u32::MAX as i64)
}

/// Token lifetime for an exec credential: `min(ttl, rest of session)`, floored at 600 s.
pub fn exec_seconds(valid_until: Timestamp, now: Timestamp, ttl: std::time::Duration) -> i64 {
    kubeconfig_seconds(valid_until, now)
        .min(ttl.as_secs() as i64)
        .max(MIN_TOKEN_SECONDS)
}

/// Requests a token for the session's ServiceAccount, bound to its session Secret (name and UID).
pub async fn mint(
    client: &Client,
    namespace: &str,
    signin: &TkaSignin,
    seconds: i64,
    audiences: &[String],
) -> Result<Minted, TokenError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "kube.token_request",
        tka.expiration_seconds = seconds,
        tka.result = tracing::field::Empty
    );
    let result = request_token(client, namespace, signin, seconds, audiences)
        .instrument(span.clone())
        .await;
    span.record(
        "tka.result",
        match &result {
            Ok(_) => "ok",
            Err(TokenError::NotReady) => "not_ready",
            Err(TokenError::SecretGone) => "secret_gone",
            Err(_) => "error",
        },
    );
    result
}

async fn request_token(
    client: &Client,
    namespace: &str,
    signin: &TkaSignin,
    seconds: i64,
    audiences: &[String],
) -> Result<Minted, TokenError> {
    let secret = signin
        .status
        .as_ref()
        .and_then(|s| s.session_secret.clone())
        .ok_or(TokenError::NotReady)?;
    let sa = naming::user_object_name(&signin.spec.subject_key);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.to_vec(),
            expiration_seconds: Some(seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(secret.name),
                uid: Some(secret.uid),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let response = match api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
    {
        Ok(r) => r,
        // The bound Secret was deleted or recreated with another UID (a logout raced us): retryable.
        Err(e) if is_status(&e, 404) || is_status(&e, 409) || is_status(&e, 422) => {
            tracing::debug!(session = %signin.name_any(), error = %e, "TokenRequest refused for a stale session Secret");
            return Err(TokenError::SecretGone);
        }
        Err(e) => return Err(e.into()),
    };
    let status = response.status.ok_or(TokenError::NotReady)?;
    Ok(Minted {
        jti: jwt_id(&status.token),
        token: status.token,
        expires_at: status.expiration_timestamp.0,
    })
}

/// Reads the `jti` claim of a JWT without verifying it (only for audit logging).
fn jwt_id(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(payload.trim_end_matches('=').as_bytes())
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("jti")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_respect_floor_session_and_ttl() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let until: Timestamp = "2026-11-24T18:00:00Z".parse().unwrap();
        assert_eq!(kubeconfig_seconds(until, now), 8 * 3600);
        assert_eq!(
            exec_seconds(until, now, std::time::Duration::from_secs(3600)),
            3600
        );
        let soon: Timestamp = "2026-11-24T10:01:00Z".parse().unwrap();
        assert_eq!(kubeconfig_seconds(soon, now), 600);
        assert_eq!(
            exec_seconds(soon, now, std::time::Duration::from_secs(3600)),
            600
        );
    }

    #[test]
    fn reads_jti_without_verifying() {
        let payload = data_encoding::BASE64URL_NOPAD.encode(br#"{"jti":"abc-123","sub":"x"}"#);
        assert_eq!(
            jwt_id(&format!("h.{payload}.sig")).as_deref(),
            Some("abc-123")
        );
        assert_eq!(jwt_id("garbage"), None);
    }
}
