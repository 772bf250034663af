//! The read-only preflight of the Proxmox side (`provision doctor`, and the first thing `up`
//! does): API and version, credentials and privileges, storages (content types, free space),
//! bridges and VLANs, hardware virtualisation, GPUs and their IOMMU groups, hugepages, and the
//! plan itself. Nothing here changes Proxmox; `up` stops before its first change when a check
//! fails, so a limited token or a missing `import` content type is one list of fixes instead
//! of seven half-created VMs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::session::{WorkspaceSeeds, plan_for};
use crate::inventory::{self, AuthKind, Inventory, NodeInventory};
use crate::plan::privileges::{missing, required_privileges};
use crate::plan::{self, Plan, Rejection};
use crate::profile::model::{NodeGroup, Profile};
use crate::pve::PveApi;
use crate::pve::types::NodeName;
use crate::state::State;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Worth knowing; does not block `up`.
    Warn,
    /// Blocks `up`.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in the order they ran, and the plan when the checks got that far.
#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    pub observed: Option<(Inventory, Plan)>,
}

impl Report {
    fn push(&mut self, check: &str, outcome: Outcome, detail: String, fix: Option<String>) {
        self.checks.push(Check {
            check: check.to_owned(),
            outcome,
            detail,
            fix,
        });
    }

    fn pass(&mut self, check: &str, detail: String) {
        self.push(check, Outcome::Pass, detail, None);
    }

    fn fail(&mut self, check: &str, detail: String, fix: impl Into<String>) {
        self.push(check, Outcome::Fail, detail, Some(fix.into()));
    }

    fn warn(&mut self, check: &str, detail: String, fix: impl Into<String>) {
        self.push(check, Outcome::Warn, detail, Some(fix.into()));
    }

    /// Whether anything blocks `up`.
    pub fn blocks(&self) -> bool {
        self.checks
            .iter()
            .any(|check| check.outcome == Outcome::Fail)
    }

    /// The failed checks, one per line with their fix (the error `up` stops with).
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|check| check.outcome == Outcome::Fail)
            .map(|check| match &check.fix {
                Some(fix) => format!("✗ {}: {} (fix: {fix})", check.check, check.detail),
                None => format!("✗ {}: {}", check.check, check.detail),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Everything `run` needs besides the connection.
pub struct DoctorInput<'a> {
    pub profile: &'a Profile,
    pub state: &'a State,
    pub seeds: &'a WorkspaceSeeds,
    pub workspace_root: &'a Path,
    /// How disruptions roll (`up --max-unavailable`, `--force`).
    pub rolling: crate::plan::RollingOptions,
}

/// Run every check. Stops early only where later checks cannot run (API unreachable,
/// observation failed).
pub async fn run(api: &dyn PveApi, auth: &AuthKind, input: &DoctorInput<'_>) -> Report {
    let mut report = Report::default();
    match api.version().await {
        Ok(version) => report.pass("api", format!("Proxmox VE {}", version.version)),
        Err(error) => {
            let fix = error
                .hint()
                .unwrap_or_else(|| "check PROXMOX_VE_ENDPOINT and the network".to_owned());
            report.fail("api", error.to_string(), fix);
            return report;
        }
    }
    report.pass("credentials", auth.describe());
    let profile = input.profile;
    let inventory = match inventory::observe(api, profile, auth.clone()).await {
        Ok(inventory) => inventory,
        Err(error) => {
            report.fail(
                "observe",
                chain(&error),
                "the credentials need Sys.Audit on / and VM.Audit on /vms",
            );
            return report;
        }
    };
    for node in &inventory.nodes {
        check_node(api, profile, node, &mut report).await;
    }
    check_gpus(profile, &inventory, &mut report);
    let plan = match plan_for(
        profile,
        &inventory,
        input.state,
        input.seeds,
        input.workspace_root,
        input.rolling,
    ) {
        Ok(plan) => plan,
        Err(error) => {
            report.fail(
                "plan",
                format!("{error:#}"),
                "see the message; `provision plan` shows the same",
            );
            return report;
        }
    };
    report.pass("plan", plan_summary(&plan));
    check_hugepages(profile, &plan, &mut report);
    check_privileges(api, auth, profile, &plan, &mut report).await;
    report.observed = Some((inventory, plan));
    report
}

/// `error: cause: cause` on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn plan_summary(plan: &Plan) -> String {
    if plan.is_noop() {
        return "no changes: the VMs match the profile".to_owned();
    }
    format!(
        "{} to create, {} to change, {} to replace, {} to destroy",
        plan.count(plan::ActionKind::Create),
        plan.count(plan::ActionKind::Update),
        plan.count(plan::ActionKind::Replace),
        plan.count(plan::ActionKind::Destroy),
    )
}

