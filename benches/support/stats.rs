//! A bounded-concurrency load runner and its summary, shared by the benchmarks.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

/// What a load run produced: every operation's latency, the failures, and the wall time of the whole run.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub errors: Vec<String>,
    pub wall: Duration,
}

impl Run {
    /// Completed operations per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    /// Summary, rate and errors (the first ten in full) as JSON.
    pub fn json(&self) -> Value {
        let mut v = crate::harness::latencies(self.latencies.clone());
        v["wall_s"] = json!(self.wall.as_secs_f64());
        v["per_s"] = json!(self.rate());
        v["errors"] = json!(self.errors.len());
        v["first_errors"] = json!(self.errors.iter().take(10).collect::<Vec<_>>());
        v
    }
}

/// Runs `op(0..n)` with at most `concurrency` in flight; a failed operation is recorded, not retried.
pub async fn run<F, Fut>(n: usize, concurrency: usize, op: F) -> Run
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let results: Vec<(Duration, Result<(), String>)> = futures::stream::iter(0..n)
        .map(|i| {
            let fut = op(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for (d, r) in results {
        match r {
            Ok(()) => latencies.push(d),
            Err(e) => errors.push(e),
        }
    }
    Run {
        latencies,
        errors,
        wall,
    }
}
