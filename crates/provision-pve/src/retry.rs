//! Retry with jittered exponential backoff (decided by [`PveError::retryable`]), the one
//! detector of Proxmox's lock timeout, and the per-Proxmox-node request limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::PveError;

/// How often and how patiently a request is repeated.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
    /// Attempts in total (the first one included).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// No retries at all (tests of the first answer).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Delays from `base` doubling up to 10 s (the pause between attempts of a whole step;
    /// the caller counts the attempts).
    pub fn doubling(base: Duration) -> Self {
        RetryPolicy {
            base_delay: base,
            max_delay: Duration::from_secs(10),
            max_attempts: u32::MAX,
        }
    }

    /// The upper bound of the delay after failed attempt `attempt` (1-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay after failed attempt `attempt`: uniform in [ceiling/2, ceiling] so that
    /// parallel callers that failed together do not come back together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_micros() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            rand::rng().random_range(0..=spread)
        };
        half + Duration::from_micros(jitter)
    }

    /// Whether to try again after `error` on attempt `attempt` (1-based).
    pub fn should_retry(&self, error: &PveError, idempotent: bool, attempt: u32) -> bool {
        attempt < self.max_attempts && error.retryable(idempotent)
    }
}

/// Whether a message is Proxmox's lock timeout (`PVE::Tools::lock_file_full`:
/// `can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout`, also the storage lock
/// `/var/lock/pve-manager/pve-storage-ID` every allocation and linked clone takes; on a shared
/// storage that lock is pmxcfs's: `cfs-lock 'storage-ID' error: got lock request timeout`), as
/// an HTTP error message, a task's exit status or a task log line; or the transient config lock
/// of a VM a create or clone is still making (`PVE::AbstractConfig::check_lock`: `VM is locked
/// (clone)`, e.g. cloning a template whose own create has not finished). All pass when the
/// holder is done, so all are retried.
pub fn is_lock_timeout(message: &str) -> bool {
    (message.contains("can't lock file") && message.contains("got timeout"))
        || (message.contains("cfs-lock '") && message.contains("got lock request timeout"))
        || message.contains("VM is locked (clone)")
        || message.contains("VM is locked (create)")
}

/// The lock a lock-timeout message names: a lock file, or a pmxcfs lock's id.
pub fn lock_file_of(message: &str) -> Option<&str> {
    let start = ["can't lock file '", "cfs-lock '"]
        .iter()
        .find_map(|prefix| Some(message.find(prefix)? + prefix.len()))?;
    let rest = &message[start..];
    Some(&rest[..rest.find('\'')?])
}

/// The first of `messages` that is a lock timeout, with the lock file it names (if any).
pub fn find_lock_timeout<'a>(
    messages: impl IntoIterator<Item = &'a str>,
) -> Option<(&'a str, Option<&'a str>)> {
    messages
        .into_iter()
        .find(|message| is_lock_timeout(message))
        .map(|message| (message, lock_file_of(message)))
}

/// Whether an HTTP method can be repeated after an unknown outcome without changing the result.
pub fn method_is_idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "PUT" | "DELETE"
    )
}

/// The Proxmox node a request path targets (`/nodes/{node}/…`), whose daemons serve it.
pub fn node_of_path(path: &str) -> Option<&str> {
    let rest = path.trim_start_matches('/').strip_prefix("nodes/")?;
    let node = rest.split(['/', '?']).next()?;
    (!node.is_empty()).then_some(node)
}

/// Bounds concurrent requests: at most `per_node` to one Proxmox node (pvedaemon has a small
/// worker pool) and `global` in total.
#[derive(Debug)]
pub struct ConcurrencyLimits {
    per_node: usize,
    global: Arc<Semaphore>,
    nodes: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Held for the duration of one request.
#[derive(Debug)]
pub struct RequestPermit {
    _global: OwnedSemaphorePermit,
    _node: Option<OwnedSemaphorePermit>,
}

impl ConcurrencyLimits {
    pub fn new(per_node: usize, global: usize) -> Self {
        ConcurrencyLimits {
            per_node: per_node.max(1),
            global: Arc::new(Semaphore::new(global.max(1))),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn node_semaphore(&self, node: &str) -> Arc<Semaphore> {
        let mut nodes = match self.nodes.lock() {
            Ok(nodes) => nodes,
            Err(poisoned) => poisoned.into_inner(),
        };
        nodes
            .entry(node.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_node)))
            .clone()
    }

