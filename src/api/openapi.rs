//! `GET /openapi.json`: an OpenAPI 3.1 description of the tailnet API (replaces upstream's `/swagger` UI,
//! which shipped without a spec).

use axum::Json;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

pub async fn document() -> Response {
    Json(spec()).into_response()
}

pub async fn redirect() -> Response {
    Redirect::permanent("/openapi.json").into_response()
}

fn op(summary: &str, params: &[&str], responses: &[(&str, &str)]) -> Value {
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| json!({"name": p, "in": "query", "required": false, "schema": {"type": "string"}}))
        .collect();
    let mut r = serde_json::Map::new();
    for (code, desc) in responses {
        let schema = if code.starts_with('2') {
            json!({})
        } else {
            json!({"$ref": "#/components/schemas/ErrorResponse"})
        };
        r.insert(
            code.to_string(),
            json!({"description": desc, "content": {"application/json": {"schema": schema}}}),
        );
    }
    json!({"summary": summary, "parameters": parameters, "responses": r})
}

pub fn spec() -> Value {
    let common = [
        ("403", "not allowed"),
        ("503", "identity or Kubernetes unavailable"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        extra.iter().chain(common.iter()).copied().collect()
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tka", "version": env!("CARGO_PKG_VERSION"), "description": "Tailscale Kubernetes Auth: short-lived Kubernetes credentials from tailnet identity"},
        "paths": {
            "/api/v1alpha1/login": {
                "post": op("Create or extend the caller's session", &["wait", "role", "replace", "include", "format", "auth"],
                    &with(&[("200", "ready"), ("202", "pending"), ("400", "invalid grant or query"), ("409", "ambiguous grant or role conflict"), ("422", "provisioning failed")])),
                "get": op("Session status", &["wait"], &with(&[("200", "ready"), ("202", "pending"), ("401", "not signed in"), ("422", "provisioning failed")]))
            },
            "/api/v1alpha1/kubeconfig": {"get": op("Mint a token and return a kubeconfig", &["wait", "format", "auth"],
                &with(&[("200", "kubeconfig"), ("202", "pending"), ("401", "not signed in or expired"), ("422", "provisioning failed")]))},
            "/api/v1alpha1/logout": {"post": op("End the caller's session", &["all"], &with(&[("200", "removed session"), ("404", "not signed in")]))},
            "/api/v1alpha1/cluster-info": {"get": op("API endpoint, CA and labels", &[], &with(&[("200", "cluster info")]))},
            "/api/v1alpha1/exec-credential": {"get": op("ExecCredential for kubectl", &["cluster", "apiVersion", "wait"],
                &with(&[("200", "ExecCredential"), ("202", "pending"), ("401", "not signed in or expired")]))},
            "/api/v1alpha1/whoami": {"get": op("Identity and grant evaluation", &["role"], &with(&[("200", "identity")]))},
            "/api/v1alpha1/clusters": {"get": op("Clusters the caller may use", &[], &with(&[("200", "clusters")]))}
        },
        "components": {"schemas": {"ErrorResponse": {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string"}, "advice": {"type": "array", "items": {"type": "string"}},
            "cause": {"$ref": "#/components/schemas/ErrorResponse"}, "code": {"type": "string"}, "request_id": {"type": "string"}}}}}
    })
}
