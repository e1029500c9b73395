//! Query parameters and content negotiation: everything a handler reads from a request besides identity,
//! checked here so a malformed parameter is one clear 400 before any work is done.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::service::kubeconfig::Format;
use super::service::login::Includes;
use crate::model::duration::GoDuration;
use crate::model::wire;

pub type Query = HashMap<String, String>;

/// Effective wait: min(`wait`, `api.maxWait`, `server.writeTimeout − 2s`).
pub fn wait(q: &Query, cap: Duration) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = q.get("wait").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let d = GoDuration::parse(raw).map_err(|e| {
        ApiError::invalid_query(format!("wait: {e}"), "use a Go duration such as wait=30s")
    })?;
    Ok(Some(d.as_std().min(cap)))
}

pub fn flag(q: &Query, key: &str) -> Result<bool, ApiError> {
    match q.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("") | Some("true") | Some("1") => Ok(true),
        Some(other) => Err(ApiError::invalid_query(
            format!("{key}={other:?} is not a boolean"),
            &format!("use {key}=true or {key}=false"),
        )),
    }
}

/// A non-empty parameter.
pub fn text<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// `format=legacy|v1` and `auth=token|exec`: (format if given, exec).
pub fn format(q: &Query) -> Result<(Option<Format>, bool), ApiError> {
    let format = match text(q, "format") {
        None => None,
        Some("legacy") => Some(Format::Legacy),
        Some("v1") => Some(Format::V1),
        Some(other) => {
            return Err(ApiError::invalid_query(
                format!("format={other:?} is unknown"),
                "use format=legacy or format=v1",
            ));
        }
    };
    let exec = match text(q, "auth") {
        None | Some("token") => false,
        Some("exec") => true,
        Some(other) => {
            return Err(ApiError::invalid_query(
                format!("auth={other:?} is unknown"),
                "use auth=token or auth=exec",
            ));
        }
    };
    if exec && format == Some(Format::Legacy) {
        return Err(ApiError::invalid_query(
            "auth=exec needs format=v1".into(),
            "use format=v1&auth=exec",
        ));
    }
    Ok((format, exec))
}

/// `include=kubeconfig,credential,cluster-info` (needs a wait: the objects exist only once ready).
pub fn include(q: &Query, wait: Option<Duration>) -> Result<Includes, ApiError> {
    let mut inc = Includes::default();
    for item in q.get("include").into_iter().flat_map(|v| v.split(',')) {
        match item {
            "" => {}
            "kubeconfig" => inc.kubeconfig = true,
            "credential" => inc.credential = true,
            "cluster-info" => inc.cluster_info = true,
            bad => {
                return Err(ApiError::invalid_query(
                    format!("include={bad:?} is unknown"),
                    "include takes kubeconfig, credential and cluster-info",
                ));
            }
        }
    }
    if inc.any() && wait.is_none() {
        return Err(ApiError::invalid_query(
            "include needs wait".into(),
            "add wait=30s",
        ));
    }
    Ok(inc)
}

/// The repeated `cluster=` parameters (a map keeps only one, so they are read from the raw query).
pub fn clusters(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("cluster="))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

/// `apiVersion` of the ExecCredential kubectl asked for.
pub fn exec_api_version(q: &Query) -> Result<String, ApiError> {
    match text(q, "apiVersion") {
        None => Ok(wire::EXEC_API_V1.into()),
        Some(v) if v == wire::EXEC_API_V1 || v == wire::EXEC_API_V1BETA1 => Ok(v.into()),
        Some(other) => Err(ApiError::invalid_query(
            format!("apiVersion={other:?} is not supported"),
            "use client.authentication.k8s.io/v1 or v1beta1",
        )),
    }
}

/// How a kubeconfig is represented: the vendor type names the loadable v1 document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Media {
    Plain,
    V1,
}

/// Picks the representation from `Accept`, honouring q-values: (explicit v1 media type?, YAML?).
pub fn negotiate(headers: &HeaderMap) -> (Media, bool) {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut best: Option<(f32, Media, bool)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|v| v.trim().parse::<f32>().ok())
            })
            .next()
            .unwrap_or(1.0);
        let kind = match media.as_str() {
            "application/yaml" | "text/yaml" | "application/x-yaml" => (Media::Plain, true),
            "application/vnd.tka.kubeconfig.v1+yaml" => (Media::V1, true),
            "application/vnd.tka.kubeconfig.v1+json" => (Media::V1, false),
            "application/json" | "*/*" | "application/*" => (Media::Plain, false),
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(bq, _, _)| q > bq) {
            best = Some((q, kind.0, kind.1));
        }
    }
    best.map_or((Media::Plain, false), |(_, m, y)| (m, y))
}

/// The document shape for `/kubeconfig`: the v1 media type, `format=v1` or any YAML mean the loadable v1
/// document; otherwise upstream's legacy map.
pub fn kubeconfig_format(media: Media, yaml: bool, format: Option<Format>) -> Format {
    match (media, format) {
        (Media::V1, _) | (_, Some(Format::V1)) => Format::V1,
        _ if yaml => Format::V1,
        _ => Format::Legacy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    fn q(pairs: &[(&str, &str)]) -> Query {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn accept_honours_q_values_and_vendor_types() {
        assert_eq!(negotiate(&HeaderMap::new()), (Media::Plain, false));
        assert_eq!(negotiate(&accept("application/yaml")), (Media::Plain, true));
        assert_eq!(
            negotiate(&accept("application/json;q=0.5, text/yaml")),
            (Media::Plain, true)
        );
        assert_eq!(
            negotiate(&accept("application/yaml;q=0.2, application/json;q=0.9")),
            (Media::Plain, false)
        );
        assert_eq!(
            negotiate(&accept("application/vnd.tka.kubeconfig.v1+json")),
            (Media::V1, false)
        );
        assert_eq!(
            negotiate(&accept("application/x-yaml;q=0")),
            (Media::Plain, false)
        );
    }

    #[test]
    fn parameters_are_checked_before_any_work() {
        let cap = Duration::from_secs(60);
        assert_eq!(wait(&q(&[("wait", "90s")]), cap).unwrap(), Some(cap));
        assert_eq!(
            wait(&q(&[("wait", "x")]), cap).unwrap_err().code,
            "invalid_query"
        );
        assert!(flag(&q(&[("all", "")]), "all").unwrap());
        assert!(flag(&q(&[("all", "maybe")]), "all").is_err());
        assert!(format(&q(&[("format", "legacy"), ("auth", "exec")])).is_err());
        assert_eq!(
            include(&q(&[("include", "kubeconfig")]), None)
                .unwrap_err()
                .code,
            "invalid_query"
        );
        assert!(include(&q(&[("include", "bogus")]), Some(cap)).is_err());
        assert_eq!(
            clusters(Some("cluster=a&wait=1s&cluster=b&cluster=")),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(exec_api_version(&q(&[("apiVersion", "v0")])).is_err());
    }
}
