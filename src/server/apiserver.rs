//! The server's one Kubernetes client: request metrics, and a retry policy for an apiserver that pushes back.
//!
//! The apiserver answers 429 when tka's API Priority and Fairness level is full (a login storm, or a small
//! level), and 503/504 while it is overloaded or restarting. kube's default policy waits what `Retry-After`
//! says, and APF raises that value while it keeps dropping requests (tens of seconds): in the storm bench's
//! push-back phase a third of the logouts slept past their 20 s deadline and answered `503 timeout`, with the
//! apiserver idle again a second later. Here a pause is at most [`MAX_PAUSE`], whatever the header says, so
//! a request keeps trying until its caller gives up: a user's request ends with its deadline (the handler's
//! future is dropped), the controller's after [`RETRIES`] attempts and is requeued. Retrying sooner than
//! asked costs the apiserver little: a 429 is answered before any work, and tka's retries are bounded by the
//! requests it has in flight.
//!
//! kube's own `RetryPolicy` either waits all `Retry-After` asks (the failure above) or ignores it and backs off
//! from its shortest pause; this one takes what the server asked as the least pause, up to the cap.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};

use crate::telemetry::Metrics;
use crate::telemetry::kube_api::KubeApiMetricsLayer;

/// The first pause after a 429/503/504; it doubles (with jitter) up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two attempts, whatever `Retry-After` asks for.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// Attempts after the first: about 40 s of retrying at the longest pause.
const RETRIES: u32 = 40;
/// Requests waiting for the retrying layer; the client is shared by the API and the controller.
const QUEUE: usize = 1024;

/// The client from `config`, counting every attempt in `tka_kube_api_requests_total` (a 429 too).
pub fn client(
    mut config: kube::Config,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&KubeApiMetricsLayer(metrics))
        // Retrying needs a service it can clone; the buffer makes the boxed stack one.
        .with_layer(&BufferLayer::new(QUEUE))
        .with_layer(&RetryLayer::new(Pushback::default()))
        .build())
}

/// Retries 429, 503 and 504 with a capped, jittered backoff. One per request (the layer clones it).
#[derive(Clone, Default)]
struct Pushback {
    retries: u32,
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for Pushback {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        let retryable = matches!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        );
        if !retryable || self.retries >= RETRIES {
            return None;
        }
        let asked = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse().ok())
            .map(Duration::from_secs);
        let delay = pause(self.retries, asked, rand::random());
        self.retries += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        // Streamed bodies cannot be sent twice; tka sends none, but such a request is simply not retried.
        let mut clone = Request::new(req.body().try_clone()?);
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

/// The pause before retry number `retry` (0 for the first): [`FIRST_PAUSE`] doubling up to [`MAX_PAUSE`], or
/// what `Retry-After` asked (up to [`MAX_PAUSE`]) when that is longer; its upper half jittered by `jitter`
/// (0..1). The jitter also applies to what the server asked: APF gives every request it rejects the same
/// `Retry-After`, and requests rejected together must not all come back in the same instant.
fn pause(retry: u32, asked: Option<Duration>, jitter: f64) -> Duration {
    let base = FIRST_PAUSE
        .saturating_mul(1u32 << retry.min(16))
        .max(asked.unwrap_or_default())
        .min(MAX_PAUSE);
    base / 2 + (base / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_a_long_retry_after_is_capped() {
        assert_eq!(pause(0, None, 0.0), Duration::from_millis(25));
        assert_eq!(pause(0, None, 1.0), Duration::from_millis(50));
        assert_eq!(pause(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(pause(30, None, 1.0), MAX_PAUSE);
        assert_eq!(pause(30, None, 0.0), MAX_PAUSE / 2);
        // APF's Retry-After grows while it keeps dropping; a request must not sleep past its caller.
        assert_eq!(pause(0, Some(Duration::from_secs(32)), 1.0), MAX_PAUSE);
        assert_eq!(
            pause(0, Some(Duration::from_secs(32)), 0.5),
            MAX_PAUSE * 3 / 4
        );
        // What the server asked is jittered too: its rejects must not all return at once.
        let asked = Some(Duration::from_millis(800));
        assert_eq!(pause(0, asked, 0.0), Duration::from_millis(400));
        assert_eq!(pause(0, asked, 1.0), Duration::from_millis(800));
    }

    #[tokio::test]
    async fn only_pushback_statuses_are_retried_and_only_so_often() {
        let mut p = Pushback::default();
        let mut req = Request::new(Body::empty());
        let answer = |s: u16| -> Result<Response<()>, BoxError> {
            Ok(Response::builder()
                .status(s)
                .header("retry-after", "60")
                .body(())
                .unwrap())
        };
        for s in [200, 201, 404, 409, 422, 500] {
            assert!(p.retry(&mut req, &mut answer(s)).is_none(), "{s}");
        }
        for _ in 0..RETRIES {
            assert!(p.retry(&mut req, &mut answer(429)).is_some());
        }
        assert!(
            p.retry(&mut req, &mut answer(503)).is_none(),
            "gives up after RETRIES"
        );
        let mut fresh = Pushback::default();
        let mut err: Result<Response<()>, BoxError> = Err("connect".into());
        assert!(
            fresh.retry(&mut req, &mut err).is_none(),
            "transport errors are the caller's"
        );
        let clone = Policy::<_, Response<()>, BoxError>::clone_request(&mut fresh, &req);
        assert!(clone.is_some());
    }
}
