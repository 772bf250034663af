//! `plan --output json` for every built-in profile against the simulator inventory that fits
//! it, and plans that show exactly the delta after a profile change (scale, memory, GPUs).
#![allow(clippy::unwrap_used)]

use crate::support::sim::{self, SimWorkspace};

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    // ISO names hash the seed, which carries SSH host keys generated per run.
    settings.add_filter(r"(provision-[a-z0-9-]+)-[0-9a-f]{8}\.iso", "$1-[seed].iso");
    // The creation tag is the time of the run, the expiry that plus the TTL.
    settings.add_filter(r"provision-(created|exp)-[0-9]+", "provision-$1-[time]");
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_for_every_builtin_profile() {
    for name in sim::builtin_names() {
        let profile = sim::builtin(name);
        let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
        // Every built-in profile plans on the fixture `--simulate` picks for it.
        let plan = workspace
            .plan(&profile)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error:#}"));
        assert!(
            workspace.mutating_since(0).is_empty(),
            "{name}: planning changed Proxmox"
        );
        let rendered = serde_json::to_string_pretty(&provision::plan::render_json(&plan)).unwrap();
        snapshot_settings().bind(|| {
            insta::assert_snapshot!(format!("plan_json_{name}"), rendered);
        });
        workspace.sim.shutdown().await;
    }
}

