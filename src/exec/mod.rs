//! Runs a Plan: a DAG of idempotent steps, bounded parallelism, retries decided by error kind, events to the reporter.
//! The plan decides everything (`plan/`); this module only carries it out.
//!
//! Per VM the chain is image (once per node/storage, shared) alongside the ISO upload → intent
//! (state) → create → resize → start → guest agent + address → seed cleanup → ready (state).
//! Every step first reads what Proxmox has and acts only when needed (or knows it from the step
//! before, on its first attempt), so any step may be re-run after a failure or a crash; a
//! converged cluster makes zero mutating calls.

mod apply;
pub mod cluster;
pub mod cluster_status;
mod destroy;
pub mod doctor;
pub mod drain;
pub mod etcd_ops;
pub mod interrupt;
pub mod phase2;
pub mod progress;
pub mod race;
pub mod reap;
pub mod replace;
pub mod retry;
pub mod rolling;
mod runner;
mod seed;
pub mod session;
pub mod simulate;
mod template;
mod vm;

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::plan::PlannedVm;
use crate::profile::model::Role;

pub use apply::{apply, apply_with_gate};
pub use destroy::{DestroyReport, destroy, observe_and_plan_down};
pub use interrupt::{Interrupt, Interrupted, is_interrupted};
pub use progress::{CollectProgress, Events, ExecEvent, NoProgress, ProgressSink};
pub use rolling::{NoGate, RollingGate};

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Concurrent mutating steps per Proxmox node (each holds one while its task runs): the
    /// download, creates, full clones, uploads, starts, stops, destroys and resizes of thick
    /// disks. A linked clone, its resize and a config change move no bytes and take none.
    pub per_node: usize,
    /// Concurrent disk allocations (create/clone) per storage. A storage shares its bandwidth
    /// between the transfers on it (crates/pve-sim/README.md, "Storage model"), so more at once
    /// do not finish sooner in total; what they buy is hiding each operation's fixed latency
    /// (allocation, process start: seconds) behind the others' bytes, which takes two or three
    /// in flight. Two thirds of `per_node` keeps the storage saturated and leaves a third of
    /// the node's slots to the short steps (upload, resize, start) of the VMs already created.
    pub per_storage: usize,
    /// Concurrent clones of one template (`image.strategy` a clone): 1 serialises them.
    /// Proxmox runs them side by side (a shared lock on a stopped template); what bounds them
    /// is the storage's lock each takes for its thin snapshot (`vdisk_clone`, 10 s timeout,
    /// well under a second each), a queue that 16 keep below the timeout; a clone that still
    /// meets it is retried.
    pub clones_per_template: usize,
    /// Attempts per step before giving up.
    pub max_attempts: u32,
    pub backoff: Duration,
    /// Bound on any one Proxmox task.
    pub task_timeout: Duration,
    /// Bound on the guest agent answering with the planned address.
    pub guest_timeout: Duration,
    /// Hard-stop timeout (seconds) passed to Proxmox.
    pub stop_timeout_secs: u32,
    /// Test hook: fail (as a crash would) at the N-th step boundary (0-based).
    pub fail_after_step: Option<usize>,
    /// Multiplies the task and guest-agent polling intervals: the simulator's time scale under
    /// `--simulate`, so polling overshoot stays proportionate to the (scaled) task durations.
    pub poll_scale: f64,
    /// Ctrl-C / SIGTERM: once fired, no new step starts (see [`interrupt`]).
    pub interrupt: Option<Interrupt>,
}

impl ExecOptions {
    /// `base` scaled by [`ExecOptions::poll_scale`], at least 2 ms.
    fn poll(&self, base: Duration) -> Duration {
        base.mul_f64(self.poll_scale.clamp(0.0, 1.0))
            .max(Duration::from_millis(2))
    }
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            per_node: 12,
            per_storage: 8,
            clones_per_template: 16,
            max_attempts: 8,
            backoff: Duration::from_millis(200),
            task_timeout: Duration::from_secs(30 * 60),
            guest_timeout: Duration::from_secs(10 * 60),
            stop_timeout_secs: 30,
            fail_after_step: None,
            poll_scale: 1.0,
            interrupt: None,
        }
    }
}

/// Provides the NoCloud seed ISO bytes of a VM (built by `cloudinit`; tests may fake it).
pub trait SeedSource: Send + Sync {
    fn iso(&self, vm: &PlannedVm) -> anyhow::Result<Vec<u8>>;
}

/// A VM that phase 2 can take over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionedVm {
    pub name: String,
    pub vmid: u32,
    pub node: String,
    pub address: IpAddr,
    pub role: Role,
    pub group: String,
    /// Whole PCI devices passed through.
    pub gpus: Vec<String>,
    /// Time this run spent on the VM (0 when it was already converged).
    pub seconds: f64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub vms: Vec<ProvisionedVm>,
    pub destroyed: Vec<String>,
    /// Requests that change Proxmox (POST/PUT/DELETE).
    pub mutating_calls: usize,
    pub seconds: f64,
}

/// The marker error of [`ExecOptions::fail_after_step`].
#[derive(Debug, thiserror::Error)]
#[error("injected failure at step boundary {0}")]
pub struct InjectedCrash(pub usize);