/// Online, hardware virtualisation, bridge (and VLAN awareness), storages of one node.
async fn check_node(
    api: &dyn PveApi,
    profile: &Profile,
    node: &NodeInventory,
    report: &mut Report,
) {
    let name = NodeName(node.name.clone());
    let label = format!("node {}", node.name);
    if !node.online {
        report.fail(
            &label,
            "offline".to_owned(),
            "start the node or remove it from proxmox.nodes",
        );
        return;
    }
    match api.node_status(&name).await {
        Ok(status) => {
            let flags: Vec<&str> = status.cpuinfo.flags.split_whitespace().collect();
            let virt = ["vmx", "svm"]
                .into_iter()
                .find(|flag| flags.contains(flag))
                .or((status.cpuinfo.hvm.as_deref() == Some("1")).then_some("hvm"));
            // `hypervisor`: the node itself is a VM (a nested Proxmox, as CI runs on).
            let nested = if flags.contains(&"hypervisor") {
                "; a nested Proxmox (runs in a VM) with nested virtualisation on"
            } else {
                ""
            };
            match virt {
                Some(flag) => report.pass(
                    &label,
                    format!(
                        "online, {} CPUs, hardware virtualisation ({flag}){nested}",
                        node.cpus
                    ),
                ),
                None => report.fail(
                    &label,
                    format!(
                        "no hardware virtualisation (no vmx/svm CPU flag): KVM guests cannot start{}",
                        if nested.is_empty() {
                            ""
                        } else {
                            "; this node is itself a VM (a nested Proxmox) whose outer host does not pass virtualisation through"
                        }
                    ),
                    "enable VT-x/AMD-V in the firmware; on a nested Proxmox, give its VM `cpu: host` and enable nested virtualisation on the outer host (kvm_intel/kvm_amd nested=1)",
                ),
            }
        }
        Err(error) => report.fail(
            &label,
            error.to_string(),
            "the credentials need Sys.Audit on /nodes",
        ),
    }
    check_bridge(api, profile, &name, report).await;
    check_storages(profile, node, report);
}

async fn check_bridge(api: &dyn PveApi, profile: &Profile, node: &NodeName, report: &mut Report) {
    let bridge = &profile.network.bridge;
    let label = format!("bridge {bridge} on {}", node.0);
    let interfaces = match api.node_network(node).await {
        Ok(interfaces) => interfaces,
        Err(error) => {
            report.fail(
                &label,
                error.to_string(),
                "the credentials need Sys.Audit on /nodes",
            );
            return;
        }
    };
    let Some(interface) = interfaces.iter().find(|i| &i.iface == bridge) else {
        report.fail(
            &label,
            "missing".to_owned(),
            format!(
                "create {bridge} (System → Network on {}) or set network.bridge",
                node.0
            ),
        );
        return;
    };
    let ovs = interface.kind == "OVSBridge";
    match profile.network.vlan {
        Some(tag) if !ovs && interface.bridge_vlan_aware != Some(1) => report.fail(
            &label,
            format!("VLAN {tag} needs a VLAN-aware bridge, {bridge} is not"),
            format!("tick \"VLAN aware\" on {bridge} (bridge-vlan-aware yes) and apply the network config"),
        ),
        Some(tag) => report.pass(&label, format!("present, VLAN {tag}")),
        None => report.pass(&label, "present".to_owned()),
    }
}

