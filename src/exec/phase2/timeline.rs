//! Where phase 2's time goes: each node's coarse steps (connect, cloud-init, probe, prepare,
//! upload, join token, install, ready) and the cluster-wide ones (inputs, labels and taints,
//! kubeconfig), each with its start as an offset from the start of phase 2 and its duration.
//! `up --output json` reports them; `scripts/bench-testbed-up.sh` adds up the critical path
//! from them.

use std::future::Future;
use std::time::{Duration, Instant};

/// One timed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTiming {
    pub step: &'static str,
    /// Since phase 2 started.
    pub start: Duration,
    pub duration: Duration,
}

/// Phase 2's clock: every [`StepTiming`] is measured from the same origin.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn start() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Runs `future` and appends its start and duration as `step` to `timeline`, whether it
    /// succeeds or fails.
    pub async fn time<T>(
        &self,
        timeline: &mut Vec<StepTiming>,
        step: &'static str,
        future: impl Future<Output = T>,
    ) -> T {
        let start = self.origin.elapsed();
        let output = future.await;
        timeline.push(StepTiming {
            step,
            start,
            duration: self.origin.elapsed().saturating_sub(start),
        });
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn steps_are_recorded_in_order_from_the_origin() {
        let clock = Clock::start();
        let mut timeline = Vec::new();
        let value = clock.time(&mut timeline, "first", async { 7 }).await;
        assert_eq!(value, 7);
        let failed: Result<(), &str> = clock
            .time(&mut timeline, "second", async { Err("no") })
            .await;
        assert_eq!(failed, Err("no"));
        let steps: Vec<&str> = timeline.iter().map(|timing| timing.step).collect();
        assert_eq!(steps, ["first", "second"], "a failed step is timed too");
        assert!(timeline[1].start >= timeline[0].start + timeline[0].duration);
        assert!(clock.elapsed() >= timeline[1].start + timeline[1].duration);
    }
}
