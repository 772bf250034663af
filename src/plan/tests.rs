//! Planner unit tests on inventories built in code.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::inventory::{AuthKind, ExistingVm, Inventory, NodeInventory};
use crate::profile::model::Profile;
use crate::pve::types::{PciDevice, StorageStatus};
use crate::state::{State, VmPhase};

const PROFILE: &str = r#"
[cluster]
name = "lab"
k3s_version = "v1.31.4+k3s1"
[network]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[proxmox]
nodes = ["pve1", "pve2"]
storage = { disks = "local-lvm", iso = "local", images = "local" }
vmid_range = { start = 7100, end = 7199 }
[[proxmox.topology]]
node = "pve1"
numa_nodes = [
  { id = 0, cpus = "0-15", hugepages_1g = 64, pci_devices = ["0000:01"] },
  { id = 1, cpus = "16-31", hugepages_1g = 64, pci_devices = ["0000:41", "0000:81"] },
]
[[proxmox.topology]]
node = "pve2"
numa_nodes = [{ id = 0, cpus = "0-31", hugepages_1g = 128 }]
[image]
url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
[[node_groups]]
name = "cp"
role = "server"
count = 1
cores = 4
memory_mib = 8192
address_range = "10.0.0.11-10.0.0.13"
disks = { os_gb = 32 }
[[node_groups]]
name = "gpu"
role = "agent"
count = 2
cores = 8
memory_mib = 32768
address_range = "10.0.0.21-10.0.0.29"
disks = { os_gb = 64, scratch_gb = 100 }
gpus = { count = 1, filter = "10de:20b0" }
hugepages = 1024
numa_pinning = true
"#;

fn profile() -> Profile {
    toml::from_str(PROFILE).unwrap()
}

fn pci(id: &str, class: &str, vendor: &str, device: &str, group: i64) -> PciDevice {
    PciDevice {
        id: id.into(),
        class: class.into(),
        vendor: vendor.into(),
        device: device.into(),
        iommugroup: group,
        vendor_name: None,
        device_name: None,
        subsystem_vendor: None,
        subsystem_device: None,
        mdev: None,
    }
}

fn storage(id: &str, content: &str) -> StorageStatus {
    StorageStatus {
        storage: id.into(),
        kind: "dir".into(),
        content: content.into(),
        active: Some(1),
        enabled: Some(1),
        avail: Some(1 << 40),
        total: Some(1 << 41),
        shared: Some(0),
    }
}

fn node(name: &str, pci: Vec<PciDevice>) -> NodeInventory {
    NodeInventory {
        name: name.into(),
        online: true,
        cpus: 32,
        memory_total: 512 << 30,
        memory_free: 400 << 30,
        pci,
        storages: vec![
            storage("local", "iso,import"),
            storage("local-lvm", "images"),
        ],
        volumes: vec![],
    }
}

fn a100(bus: &str, group: i64) -> Vec<PciDevice> {
    vec![
        pci(
            &format!("0000:{bus}:00.0"),
            "0x030200",
            "0x10de",
            "0x20b0",
            group,
        ),
        pci(
            &format!("0000:{bus}:00.1"),
            "0x040300",
            "0x10de",
            "0x1aef",
            group,
        ),
    ]
}

fn inventory(auth: AuthKind) -> Inventory {
    let profile = profile();
    Inventory {
        nodes: vec![
            node("pve1", [a100("41", 40), a100("81", 50)].concat()),
            node("pve2", vec![]),
        ],
        mappings: vec![],
        vms: vec![],
        pools: vec![],
        auth,
        topology: profile.proxmox.topology.clone(),
    }
}

/// The converge plan of one input.
fn plan(
    profile: &Profile,
    inventory: &Inventory,
    state: &State,
    context: &PlanContext,
) -> Result<Plan, PlanError> {
    super::plan(
        &PlanInput {
            profile,
            inventory,
            state,
            context,
        },
        Intent::Converge,
    )
}

fn context() -> PlanContext {
    PlanContext {
        workspace: "lab-ws".into(),
        now: 1_767_225_600,
        ..PlanContext::default()
    }
}