/// Each storage the profile names, with the content type provision uses it for.
fn check_storages(profile: &Profile, node: &NodeInventory, report: &mut Report) {
    let storage = &profile.proxmox.storage;
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    wanted.entry(&storage.disks).or_default().push("images");
    if let Some(efi) = &storage.efi
        && efi != &storage.disks
    {
        wanted.entry(efi).or_default().push("images");
    }
    for group in &profile.node_groups {
        if let Some(scratch) = &group.disks.scratch_storage {
            wanted.entry(scratch).or_default().push("images");
        }
    }
    wanted.entry(&storage.iso).or_default().push("iso");
    if profile.image.template_vmid.is_none() {
        wanted.entry(&storage.images).or_default().push("import");
    }
    for (id, contents) in wanted {
        let label = format!("storage {id} on {}", node.name);
        let Some(status) = node.storage(id) else {
            report.fail(
                &label,
                "not available on this node".to_owned(),
                format!(
                    "add {id} for {} (Datacenter → Storage) or name another storage",
                    node.name
                ),
            );
            continue;
        };
        let served: Vec<&str> = status.content.split(',').map(str::trim).collect();
        let lacking: Vec<&str> = contents
            .iter()
            .copied()
            .filter(|c| !served.contains(c))
            .collect();
        if status.active == Some(0) || status.enabled == Some(0) {
            report.fail(
                &label,
                "disabled or inactive".to_owned(),
                format!("enable {id} and check that it is mounted"),
            );
        } else if !lacking.is_empty() {
            report.fail(
                &label,
                format!("serves {} but not {}", status.content, lacking.join(", ")),
                format!(
                    "add content type {} to {id} (Datacenter → Storage → {id} → Content)",
                    lacking.join(", ")
                ),
            );
        } else {
            let free = status
                .avail
                .map_or("free space unknown".to_owned(), |avail| {
                    format!("{} GiB free", avail >> 30)
                });
            report.pass(&label, format!("{} ({free})", contents.join(", ")));
        }
    }
}

/// GPUs each GPU group may use: IOMMU on, each in its own group, enough of them.
fn check_gpus(profile: &Profile, inventory: &Inventory, report: &mut Report) {
    for group in profile.node_groups.iter().filter(|g| g.gpus.is_some()) {
        let Some(gpus) = &group.gpus else { continue };
        if let Some(mapping) = &gpus.mapping {
            let label = format!("GPUs of `{}`", group.name);
            if inventory.mappings.iter().any(|m| &m.id == mapping) {
                report.pass(&label, format!("resource mapping {mapping} exists"));
            } else {
                report.fail(
                    &label,
                    format!("resource mapping {mapping} does not exist"),
                    "create it (Datacenter → Resource Mappings) or use gpus.filter",
                );
            }
            continue;
        }
        let needed = u64::from(gpus.count) * u64::from(group.count);
        let mut passable = 0u64;
        for node in group_nodes(profile, group, inventory) {
            let (candidates, rejected) = plan::gpu_candidates(node, gpus.filter.as_ref());
            passable += candidates.len() as u64;
            for (device, rejection) in rejected {
                let label = format!("GPU {device} on {}", node.name);
                match rejection {
                    Rejection::IommuOff => report.fail(&label, "IOMMU is off (group -1)".to_owned(), format!("add intel_iommu=on (Intel) or amd_iommu=on (AMD) and iommu=pt to {}'s kernel command line, reboot", node.name)),
                    Rejection::SharedGroup { group, others } => report.warn(&label, format!("shares IOMMU group {group} with {}", others.join(", ")), "not passed through; move the card to another slot or enable ACS on its root port"),
                }
            }
        }
        let label = format!("GPUs of `{}`", group.name);
        let filter = gpus
            .filter
            .as_ref()
            .map_or("any NVIDIA GPU".to_owned(), ToString::to_string);
        if passable >= needed {
            report.pass(
                &label,
                format!(
                    "{passable} passable ({filter}), each in its own IOMMU group; {needed} needed"
                ),
            );
        } else {
            report.fail(&label, format!("{passable} passable ({filter}), {needed} needed"), "check gpus.filter against `lspci -nn` on the nodes, and that the GPUs are not in use");
        }
    }
}

