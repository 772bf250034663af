//! The physical storage model: every storage instance (a node-local storage on one node, or a
//! shared storage once for the cluster) moves bytes at its bandwidth, shared fairly between the
//! transfers running on it (processor sharing), and charges each operation a fixed overhead
//! before its bytes flow. A task that moves bytes (import, download, upload, full clone, thick
//! allocation) ends when its transfer ends, so four imports at once take four times as long
//! each, and a late joiner slows the others down. Linked clones and thin allocations are
//! transfers of zero bytes: they cost only the overhead.
//!
//! An operation that allocates volumes (a create's new disks, a clone's disks) holds the
//! storage's lock for each of them, as pve-storage's `vdisk_alloc` and `vdisk_clone` run the
//! plugin's allocation inside `cluster_lock_storage` (`lock_file` on
//! `/var/lock/pve-manager/pve-storage-ID` for a local storage, a pmxcfs lock for a shared one):
//! allocations on one storage take turns, in the order they asked, and one that would wait
//! longer than the lock's 10 s timeout fails as Proxmox's does (`can't lock file '…' - got
//! timeout`).
//!
//! Times are wall-clock milliseconds (the simulator's clock); the bandwidth and overheads are
//! simulated per second and scaled by the time scale when a channel is created. Callers pass
//! `now_ms` explicitly, so the model is tested on a virtual clock.

use std::collections::BTreeMap;

use crate::inventory::StorageSpec;

const MIB: f64 = (1u64 << 20) as f64;

/// Bytes left below which a transfer counts as done (rounding of the fair shares).
const EPSILON_BYTES: f64 = 0.5;

/// What one storage can do, at time scale 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StorageModel {
    /// Bytes per simulated second.
    pub bandwidth: f64,
    /// Simulated seconds every operation costs before (and besides) its bytes.
    pub overhead_s: f64,
    /// Simulated seconds one volume allocation (or linked clone) holds the storage's lock:
    /// part of the overhead.
    pub lock_s: f64,
}

/// `lock_file`'s default timeout (pve-common `PVE::Tools::lock_file`), which
/// `cluster_lock_storage` uses; a pmxcfs lock (`cfs_lock_storage`) waits as long.
pub(crate) const LOCK_TIMEOUT_S: f64 = 10.0;

impl StorageModel {
    /// The inventory's figures, or the defaults of the storage's type (crates/pve-sim/README.md,
    /// "Storage model", says where each comes from).
    pub fn of(spec: &StorageSpec) -> StorageModel {
        let (bandwidth_mib_s, overhead_ms, lock_ms) = default_for(&spec.kind);
        StorageModel {
            bandwidth: spec.bandwidth_mib_s.unwrap_or(bandwidth_mib_s).max(1.0) * MIB,
            overhead_s: spec.overhead_ms.unwrap_or(overhead_ms) as f64 / 1000.0,
            lock_s: spec.lock_ms.unwrap_or(lock_ms) as f64 / 1000.0,
        }
    }
}

/// (MiB/s, overhead in ms, lock held per allocation in ms) by storage type: a local SSD behind
/// LVM-thin or a directory, ZFS on the same disk, network storages on 10 GbE.
fn default_for(kind: &str) -> (f64, u64, u64) {
    match kind {
        "lvmthin" | "lvm" => (500.0, 1000, 300),
        "zfspool" | "zfs" => (450.0, 1000, 300),
        "dir" | "btrfs" => (450.0, 500, 100),
        "nfs" | "cifs" | "cephfs" | "rbd" | "iscsi" | "iscsidirect" | "glusterfs" | "pbs" => {
            (1100.0, 1500, 500)
        }
        _ => (200.0, 1000, 300),
    }
}

/// Proxmox's words for a lock timeout on `storage`'s lock: a lock file for a local storage,
/// pmxcfs's lock for a shared one.
pub(crate) fn lock_timeout_message(storage: &StorageSpec) -> String {
    if storage.shared {
        format!(
            "cfs-lock 'storage-{}' error: got lock request timeout",
            storage.name
        )
    } else {
        format!(
            "can't lock file '/var/lock/pve-manager/pve-storage-{}' - got timeout",
            storage.name
        )
    }
}

/// True when allocating a volume of `kind` writes no data (thin provisioning, sparse files).
pub(crate) fn is_thin(kind: &str) -> bool {
    !matches!(kind, "lvm" | "iscsi")
}