/// Names of the VMs with each action kind, as (action, vm) pairs.
fn delta(plan: &provision::plan::Plan) -> Vec<(String, String)> {
    plan.actions
        .iter()
        .map(|action| {
            (
                format!("{:?}", action.kind()).to_lowercase(),
                action.vm().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_memory_and_gpu_changes_plan_exactly_the_delta_and_apply_reaches_it() {
    // a100-8x on pve-a100-pcie: 4 GPU workers × 2 A100 use all 8 GPUs; scaling to 6 workers needs a
    // fixture with more, so the GPU workers take 1 GPU each (8 available).
    let mut profile = sim::builtin("a100-8x");
    let gpu = profile
        .node_groups
        .iter()
        .position(|group| group.name == "gpu")
        .unwrap();
    profile.node_groups[gpu].gpus.as_mut().unwrap().count = 1;
    profile.node_groups[gpu].count = 4;
    // 64 GiB hugepage-backed workers: six fit the host's 2 × 480 1 GiB pages.
    profile.node_groups[gpu].memory_mib = 65536;
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert!(workspace.plan(&profile).await.unwrap().is_noop());

    // Scale 4 → 6 workers: exactly two creates.
    profile.node_groups[gpu].count = 6;
    for address in ["10.0.0.25", "10.0.0.26"] {
        profile.node_groups[gpu]
            .addresses
            .push(address.parse().unwrap());
    }
    let plan = workspace.plan(&profile).await.unwrap();
    assert_eq!(
        delta(&plan),
        vec![
            ("create".to_owned(), "a100-gpu-5".to_owned()),
            ("create".to_owned(), "a100-gpu-6".to_owned()),
        ]
    );
    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(report.vms.len(), 9);
    assert!(workspace.plan(&profile).await.unwrap().is_noop());

    // Memory of the servers: three in-place updates touching only `memory` (and its NUMA
    // binding when pinned).
    let server = profile
        .node_groups
        .iter()
        .position(|group| group.name == "server")
        .unwrap();
    profile.node_groups[server].memory_mib += 2048;
    let plan = workspace.plan(&profile).await.unwrap();
    assert_eq!(
        delta(&plan),
        vec![
            ("update".to_owned(), "a100-server-1".to_owned()),
            ("update".to_owned(), "a100-server-2".to_owned()),
            ("update".to_owned(), "a100-server-3".to_owned()),
        ]
    );
    for action in &plan.actions {
        assert_eq!(
            action
                .params()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["memory"],
            "{}",
            action.vm()
        );
    }
    let before = workspace.log().len();
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    let puts: Vec<_> = workspace
        .mutating_since(before)
        .into_iter()
        .filter(|request| request.method == "PUT" && request.path.ends_with("/config"))
        .collect();
    assert_eq!(puts.len(), 3, "{puts:#?}");
    let memory = (16384 + 2048).to_string();
    for vmid in [7100, 7101, 7102] {
        assert_eq!(
            workspace.sim.vm_config(vmid).unwrap()["memory"],
            memory,
            "vm {vmid}"
        );
    }
    assert!(workspace.plan(&profile).await.unwrap().is_noop());

    // +8 GiB more on each server does not fit the host's memory outside the hugepage pool:
    // refused in the plan, naming node and VM, before any mutating request.
    profile.node_groups[server].memory_mib += 8192;
    let before = workspace.log().len();
    let error = format!("{:#}", workspace.plan(&profile).await.unwrap_err());
    assert!(
        error.contains("memory does not fit for a100-server-") && error.contains("on pve1"),
        "{error}"
    );
    assert!(workspace.mutating_since(before).is_empty());
    profile.node_groups[server].memory_mib -= 8192;

    // GPU count 1 → 2 on six workers with 8 GPUs: refused before anything changes.
    profile.node_groups[gpu].gpus.as_mut().unwrap().count = 2;
    let before = workspace.log().len();
    let error = workspace.plan(&profile).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("not enough GPUs"),
        "{error:#}"
    );
    assert!(workspace.mutating_since(before).is_empty());

    // Scale back 6 → 4: exactly two destroys, and apply reaches it.
    profile.node_groups[gpu].gpus.as_mut().unwrap().count = 1;
    profile.node_groups[gpu].count = 4;
    profile.node_groups[gpu].addresses.truncate(4);
    let plan = workspace.plan(&profile).await.unwrap();
    assert_eq!(
        delta(&plan),
        vec![
            ("destroy".to_owned(), "a100-gpu-5".to_owned()),
            ("destroy".to_owned(), "a100-gpu-6".to_owned()),
        ]
    );
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(workspace.state().vms.len(), 7);
    assert!(workspace.plan(&profile).await.unwrap().is_noop());

    // GPU count 1 → 2 on the four workers (8 GPUs): exactly four replaces, no device twice, and
    // each worker's pair on one NUMA node. The profile's topology names the GPUs of each NUMA
    // node, and the four single-GPU workers all sit on node 0 (its four GPUs): with NUMA pinning
    // only two of them can stay there, so two workers move to node 1 (its four GPUs) — they
    // cannot all keep their former GPU.
    let before_gpus: Vec<Vec<String>> = (1..=4)
        .map(|i| workspace.state().vms[&format!("a100-gpu-{i}")].gpus.clone())
        .collect();
    let node0 = ["0000:01:00", "0000:21:00", "0000:41:00", "0000:61:00"];
    assert_eq!(
        before_gpus,
        node0.map(|device| vec![device.to_owned()]).to_vec()
    );
    profile.node_groups[gpu].gpus.as_mut().unwrap().count = 2;
    let plan = workspace.plan(&profile).await.unwrap();
    assert_eq!(
        delta(&plan),
        (1..=4)
            .map(|i| ("replace".to_owned(), format!("a100-gpu-{i}")))
            .collect::<Vec<_>>()
    );
    let mut assigned = std::collections::BTreeSet::new();
    let on_node0 = |device: &String| node0.contains(&device.as_str());
    for i in 1..=4 {
        let vm = plan.vm(&format!("a100-gpu-{i}")).unwrap();
        assert_eq!(vm.gpus.len(), 2, "{}", vm.name);
        assert_eq!(
            on_node0(&vm.gpus[0]),
            on_node0(&vm.gpus[1]),
            "{}: {:?} span NUMA nodes",
            vm.name,
            vm.gpus
        );
        for device in &vm.gpus {
            assert!(assigned.insert(device.clone()), "{device} assigned twice");
        }
    }
    assert_eq!(
        plan.vm("a100-gpu-1").unwrap().gpus,
        ["0000:01:00", "0000:21:00"],
        "a100-gpu-1 keeps its GPU"
    );
    assert_eq!(assigned.iter().filter(|d| on_node0(d)).count(), 4);
    let replace = plan
        .actions
        .iter()
        .find(|a| a.vm() == "a100-gpu-1")
        .unwrap();
    assert_eq!(
        replace.after(),
        vec!["a100-gpu-2", "a100-gpu-3", "a100-gpu-4"]
    );
    let report = workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert_eq!(report.vms.len(), 7);
    for i in 1..=4 {
        let name = format!("a100-gpu-{i}");
        let record = &workspace.state().vms[&name];
        assert_eq!(record.gpus.len(), 2, "{name}");
        let config = workspace.sim.vm_config(record.vmid).unwrap();
        assert!(config.contains_key("hostpci1"), "{name}: {config:?}");
    }
    let before = workspace.log().len();
    let plan = workspace.plan(&profile).await.unwrap();
    assert!(plan.is_noop(), "{:?}", delta(&plan));
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    assert!(workspace.mutating_since(before).is_empty());
    workspace.sim.shutdown().await;
}

/// `plan --destroy` (the down plan, as JSON) lists exactly what `down` then does: the same VMs
/// destroyed (checked against the simulator's DELETE requests) and the same records forgotten,
/// including a half-created VM (in the state as an intent, created without its disks) and a
/// record whose VM is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_destroy_lists_exactly_what_down_does() {
    use provision::pve::{NodeName, Params};
    use provision::state::{StateStore, VmPhase, VmRecord};

    let profile = sim::builtin("ci-nested");
    let workspace = SimWorkspace::start(&profile, None, sim::fast()).await;
    workspace.up(&profile, sim::exec_options()).await.unwrap();
    let node = profile.proxmox.nodes[0].clone();
    let record = |name: &str, vmid: u32| VmRecord {
        name: name.to_owned(),
        vmid,
        node: node.clone(),
        group: "agent".to_owned(),
        role: provision::profile::model::Role::Agent,
        phase: VmPhase::Intent,
        params_hash: String::new(),
        address: None,
        gpus: Vec::new(),
        iso: None,
    };
    // Half-created: the create of an interrupted run got as far as the VM, not its disks.
    let tag = provision::inventory::cluster_tag(&profile.cluster.name);
    let half_vmid = profile.proxmox.vmid_range.end;
    let params = Params::from([
        ("vmid".to_owned(), half_vmid.to_string()),
        ("name".to_owned(), "ci-half".to_owned()),
        ("tags".to_owned(), format!("provision;{tag}")),
    ]);
    let upid = workspace
        .api
        .vm_create(&NodeName(node.clone()), &params)
        .await
        .unwrap();
    let state_path = workspace.state_dir();
    for _ in 0..200 {
        let status = workspace
            .api
            .task_status(&NodeName(node.clone()), &upid)
            .await
            .unwrap();
        if status.status == "stopped" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    {
        let mut store = StateStore::open(&state_path, "test").unwrap();
        store
            .update(|state| {
                state
                    .vms
                    .insert("ci-half".to_owned(), record("ci-half", half_vmid));
                // Gone: recorded, never created.
                state
                    .vms
                    .insert("ci-gone".to_owned(), record("ci-gone", half_vmid - 1));
            })
            .unwrap();
    }

    let state = workspace.state();
    let (_, plan) = provision::exec::observe_and_plan_down(
        workspace.api.as_ref(),
        workspace.auth.clone(),
        &profile,
        &state,
    )
    .await
    .unwrap();
    let json = provision::plan::render_json(&plan);
    let mut planned: Vec<(String, String, u64)> = json["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|action| {
            assert_eq!(action["action"], "destroy");
            (
                action["vm"].as_str().unwrap().to_owned(),
                action["node"].as_str().unwrap().to_owned(),
                action["vmid"].as_u64().unwrap(),
            )
        })
        .collect();
    planned.sort();
    let forget: Vec<&str> = json["forget"]
        .as_array()
        .unwrap()
        .iter()
        .map(|forget| forget["vm"].as_str().unwrap())
        .collect();
    assert_eq!(forget, ["ci-gone"]);
    let wanted = provision::plan::wanted_vms(&profile).unwrap().len();
    assert_eq!(planned.len(), wanted + 1, "{planned:?}");
    assert!(planned.iter().any(|(vm, _, _)| vm == "ci-half"));
    assert_eq!(json["summary"]["destroy"], planned.len());
    let text = provision::plan::render_text(&plan);
    assert!(text.contains("  forget ci-gone (vmid"), "{text}");
    assert!(
        text.contains(&format!("- ci-half (vmid {half_vmid} on {node})")),
        "{text}"
    );

    let before = workspace.log().len();
    let report = workspace.down(&profile).await.unwrap();
    let mut destroyed = report.destroyed.clone();
    destroyed.sort();
    assert_eq!(
        destroyed,
        planned
            .iter()
            .map(|(vm, _, _)| vm.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.forgotten, ["ci-gone"]);
    let mut deleted: Vec<(String, u64)> = workspace
        .mutating_since(before)
        .into_iter()
        .filter(|request| request.method == "DELETE" && request.path.contains("/qemu/"))
        .map(|request| {
            let parts: Vec<&str> = request.path.split('/').collect();
            (parts[2].to_owned(), parts[4].parse().unwrap())
        })
        .collect();
    deleted.sort();
    let mut expected: Vec<(String, u64)> = planned
        .iter()
        .map(|(_, node, vmid)| (node.clone(), *vmid))
        .collect();
    // ci-nested clones its VMs from a template per node, which down removes after them.
    let templates = json["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0]["action"], "destroy");
    assert_eq!(report.templates, [templates[0]["name"].as_str().unwrap()]);
    expected.push((
        templates[0]["node"].as_str().unwrap().to_owned(),
        templates[0]["vmid"].as_u64().unwrap(),
    ));
    expected.sort();
    assert_eq!(deleted, expected);
    assert!(workspace.state().vms.is_empty());

    // Nothing left: the down plan is empty.
    let (_, plan) = provision::exec::observe_and_plan_down(
        workspace.api.as_ref(),
        workspace.auth.clone(),
        &profile,
        &workspace.state(),
    )
    .await
    .unwrap();
    assert!(plan.is_noop());
    assert!(
        provision::plan::render_text(&plan).contains("No changes: no VM of cluster"),
        "{}",
        provision::plan::render_text(&plan)
    );
    workspace.sim.shutdown().await;
}
