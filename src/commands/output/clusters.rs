//! `provision list` and `provision gc`: the provision clusters on the Proxmox, by tag.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::exec::reap::{TaggedCluster, TaggedVm};
use crate::state::human_time;

/// `provision list`.
#[derive(Debug, Serialize)]
pub struct ListOutput {
    /// Unix seconds the listing was made at (what `expired` is measured against).
    pub now: u64,
    pub clusters: Vec<ClusterRow>,
}

/// One cluster as `list` and `gc` show it.
#[derive(Debug, Serialize)]
pub struct ClusterRow {
    pub name: String,
    /// `running` (every VM), `stopped` (none) or `partial`.
    pub state: &'static str,
    /// Unix seconds, from the `provision-created-…` tag.
    pub created: Option<u64>,
    /// Unix seconds, from the `provision-exp-…` tag (clusters with a TTL).
    pub expires: Option<u64>,
    pub expired: bool,
    pub vms: Vec<TaggedVm>,
}

impl ClusterRow {
    pub fn new(cluster: &TaggedCluster, now: u64) -> Self {
        Self {
            name: cluster.name.clone(),
            state: cluster.state(),
            created: cluster.created,
            expires: cluster.expires,
            expired: cluster.expired(now),
            vms: cluster.vms.clone(),
        }
    }
}

fn when(unix: Option<u64>) -> String {
    unix.map_or_else(
        || "-".to_owned(),
        |unix| human_time(UNIX_EPOCH + Duration::from_secs(unix)),
    )
}

fn vm_names(vms: &[TaggedVm]) -> String {
    vms.iter()
        .map(|vm| format!("{} ({})", vm.name, vm.vmid))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for ListOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.clusters.is_empty() {
            return write!(f, "no provision clusters on this Proxmox");
        }
        writeln!(
            f,
            "{:<24} {:>3}  {:<8} {:<24} EXPIRES",
            "CLUSTER", "VMS", "STATE", "CREATED"
        )?;
        for (index, row) in self.clusters.iter().enumerate() {
            let expires = match (row.expires, row.expired) {
                (Some(_), true) => format!("{} (expired)", when(row.expires)),
                _ => when(row.expires),
            };
            write!(
                f,
                "{:<24} {:>3}  {:<8} {:<24} {expires}",
                row.name,
                row.vms.len(),
                row.state,
                when(row.created)
            )?;
            if index + 1 < self.clusters.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// `provision gc`: what went (or, with `--dry-run`, would go).
#[derive(Debug, Serialize)]
pub struct GcOutput {
    pub dry_run: bool,
    pub now: u64,
    /// The clusters taken, each with why and its VMs.
    pub clusters: Vec<GcCluster>,
    /// Clusters left alone.
    pub kept: Vec<String>,
    /// Clusters taken whose destruction failed (some of their VMs may be gone).
    pub failed: Vec<GcFailure>,
    pub mutating_calls: usize,
}

#[derive(Debug, Serialize)]
pub struct GcFailure {
    pub cluster: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct GcCluster {
    #[serde(flatten)]
    pub row: ClusterRow,
    pub reason: &'static str,
}

impl fmt::Display for GcOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would destroy"
        } else {
            "destroyed"
        };
        if self.clusters.is_empty() && self.failed.is_empty() {
            write!(f, "no cluster to collect")?;
        }
        for (index, cluster) in self.clusters.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{verb} cluster {} ({}): {}",
                cluster.row.name,
                cluster.reason,
                vm_names(&cluster.row.vms)
            )?;
        }
        if !self.kept.is_empty() {
            write!(f, "\nkept: {}", self.kept.join(", "))?;
        }
        for failure in &self.failed {
            write!(
                f,
                "\nfailed to destroy cluster {}: {}",
                failure.cluster, failure.error
            )?;
        }
        Ok(())
    }
}