/// One transfer on a channel.
#[derive(Debug, Clone)]
struct Job {
    upid: String,
    /// When its overhead is paid and its bytes start to flow.
    ready_ms: f64,
    bytes_left: f64,
    done_ms: Option<f64>,
}

/// One storage instance: its bandwidth per wall-clock millisecond and its transfers. Its times
/// count from `origin_ms` (when it was created): epoch milliseconds as `f64` are too coarse for
/// the sub-millisecond steps of small transfers at small time scales.
#[derive(Debug, Clone)]
struct Channel {
    origin_ms: u64,
    bytes_per_ms: f64,
    overhead_ms: f64,
    /// How long one allocation holds the storage's lock, and when the last one asked for
    /// releases it (FIFO: the lock is free from then on).
    lock_ms: f64,
    lock_free_ms: f64,
    clock_ms: f64,
    jobs: Vec<Job>,
}

impl Channel {
    /// Moves the channel's clock to `until`: the bytes of every transfer whose overhead is paid
    /// flow at an equal share of the bandwidth; a transfer ends when its last byte is written.
    fn advance(&mut self, until: f64) {
        // Each round ends at an event (an overhead paid, a transfer done) or at `until`: at most
        // two events per job.
        for _ in 0..(4 * self.jobs.len() + 4) {
            let clock = self.clock_ms;
            for job in &mut self.jobs {
                if job.done_ms.is_none() && job.ready_ms <= clock && job.bytes_left <= EPSILON_BYTES
                {
                    job.done_ms = Some(clock.max(job.ready_ms));
                }
            }
            let flowing: Vec<usize> = (0..self.jobs.len())
                .filter(|&i| self.jobs[i].done_ms.is_none() && self.jobs[i].ready_ms <= clock)
                .collect();
            let next_ready = self
                .jobs
                .iter()
                .filter(|j| j.done_ms.is_none() && j.ready_ms > clock)
                .map(|j| j.ready_ms)
                .fold(f64::INFINITY, f64::min);
            let share = self.bytes_per_ms / flowing.len().max(1) as f64;
            let next_done = flowing
                .iter()
                .map(|&i| clock + self.jobs[i].bytes_left / share)
                .fold(f64::INFINITY, f64::min);
            let next = next_ready.min(next_done).min(until);
            if !next.is_finite() || (next <= clock && clock >= until) {
                return;
            }
            for &i in &flowing {
                let job = &mut self.jobs[i];
                let step = share * (next - clock);
                // The transfer(s) that end at this event end exactly, whatever the rounding.
                job.bytes_left = if job.bytes_left <= step * (1.0 + 1e-12) + EPSILON_BYTES {
                    0.0
                } else {
                    job.bytes_left - step
                };
            }
            self.clock_ms = next;
            if next >= until && next_done > until && next_ready > until {
                return;
            }
        }
    }

    /// `now_ms` on the channel's clock.
    fn since_origin(&self, now_ms: u64) -> f64 {
        now_ms.saturating_sub(self.origin_ms) as f64
    }

    /// When each transfer will end if no other joins.
    fn planned_ends(&self) -> Vec<(String, f64)> {
        let mut future = self.clone();
        future.advance(f64::INFINITY);
        future
            .jobs
            .iter()
            .map(|j| (j.upid.clone(), j.done_ms.unwrap_or(future.clock_ms)))
            .collect()
    }
}

/// Every storage instance's transfers. Not persisted: a reloaded simulator completes the tasks
/// that were running ([`crate::state::Shared`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Transfers {
    channels: BTreeMap<String, Channel>,
}

/// A transfer to start: `bytes` through `storage` (on `node` when it is node-local); `extra_s`
/// simulated seconds of the operation's own work are paid with the storage's overhead;
/// `allocations` volumes are allocated (or cloned) under the storage's lock first.
pub(crate) struct TransferSpec<'a> {
    pub node: &'a str,
    pub storage: &'a StorageSpec,
    pub bytes: u64,
    pub extra_s: f64,
    pub allocations: u32,
}

/// A transfer that could not start: its allocations would have waited for the storage's lock
/// longer than the lock's timeout. The task fails at `at_ms` with `message`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LockTimeout {
    pub at_ms: u64,
    pub message: String,
}

