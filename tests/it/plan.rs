//! `plan --output json` for every built-in profile against the simulator inventory that fits
//! it, and plans that show exactly the delta after a profile change (scale, memory, GPUs).
#![allow(clippy::unwrap_used)]

use crate::support::sim::{self, SimWorkspace};

fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    // ISO names hash the seed, which carries SSH host keys generated per run.
    settings.add_filter(r"(provision-[a-z0-9-]+)-[0-9a-f]{8}\.iso", "$1-[seed].iso");
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
                format!("{:?}", action.action).to_lowercase(),
                action.vm.clone(),
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
            action.params.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["memory"],
            "{}",
            action.vm
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
    let replace = plan.actions.iter().find(|a| a.vm == "a100-gpu-1").unwrap();
    assert_eq!(
        replace.after,
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
