//! How long to wait before trying the apiserver again: for watches (the controller's, the API's session
//! cache, the cluster-info ConfigMap) and for a reconcile that failed.
//!
//! Both are short when the apiserver is merely away. kube-runtime's default watch backoff doubles from
//! 0.8 s to 30 s and is shared by all of a controller's watches; after an apiserver restart (connection
//! errors, then 403s until its authorizer has synced) the controller and the login path stayed blind for up
//! to a minute, so expired sessions outlived their end and logins waited (found by the chaos soak).

use std::time::Duration;

use kube::runtime::watcher;

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

    #[test]
    fn watches_come_back_within_the_transient_bound() {
        let delays: Vec<Duration> = watch().take(20).collect();
        assert_eq!(delays.len(), 20, "a watch never gives up");
        assert!(delays.iter().all(|d| *d <= TRANSIENT_MAX * 2), "{delays:?}");
        assert!(delays[0] < Duration::from_millis(500), "{delays:?}");
    }
}