impl Transfers {
    /// Starts a transfer for the task `upid` at `now_ms`; returns every transfer's planned end
    /// on that storage (the new one's and the re-planned ends of those it now shares with).
    pub fn start(
        &mut self,
        now_ms: u64,
        time_scale: f64,
        upid: &str,
        spec: &TransferSpec<'_>,
    ) -> Result<Vec<(String, u64)>, LockTimeout> {
        let key = channel_key(spec.node, spec.storage);
        let model = StorageModel::of(spec.storage);
        let scale = time_scale.max(f64::MIN_POSITIVE);
        let channel = self.channels.entry(key.clone()).or_insert_with(|| Channel {
            origin_ms: now_ms,
            bytes_per_ms: model.bandwidth / (scale * 1000.0),
            overhead_ms: model.overhead_s * scale * 1000.0,
            lock_ms: model.lock_s * scale * 1000.0,
            lock_free_ms: 0.0,
            clock_ms: 0.0,
            jobs: Vec::new(),
        });
        let now = channel.since_origin(now_ms);
        channel.advance(now);
        // The allocations take the lock when the ones before them released it; the overhead
        // (of which the lock's hold is part) runs from then.
        let mut begin = now;
        if spec.allocations > 0 {
            let acquired = channel.lock_free_ms.max(now);
            let timeout_ms = LOCK_TIMEOUT_S * scale * 1000.0;
            if acquired - now > timeout_ms {
                return Err(LockTimeout {
                    at_ms: now_ms.saturating_add(timeout_ms.ceil() as u64),
                    message: lock_timeout_message(spec.storage),
                });
            }
            let held = channel.lock_ms * f64::from(spec.allocations);
            channel.lock_free_ms = acquired + held;
            begin = acquired + (held - channel.overhead_ms).max(0.0);
        }
        let ready_ms = begin + channel.overhead_ms + spec.extra_s.max(0.0) * scale * 1000.0;
        channel.jobs.push(Job {
            upid: upid.to_owned(),
            ready_ms,
            bytes_left: spec.bytes as f64,
            done_ms: None,
        });
        Ok(self.ends_of(&key))
    }

    /// The task `upid` ended (completed, failed, or was completed by hand): its transfer leaves
    /// its storage; returns the re-planned ends of the others there.
    pub fn finish(&mut self, now_ms: u64, upid: &str) -> Vec<(String, u64)> {
        let Some(key) = self
            .channels
            .iter()
            .find(|(_, c)| c.jobs.iter().any(|j| j.upid == upid))
            .map(|(key, _)| key.clone())
        else {
            return Vec::new();
        };
        let Some(channel) = self.channels.get_mut(&key) else {
            return Vec::new();
        };
        let now = channel.since_origin(now_ms);
        channel.advance(now);
        channel.jobs.retain(|j| j.upid != upid);
        if channel.jobs.is_empty() && channel.lock_free_ms <= now {
            self.channels.remove(&key);
            return Vec::new();
        }
        self.ends_of(&key)
    }

    fn ends_of(&self, key: &str) -> Vec<(String, u64)> {
        self.channels.get(key).map_or_else(Vec::new, |channel| {
            channel
                .planned_ends()
                .into_iter()
                .map(|(upid, end)| {
                    let end = (end - 1e-6).ceil().max(0.0) as u64;
                    (upid, channel.origin_ms.saturating_add(end))
                })
                .collect()
        })
    }
}

