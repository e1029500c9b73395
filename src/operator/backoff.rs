//! How long to wait before trying the apiserver again: for watches (the controller's, the API's session
//! cache, the cluster-info ConfigMap) and for a reconcile that failed.
//!
//! Both are short when the apiserver is merely away. kube-runtime's default watch backoff doubles from
//! 0.8 s to 30 s and is shared by all of a controller's watches; after an apiserver restart (connection
//! errors, then 403s until its authorizer has synced) the controller and the login path stayed blind for up
//! to a minute, so expired sessions outlived their end and logins waited (found by the chaos soak).
//!
//! Each watch backs off on its own ([`paced`]); the controller's merged trigger stream does not pause at
//! all ([`NoPause`]). kube-runtime's trigger backoff pauses *every* watch of the controller after an error of
//! any one of them, and after an apiserver restart each of the five watches answers once with 410 Gone (the
//! new apiserver's watch cache starts past the version it resumed from): five pauses in a row kept the
//! controller blind for 10–15 s after the apiserver was back, and expired sessions outlived their end (the
//! chaos soak's long form, from the debug log of kube_runtime::utils::stream_backoff).

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::{WatchStreamExt, watcher};

/// The longest pause of a watch, and of a reconcile retry after a transient error.
pub const TRANSIENT_MAX: Duration = Duration::from_secs(2);
/// The longest pause of a reconcile retry after an error that waiting will not fix soon (a 403 that stays,
/// an invalid spec): slow, to spare the apiserver when many sessions fail the same way.
pub const LASTING_MAX: Duration = Duration::from_secs(300);

/// Backoff of a watch stream: 200 ms doubling to [`TRANSIENT_MAX`], with jitter so that many replicas do
/// not come back in step; reset by the first event after a success.
pub fn watch() -> watcher::ExponentialBackoff {
    watcher::ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(TRANSIENT_MAX)
            .with_jitter()
            .without_max_times(),
    )
}

/// `events` of a watch with its own [`watch()`] backoff, except after 410 Gone: the watcher has already dropped the
/// version it resumed from and lists again at once (every apiserver restart ends each watch this way, and
/// waiting would only keep the cache stale longer). A list that fails still backs off, and one that
/// succeeds resets the backoff anyway, so skipping the pause adds no loop that was not there.
pub fn paced<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
{
    events
        .filter(|event| {
            let gone =
                matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410);
            futures::future::ready(!gone)
        })
        .backoff(watch())
}

/// The backoff of the controller's merged trigger stream: none. Every watch in it is [`paced`] on its own;
/// a pause here would stop all of them for one's error.
pub struct NoPause;

impl Iterator for NoPause {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoPause {
    fn reset(&mut self) {}
}

/// The pause before the `failures`-th retry (1 for the first) of a reconcile: 1 s, 2 s, 4 s …, capped at
/// [`TRANSIENT_MAX`] when the error says the apiserver is away or busy, else at [`LASTING_MAX`].
pub fn retry(failures: u32, transient: bool) -> Duration {
    let doubled = Duration::from_secs(1u64 << failures.saturating_sub(1).min(9));
    let cap = if transient {
        TRANSIENT_MAX
    } else {
        LASTING_MAX
    };
    doubled.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_and_transient_errors_stay_short() {
        assert_eq!(retry(1, false), Duration::from_secs(1));
        assert_eq!(retry(2, false), Duration::from_secs(2));
        assert_eq!(retry(4, false), Duration::from_secs(8));
        assert_eq!(retry(20, false), LASTING_MAX);
        assert_eq!(retry(0, false), Duration::from_secs(1));
        assert_eq!(retry(1, true), Duration::from_secs(1));
        assert_eq!(retry(4, true), TRANSIENT_MAX);
        assert_eq!(retry(u32::MAX, true), TRANSIENT_MAX);
    }

    fn status(code: u16) -> watcher::Error {
        let mut s = kube::core::Status::failure("too old resource version", "Expired");
        s.code = code;
        watcher::Error::WatchError(Box::new(s))
    }

    /// How long (virtual time) `paced` takes to pass `first` and then one event, and how many items it
    /// passed.
    async fn pause_after(first: watcher::Error) -> (Duration, usize) {
        let events = vec![Err(first), Ok(watcher::Event::<()>::Init)];
        let start = tokio::time::Instant::now();
        let passed: Vec<_> = paced(futures::stream::iter(events)).collect().await;
        (start.elapsed(), passed.len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_lists_again_at_once_after_410_gone_and_backs_off_after_other_errors() {
        let (gone, passed) = pause_after(status(410)).await;
        assert!(gone < Duration::from_millis(50), "410 waited {gone:?}");
        assert_eq!(passed, 1, "the 410 itself is dropped, the event passes");
        let (forbidden, passed) = pause_after(status(403)).await;
        assert_eq!(passed, 2, "other errors pass");
        assert!(
            forbidden >= Duration::from_millis(100),
            "403 waited only {forbidden:?}"
        );
    }

    #[test]
    fn watches_come_back_within_the_transient_bound() {
        let delays: Vec<Duration> = watch().take(20).collect();
        assert_eq!(delays.len(), 20, "a watch never gives up");
        assert!(delays.iter().all(|d| *d <= TRANSIENT_MAX * 2), "{delays:?}");
        assert!(delays[0] < Duration::from_millis(500), "{delays:?}");
    }
}