#[test]
fn fresh_plan_creates_every_vm_with_exact_params() {
    let plan = plan(
        &profile(),
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap();
    assert_eq!(plan.count(ActionKind::Create), 3);
    let gpu1 = plan.vm("lab-gpu-1").unwrap();
    assert_eq!(gpu1.node.0, "pve1");
    assert_eq!(gpu1.vmid.0, 7101);
    assert_eq!(gpu1.params["hostpci0"], "0000:41:00,pcie=1");
    assert_eq!(
        gpu1.params["numa0"],
        "cpus=0-7,hostnodes=1,memory=32768,policy=bind"
    );
    assert_eq!(gpu1.params["affinity"], "16-23");
    assert_eq!(gpu1.params["hugepages"], "1024");
    assert_eq!(gpu1.params["keephugepages"], "1");
    assert_eq!(gpu1.params["balloon"], "0");
    assert_eq!(
        gpu1.params["efidisk0"],
        "local-lvm:1,efitype=4m,pre-enrolled-keys=0"
    );
    assert_eq!(
        gpu1.params["scsi0"],
        "local-lvm:0,import-from=local:import/debian-12-genericcloud-amd64.qcow2,iothread=1,discard=on,ssd=1"
    );
    assert_eq!(
        gpu1.params["scsi1"],
        "local-lvm:100,iothread=1,discard=on,ssd=1"
    );
    assert_eq!(
        gpu1.params["tags"],
        format!(
            "provision;cluster-lab;provision-cluster-lab;role-agent;provision-created-1767225600;provision-ip-{}",
            gpu1.address
        )
    );
    let gpu2 = plan.vm("lab-gpu-2").unwrap();
    assert_eq!(gpu2.params["hostpci0"], "0000:81:00,pcie=1");
    assert_eq!(gpu2.params["affinity"], "24-31");
    let cp = plan.vm("lab-cp-1").unwrap();
    assert!(!cp.params.contains_key("hostpci0"));
    assert_eq!(cp.node.0, "pve1", "spread starts on the first node");
    // One download for pve1 only: nothing is created on pve2.
    assert_eq!(plan.downloads.len(), 1);
    assert_eq!(plan.downloads[0].params["checksum-algorithm"], "sha256");
    // Deterministic.
    let again = self::plan(
        &profile(),
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap();
    assert_eq!(plan, again);
}

#[test]
fn token_without_mapping_rights_is_refused_and_with_them_mappings_are_planned() {
    let error = plan(
        &profile(),
        &inventory(AuthKind::Token {
            user: "ci@pve!provision".into(),
            may_create_mappings: false,
        }),
        &State::default(),
        &context(),
    )
    .unwrap_err();
    assert!(
        matches!(error, PlanError::RawPciNotAllowed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("root@pam"));

    // A token alone cannot set the GPU VMs' hugepages and affinity (root@pam only): refused,
    // naming each VM and key.
    let error = plan(
        &profile(),
        &inventory(AuthKind::Token {
            user: "ci@pve!provision".into(),
            may_create_mappings: true,
        }),
        &State::default(),
        &context(),
    )
    .unwrap_err();
    assert_eq!(
        error,
        PlanError::RootOnlyKeys {
            auth: "API token ci@pve!provision".into(),
            vms: "lab-gpu-1 (affinity, hugepages, keephugepages), lab-gpu-2 (affinity, hugepages, keephugepages)".into(),
        }
    );

    // The token plus root@pam for the root-only keys: GPUs through mappings.
    let plan = plan(
        &profile(),
        &inventory(AuthKind::TokenWithRoot {
            user: "ci@pve!provision".into(),
        }),
        &State::default(),
        &context(),
    )
    .unwrap();
    assert_eq!(plan.mappings.len(), 2);
    assert_eq!(plan.mappings[0].id, "provision-lab-pve1-0000-41-00");
    assert_eq!(
        plan.vm("lab-gpu-1").unwrap().params["hostpci0"],
        "mapping=provision-lab-pve1-0000-41-00,pcie=1"
    );
}

#[test]
fn iommu_off_and_shared_groups_are_explained() {
    let mut off = inventory(AuthKind::RootTicket);
    off.nodes[0].pci = [a100("41", -1), a100("81", -1)].concat();
    let error = plan(&profile(), &off, &State::default(), &context()).unwrap_err();
    assert!(matches!(error, PlanError::IommuOff { .. }), "{error}");
    assert!(error.to_string().contains("intel_iommu=on"));

    let mut shared = inventory(AuthKind::RootTicket);
    shared.nodes[0].pci = [
        a100("41", 40),
        a100("81", 50),
        vec![pci("0000:82:00.0", "0x020000", "0x8086", "0x1572", 50)],
    ]
    .concat();
    let error = plan(&profile(), &shared, &State::default(), &context()).unwrap_err();
    assert!(
        matches!(error, PlanError::SharedIommuGroup { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("ACS"));
}

#[test]
fn not_enough_gpus_and_hugepages_are_refused() {
    let mut profile = profile();
    profile.node_groups[1].count = 3;
    let error = plan(
        &profile,
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap_err();
    assert!(matches!(error, PlanError::NotEnoughGpus { .. }), "{error}");

    let mut profile = self::profile();
    profile.node_groups[1].memory_mib = 96 * 1024;
    let error = plan(
        &profile,
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap_err();
    assert!(
        matches!(error, PlanError::HugepagesDoNotFit { .. }),
        "{error}"
    );
}

#[test]
fn existing_gpu_in_use_is_never_assigned_twice() {
    let mut inventory = inventory(AuthKind::RootTicket);
    inventory.vms.push(ExistingVm {
        vmid: 500,
        node: "pve1".into(),
        name: "someone-else".into(),
        tags: vec![],
        status: "running".into(),
        lock: None,
        template: false,
        config: Params::from([("hostpci0".to_owned(), "0000:41:00.0,pcie=1".to_owned())]),
    });
    let mut profile = profile();
    profile.node_groups[1].count = 1;
    let plan = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    assert_eq!(plan.vm("lab-gpu-1").unwrap().gpus, vec!["0000:81:00"]);
    profile.node_groups[1].count = 2;
    assert!(self::plan(&profile, &inventory, &State::default(), &context()).is_err());
}

/// Pretend the plan was applied: VMs exist with the planned config, state says ready.
fn applied(plan: &Plan, inventory: &mut Inventory) -> State {
    let mut state = State {
        cluster: plan.cluster.clone(),
        ..State::default()
    };
    for vm in &plan.vms {
        let mut config = vm.params.clone();
        config.remove("vmid");
        config.insert(
            "scsi0".into(),
            format!(
                "local-lvm:vm-{}-disk-1,iothread=1,size={}",
                vm.vmid, vm.resize[0].size
            ),
        );
        if let Some(scsi1) = config.get("scsi1").cloned() {
            let size = scsi1
                .split(',')
                .next()
                .unwrap()
                .split(':')
                .nth(1)
                .unwrap()
                .to_owned();
            config.insert(
                "scsi1".into(),
                format!("local-lvm:vm-{}-disk-2,size={size}G", vm.vmid),
            );
        }
        inventory.vms.push(ExistingVm {
            vmid: vm.vmid.0,
            node: vm.node.0.clone(),
            name: vm.name.clone(),
            tags: vm.params["tags"].split(';').map(str::to_owned).collect(),
            status: "running".into(),
            lock: None,
            template: false,
            config,
        });
        state.vms.insert(
            vm.name.clone(),
            crate::state::VmRecord {
                name: vm.name.clone(),
                vmid: vm.vmid.0,
                node: vm.node.0.clone(),
                group: vm.group.clone(),
                role: vm.role,
                phase: VmPhase::Ready,
                params_hash: params_hash(&vm.params),
                address: Some(vm.address.to_string()),
                gpus: vm.gpus.clone(),
                iso: None,
            },
        );
    }
    state
}

#[test]
fn converged_cluster_plans_nothing_and_deltas_are_exact() {
    let profile = profile();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    // The summary counts what `up` creates besides VMs.
    let summary = render_text(&first);
    let downloads = first.downloads.len();
    assert!(downloads > 0, "{summary}");
    assert!(
        summary.contains(&format!("{downloads} image download")),
        "{summary}"
    );
    let state = applied(&first, &mut inventory);
    let second = plan(&profile, &inventory, &state, &context()).unwrap();
    assert!(second.is_noop(), "{}", render_text(&second));
    assert!(
        render_text(&second)
            .contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to destroy.")
    );

    // Memory change: update in place with restart, nothing else.
    let mut bigger = profile.clone();
    bigger.node_groups[0].memory_mib = 16384;
    let delta = plan(&bigger, &inventory, &state, &context()).unwrap();
    assert_eq!(delta.actions.len(), 1, "{}", render_text(&delta));
    assert_eq!(delta.actions[0].kind(), ActionKind::Update);
    assert_eq!(
        delta.actions[0].params().unwrap(),
        &Params::from([("memory".into(), "16384".into())])
    );
    assert!(matches!(
        delta.actions[0],
        Action::Update { restart: true, .. }
    ));
    // The diff shows the value Proxmox has and the one it gets.
    let old_memory = profile.node_groups[0].memory_mib;
    assert!(
        render_text(&delta).contains(&format!("~ memory: {old_memory} → 16384")),
        "{}",
        render_text(&delta)
    );

    // GPU count change: replace exactly the GPU VMs.
    let mut no_gpus = profile.clone();
    no_gpus.node_groups[1].gpus = None;
    no_gpus.node_groups[1].numa_pinning = false;
    no_gpus.node_groups[1].hugepages = None;
    let delta = plan(&no_gpus, &inventory, &state, &context()).unwrap();
    assert_eq!(
        delta.count(ActionKind::Replace),
        2,
        "{}",
        render_text(&delta)
    );
    assert_eq!(delta.actions.len(), 2);

    // Scale down: destroy exactly one VM.
    let mut smaller = profile.clone();
    smaller.node_groups[1].count = 1;
    let delta = plan(&smaller, &inventory, &state, &context()).unwrap();
    assert_eq!(delta.actions.len(), 1, "{}", render_text(&delta));
    assert_eq!(delta.actions[0].kind(), ActionKind::Destroy);
    assert_eq!(delta.actions[0].vm(), "lab-gpu-2");
}

#[test]
fn growth_in_place_that_does_not_fit_the_node_is_refused_in_the_plan() {
    let profile = profile();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let state = applied(&first, &mut inventory);

    // More vCPUs than the node has (32 in the fixture).
    let mut wide = profile.clone();
    wide.node_groups[0].cores = 64;
    let error = plan(&wide, &inventory, &state, &context()).unwrap_err();
    assert!(
        matches!(
            &error,
            PlanError::TooManyVcpus {
                needed: 64,
                cpus: 32,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("pve"), "{error}");

    // More memory than the node has free (400 GiB free in the fixture).
    let mut huge = profile.clone();
    huge.node_groups[0].memory_mib = 1024 * 1024;
    let error = plan(&huge, &inventory, &state, &context()).unwrap_err();
    assert!(
        matches!(error, PlanError::MemoryDoesNotFit { .. }),
        "{error}"
    );
}

#[test]
fn sizes_that_overflow_bytes_fail_the_capacity_check_instead_of_wrapping() {
    let profile = profile();
    let inventory = inventory(AuthKind::RootTicket);
    let state = State::default();
    // 16 EiB: `memory_mib * MIB` wrapped to 0 bytes before, so the VM "fit".
    let mut wrapping = profile.clone();
    wrapping.node_groups[0].memory_mib = (u64::MAX / (1024 * 1024)) + 1;
    let error = plan(&wrapping, &inventory, &state, &context()).unwrap_err();
    assert!(error.to_string().contains("memory free"), "{error}");
    // Cores × sockets beyond u32 must not wrap to a small vCPU count either.
    let mut cores = profile.clone();
    cores.node_groups[0].cores = 1 << 16;
    cores.node_groups[0].sockets = 1 << 16;
    let error = plan(&cores, &inventory, &state, &context()).unwrap_err();
    assert!(error.to_string().contains("4294967296"), "{error}");
}

#[test]
fn intent_vmid_is_reused_and_half_created_vm_is_replaced() {
    let profile = profile();
    let inventory_fresh = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory_fresh, &State::default(), &context()).unwrap();
    let mut state = State::default();
    let cp = first.vm("lab-cp-1").unwrap();
    state.vms.insert(
        cp.name.clone(),
        crate::state::VmRecord {
            name: cp.name.clone(),
            vmid: 7150,
            node: cp.node.0.clone(),
            group: cp.group.clone(),
            role: cp.role,
            phase: VmPhase::Intent,
            params_hash: String::new(),
            address: None,
            gpus: vec![],
            iso: None,
        },
    );
    let replan = plan(&profile, &inventory_fresh, &state, &context()).unwrap();
    assert_eq!(replan.vm("lab-cp-1").unwrap().vmid.0, 7150);
    assert_eq!(replan.count(ActionKind::Create), 3);

    let mut half = inventory(AuthKind::RootTicket);
    half.vms.push(ExistingVm {
        vmid: 7150,
        node: cp.node.0.clone(),
        name: cp.name.clone(),
        tags: vec!["provision".into(), "cluster-lab".into()],
        status: "stopped".into(),
        lock: Some("create".into()),
        template: false,
        config: Params::new(),
    });
    let replan = plan(&profile, &half, &state, &context()).unwrap();
    let action = replan
        .actions
        .iter()
        .find(|a| a.vm() == "lab-cp-1")
        .unwrap();
    assert_eq!(action.kind(), ActionKind::Replace);
    assert_eq!(action.vmid().0, 7150);
}

#[test]
fn every_nic_gets_a_fixed_locally_administered_mac() {
    let profile = profile();
    let inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let again = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let mut seen = BTreeSet::new();
    for vm in &first.vms {
        // The model key carries the MAC (qemu-server's `net[n]`: `virtio=<MAC>,bridge=…`).
        assert_eq!(
            vm.params["net0"],
            format!("virtio={},bridge=vmbr0", vm.mac),
            "{}",
            vm.name
        );
        assert_eq!(vm.mac, derived_mac("lab", &vm.name, 0));
        let first_octet = u8::from_str_radix(&vm.mac[..2], 16).unwrap();
        assert_eq!(first_octet & 0b11, 0b10, "locally administered unicast");
        assert!(seen.insert(vm.mac.clone()), "duplicate MAC {}", vm.mac);
        assert_eq!(
            again.vm(&vm.name).unwrap().mac,
            vm.mac,
            "stable across runs"
        );
    }
    // Another cluster with the same VM names gets other MACs.
    assert_ne!(
        derived_mac("lab", "lab-cp-1", 0),
        derived_mac("lab2", "lab-cp-1", 0)
    );
    // The seeds prepared before planning use the same MACs.
    let wanted = wanted_vms_observed(&profile, &inventory, &State::default()).unwrap();
    for want in &wanted {
        assert_eq!(first.vm(&want.name).unwrap().mac, want.mac);
    }
}

#[test]
fn an_existing_vm_keeps_its_live_mac_instead_of_being_replaced() {
    let profile = profile();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let state = applied(&first, &mut inventory);
    // A VM created before MACs were fixed: Proxmox gave it a random one in its own OUI.
    let live_mac = "BC:24:11:AA:BB:CC";
    let cp = inventory
        .vms
        .iter_mut()
        .find(|vm| vm.name == "lab-cp-1")
        .unwrap();
    cp.config.insert(
        "net0".into(),
        format!(
            "virtio={},bridge=vmbr0,firewall=1",
            live_mac.to_ascii_lowercase()
        ),
    );
    let second = plan(&profile, &inventory, &state, &context()).unwrap();
    assert!(second.is_noop(), "{}", render_text(&second));
    let planned = second.vm("lab-cp-1").unwrap();
    assert_eq!(planned.mac, live_mac);
    assert_eq!(
        planned.params["net0"],
        format!("virtio={live_mac},bridge=vmbr0")
    );
    let wanted = wanted_vms_observed(&profile, &inventory, &state).unwrap();
    assert_eq!(wanted[0].mac, live_mac, "its seed matches the live NIC");
    // A derived MAC never takes one an existing VM holds.
    let mut macs = BTreeSet::new();
    assert!(second.vms.iter().all(|vm| macs.insert(vm.mac.clone())));
}

#[test]
fn live_macs_are_read_in_both_property_forms() {
    assert_eq!(
        live_mac("virtio=bc:24:11:00:00:01,bridge=vmbr0").as_deref(),
        Some("BC:24:11:00:00:01")
    );
    assert_eq!(
        live_mac("model=virtio,macaddr=02:00:00:00:00:0A,bridge=vmbr0").as_deref(),
        Some("02:00:00:00:00:0A")
    );
    assert_eq!(live_mac("virtio,bridge=vmbr0"), None);
}

#[test]
fn down_destroys_what_is_still_ours_and_forgets_the_rest() {
    let profile = profile();
    let mut inventory = inventory(AuthKind::RootTicket);
    let first = plan(&profile, &inventory, &State::default(), &context()).unwrap();
    let mut state = applied(&first, &mut inventory);
    // Gone from Proxmox, and renamed on Proxmox: both only forgotten.
    let mut gone = state.vms["lab-cp-1"].clone();
    gone.name = "lab-gone".into();
    gone.vmid = 7190;
    state.vms.insert(gone.name.clone(), gone);
    let renamed = state.vms["lab-gpu-2"].vmid;
    inventory
        .vms
        .iter_mut()
        .find(|vm| vm.vmid == renamed)
        .unwrap()
        .name = "someone-else".into();
    let input = PlanInput {
        profile: &profile,
        inventory: &inventory,
        state: &state,
        context: &context(),
    };
    let down = super::plan(&input, Intent::Down).unwrap();
    let destroyed: Vec<(&str, &str)> = down
        .actions
        .iter()
        .map(|action| {
            assert_eq!(action.kind(), ActionKind::Destroy);
            (action.vm(), action.node().0.as_str())
        })
        .collect();
    assert_eq!(destroyed, [("lab-cp-1", "pve1"), ("lab-gpu-1", "pve1")]);
    let forgotten: Vec<&str> = down.forget.iter().map(|f| f.vm.as_str()).collect();
    assert_eq!(forgotten, ["lab-gone", "lab-gpu-2"]);
    assert!(down.vms.is_empty() && down.downloads.is_empty() && down.pool.is_none());
    let text = render_text(&down);
    assert!(
        text.contains("Plan: 0 to create, 0 to update, 0 to replace, 2 to destroy."),
        "{text}"
    );
    assert_eq!(render_json(&down)["forget"][0]["vm"], "lab-gone");
}

mod replace;

#[test]
fn a_ttl_tags_the_expiry_and_an_existing_cluster_keeps_its_creation_time() {
    let mut profile = profile();
    profile.cluster.ttl = Some("4h".to_owned());
    let plan = plan(
        &profile,
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap();
    let tags = &plan.vm("lab-cp-1").unwrap().params["tags"];
    assert!(tags.contains("provision-created-1767225600"), "{tags}");
    assert!(tags.contains("provision-exp-1767240000"), "{tags}");
    // A later run of the same cluster: its VMs say when it was made.
    let mut observed = inventory(AuthKind::RootTicket);
    observed.vms.push(crate::inventory::ExistingVm {
        vmid: 7100,
        node: "pve1".into(),
        name: "lab-cp-1".into(),
        tags: tags.split(';').map(str::to_owned).collect(),
        status: "running".into(),
        lock: None,
        template: false,
        config: Params::new(),
    });
    let later = PlanContext {
        now: 1_767_300_000,
        ..context()
    };
    let replan = plan_for_test(&profile, &observed, &later);
    let gpu_tags = &replan.vm("lab-gpu-1").unwrap().params["tags"];
    assert!(
        gpu_tags.contains("provision-created-1767225600"),
        "{gpu_tags}"
    );
}

#[test]
fn an_address_range_skips_addresses_another_cluster_uses() {
    let fresh = plan(
        &profile(),
        &inventory(AuthKind::RootTicket),
        &State::default(),
        &context(),
    )
    .unwrap();
    let first = fresh.vm("lab-gpu-1").unwrap().address;
    let mut observed = inventory(AuthKind::RootTicket);
    observed.vms.push(crate::inventory::ExistingVm {
        vmid: 9000,
        node: "pve1".into(),
        name: "other-gpu-1".into(),
        tags: vec![
            "provision".into(),
            "cluster-other".into(),
            crate::inventory::tags::address_tag(first),
        ],
        status: "running".into(),
        lock: None,
        template: false,
        config: Params::new(),
    });
    let beside = plan_for_test(&profile(), &observed, &context());
    let moved = beside.vm("lab-gpu-1").unwrap().address;
    assert_ne!(moved, first);
    assert!(
        beside.vms.iter().all(|vm| vm.address != first),
        "no VM of this cluster takes the other cluster's address"
    );
}

fn plan_for_test(profile: &Profile, inventory: &Inventory, context: &PlanContext) -> Plan {
    plan(profile, inventory, &State::default(), context).unwrap()
}

mod rolling;
mod templates;
mod upgrade;
