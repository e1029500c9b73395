//! JSON bodies of the tailnet API. Field names are snake_case as upstream; new fields are
//! optional so the upstream Go CLI, which ignores unknown fields, keeps working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Answer of `POST/GET /login` and `POST /logout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserLoginResponse {
    /// The full login name, never truncated at `@`.
    pub username: String,
    pub role: String,
    /// RFC 3339 UTC, second precision.
    pub until: String,
    #[serde(default)]
    pub provisioned: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<ExecCredential>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_info: Option<TkaClusterInfo>,
    /// Federation only: the outcome per cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterResult>,
}

/// One cluster's outcome of a federated login or logout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterResult {
    pub name: String,
    /// `ready`, `pending`, `failed`, `forbidden`, `conflict` (login); `ok`, `failed` (logout).
    pub status: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub error: Option<ErrorResponse>,
}

/// Every error body: upstream's `{message, advice, cause}` plus a stable `code` and the `request_id`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<ErrorResponse>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
}

/// `GET /cluster-info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TkaClusterInfo {
    pub server_url: String,
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
    /// Base64 of the PEM bundle (as upstream); empty when the system roots apply.
    #[serde(default)]
    pub ca_data: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_name: String,
}

/// `client.authentication.k8s.io` ExecCredential (v1 or v1beta1: same shape for what we use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredential {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecCredentialStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecCredentialStatus {
    pub token: String,
    /// RFC 3339 UTC.
    pub expiration_timestamp: String,
}

pub const EXEC_API_V1: &str = "client.authentication.k8s.io/v1";
pub const EXEC_API_V1BETA1: &str = "client.authentication.k8s.io/v1beta1";

impl ExecCredential {
    pub fn new(api_version: &str, token: String, expiration_timestamp: String) -> Self {
        ExecCredential {
            api_version: api_version.to_string(),
            kind: "ExecCredential".into(),
            spec: None,
            status: Some(ExecCredentialStatus {
                token,
                expiration_timestamp,
            }),
        }
    }
}

/// Formats a timestamp as the API does everywhere: RFC 3339, UTC, whole seconds.
pub fn rfc3339(ts: jiff::Timestamp) -> String {
    ts.round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_response_golden() {
        let r = UserLoginResponse {
            username: "alice@example.com".into(),
            role: "view".into(),
            until: "2026-11-24T18:00:00Z".into(),
            provisioned: true,
            cluster: "prod".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"username":"alice@example.com","role":"view","until":"2026-11-24T18:00:00Z","provisioned":true,"cluster":"prod"}"#
        );
        // The upstream server's answer (no new fields) still decodes.
        let old: UserLoginResponse =
            serde_json::from_str(r#"{"username":"a","role":"r","until":"u"}"#).unwrap();
        assert!(!old.provisioned);
    }

    #[test]
    fn error_response_golden() {
        let e = ErrorResponse {
            message: "m".into(),
            code: "no_grant".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"message":"m","code":"no_grant"}"#
        );
    }

    #[test]
    fn exec_credential_golden() {
        let c = ExecCredential::new(EXEC_API_V1BETA1, "t".into(), "2026-11-24T10:15:00Z".into());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t","expirationTimestamp":"2026-11-24T10:15:00Z"}}"#
        );
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let ts: jiff::Timestamp = "2026-11-24T18:00:00.4+01:00".parse().unwrap();
        assert_eq!(rfc3339(ts), "2026-11-24T17:00:00Z");
    }
}
