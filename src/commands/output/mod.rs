//! What each command prints as its result: one struct per command, serialized for
//! `--output json` (field order is output order) and rendered as text from the same fields, so
//! the two never drift apart. `plan` and `down` have their own, in `plan::render`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::exec::ProvisionedVm;
use crate::exec::cluster_status::ClusterObservation;
use crate::exec::doctor::Check;
use crate::exec::phase2::{Phase2Report, StepTiming};
use crate::exit::ExitStatus;
use crate::k3s::status::{EtcdHealth, Health, Severity};
use crate::nodeprep::StepOutcome;
use crate::profile::{Diagnostic, LoadedProfile, PlannedNode};
use crate::state::{VmPhase, VmRecord};

/// `provision init`: the workspace and what happened to each of its files.
#[derive(Debug, Serialize)]
pub struct InitOutput {
    pub workspace: String,
    /// `--profile NAME`: the built-in profile copied to `profiles/NAME.toml` (kept when there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub files: Vec<InitFile>,
}

#[derive(Debug, Serialize)]
pub struct InitFile {
    /// Relative to the workspace; directories end in `/`.
    pub path: String,
    pub action: InitFileAction,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitFileAction {
    Created,
    Kept,
}

impl InitOutput {
    /// The text form: status lines (stderr), one per file, then what to do next.
    pub fn text_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .files
            .iter()
            .map(|file| match file.action {
                InitFileAction::Created => format!("created {}", file.path),
                InitFileAction::Kept => {
                    format!("kept    {} (already there, not changed)", file.path)
                }
            })
            .collect();
        let profile = self.profile.as_deref().unwrap_or("a100-8x");
        lines.push(format!("next: set PROXMOX_VE_ENDPOINT and PROXMOX_VE_API_TOKEN (or edit provision.toml), then run `provision validate --profile {profile}`"));
        if let Some(profile) = &self.profile {
            lines.push(format!(
                "profiles/{profile}.toml wins over the built-in {profile}: adapt the cluster there"
            ));
        }
        lines
    }
}

/// `provision profiles show NAME`: the built-in profile's TOML exactly as shipped (text), or
/// `{"name": …, "text": …}`.
#[derive(Debug, Serialize)]
pub struct ProfileShowOutput {
    pub name: String,
    pub text: String,
}

impl fmt::Display for ProfileShowOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `provision profiles`: one listing per profile, workspace profiles first (a JSON array).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ProfilesOutput(pub Vec<Listing>);

#[derive(Debug, Serialize)]
pub struct Listing {
    pub name: String,
    /// `workspace` or `builtin`.
    pub source: String,
    /// The profile's description, or why it does not load.
    pub description: String,
    pub vms: Option<u64>,
    pub gpus: Option<u64>,
}

impl fmt::Display for ProfilesOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.0.iter().map(|l| l.name.len()).max().unwrap_or(0);
        for listing in &self.0 {
            let marker = if listing.source == "workspace" {
                " (workspace)"
            } else {
                ""
            };
            writeln!(
                f,
                "{:<width$}  {}{marker}",
                listing.name, listing.description
            )?;
        }
        Ok(())
    }
}

/// `provision doctor`: whether anything blocks `up`, and every check.
#[derive(Debug, Serialize)]
pub struct DoctorOutput<'a> {
    pub ok: bool,
    pub checks: &'a [Check],
}

impl fmt::Display for DoctorOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::doctor::render(self.checks))
    }
}

/// `provision kubeconfig`: the workspace kubeconfig, its context, and where it was merged.
#[derive(Debug, Serialize)]
pub struct KubeconfigOutput<'a> {
    pub kubeconfig: &'a Path,
    pub context: &'a str,
    pub merged_into: Option<&'a Path>,
}

impl fmt::Display for KubeconfigOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kubeconfig.display())
    }
}

/// `provision status`: each VM in the state next to what Proxmox says.
#[derive(Debug, Serialize)]
pub struct StatusOutput<'a> {
    pub vms: Vec<StatusRow<'a>>,
    /// What the servers say about the Kubernetes cluster.
    pub cluster: ClusterObservation,
}