    /// Waits for room for a request to `path`. The node permit is taken first so a busy node
    /// does not hold global permits while it waits.
    pub async fn acquire(&self, path: &str) -> RequestPermit {
        let node = match node_of_path(path) {
            Some(node) => self.node_semaphore(node).acquire_owned().await.ok(),
            None => None,
        };
        // The semaphores are never closed, so acquiring cannot fail; a closed one would
        // only lift the bound.
        let global = loop {
            if let Ok(permit) = self.global.clone().acquire_owned().await {
                break permit;
            }
            tokio::task::yield_now().await;
        };
        RequestPermit {
            _global: global,
            _node: node,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lock_timeout() -> PveError {
        PveError::LockTimeout {
            path: "/var/lock/qemu-server/lock-9000.conf".into(),
            message: "can't lock file".into(),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.ceiling(1), Duration::from_millis(200));
        assert_eq!(policy.ceiling(2), Duration::from_millis(400));
        assert_eq!(policy.ceiling(5), Duration::from_millis(3200));
        assert_eq!(policy.ceiling(6), Duration::from_secs(5));
        assert_eq!(policy.ceiling(60), Duration::from_secs(5));
        for attempt in 1..8 {
            let delay = policy.delay(attempt);
            assert!(delay >= policy.ceiling(attempt) / 2 && delay <= policy.ceiling(attempt));
        }
    }

    #[test]
    fn retries_stop_after_max_attempts() {
        let policy = RetryPolicy::default();
        assert!(policy.should_retry(&lock_timeout(), false, 5));
        assert!(!policy.should_retry(&lock_timeout(), false, 6));
    }

    #[test]
    fn post_with_unknown_outcome_is_not_retried() {
        let unknown = PveError::OutcomeUnknown {
            method: "POST".into(),
            path: "/nodes/pve1/qemu".into(),
            message: "connection reset".into(),
        };
        let policy = RetryPolicy::default();
        assert!(!policy.should_retry(&unknown, method_is_idempotent("POST"), 1));
        assert!(policy.should_retry(&unknown, method_is_idempotent("GET"), 1));
        assert!(policy.should_retry(&unknown, method_is_idempotent("PUT"), 1));
    }

    #[test]
    fn lock_timeouts_are_recognised_with_their_file() {
        let message =
            "clone failed: can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout";
        assert!(is_lock_timeout(message));
        assert!(!is_lock_timeout("can't lock file '/x' - permission denied"));
        assert!(is_lock_timeout("VM is locked (clone)"));
        assert!(is_lock_timeout("VM is locked (create)"));
        assert!(!is_lock_timeout("VM is locked (backup)"));
        assert_eq!(
            find_lock_timeout(["VM is locked (clone)"]),
            Some(("VM is locked (clone)", None))
        );
        assert_eq!(
            find_lock_timeout(["TASK OK", message]),
            Some((message, Some("/var/lock/qemu-server/lock-9000.conf")))
        );
        assert_eq!(
            find_lock_timeout(["can't lock file - got timeout"]),
            Some(("can't lock file - got timeout", None))
        );
        assert_eq!(find_lock_timeout(["TASK ERROR: no space left"]), None);
        // The storage lock: a local storage's file, a shared storage's pmxcfs lock.
        let local = "unable to create VM 101 - can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout";
        assert_eq!(
            find_lock_timeout([local]),
            Some((local, Some("/var/lock/pve-manager/pve-storage-local-lvm")))
        );
        let shared = "clone failed: cfs-lock 'storage-ceph' error: got lock request timeout";
        assert_eq!(
            find_lock_timeout([shared]),
            Some((shared, Some("storage-ceph")))
        );
        assert!(!is_lock_timeout(
            "cfs-lock 'storage-ceph' error: no quorum!"
        ));
    }

    #[test]
    fn finds_node_in_path() {
        assert_eq!(node_of_path("/nodes/pve1/qemu/100/config"), Some("pve1"));
        assert_eq!(node_of_path("nodes/pve2"), Some("pve2"));
        assert_eq!(node_of_path("/nodes/pve3?x=1"), Some("pve3"));
        assert_eq!(node_of_path("/nodes"), None);
        assert_eq!(node_of_path("/cluster/nextid"), None);
    }

    #[tokio::test]
    async fn per_node_limit_bounds_concurrency() {
        let limits = Arc::new(ConcurrencyLimits::new(2, 10));
        let first = limits.acquire("/nodes/pve1/status").await;
        let _second = limits.acquire("/nodes/pve1/status").await;
        // A third request to pve1 must wait; pve2 is not affected.
        let _other = tokio::time::timeout(
            Duration::from_millis(100),
            limits.acquire("/nodes/pve2/status"),
        )
        .await
        .expect("another node is not blocked");
        let blocked = tokio::time::timeout(
            Duration::from_millis(100),
            limits.acquire("/nodes/pve1/status"),
        )
        .await;
        assert!(blocked.is_err(), "third request to pve1 should wait");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), limits.acquire("/nodes/pve1/x"))
            .await
            .expect("released permit lets the next request in");
    }
}