fn channel_key(node: &str, storage: &StorageSpec) -> String {
    if storage.shared {
        storage.name.clone()
    } else {
        format!("{node}/{}", storage.name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const GIB: u64 = 1 << 30;

    fn storage(shared: bool) -> StorageSpec {
        StorageSpec {
            name: "local-lvm".to_owned(),
            kind: "lvmthin".to_owned(),
            content: vec!["images".to_owned()],
            size_gib: 1000,
            shared,
            // 1 GiB/s and 1 s per operation keep the arithmetic readable.
            bandwidth_mib_s: Some(1024.0),
            overhead_ms: Some(1000),
            lock_ms: Some(250),
        }
    }

    fn transfer<'a>(node: &'a str, storage: &'a StorageSpec, bytes: u64) -> TransferSpec<'a> {
        TransferSpec {
            node,
            storage,
            bytes,
            extra_s: 0.0,
            allocations: 0,
        }
    }

    fn end_of(ends: &[(String, u64)], upid: &str) -> u64 {
        ends.iter()
            .find(|(u, _)| u == upid)
            .map(|(_, e)| *e)
            .unwrap_or(0)
    }

    #[test]
    fn one_transfer_takes_bytes_over_bandwidth_plus_overhead() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        let ends = transfers
            .start(10_000, 1.0, "a", &transfer("pve1", &local, 2 * GIB))
            .unwrap();
        // 1 s overhead + 2 GiB at 1 GiB/s.
        assert_eq!(end_of(&ends, "a"), 10_000 + 3_000);
        // The time scale shrinks the wall-clock time.
        let mut scaled = Transfers::default();
        let ends = scaled
            .start(0, 0.1, "a", &transfer("pve1", &local, 2 * GIB))
            .unwrap();
        assert_eq!(end_of(&ends, "a"), 300);
    }

    #[test]
    fn four_concurrent_transfers_each_take_four_times_as_long() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        let mut ends = Vec::new();
        for upid in ["a", "b", "c", "d"] {
            ends = transfers
                .start(0, 1.0, upid, &transfer("pve1", &local, 2 * GIB))
                .unwrap();
        }
        for upid in ["a", "b", "c", "d"] {
            // 1 s overhead, then 8 GiB at 1 GiB/s shared by four.
            assert_eq!(end_of(&ends, upid), 9_000, "{upid}");
        }
        // Another node's local storage is another channel.
        let other = transfers
            .start(0, 1.0, "e", &transfer("pve2", &local, 2 * GIB))
            .unwrap();
        assert_eq!(end_of(&other, "e"), 3_000);
    }

    #[test]
    fn a_late_joiner_slows_the_others_and_a_leaver_speeds_them_up() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        let ends = transfers
            .start(0, 1.0, "a", &transfer("pve1", &local, 4 * GIB))
            .unwrap();
        assert_eq!(end_of(&ends, "a"), 5_000);
        // At 2 s, "a" has 3 GiB left; "b" starts flowing at 3 s, when "a" has 2 GiB left.
        let ends = transfers
            .start(2_000, 1.0, "b", &transfer("pve1", &local, 2 * GIB))
            .unwrap();
        // From 3 s both move at 0.5 GiB/s: both need 4 s more.
        assert_eq!(end_of(&ends, "a"), 7_000);
        assert_eq!(end_of(&ends, "b"), 7_000);
        // "b" is cancelled at 5 s: "a" has 1 GiB left, alone again.
        let ends = transfers.finish(5_000, "b");
        assert_eq!(end_of(&ends, "a"), 6_000);
    }

    #[test]
    fn thin_allocations_and_linked_clones_cost_only_the_overhead() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        transfers
            .start(0, 1.0, "busy", &transfer("pve1", &local, 100 * GIB))
            .unwrap();
        let ends = transfers
            .start(0, 1.0, "thin", &transfer("pve1", &local, 0))
            .unwrap();
        assert_eq!(end_of(&ends, "thin"), 1_000);
        assert!(is_thin("lvmthin") && is_thin("dir") && !is_thin("lvm"));
    }

    #[test]
    fn a_shared_storage_is_one_channel_for_every_node() {
        let nfs = storage(true);
        let mut transfers = Transfers::default();
        transfers
            .start(0, 1.0, "a", &transfer("pve1", &nfs, GIB))
            .unwrap();
        let ends = transfers
            .start(0, 1.0, "b", &transfer("pve2", &nfs, GIB))
            .unwrap();
        assert_eq!(end_of(&ends, "a"), 3_000);
        assert_eq!(end_of(&ends, "b"), 3_000);
    }

    #[test]
    fn extra_seconds_delay_the_bytes() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        let spec = TransferSpec {
            extra_s: 2.0,
            ..transfer("pve1", &local, GIB)
        };
        let ends = transfers.start(0, 1.0, "a", &spec).unwrap();
        assert_eq!(end_of(&ends, "a"), 4_000);
    }

    #[test]
    fn a_transfer_still_paying_its_own_work_keeps_its_end_when_others_come_and_go() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        let download = TransferSpec {
            extra_s: 10.0,
            ..transfer("pve1", &local, GIB)
        };
        let ends = transfers.start(0, 1.0, "download", &download).unwrap();
        // 1 s overhead + 10 s of its own, then 1 GiB at 1 GiB/s.
        assert_eq!(end_of(&ends, "download"), 12_000);
        let mut later = Vec::new();
        for (n, upid) in ["u1", "u2", "u3"].iter().enumerate() {
            later = transfers
                .start(
                    100 * n as u64,
                    1.0,
                    upid,
                    &transfer("pve1", &local, 1 << 20),
                )
                .unwrap();
        }
        assert_eq!(end_of(&later, "download"), 12_000, "{later:?}");
        let after = transfers.finish(1_500, "u1");
        assert_eq!(end_of(&after, "download"), 12_000, "{after:?}");
    }

    #[test]
    fn a_download_keeps_its_end_on_the_wall_clock_when_an_upload_joins() {
        let local = StorageSpec {
            name: "local".to_owned(),
            kind: "dir".to_owned(),
            content: vec!["iso".to_owned(), "import".to_owned()],
            size_gib: 100,
            shared: false,
            bandwidth_mib_s: None,
            overhead_ms: None,
            lock_ms: None,
        };
        let start = 1_796_121_197_965;
        let mut transfers = Transfers::default();
        let download = TransferSpec {
            extra_s: 13.76,
            ..transfer("pve1", &local, 360_710_144)
        };
        let ends = transfers.start(start, 1.0, "download", &download).unwrap();
        let alone = end_of(&ends, "download");
        assert!(alone > start + 14_000, "{ends:?}");
        let ends = transfers
            .start(
                start + 174,
                1.0,
                "upload",
                &transfer("pve1", &local, 100_000),
            )
            .unwrap();
        assert!(end_of(&ends, "upload") < start + 1_000, "{ends:?}");
        assert_eq!(end_of(&ends, "download"), alone, "{ends:?}");
    }

    fn allocating<'a>(storage: &'a StorageSpec, allocations: u32) -> TransferSpec<'a> {
        TransferSpec {
            allocations,
            ..transfer("pve1", storage, 0)
        }
    }

    #[test]
    fn allocations_on_one_storage_take_turns_on_its_lock() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        // Each linked clone of two disks holds the lock 2 × 250 ms; its 1 s overhead starts
        // when it has the lock (the hold is part of it).
        let mut ends = Vec::new();
        for upid in ["a", "b", "c"] {
            ends = transfers
                .start(0, 1.0, upid, &allocating(&local, 2))
                .unwrap();
        }
        assert_eq!(end_of(&ends, "a"), 1_000);
        assert_eq!(end_of(&ends, "b"), 1_500);
        assert_eq!(end_of(&ends, "c"), 2_000);
        // Without allocations nothing waits for the lock.
        let free = transfers
            .start(0, 1.0, "d", &transfer("pve1", &local, 0))
            .unwrap();
        assert_eq!(end_of(&free, "d"), 1_000);
        // Another node's local storage has its own lock.
        let other = transfers
            .start(
                0,
                1.0,
                "e",
                &TransferSpec {
                    node: "pve2",
                    ..allocating(&local, 2)
                },
            )
            .unwrap();
        assert_eq!(end_of(&other, "e"), 1_000);
        // A hold longer than the overhead delays the rest of the work.
        let many = transfers
            .start(0, 1.0, "f", &allocating(&local, 8))
            .unwrap();
        assert_eq!(end_of(&many, "f"), 1_500 + 2_000);
    }

    #[test]
    fn an_allocation_that_would_wait_past_the_lock_timeout_fails_as_proxmox_says() {
        let local = storage(false);
        let mut transfers = Transfers::default();
        // 40 allocations of 250 ms: the lock is taken for 10 s.
        transfers
            .start(0, 0.5, "long", &allocating(&local, 80))
            .unwrap();
        let failed = transfers
            .start(0, 0.5, "late", &allocating(&local, 1))
            .unwrap_err();
        assert_eq!(failed.at_ms, 5_000);
        assert_eq!(
            failed.message,
            "can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
        );
        // A shared storage's lock is pmxcfs's.
        let nfs = storage(true);
        transfers
            .start(0, 1.0, "n1", &allocating(&nfs, 41))
            .unwrap();
        let failed = transfers
            .start(0, 1.0, "n2", &allocating(&nfs, 1))
            .unwrap_err();
        assert_eq!(
            failed.message,
            "cfs-lock 'storage-local-lvm' error: got lock request timeout"
        );
        // Once the holder is gone and its hold has passed, the lock is free again.
        transfers.finish(20_000, "long");
        let ends = transfers
            .start(20_000, 0.5, "again", &allocating(&local, 1))
            .unwrap();
        assert_eq!(end_of(&ends, "again"), 20_500);
    }
}
