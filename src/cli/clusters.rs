//! Federation in the CLI: `tka get clusters` (`GET /clusters`) and the per-cluster outcome of a login,
//! which exits 6 when some clusters failed.

use serde_json::Value;

use crate::model::wire::{ClusterResult, UserLoginResponse};

use super::client::Method;
use super::error::{CliError, Exit};
use super::output;
use super::settings::Settings;

/// `tka get clusters`.
pub async fn get_clusters(s: &Settings) -> Result<(), CliError> {
    let api = s.api()?;
    let reply = api.call(Method::Get, "/clusters", &[], false).await?;
    if reply.status != 200 {
        return Err(reply.error());
    }
    let list: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| CliError::other(format!("unexpected answer from the tka server: {e}")))?;
    if !s.text() {
        output::out(output::structured(s.format, &list)?);
    } else if !s.quiet {
        output::out(clusters_text(&list));
    }
    Ok(())
}

/// One line per cluster: name, status, the role a login would get, API server.
pub fn clusters_text(list: &Value) -> String {
    let rows: Vec<[String; 4]> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
            [s("name"), s("status"), s("role"), s("server_url")]
        })
        .collect();
    let header = ["CLUSTER", "STATUS", "ROLE", "SERVER"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|r| {
            let line: Vec<String> = (0..4)
                .map(|i| format!("{:w$}", r[i], w = widths[i]))
                .collect();
            line.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_failure(c: &ClusterResult) -> bool {
    matches!(c.status.as_str(), "failed" | "forbidden" | "conflict")
}

/// After a federated login wrote its kubeconfig: name every cluster that failed and why; exit 6.
pub fn partial(resp: &UserLoginResponse) -> Result<(), CliError> {
    let failed: Vec<String> = resp
        .clusters
        .iter()
        .filter(|c| is_failure(c))
        .map(|c| {
            let why = c
                .error
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or("no reason given");
            format!("{} ({}): {why}", c.name, c.status)
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(CliError::new(
        Exit::Partial,
        format!("signed in, but not on every cluster: {}", failed.join("; ")),
    )
    .advice("the kubeconfig has contexts for the clusters that worked; retry `tka login` later for the others"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failed_clusters_are_named_and_exit_6() {
        let mut r = UserLoginResponse::default();
        assert!(partial(&r).is_ok());
        r.clusters = vec![
            ClusterResult {
                name: "primary".into(),
                status: "ready".into(),
                ..Default::default()
            },
            ClusterResult {
                name: "west".into(),
                status: "failed".into(),
                error: Some(crate::model::wire::ErrorResponse {
                    message: "no answer within 10s".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        let e = partial(&r).unwrap_err();
        assert_eq!(e.exit.code(), 6);
        assert!(
            e.message.contains("west (failed): no answer within 10s"),
            "{}",
            e.message
        );
    }

    #[test]
    fn clusters_table() {
        let t = clusters_text(&json!([
            {"name": "primary", "status": "self", "role": "view", "server_url": "https://a:6443"},
            {"name": "west", "status": "stale", "role": null, "server_url": "https://b:6443"},
        ]));
        assert_eq!(
            t,
            "CLUSTER  STATUS  ROLE  SERVER\nprimary  self    view  https://a:6443\nwest     stale   -     https://b:6443"
        );
    }
}