impl StatusOutput<'_> {
    /// 3 when a VM is not running or the cluster is unhealthy, 2 when no server answered, else 0.
    pub fn exit_status(&self) -> ExitStatus {
        if self.cluster.is_unhealthy() || self.vms.iter().any(|row| row.proxmox != "running") {
            return ExitStatus::Unhealthy;
        }
        match self.cluster {
            ClusterObservation::Unreachable { .. } => ExitStatus::Failure,
            ClusterObservation::NotChecked { .. } | ClusterObservation::Reached { .. } => {
                ExitStatus::Success
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusRow<'a> {
    pub name: &'a str,
    pub vmid: u32,
    /// The Proxmox node it runs on (as Proxmox reports it, else as recorded).
    pub node: String,
    pub phase: VmPhase,
    /// Proxmox's status, or `missing`.
    pub proxmox: String,
    pub address: Option<&'a str>,
    pub gpus: &'a [String],
}

impl<'a> StatusRow<'a> {
    /// A recorded VM with Proxmox's `node` and `status` when it still exists there.
    pub fn new(record: &'a VmRecord, live: Option<(Option<String>, Option<String>)>) -> Self {
        let (node, status) = live.unwrap_or_default();
        Self {
            name: &record.name,
            vmid: record.vmid,
            node: node.unwrap_or_else(|| record.node.clone()),
            phase: record.phase,
            proxmox: status.unwrap_or_else(|| "missing".to_owned()),
            address: record.address.as_deref(),
            gpus: &record.gpus,
        }
    }
}

/// The name `--output json` uses for a phase (serde's kebab-case).
fn phase_name(phase: VmPhase) -> &'static str {
    match phase {
        VmPhase::Intent => "intent",
        VmPhase::Created => "created",
        VmPhase::Ready => "ready",
    }
}

impl fmt::Display for StatusOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.vms.is_empty() {
            writeln!(f, "no VMs in the state")?;
        }
        for row in &self.vms {
            // The VMID column has never been padded (it was printed as a JSON value).
            writeln!(
                f,
                "{:<28} vmid {} {:<10} {:<8} {:<8} {}",
                row.name,
                row.vmid,
                row.node,
                phase_name(row.phase),
                row.proxmox,
                row.address.unwrap_or_default(),
            )?;
        }
        write_cluster(f, &self.cluster)
    }
}

/// The cluster block of `status`: one line when it was not reached, else a node table, etcd's
/// health and the findings.
fn write_cluster(f: &mut fmt::Formatter<'_>, cluster: &ClusterObservation) -> fmt::Result {
    let (server, view) = match cluster {
        ClusterObservation::NotChecked { reason } => {
            return writeln!(f, "cluster: not checked: {reason}");
        }
        ClusterObservation::Unreachable { reason } => {
            return writeln!(f, "cluster: unreachable: {reason}");
        }
        ClusterObservation::Reached { server, view } => (server, view),
    };
    let health = match view.health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Unhealthy => "unhealthy",
    };
    writeln!(f, "cluster (asked {server}): {health}")?;
    for node in &view.nodes {
        let roles = if node.roles.is_empty() {
            "<none>".to_owned()
        } else {
            node.roles.join(",")
        };
        let line = format!(
            "  {:<28} {:<8} {:<12} {:<16} {:<26} {}",
            node.name,
            if node.ready { "Ready" } else { "NotReady" },
            if node.cordoned {
                "cordoned"
            } else {
                "schedulable"
            },
            node.kubelet_version,
            roles,
            node.etcd
                .as_ref()
                .map(|member| format!("etcd {}", member.name))
                .unwrap_or_default(),
        );
        writeln!(f, "{}", line.trim_end())?;
    }
    let etcd = match &view.etcd {
        EtcdHealth::Ok => "ok".to_owned(),
        EtcdHealth::Failed(detail) => format!("failed: {detail}"),
        EtcdHealth::Unknown => "unknown".to_owned(),
    };
    writeln!(f, "  etcd: {etcd}")?;
    for finding in &view.findings {
        let severity = match finding.severity {
            Severity::Degraded => "degraded",
            Severity::Unhealthy => "unhealthy",
        };
        writeln!(f, "  {severity}: {}", finding.message)?;
    }
    Ok(())
}

