//! Bounded, named, condition-based waiting (in the style of kube-rs's `await_condition`): the
//! one poll loop behind every wait for a Proxmox task, the guest agent, the API VIP and k3s nodes.
//!
//! A wait is a probe that reports [`Check::Met`] or [`Check::Pending`] with what it saw, a
//! timeout, and a [`PollInterval`]. When the timeout expires the last observation comes back
//! in [`WaitError::TimedOut`], so the caller's message says what was seen. Dropping the future
//! cancels the wait between two probes.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::error::PveError;
use super::types::GuestInterface;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check<T, N> {
    /// The condition holds; the wait returns this value.
    Met(T),
    /// Not yet; what was seen, kept for the timeout message.
    Pending(N),
}

/// How long to pause between probes: `initial`, then multiplied by `factor` after every
/// probe, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollInterval {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
}

impl PollInterval {
    /// The same pause every time.
    pub fn fixed(interval: Duration) -> Self {
        PollInterval {
            initial: interval,
            max: interval,
            factor: 1.0,
        }
    }

    /// A pause growing from `initial` by `factor` up to `max`.
    pub fn growing(initial: Duration, max: Duration, factor: f64) -> Self {
        PollInterval {
            initial,
            max,
            factor,
        }
    }

    /// The pause after `current`. A factor below 1 (or not a number) keeps the pause as it is.
    pub fn next(&self, current: Duration) -> Duration {
        let factor = if self.factor.is_finite() && self.factor > 1.0 {
            self.factor
        } else {
            1.0
        };
        Duration::try_from_secs_f64(current.as_secs_f64() * factor)
            .unwrap_or(self.max)
            .min(self.max.max(self.initial))
    }
}

/// Why [`await_condition`] gave up.
#[derive(Debug)]
pub enum WaitError<E, N> {
    /// The probe failed in a way waiting cannot mend.
    Failed(E),
    /// The condition did not hold within `timeout`; `last` is what the last probe saw.
    TimedOut {
        what: String,
        timeout: Duration,
        last: N,
    },
}

impl<E: fmt::Display, N> fmt::Display for WaitError<E, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Failed(error) => error.fmt(f),
            WaitError::TimedOut { what, timeout, .. } => write!(
                f,
                "timed out after {}s waiting for {what}",
                timeout.as_secs()
            ),
        }
    }
}

impl<E, N> std::error::Error for WaitError<E, N>
where
    E: std::error::Error + 'static,
    N: fmt::Debug,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WaitError::Failed(error) => Some(error),
            WaitError::TimedOut { .. } => None,
        }
    }
}

