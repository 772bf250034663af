//! `image.strategy = "linked-clone" | "full-clone"` against the simulator: one template per
//! Proxmox node built once, every VM a clone of its node's template, a re-run that changes
//! nothing, `down` removing the clones and then the templates, and many clones of one
//! template that never surface a lock error.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::BTreeSet;

use provision::profile::Profile;
use provision::profile::model::ImageStrategy;

use crate::support::sim::{self, SimWorkspace};

fn with_strategy(name: &str, strategy: ImageStrategy) -> Profile {
    let mut profile = sim::builtin(name);
    profile.image.strategy = strategy;
    profile
}

/// ci-nested's agents made twelve, with their addresses.
fn twelve_agents(profile: &mut Profile) {
    let agents = profile
        .node_groups
        .iter()
        .position(|group| group.name == "agent")
        .unwrap();
    profile.node_groups[agents].count = 12;
    profile.node_groups[agents].addresses = (21..33)
        .map(|host| format!("10.99.0.{host}").parse().unwrap())
        .collect();
}

/// Requests of `method` whose path ends with `suffix`.
fn requests(workspace: &SimWorkspace, method: &str, suffix: &str) -> Vec<pve_sim::LoggedRequest> {
    workspace
        .log()
        .into_iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_clone_up_builds_one_template_per_node_and_down_removes_clones_then_templates() {
    // homelab-ha: five VMs over three Proxmox nodes.
    let profile = with_strategy("homelab-ha", ImageStrategy::LinkedClone);
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let plan = workspace.plan(&profile).await.unwrap();
    let text = provision::plan::render_text(&plan);
    assert!(text.contains("image strategy linked-clone"), "{text}");
    assert!(text.contains("linked clone of template"), "{text}");
    let json = provision::plan::render_json(&plan);
    assert_eq!(json["strategy"], "linked-clone");
    let nodes: BTreeSet<String> = plan.vms.iter().map(|vm| vm.node.0.clone()).collect();
    assert_eq!(json["templates"].as_array().unwrap().len(), nodes.len());

    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(report.vms.len(), plan.vms.len());
    let state = workspace.state();
    assert_eq!(state.templates.len(), nodes.len(), "{:?}", state.templates);
    // Each template was created once, as a template, importing the image; each VM cloned.
    let creates = requests(&workspace, "POST", "/qemu");
    let template_creates: Vec<_> = creates
        .iter()
        .filter(|r| r.params.get("template").and_then(|v| v.as_str()) == Some("1"))
        .collect();
    assert_eq!(template_creates.len(), nodes.len());
    assert_eq!(creates.len(), nodes.len(), "VMs are cloned, not created");
    let clones = requests(&workspace, "POST", "/clone");
    assert_eq!(clones.len(), plan.vms.len());
    assert!(
        clones
            .iter()
            .all(|r| r.params.get("full").and_then(|v| v.as_str()) == Some("0"))
    );
    for record in state.templates.values() {
        let config = workspace.sim.vm_config(record.vmid).unwrap();
        assert_eq!(config["template"], "1");
        assert!(config["scsi0"].starts_with("local-lvm:base-"), "{config:?}");
    }
    for vm in &plan.vms {
        let config = workspace.sim.vm_config(vm.vmid.0).unwrap();
        assert_eq!(config["cores"], vm.params["cores"], "{}", vm.name);
        assert_eq!(config["memory"], vm.params["memory"], "{}", vm.name);
        let tags =
            |value: &str| -> BTreeSet<String> { value.split(';').map(str::to_owned).collect() };
        assert_eq!(
            tags(&config["tags"]),
            tags(&vm.params["tags"]),
            "{}",
            vm.name
        );
        assert!(!config.contains_key("template"));
    }

    // A re-run reuses the templates and changes nothing.
    let before = workspace.log().len();
    let second = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(second.mutating_calls, 0);
    assert_eq!(workspace.mutating_since(before), Vec::new());
    let again = workspace.plan(&profile).await.unwrap();
    assert!(again.is_noop(), "{}", provision::plan::render_text(&again));

    let down = workspace.down(&profile).await.unwrap();
    assert_eq!(down.destroyed.len(), plan.vms.len());
    assert_eq!(down.templates.len(), nodes.len());
    // Every VM's destroy came before the first template's.
    let deletes = requests(&workspace, "DELETE", "");
    let template_ids: BTreeSet<String> = state
        .templates
        .values()
        .map(|t| format!("/{}", t.vmid))
        .collect();
    let first_template = deletes
        .iter()
        .position(|r| template_ids.iter().any(|id| r.path.ends_with(id.as_str())))
        .unwrap();
    let last_vm = deletes
        .iter()
        .rposition(|r| {
            r.path.contains("/qemu/")
                && !template_ids.iter().any(|id| r.path.ends_with(id.as_str()))
        })
        .unwrap();
    assert!(last_vm < first_template, "{deletes:?}");
    let state = workspace.state();
    assert!(state.vms.is_empty() && state.templates.is_empty());
    let resources = workspace.api.cluster_resources(Some("vm")).await.unwrap();
    assert!(resources.is_empty(), "{resources:?}");
    workspace.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_clone_copies_the_template_disk_onto_the_disks_storage() {
    let profile = with_strategy("ci-nested", ImageStrategy::FullClone);
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    let clones = requests(&workspace, "POST", "/clone");
    assert_eq!(clones.len(), report.vms.len());
    for clone in &clones {
        assert_eq!(clone.params["full"], "1");
        assert_eq!(clone.params["storage"], "local-lvm");
    }
    for vm in &report.vms {
        let config = workspace.sim.vm_config(vm.vmid).unwrap();
        assert_eq!(
            config["scsi0"].split(',').next().unwrap(),
            format!("local-lvm:vm-{}-disk-0", vm.vmid)
        );
    }
    workspace.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clones_of_one_template_never_surface_a_lock_error() {
    // ci-nested (linked-clone): its template is built by a first run.
    let mut profile = sim::builtin("ci-nested");
    assert_eq!(profile.image.strategy, ImageStrategy::LinkedClone);
    profile.proxmox.vmid_range.end = profile.proxmox.vmid_range.start + 20;
    let options = provision::exec::simulate::SimOptions {
        time_scale: 0.02,
        ..sim::fast()
    };
    let workspace = SimWorkspace::start(&profile, None, options).await;
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    let template = workspace.state().templates.into_values().next().unwrap();
    // Then twelve agents, cloned while a config change holds the template's lock: every clone
    // attempted meanwhile fails on the lock (`can't lock file … got timeout`) and is retried.
    twelve_agents(&mut profile);
    let node = provision::pve::NodeName(template.node.clone());
    let mut change = provision::pve::Params::new();
    change.insert("description".into(), "held".into());
    // Held from its start: it cannot end before the clones come.
    let stepper = workspace.sim.stepper();
    stepper.hold_next("qmconfig");
    let upid = workspace
        .api
        .vm_config_post(&node, provision::pve::VmId(template.vmid), &change)
        .await
        .unwrap();
    // Released once a clone has failed on the lock and been sent again (more clone requests
    // than the clones at once per template), bounded so a run that never retries still ends.
    let first_wave = sim::exec_options().clones_per_template.max(1);
    let release = async {
        for _ in 0..3000 {
            if requests(&workspace, "POST", "/clone").len() > first_wave {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stepper.finish_ok(&upid.to_string()).unwrap();
    };
    let (report, ()) = tokio::join!(workspace.up(&profile, sim::exec_options()), release);
    let report = report.unwrap();
    assert_eq!(report.vms.len(), 13);
    let vmids: BTreeSet<u32> = report.vms.iter().map(|vm| vm.vmid).collect();
    assert_eq!(vmids.len(), 13);
    // More clone requests than clones: those that met the held lock failed and were retried.
    let attempts = requests(&workspace, "POST", "/clone").len();
    eprintln!("clone requests: {attempts}");
    assert!(attempts > 12 + 1, "{attempts}");
    assert_eq!(workspace.state().templates.len(), 1);
    workspace.sim.shutdown().await;
}

/// The human plan of a linked-clone profile: the strategy, the template with exactly what
/// creates it, and each VM as a clone of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_text_shows_the_strategy_and_the_template() {
    let profile = sim::builtin("ci-nested");
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    let plan = workspace.plan(&profile).await.unwrap();
    let mut settings = insta::Settings::clone_current();
    // ISO names hash the seed, which carries SSH host keys generated per run.
    settings.add_filter(r"(provision-[a-z0-9-]+)-[0-9a-f]{8}\.iso", "$1-[seed].iso");
    settings.add_filter(r"provision-(created|exp)-[0-9]+", "provision-$1-[time]");
    settings.bind(|| {
        insta::assert_snapshot!(
            "plan_text_ci_nested_linked_clone",
            provision::plan::render_text(&plan)
        );
    });
    workspace.sim.shutdown().await;
}

/// pve-storage clones and allocates under the storage's lock (10 s timeout; on a shared
/// storage pmxcfs's `cfs-lock 'storage-ID'`). With a slow lock, more clones at once than it
/// can serve in 10 s fail on it; provision retries them and the cluster converges, every clone
/// of the template and no VM left behind by a failed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_that_time_out_on_the_storage_lock_are_retried_until_the_cluster_converges() {
    let mut profile = sim::builtin("ci-nested");
    assert_eq!(profile.image.strategy, ImageStrategy::LinkedClone);
    twelve_agents(&mut profile);
    profile.proxmox.vmid_range.end = profile.proxmox.vmid_range.start + 40;
    // The disks' storage shared (its lock is pmxcfs's) and slow: 1.5 s per volume, so of 16
    // two-volume clones at once the last ones wait past the 10 s timeout.
    let mut inventory = pve_sim::Inventory::builtin(provision::exec::simulate::inventory_for(
        &profile.proxmox.nodes,
        &profile.cluster.name,
    ))
    .unwrap();
    let disks = profile.proxmox.storage.disks.clone();
    let storage = inventory
        .storages
        .iter_mut()
        .find(|storage| storage.name == disks)
        .unwrap();
    storage.shared = true;
    storage.lock_ms = Some(1500);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inventory.toml");
    std::fs::write(&file, toml::to_string(&inventory).unwrap()).unwrap();
    let options = provision::exec::simulate::SimOptions {
        time_scale: 0.01,
        ..sim::fast()
    };
    let file = file.display().to_string();
    let workspace = SimWorkspace::start(&profile, Some(&file), options).await;
    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(report.vms.len(), 13);
    // Some clones met the lock's timeout, as Proxmox words it, and were sent again.
    let node = provision::pve::NodeName(profile.proxmox.nodes[0].clone());
    let query = provision::pve::types::TaskListQuery {
        source: "all",
        since: None,
        limit: 5000,
    };
    let tasks = workspace.api.node_tasks(&node, &query).await.unwrap();
    let message =
        format!("clone failed: cfs-lock 'storage-{disks}' error: got lock request timeout");
    let timed_out: BTreeSet<String> = tasks
        .iter()
        .filter(|task| task.kind == "qmclone" && task.status.as_deref() == Some(message.as_str()))
        .map(|task| task.upid.clone())
        .collect();
    let timed_out = timed_out.len();
    eprintln!("clones that timed out on the storage lock: {timed_out}");
    assert!(timed_out > 0, "no clone met the lock");
    let attempts = requests(&workspace, "POST", "/clone").len();
    assert_eq!(attempts, 13 + timed_out);
    // No failed clone left a VM behind: the node has the template and the 13 VMs.
    let vms = workspace.api.cluster_resources(Some("vm")).await.unwrap();
    assert_eq!(vms.len(), 14, "{vms:?}");
    let again = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(again.mutating_calls, 0, "a re-run changes nothing");
    workspace.sim.shutdown().await;
}