/// `provision validate` of a valid profile: a summary and the warnings.
#[derive(Debug, Serialize)]
pub struct ValidateOutput<'a> {
    pub valid: bool,
    /// The `--profile` argument as given.
    pub profile: &'a str,
    pub source: &'a str,
    pub summary: ValidateSummary<'a>,
    pub diagnostics: &'a [Diagnostic],
}

#[derive(Debug, Serialize)]
pub struct ValidateSummary<'a> {
    pub cluster: &'a str,
    pub servers: u64,
    pub agents: u64,
    pub gpus: u64,
    pub vmid_range: [u32; 2],
    pub proxmox_nodes: &'a [String],
    pub nodes: Vec<PlannedNode>,
}

impl<'a> ValidateOutput<'a> {
    pub fn new(spec: &'a str, loaded: &'a LoadedProfile) -> Self {
        let profile = &loaded.profile;
        let range = profile.proxmox.vmid_range;
        Self {
            valid: true,
            profile: spec,
            source: &loaded.source_name,
            summary: ValidateSummary {
                cluster: &profile.cluster.name,
                servers: profile.server_count(),
                agents: profile.vm_count() - profile.server_count(),
                gpus: profile.gpu_count(),
                vmid_range: [range.start, range.end],
                proxmox_nodes: &profile.proxmox.nodes,
                nodes: profile.nodes(),
            },
            diagnostics: &loaded.warnings,
        }
    }
}

impl fmt::Display for ValidateOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = &self.summary;
        writeln!(
            f,
            "{}: valid, {}\ncluster {}: {} ({}, {}), {}, VMIDs {}-{} on {}",
            self.source,
            plural(self.diagnostics.len() as u64, "warning"),
            summary.cluster,
            plural(summary.servers + summary.agents, "VM"),
            plural(summary.servers, "server"),
            plural(summary.agents, "agent"),
            plural(summary.gpus, "GPU"),
            summary.vmid_range[0],
            summary.vmid_range[1],
            summary.proxmox_nodes.join(", "),
        )?;
        let width = summary
            .nodes
            .iter()
            .map(|node| node.name.len())
            .max()
            .unwrap_or(0);
        for node in &summary.nodes {
            let role = node.role.as_str();
            writeln!(f, "  {:<width$}  {role:<6}  {}", node.name, node.address)?;
        }
        Ok(())
    }
}

/// `1 server`, `3 servers`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A profile that does not validate: `{"valid": false, "diagnostics": […]}` (the text form is the
/// located diagnostics on stderr).
#[derive(Debug, Serialize)]
pub struct InvalidOutput<'a> {
    pub valid: bool,
    pub diagnostics: &'a [Diagnostic],
}

/// `provision up`, phase 1: the VMs provision made ready. Its text is printed as soon as phase 1
/// ends; the JSON waits for phase 2 ([`UpOutput`]).
#[derive(Debug, Serialize)]
pub struct PhaseOneOutput<'a> {
    pub cluster: &'a str,
    pub vms: &'a [ProvisionedVm],
    pub destroyed: &'a [String],
    pub mutating_calls: usize,
    pub seconds: f64,
}

impl fmt::Display for PhaseOneOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for vm in self.vms {
            writeln!(
                f,
                "{:<28} vmid {:<6} {:<10} {:<16} {}",
                vm.name,
                vm.vmid,
                vm.node,
                vm.address,
                vm.gpus.join(",")
            )?;
        }
        writeln!(
            f,
            "{} VMs ready in {:.1}s ({} mutating requests)",
            self.vms.len(),
            self.seconds,
            self.mutating_calls
        )
    }
}