fn group_nodes<'a>(
    profile: &Profile,
    group: &NodeGroup,
    inventory: &'a Inventory,
) -> Vec<&'a NodeInventory> {
    let allowed = if group.proxmox_nodes.is_empty() {
        &profile.proxmox.nodes
    } else {
        &group.proxmox_nodes
    };
    inventory
        .nodes
        .iter()
        .filter(|node| allowed.contains(&node.name))
        .collect()
}

/// Hugepages the plan pins per host NUMA node against what `proxmox.topology` says is free.
fn check_hugepages(profile: &Profile, plan: &Plan, report: &mut Report) {
    let mut used: BTreeMap<(String, u32, String), u64> = BTreeMap::new();
    for vm in plan.vms.iter().filter(|vm| !vm.exists) {
        let (Some(size), Some(numa), Some(memory)) = (
            vm.params.get("hugepages"),
            vm.params.get("numa0"),
            vm.params.get("memory"),
        ) else {
            continue;
        };
        let Some(host) = numa
            .split(',')
            .find_map(|p| p.strip_prefix("hostnodes="))
            .and_then(|h| h.parse().ok())
        else {
            continue;
        };
        let (Ok(memory), Ok(page)) = (memory.parse::<u64>(), size.parse::<u64>()) else {
            continue;
        };
        if let Some(pages) = memory.checked_div(page) {
            *used
                .entry((vm.node.0.clone(), host, size.clone()))
                .or_default() += pages;
        }
    }
    for ((node, numa, size), pages) in used {
        let free = profile
            .proxmox
            .topology
            .iter()
            .find(|t| t.node == node)
            .and_then(|t| t.numa_nodes.iter().find(|n| n.id == numa))
            .and_then(|n| {
                if size == "1024" {
                    n.hugepages_1g
                } else {
                    n.hugepages_2m
                }
            });
        let label = format!("hugepages on {node} NUMA {numa}");
        let unit = if size == "1024" { "1 GiB" } else { "2 MiB" };
        match free {
            Some(free) => report.pass(&label, format!("{pages} × {unit} for new VMs, {free} free (proxmox.topology)")),
            None => report.fail(&label, format!("{pages} × {unit} needed, none declared free"), format!("reserve hugepages on {node} (hugepagesz/hugepages on the kernel command line) and list them in proxmox.topology")),
        }
    }
}

/// Everything the plan will do, against `GET /access/permissions`.
async fn check_privileges(
    api: &dyn PveApi,
    auth: &AuthKind,
    profile: &Profile,
    plan: &Plan,
    report: &mut Report,
) {
    if auth.is_root_ticket() {
        report.pass("privileges", "root@pam holds every privilege".to_owned());
        return;
    }
    let required = required_privileges(plan, &profile.network.bridge, profile.network.vlan);
    let permissions = match api.access_permissions().await {
        Ok(permissions) => permissions,
        Err(error) => {
            report.fail(
                "privileges",
                format!("cannot read /access/permissions: {error}"),
                "check the credentials",
            );
            return;
        }
    };
    let lacking = missing(&permissions, &required);
    if lacking.is_empty() {
        report.pass(
            "privileges",
            format!(
                "all {} the plan needs are granted to {}",
                required.len(),
                auth.describe()
            ),
        );
        return;
    }
    let list = lacking
        .iter()
        .map(|need| format!("{} on {} ({})", need.privilege, need.path, need.why))
        .collect::<Vec<_>>()
        .join("; ");
    report.fail(
        "privileges",
        format!("{} lacks {} of {}: {list}", auth.describe(), lacking.len(), required.len()),
        "grant them (Datacenter → Permissions → Add, e.g. the PVEVMAdmin, PVEDatastoreUser and PVEMappingUser roles, plus PVESDNUser on the zone); a token with privilege separation needs them granted to the token itself",
    );
}
