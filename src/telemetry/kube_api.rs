//! `tka_kube_api_requests_total` and `tka_kube_api_request_duration_seconds`: a
//! tower layer on the shared kube client. Labels are the verb and resource (bounded), never object names.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use tower::{Layer, Service};

use super::Metrics;

#[derive(Clone)]
pub struct KubeApiMetricsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for KubeApiMetricsLayer {
    type Service = KubeApiMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        KubeApiMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct KubeApiMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KubeApiMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            metrics
                .kube_requests
                .with_label_values(&[verb, &resource, &code])
                .inc();
            metrics
                .kube_request_duration
                .with_label_values(&[verb, &resource])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Verb and resource (with subresource) of a Kubernetes API request path.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let parts: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match parts.first() {
        Some(&"api") if parts.len() >= 2 => &parts[2..],
        Some(&"apis") if parts.len() >= 3 => &parts[3..],
        _ => {
            return (
                verb(method, false, uri),
                parts.first().copied().unwrap_or("other").to_string(),
            );
        }
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [r] => (r.to_string(), false),
        [r, _name] => (r.to_string(), true),
        [r, _name, sub, ..] => (format!("{r}/{sub}"), true),
    };
    (verb(method, named, uri), resource)
}

fn verb(method: &Method, named: bool, uri: &Uri) -> &'static str {
    match *method {
        Method::GET
            if uri
                .query()
                .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1")) =>
        {
            "watch"
        }
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(m: Method, p: &str) -> (&'static str, String) {
        classify(&m, &p.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources_without_names() {
        assert_eq!(
            c(
                Method::POST,
                "/api/v1/namespaces/tka/serviceaccounts/tka-user-x/token"
            ),
            ("create", "serviceaccounts/token".into())
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/tka.specht-labs.de/v1alpha1/namespaces/tka/tkasignins?watch=true&rv=1"
            ),
            ("watch", "tkasignins".into())
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/tka.specht-labs.de/v1alpha1/namespaces/tka/tkasignins"
            ),
            ("list", "tkasignins".into())
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/tka.specht-labs.de/v1alpha1/namespaces/tka/tkasignins/a/status"
            ),
            ("patch", "tkasignins/status".into())
        );
        assert_eq!(
            c(
                Method::DELETE,
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/tka-user-x"
            ),
            ("delete", "clusterrolebindings".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/tka"),
            ("get", "namespaces".into())
        );
        assert_eq!(c(Method::GET, "/version"), ("list", "version".into()));
    }
}