/// `provision up --output json`: phase 1's fields, then `phase2`.
#[derive(Debug, Serialize)]
pub struct UpOutput<'a> {
    #[serde(flatten)]
    pub phase1: PhaseOneOutput<'a>,
    pub phase2: Phase2Output<'a>,
}

/// Phase 2 in `up`'s output: why it was skipped, or what it did.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Phase2Output<'a> {
    Skipped { skipped: &'static str },
    Done(Box<Phase2Summary<'a>>),
}

/// What phase 2 did, per node; the text is the per-node report.
#[derive(Debug, Serialize)]
pub struct Phase2Summary<'a> {
    pub bootstrap: &'a str,
    pub existing_cluster: bool,
    pub changed: bool,
    pub restarted: Vec<&'a str>,
    pub api_commands: &'a [String],
    pub kubeconfig: &'a Path,
    pub kubeconfig_changed: bool,
    /// The install run, from its start (the origin of every timeline's `start`) to the kubeconfig.
    pub seconds: f64,
    /// `--guests testbed`: the wait for the test hosts to be seeded and booted, before phase 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub testbed_boot_seconds: Option<f64>,
    /// Cluster-wide steps (inputs, labels and taints, kubeconfig).
    pub timeline: Vec<TimingSummary>,
    pub nodes: Vec<NodeSummary<'a>>,
    /// The rolling k3s upgrade, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSummary<'a>>,
    /// Every remote operation, with `--print-commands`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands: Option<&'a [String]>,
}

/// What the rolling k3s upgrade did: from which version, to which, in which order.
#[derive(Debug, Serialize)]
pub struct UpgradeSummary<'a> {
    pub from: Option<&'a str>,
    pub to: &'a str,
    pub snapshot: Option<&'a str>,
    pub upgraded: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct NodeSummary<'a> {
    pub name: &'a str,
    pub changed: bool,
    pub started: bool,
    pub restarted: bool,
    pub labels: &'a BTreeMap<String, String>,
    pub steps: Vec<StepSummary<'a>>,
    /// The node's phase 2 steps (connect, cloud-init, probe, prepare, upload, join token, install,
    /// ready) in the order they ran.
    pub timeline: Vec<TimingSummary>,
}

/// One timed phase 2 step: when it started (seconds since phase 2 started) and how long it took,
/// to the millisecond.
#[derive(Debug, Serialize)]
pub struct TimingSummary {
    pub step: &'static str,
    pub start: f64,
    pub seconds: f64,
}

/// Seconds to the millisecond.
fn seconds(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1000.0).round() / 1000.0
}

