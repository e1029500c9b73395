//! Why a replica is not ready, and what to do about it: one table used by `/ready` (its `reason` and
//! `advice`) and by `tka-server doctor` (which reads `/ready` of the running server and explains it).

/// What `/ready` looks at, gathered by the health endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub shutting_down: bool,
    pub leader: bool,
    /// The apiserver answered within the last 30 s.
    pub kubernetes: bool,
    pub crd: bool,
    pub caches: bool,
    pub tailnet: bool,
    pub listener: bool,
    /// A certificate is loaded (or TLS is off).
    pub tls: bool,
}

/// The first reason not to be ready (`ok` when there is none); `standby` still counts as ready. The order is
/// the start-up order: a later part cannot work while an earlier one does not.
pub fn reason(f: &Facts) -> &'static str {
    if f.shutting_down {
        "shutting_down"
    } else if !f.kubernetes {
        "kubernetes"
    } else if !f.crd {
        "crd"
    } else if !f.leader {
        "standby"
    } else if !f.caches {
        "caches"
    } else if !f.tailnet {
        "tailnet_not_running"
    } else if !f.listener {
        "listener"
    } else if !f.tls {
        "tls"
    } else {
        "ok"
    }
}

/// Whether a replica with this reason serves (a standby is ready so rolling updates progress).
pub fn is_ready(reason: &str) -> bool {
    matches!(reason, "ok" | "standby")
}

/// What an operator should do about a reason; `None` for `ok` and unknown reasons.
pub fn advice(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "shutting_down" => "the process is stopping (SIGTERM); a new pod takes over",
        "kubernetes" => {
            "the apiserver has not answered for 30 s: check the pod's network policy and service account \
             (`tka-server doctor` shows the error)"
        }
        "crd" => "install the TkaSignin CRD: `tka-server crd | kubectl apply -f -`",
        "standby" => "another replica holds the Lease and serves; nothing to do",
        "caches" => {
            "the TkaSignin cache is still filling; if it stays, check the RBAC (`tka-server doctor`)"
        }
        "tailnet_not_running" => {
            "the tailnet node is not Running: check the auth key (TS_AUTHKEY / tailscale.authKeyFile) and that \
             the control server is reachable (`tka-server doctor`)"
        }
        "listener" => "the API listener is not bound yet: see the log for `cannot bind`",
        "tls" => {
            "no certificate is loaded: with tls.mode tailscale the control server must offer HTTPS \
             certificates; with files check tls.certFile and tls.keyFile"
        }
        "funnel_enabled" => {
            "Funnel exposes the API to the internet: `tailscale funnel reset` on this node"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_start_up_order() {
        let all = Facts {
            shutting_down: false,
            leader: true,
            kubernetes: true,
            crd: true,
            caches: true,
            tailnet: true,
            listener: true,
            tls: true,
        };
        assert_eq!(reason(&all), "ok");
        assert_eq!(reason(&Facts { tls: false, ..all }), "tls");
        assert_eq!(
            reason(&Facts {
                tailnet: false,
                listener: false,
                ..all
            }),
            "tailnet_not_running"
        );
        assert_eq!(
            reason(&Facts {
                leader: false,
                tailnet: false,
                ..all
            }),
            "standby"
        );
        assert_eq!(
            reason(&Facts {
                crd: false,
                leader: false,
                ..all
            }),
            "crd"
        );
        assert_eq!(reason(&Facts::default()), "kubernetes");
        assert_eq!(
            reason(&Facts {
                shutting_down: true,
                ..all
            }),
            "shutting_down"
        );
        assert!(is_ready("standby") && is_ready("ok") && !is_ready("crd"));
    }

    #[test]
    fn every_not_ready_reason_has_advice() {
        for r in [
            "shutting_down",
            "kubernetes",
            "crd",
            "caches",
            "tailnet_not_running",
            "listener",
            "tls",
            "funnel_enabled",
        ] {
            assert!(advice(r).is_some_and(|a| !a.is_empty()), "{r}");
        }
        assert_eq!(advice("ok"), None);
    }
}
