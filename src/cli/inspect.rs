//! Read-only commands: `tka get login [--explain]`, `tka cluster-info`, `tka version`.

use crate::model::wire::{TkaClusterInfo, UserLoginResponse};
use serde_json::Value;

use super::client::{Method, Reply};
use super::error::CliError;
use super::output::{self, VersionInfo};
use super::settings::Settings;

fn json_body<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, CliError> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        let mut err = CliError::other(format!(
            "unexpected answer from the tka server (HTTP {}): {e}",
            reply.status
        ));
        err.request_id = reply.request_id.clone();
        err
    })
}

/// `tka get login`: `GET /login`; 200 is ready, 202 pending (both exit 0), 401 not signed in (exit 4).
pub async fn get_login(s: &Settings) -> Result<(), CliError> {
    let api = s.api()?;
    let reply = api.call(Method::Get, "/login", &[], false).await?;
    if !matches!(reply.status, 200 | 202) {
        return Err(reply.error());
    }
    let raw: Value = json_body(&reply)?;
    let provisioned = match raw.get("provisioned") {
        Some(p) => p.as_bool().unwrap_or(false),
        None => reply.status == 200, // upstream server
    };
    let resp: UserLoginResponse =
        serde_json::from_value(raw).map_err(|e| CliError::other(e.to_string()))?;
    if s.text() {
        if !s.quiet {
            output::out(output::status_text(&resp, provisioned));
        }
    } else {
        output::out(output::structured(
            s.format,
            &output::without_secrets(&resp),
        )?);
    }
    Ok(())
}

/// `tka get login --explain`: `GET /whoami` (identity, rules, selection, reject reason; no side effects).
pub async fn explain(s: &Settings) -> Result<(), CliError> {
    let api = s.api()?;
    let reply = api.call(Method::Get, "/whoami", &[], false).await?;
    if reply.status != 200 {
        return Err(reply.error());
    }
    let v: Value = json_body(&reply)?;
    if s.text() {
        if !s.quiet {
            output::out(output::whoami_text(&v));
        }
    } else {
        output::out(output::structured(s.format, &v)?);
    }
    Ok(())
}

/// `tka cluster-info`: `GET /cluster-info`.
pub async fn cluster_info(s: &Settings) -> Result<(), CliError> {
    let api = s.api()?;
    let reply = api.call(Method::Get, "/cluster-info", &[], false).await?;
    if reply.status != 200 {
        return Err(reply.error());
    }
    let info: TkaClusterInfo = json_body(&reply)?;
    if s.text() {
        if !s.quiet {
            output::out(output::cluster_info_text(&info));
        }
    } else {
        output::out(output::structured(s.format, &info)?);
    }
    Ok(())
}

/// `tka version [-o json|yaml]`.
pub fn version(format: crate::config::OutputFormat) -> Result<(), CliError> {
    let v = VersionInfo::current();
    match format {
        crate::config::OutputFormat::Text => output::out(v.text()),
        f => output::out(output::structured(f, &v)?),
    }
    Ok(())
}