fn timings(timeline: &[StepTiming]) -> Vec<TimingSummary> {
    timeline
        .iter()
        .map(|timing| TimingSummary {
            step: timing.step,
            start: seconds(timing.start),
            seconds: seconds(timing.duration),
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct StepSummary<'a> {
    pub description: &'a str,
    pub outcome: String,
    pub changed: bool,
    /// Neither a change nor `unchanged` (built in, unsupported): shown in the text report.
    #[serde(skip)]
    pub noteworthy: bool,
}

impl<'a> Phase2Summary<'a> {
    pub fn new(report: &'a Phase2Report, commands: Option<&'a [String]>) -> Self {
        Self {
            upgrade: (!report.upgrade.upgraded.is_empty()).then(|| UpgradeSummary {
                from: report.upgrade.from.as_deref(),
                to: &report.upgrade.to,
                snapshot: report.upgrade.snapshot.as_deref(),
                upgraded: &report.upgrade.upgraded,
            }),
            bootstrap: &report.bootstrap,
            existing_cluster: report.existing_cluster,
            changed: report.changed(),
            restarted: report.restarted(),
            api_commands: &report.api_commands,
            kubeconfig: &report.kubeconfig,
            kubeconfig_changed: report.kubeconfig_changed,
            seconds: seconds(report.elapsed),
            testbed_boot_seconds: None,
            timeline: timings(&report.timeline),
            nodes: report
                .nodes
                .iter()
                .map(|node| NodeSummary {
                    name: &node.name,
                    changed: node.changed(),
                    started: node.started,
                    restarted: node.restarted,
                    labels: &node.labels,
                    steps: node
                        .steps
                        .iter()
                        .map(|step| StepSummary {
                            description: &step.description,
                            outcome: step.outcome.to_string(),
                            changed: step.outcome.is_change(),
                            noteworthy: !step.outcome.is_change()
                                && step.outcome != StepOutcome::Unchanged,
                        })
                        .collect(),
                    timeline: timings(&node.timeline),
                })
                .collect(),
            commands,
        }
    }

    /// With the time `--guests testbed` waited for the test hosts to boot.
    pub fn with_testbed_boot(mut self, boot: Option<std::time::Duration>) -> Self {
        self.testbed_boot_seconds = boot.map(seconds);
        self
    }
}

/// One line per node, then each step that did something; `api:` commands; a closing line.
impl fmt::Display for Phase2Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(upgrade) = &self.upgrade {
            writeln!(
                f,
                "k3s upgraded {} → {} (etcd snapshot {}), one wave after the other: {}",
                upgrade.from.unwrap_or("?"),
                upgrade.to,
                upgrade.snapshot.unwrap_or("none: no server was behind"),
                upgrade.upgraded.join(", ")
            )?;
        }
        for node in &self.nodes {
            let changes = node.steps.iter().filter(|step| step.changed);
            let notes = node.steps.iter().filter(|step| step.noteworthy);
            let change_count = changes.clone().count();
            let service = if node.started {
                ", k3s started"
            } else if node.restarted {
                ", k3s restarted"
            } else {
                ""
            };
            let summary = if change_count == 0 {
                "unchanged".to_owned()
            } else {
                format!("{change_count} changes")
            };
            writeln!(f, "{:<28} {summary}{service}", node.name)?;
            for step in changes.chain(notes) {
                writeln!(f, "  {:<60} {}", step.description, step.outcome)?;
            }
        }
        for command in self.api_commands {
            writeln!(f, "api: {command}")?;
        }
        writeln!(
            f,
            "cluster {} around {}: {}; kubeconfig {}{}",
            if self.existing_cluster {
                "converged"
            } else {
                "created"
            },
            self.bootstrap,
            if self.changed {
                "changes made"
            } else {
                "nothing changed"
            },
            self.kubeconfig.display(),
            if self.kubeconfig_changed {
                " (written)"
            } else {
                ""
            }
        )
    }
}

/// `provision drain`: the preflight table and how the drain ended.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct DrainOutput<'a> {
    pub report: &'a crate::exec::drain::DrainReport,
}

impl fmt::Display for DrainOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::exec::drain::DrainOutcome;
        let report = self.report;
        let node = &report.preflight.node;
        write!(f, "{}", report.preflight)?;
        match &report.outcome {
            DrainOutcome::DryRun => write!(
                f,
                "dry run (read through {}): nothing changed",
                report.server
            ),
            DrainOutcome::Refused => write!(f, "refused: {node} was not changed"),
            DrainOutcome::Drained => write!(
                f,
                "drained {node} through {}: cordoned, its pods evicted; `provision uncordon` gives it back",
                report.server
            ),
            DrainOutcome::Incomplete {
                still_on_node,
                kubectl,
            } => write!(
                f,
                "{node} stays cordoned; still on it: {}\nkubectl: {kubectl}",
                still_on_node.join(", ")
            ),
        }
    }
}

/// `provision uncordon`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct UncordonOutput<'a> {
    pub report: &'a crate::exec::drain::UncordonReport,
}

impl fmt::Display for UncordonOutput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self.report;
        if report.was_cordoned {
            write!(f, "uncordoned {} (through {})", report.node, report.server)
        } else {
            write!(
                f,
                "{} was already schedulable: nothing changed (through {})",
                report.node, report.server
            )
        }
    }
}

pub mod clusters;
#[cfg(test)]
mod tests;