/// Probes until the condition holds, at most `timeout` long (the last probe falls on the
/// deadline), pausing as `interval` says. A probe's `Err` ends the wait at once: probes turn
/// transient failures into [`Check::Pending`] themselves.
pub async fn await_condition<T, N, E, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: PollInterval,
    mut probe: F,
) -> Result<T, WaitError<E, N>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T, N>, E>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = interval.initial;
    loop {
        let last = match probe().await.map_err(WaitError::Failed)? {
            Check::Met(value) => return Ok(value),
            Check::Pending(seen) => seen,
        };
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            tracing::debug!(what, ?timeout, "wait timed out");
            return Err(WaitError::TimedOut {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(pause.min(timeout - elapsed)).await;
        pause = interval.next(pause);
    }
}

/// Condition: the guest agent reports `wanted` among the guest's addresses; pending with the
/// addresses it does report.
pub fn agent_reports_address(interfaces: &[GuestInterface], wanted: &str) -> Check<(), String> {
    let addresses: Vec<&str> = interfaces
        .iter()
        .flat_map(|interface| {
            interface
                .ip_addresses
                .iter()
                .map(|address| address.ip_address.as_str())
        })
        .collect();
    if addresses.contains(&wanted) {
        Check::Met(())
    } else {
        Check::Pending(format!("agent reports {}", addresses.join(", ")))
    }
}

/// Whether a failed guest-agent call ends the wait: a guest whose agent is not running yet
/// answers with a 500 or 400, which waiting mends; credentials, a missing VM or a broken
/// answer do not.
pub fn agent_error_is_final(error: &PveError) -> bool {
    match error {
        PveError::NeverSent { .. }
        | PveError::OutcomeUnknown { .. }
        | PveError::BadRequest { .. }
        | PveError::LockTimeout { .. }
        | PveError::Server { .. }
        | PveError::TaskFailed { .. }
        | PveError::Timeout { .. } => false,
        PveError::FingerprintMismatch { .. }
        | PveError::Unauthorized { .. }
        | PveError::Forbidden { .. }
        | PveError::NotFound { .. }
        | PveError::Decode { .. }
        | PveError::Config { .. } => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::GuestIpAddress;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn intervals_grow_and_cap() {
        let interval =
            PollInterval::growing(Duration::from_millis(20), Duration::from_millis(500), 1.5);
        let mut pause = interval.initial;
        let mut seen = vec![pause];
        for _ in 0..12 {
            pause = interval.next(pause);
            seen.push(pause);
        }
        assert_eq!(seen[1], Duration::from_millis(30));
        assert_eq!(seen[2], Duration::from_millis(45));
        assert_eq!(*seen.last().unwrap(), Duration::from_millis(500));
        let fixed = PollInterval::fixed(Duration::from_secs(2));
        assert_eq!(fixed.next(Duration::from_secs(2)), Duration::from_secs(2));
        let odd =
            PollInterval::growing(Duration::from_millis(10), Duration::from_secs(1), f64::NAN);
        assert_eq!(
            odd.next(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let probes = AtomicU32::new(0);
        let value = await_condition(
            "three probes",
            Duration::from_secs(10),
            PollInterval::fixed(Duration::from_millis(5)),
            || async {
                let n = probes.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, String>(if n == 3 {
                    Check::Met(n)
                } else {
                    Check::Pending(n)
                })
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_observation_after_a_probe_on_the_deadline() {
        let started = tokio::time::Instant::now();
        let probes = AtomicU32::new(0);
        let error = await_condition(
            "never",
            Duration::from_millis(250),
            PollInterval::fixed(Duration::from_millis(100)),
            || async {
                let n = probes.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<Check<(), u32>, String>(Check::Pending(n))
            },
        )
        .await
        .unwrap_err();
        // Probes at about 0, 100, 200 and 250 ms (the deadline); fewer on a busy machine.
        match &error {
            WaitError::TimedOut { last, what, .. } => {
                assert!((2..=4).contains(last), "{last}");
                assert_eq!(what, "never");
            }
            WaitError::Failed(other) => panic!("unexpected {other}"),
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert_eq!(error.to_string(), "timed out after 0s waiting for never");
    }

    #[tokio::test]
    async fn a_probe_error_ends_the_wait() {
        let error = await_condition(
            "failing",
            Duration::from_secs(10),
            PollInterval::fixed(Duration::from_millis(100)),
            || async { Err::<Check<(), ()>, _>("broken") },
        )
        .await
        .unwrap_err();
        assert!(matches!(error, WaitError::Failed("broken")));
    }

    fn interface(addresses: &[&str]) -> GuestInterface {
        GuestInterface {
            name: "eth0".to_owned(),
            hardware_address: None,
            ip_addresses: addresses
                .iter()
                .map(|address| GuestIpAddress {
                    ip_address: (*address).to_owned(),
                    ip_address_type: "ipv4".to_owned(),
                    prefix: 24,
                })
                .collect(),
        }
    }

    #[test]
    fn agent_address_condition() {
        let interfaces = [interface(&["127.0.0.1"]), interface(&["10.0.0.5"])];
        assert_eq!(
            agent_reports_address(&interfaces, "10.0.0.5"),
            Check::Met(())
        );
        assert_eq!(
            agent_reports_address(&interfaces, "10.0.0.6"),
            Check::Pending("agent reports 127.0.0.1, 10.0.0.5".to_owned())
        );
    }

    #[test]
    fn agent_not_running_is_not_final() {
        let not_running = PveError::Server {
            status: 500,
            method: "POST".into(),
            path: "/nodes/pve1/qemu/100/agent/ping".into(),
            message: "QEMU guest agent is not running".into(),
        };
        assert!(!agent_error_is_final(&not_running));
        let gone = PveError::NotFound {
            method: "POST".into(),
            path: "/nodes/pve1/qemu/100/agent/ping".into(),
            message: "no such VM".into(),
        };
        assert!(agent_error_is_final(&gone));
    }
}
