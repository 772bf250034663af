//! Behaviour checked against Proxmox's own source: the config permission table
//! (qemu-server `check_vm_modify_config_perm`), disk naming within one request (pve-storage
//! `get_next_vm_diskname`), the config file lock (PVE::AbstractConfig `lock_config`), tags,
//! volume ids with slashes, the routes tools call besides provision, stored value shapes, and
//! the PCIe A100 fixture. (Every parameter of the official create/config schema is walked in
//! `schema_conformance.rs`.)
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pve_sim::inventory::{ImageSpec, TokenSpec};
use pve_sim::{Inventory, SimConfig};
use serde_json::Value;

const ROOT_TOKEN: &str = "PVEAPIToken=root@pam!tok=9d1c7a52-6b3e-4f08-a1d4-3e5f7c9b2d61";
const NO_CPU: &str = "PVEAPIToken=ci@pve!nocpu=1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9";

fn config_with_tokens() -> SimConfig {
    let mut inventory = Inventory::builtin("pve-a100").unwrap();
    inventory.tokens.push(TokenSpec {
        tokenid: "root@pam!tok".to_owned(),
        secret: "9d1c7a52-6b3e-4f08-a1d4-3e5f7c9b2d61".to_owned(),
        privileges: vec!["*".to_owned()],
    });
    inventory.tokens.push(TokenSpec {
        tokenid: "ci@pve!nocpu".to_owned(),
        secret: "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9".to_owned(),
        privileges: [
            "VM.Allocate",
            "VM.Audit",
            "VM.Config.Memory",
            "Datastore.AllocateSpace",
        ]
        .iter()
        .map(|p| (*p).to_owned())
        .collect(),
    });
    let mut config = SimConfig::new(inventory);
    config.time_scale = 0.001;
    config
}

#[tokio::test]
async fn config_keys_need_the_privileges_of_check_vm_modify_config_perm() {
    let sim = start_with(config_with_tokens()).await;
    small_vm(&sim, "101").await;
    let path = "/nodes/pve1/qemu/101/config";
    // Keys outside every category are root@pam's alone, even for a token with all privileges,
    // even root's own token.
    for (key, value) in [
        ("hugepages", "1024"),
        ("keephugepages", "1"),
        ("affinity", "0-3"),
        ("args", "-no-reboot"),
    ] {
        for auth in [TOKEN, ROOT_TOKEN] {
            let refused = sim.call_as(auth, "PUT", path, &[(key, value)]).await;
            assert_eq!(refused.status, 500, "{key} via {auth}");
            assert_eq!(refused.reason, format!("only root can set '{key}' config"));
        }
        let accepted = as_root(&sim, "PUT", path, &[(key, value)]).await;
        assert_eq!(
            accepted.status, 200,
            "{key} as root@pam: {:?}",
            accepted.body
        );
    }
    let refused = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[("vmid", "102"), ("memory", "1024"), ("hugepages", "2")],
        )
        .await;
    assert_eq!(refused.reason, "only root can set 'hugepages' config");
    assert!(sim.handle.vm_config(102).is_none());

    // serialN: a socket is VM.Config.HWType, a host device root's.
    let real = sim.call("PUT", path, &[("serial0", "/dev/ttyS0")]).await;
    assert_eq!(real.status, 500);
    assert_eq!(
        real.reason,
        "only root can set 'serial0' config for real devices"
    );
    assert_eq!(
        sim.call("PUT", path, &[("serial0", "socket")]).await.status,
        200
    );

    // startup also needs Sys.Modify on /.
    let startup = sim
        .call_as(LIMITED, "PUT", path, &[("startup", "order=1")])
        .await;
    assert_eq!(startup.status, 403);
    assert_eq!(startup.reason, "Permission check failed (/, Sys.Modify)");

    // Category privileges, phrased like PVE::RPCEnvironment.
    let cpu = sim.call_as(NO_CPU, "PUT", path, &[("cores", "4")]).await;
    assert_eq!(cpu.status, 403);
    assert_eq!(
        cpu.reason,
        "Permission check failed (/vms/101, VM.Config.CPU)"
    );
    let numa = sim
        .call_as(NO_CPU, "PUT", path, &[("numa0", "cpus=0,memory=512")])
        .await;
    assert_eq!(
        numa.reason,
        "Permission check failed (/vms/101, VM.Config.CPU)"
    );
    let hw = sim.call_as(NO_CPU, "PUT", path, &[("vga", "std")]).await;
    assert_eq!(
        hw.reason,
        "Permission check failed (/vms/101, VM.Config.HWType)"
    );
    let options = sim.call_as(NO_CPU, "PUT", path, &[("onboot", "1")]).await;
    assert_eq!(
        options.reason,
        "Permission check failed (/vms/101, VM.Config.Options)"
    );
    let tags = sim.call_as(NO_CPU, "PUT", path, &[("tags", "gpu")]).await;
    assert_eq!(
        tags.reason,
        "Permission check failed (/vms/101, VM.Config.Options)"
    );
    let cloudinit = sim.call_as(NO_CPU, "PUT", path, &[("ciuser", "k")]).await;
    assert_eq!(
        cloudinit.reason,
        "Permission check failed (/vms/101, VM.Config.Cloudinit|VM.Config.Network)"
    );
    let memory = sim.call_as(NO_CPU, "PUT", path, &[("balloon", "0")]).await;
    assert_eq!(memory.status, 200, "{:?}", memory.body);

    // hostpciN: a mapping needs Mapping.Use + HWType, a raw id root, romfile root@pam.
    let raw = sim
        .call_as(ROOT_TOKEN, "PUT", path, &[("hostpci0", "0000:41:00")])
        .await;
    assert_eq!(
        raw.reason,
        "only root can set 'hostpci0' config for non-mapped devices"
    );
    let romfile = sim
        .call("PUT", path, &[("hostpci0", "mapping=gpu,romfile=x.rom")])
        .await;
    assert_eq!(romfile.status, 400);
    assert_eq!(
        romfile.body["errors"]["hostpci0"],
        "only root@pam can set 'romfile' option"
    );
    let mapped = sim
        .call_as(NO_CPU, "PUT", path, &[("hostpci0", "mapping=gpu")])
        .await;
    assert_eq!(
        mapped.reason,
        "Permission check failed (/mapping/pci/gpu, Mapping.Use)"
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn disks_of_one_request_get_distinct_volumes_in_sorted_key_order() {
    let sim = start("pve-a100").await;
    let refused = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[("vmid", "110"), ("memory", "4096"), ("hugepages", "any")],
        )
        .await;
    // hugepages needs root: the token's create is refused, nothing exists.
    assert_eq!(refused.reason, "only root can set 'hugepages' config");
    assert!(sim.handle.vm_config(110).is_none());
    let upid = as_root(
        &sim,
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "110"),
            ("scsi1", "local-lvm:4"),
            ("scsi0", "local-lvm:8,format=raw"),
            (
                "efidisk0",
                "local-lvm:1,efitype=4m,pre-enrolled-keys=false,format=raw",
            ),
            ("memory", "4096"),
            ("hugepages", "any"),
            ("onboot", "true"),
        ],
    )
    .await
    .ok();
    sim.wait(upid.as_str().unwrap()).await;
    let config = sim.handle.vm_config(110).unwrap();
    assert_eq!(
        config["efidisk0"],
        "local-lvm:vm-110-disk-0,efitype=4m,pre-enrolled-keys=0,size=4M"
    );
    assert_eq!(config["scsi0"], "local-lvm:vm-110-disk-1,size=8G");
    assert_eq!(config["scsi1"], "local-lvm:vm-110-disk-2,size=4G");
    assert_eq!(config["onboot"], "1");
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu/110/config",
            &[("virtio0", "local-lvm:2"), ("scsi2", "local-lvm:2")],
        )
        .await
        .ok();
    sim.wait(upid.as_str().unwrap()).await;
    let config = sim.handle.vm_config(110).unwrap();
    assert!(config["scsi2"].starts_with("local-lvm:vm-110-disk-3,"));
    assert!(config["virtio0"].starts_with("local-lvm:vm-110-disk-4,"));

    // GET config: strings where the schema says string, numbers where it says integer.
    let answer = sim.get("/nodes/pve1/qemu/110/config").await;
    assert_eq!(answer["memory"], Value::from("4096"));
    assert_eq!(answer["hugepages"], Value::from("any"));
    assert_eq!(answer["onboot"], Value::from(1));
    assert!(answer.get("lock").is_none());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn an_async_config_change_holds_the_file_lock_without_a_lock_value() {
    let sim = start("pve-a100").await;
    small_vm(&sim, "120").await;
    let stepper = sim.handle.stepper();
    // Held from its start: it cannot end before the test looks.
    stepper.hold_next("qmconfig");
    let first = sim
        .call("POST", "/nodes/pve1/qemu/120/config", &[("cores", "2")])
        .await
        .ok();
    let first = first.as_str().unwrap().to_owned();
    let config = sim.get("/nodes/pve1/qemu/120/config").await;
    assert!(config.get("lock").is_none(), "{config}");

    // A synchronous change waits 10 s × time_scale, then gives up.
    let started = Instant::now();
    let put = sim
        .call("PUT", "/nodes/pve1/qemu/120/config", &[("cores", "3")])
        .await;
    assert!(started.elapsed() >= Duration::from_millis(10));
    assert_eq!(put.status, 500);
    assert_eq!(
        put.reason,
        "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout"
    );
    // An asynchronous one is accepted and its worker times out.
    let second = sim
        .call("POST", "/nodes/pve1/qemu/120/config", &[("cores", "4")])
        .await
        .ok();
    let status = sim.wait(second.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "can't lock file '/var/lock/qemu-server/lock-120.conf' - got timeout"
    );
    stepper.finish_ok(&first).unwrap();
    assert_eq!(sim.handle.vm_config(120).unwrap()["cores"], "2");
    let put = sim
        .call("PUT", "/nodes/pve1/qemu/120/config", &[("cores", "6")])
        .await;
    assert_eq!(put.status, 200);
    assert_eq!(sim.handle.vm_config(120).unwrap()["cores"], "6");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn tags_follow_pve_tag_case_insensitively() {
    let sim = start("pve-a100").await;
    small_vm(&sim, "130").await;
    let path = "/nodes/pve1/qemu/130/config";
    for good in ["GPU", "gpu;A100", "k3s,Server worker", "a_b+c.d-e"] {
        let answer = sim.call("PUT", path, &[("tags", good)]).await;
        assert_eq!(answer.status, 200, "{good}: {:?}", answer.body);
    }
    for bad in ["team:ml", "a=b", "-lead", "ünï"] {
        let answer = sim.call("PUT", path, &[("tags", bad)]).await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.body["errors"]["tags"].is_string());
    }
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn volume_ids_with_a_slash_and_the_routes_tools_call() {
    let sim = start("pve-a100").await;
    an_imported_image_answers_to_both_volume_id_forms(&sim).await;
    the_task_list_filters_like_node_tasks(&sim).await;
    the_indexes_and_listings_tools_read_answer(&sim).await;
    sim.handle.shutdown().await;
}

/// `download-url` into `local:import`, then the volume read and deleted by its id with the
/// slash as is and `%2F`-encoded.
async fn an_imported_image_answers_to_both_volume_id_forms(sim: &Sim) {
    let url =
        "https://cloud.debian.org/images/cloud/trixie/latest/debian-13-genericcloud-amd64.qcow2";
    let meta = sim
        .call("GET", "/nodes/pve1/query-url-metadata", &[("url", url)])
        .await
        .ok();
    assert_eq!(meta["filename"], "debian-13-genericcloud-amd64.qcow2");
    assert_eq!(meta["mimetype"], "application/octet-stream");
    let size = meta["size"].as_u64().unwrap();
    sim.task_ok(
        "POST",
        "/nodes/pve1/storage/local/download-url",
        &[
            ("url", url),
            ("content", "import"),
            ("filename", "debian-13.qcow2"),
        ],
    )
    .await;
    for path in [
        "/nodes/pve1/storage/local/content/local:import/debian-13.qcow2",
        "/nodes/pve1/storage/local/content/local%3Aimport%2Fdebian-13.qcow2",
    ] {
        let info = sim.get(path).await;
        assert_eq!(info["size"].as_u64(), Some(size), "{path}");
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["path"], "/var/lib/vz/import/debian-13.qcow2");
    }
    let upid = sim
        .call(
            "DELETE",
            "/nodes/pve1/storage/local/content/local:import/debian-13.qcow2",
            &[],
        )
        .await
        .ok();
    sim.wait(upid.as_str().unwrap()).await;
    let gone = sim
        .call(
            "GET",
            "/nodes/pve1/storage/local/content/local:import/debian-13.qcow2",
            &[],
        )
        .await;
    assert_eq!(gone.status, 500);
}

/// Tasks in bulk, around a new VM 140: `source=active` shows a held start, `vmid` +
/// `typefilter` the finished create with every field, `limit` and `since` cut the list.
async fn the_task_list_filters_like_node_tasks(sim: &Sim) {
    small_vm(sim, "140").await;
    let stepper = sim.handle.stepper();
    stepper.hold_next("qmstart");
    let running = sim
        .call("POST", "/nodes/pve1/qemu/140/status/start", &[])
        .await
        .ok();
    let active = sim
        .call("GET", "/nodes/pve1/tasks", &[("source", "active")])
        .await
        .ok();
    assert_eq!(active.as_array().unwrap().len(), 1);
    assert_eq!(active[0]["upid"], running);
    assert!(active[0].get("endtime").is_none());
    let finished = sim
        .call(
            "GET",
            "/nodes/pve1/tasks",
            &[("vmid", "140"), ("typefilter", "qmcreate")],
        )
        .await
        .ok();
    let finished = finished.as_array().unwrap();
    assert_eq!(finished.len(), 1);
    for field in [
        "upid",
        "node",
        "pid",
        "pstart",
        "starttime",
        "type",
        "id",
        "user",
        "status",
        "endtime",
    ] {
        assert!(
            finished[0].get(field).is_some(),
            "{field} in {}",
            finished[0]
        );
    }
    assert_eq!(finished[0]["status"], "OK");
    let limited = sim
        .call(
            "GET",
            "/nodes/pve1/tasks",
            &[("limit", "1"), ("source", "all")],
        )
        .await
        .ok();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let later = sim
        .call("GET", "/nodes/pve1/tasks", &[("since", "4102444800")])
        .await
        .ok();
    assert!(later.as_array().unwrap().is_empty());
    stepper.finish_ok(running.as_str().unwrap()).unwrap();
}

/// `/storage`, a node's bridges, a PCI device's mdev types, and VM 140's directory indexes.
async fn the_indexes_and_listings_tools_read_answer(sim: &Sim) {
    let storages = sim.get("/storage").await;
    assert!(
        storages
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["storage"] == "local-lvm" && s["type"] == "lvmthin")
    );
    let network = sim
        .call("GET", "/nodes/pve1/network", &[("type", "bridge")])
        .await
        .ok();
    assert_eq!(network[0]["iface"], "vmbr0");
    let pci = sim.get("/nodes/pve1/hardware/pci/0000:41:00.0").await;
    assert_eq!(pci[0]["method"], "mdev");
    let index = sim.get("/nodes/pve1/qemu/140").await;
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["subdir"] == "config")
    );
    let status = sim.get("/nodes/pve1/qemu/140/status").await;
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["subdir"] == "current")
    );
    let agent = sim.get("/nodes/pve1/qemu/140/agent").await;
    assert!(
        agent
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ping")
    );
}

#[tokio::test]
async fn cloudinit_dump_unlink_and_pools() {
    let sim = start("pve-a100").await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "150"),
            ("name", "node-a"),
            ("scsi0", "local-lvm:8"),
            ("scsi1", "local-lvm:2"),
            ("ide2", "local-lvm:cloudinit"),
            ("net0", "virtio,bridge=vmbr0"),
            ("ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1"),
            ("ciuser", "k3s"),
            ("nameserver", "10.0.0.1"),
        ],
    )
    .await;
    let dump = |kind: &'static str| {
        let sim = &sim;
        async move {
            sim.call(
                "GET",
                "/nodes/pve1/qemu/150/cloudinit/dump",
                &[("type", kind)],
            )
            .await
            .ok()
        }
    };
    let user = dump("user").await;
    assert!(
        user.as_str()
            .unwrap()
            .starts_with("#cloud-config\nhostname: node-a\n")
    );
    assert!(user.as_str().unwrap().contains("user: k3s\n"));
    let network = dump("network").await;
    assert!(network.as_str().unwrap().contains("address: '10.0.0.5'"));
    assert!(
        network
            .as_str()
            .unwrap()
            .contains("netmask: '255.255.255.0'")
    );
    assert!(
        dump("meta")
            .await
            .as_str()
            .unwrap()
            .starts_with("instance-id: ")
    );

    sim.call("PUT", "/nodes/pve1/qemu/150/unlink", &[("idlist", "scsi1")])
        .await
        .ok();
    let config = sim.handle.vm_config(150).unwrap();
    assert!(!config.contains_key("scsi1"));
    assert_eq!(config["unused0"], "local-lvm:vm-150-disk-1");
    sim.call(
        "PUT",
        "/nodes/pve1/qemu/150/unlink",
        &[("idlist", "unused0"), ("force", "1")],
    )
    .await
    .ok();
    let volumes = sim
        .get("/nodes/pve1/storage/local-lvm/content?vmid=150")
        .await;
    assert!(
        !volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["volid"] == "local-lvm:vm-150-disk-1")
    );

    sim.call(
        "POST",
        "/pools",
        &[("poolid", "k3s"), ("comment", "cluster")],
    )
    .await
    .ok();
    sim.call("PUT", "/pools/k3s", &[("vms", "150")]).await.ok();
    let pool = sim.get("/pools/k3s").await;
    assert_eq!(pool["comment"], "cluster");
    assert_eq!(pool["members"][0]["id"], "qemu/150");
    let busy = sim.call("DELETE", "/pools/k3s", &[]).await;
    assert_eq!(busy.status, 500);
    assert_eq!(busy.reason, "delete pool failed: pool 'k3s' is not empty");
    sim.call("PUT", "/pools/k3s", &[("vms", "150"), ("delete", "1")])
        .await
        .ok();
    assert_eq!(sim.call("DELETE", "/pools/k3s", &[]).await.status, 200);
    assert_eq!(sim.call("GET", "/pools/k3s", &[]).await.status, 500);
    sim.handle.shutdown().await;
}

#[test]
fn the_pcie_a100_fixture_has_pcie_cards_in_their_own_iommu_groups() {
    let inventory = Inventory::builtin("pve-a100-pcie").unwrap();
    let gpus: Vec<_> = inventory.nodes[0]
        .pci_devices
        .iter()
        .filter(|p| p.vendor == "0x10de")
        .collect();
    assert_eq!(gpus.len(), 8);
    let mut groups = std::collections::BTreeSet::new();
    for gpu in &gpus {
        assert_eq!(gpu.device, "0x20f1");
        assert_eq!(gpu.subsystem_device.as_deref(), Some("0x145f"));
        assert!(
            groups.insert(gpu.iommugroup),
            "shared group {}",
            gpu.iommugroup
        );
        let others = inventory.nodes[0]
            .pci_devices
            .iter()
            .filter(|p| p.iommugroup == gpu.iommugroup)
            .count();
        assert_eq!(others, 1);
    }
    // The SXM4 fixture the a100-8x profile filters on is unchanged.
    let sxm = Inventory::builtin("pve-a100").unwrap();
    assert!(
        sxm.nodes[0]
            .pci_devices
            .iter()
            .any(|p| p.device == "0x20b0")
    );
}

#[tokio::test]
async fn download_url_fails_on_a_checksum_that_known_content_does_not_have() {
    let url = "https://images.example/debian-13-genericcloud-amd64.qcow2";
    let sha256 = "4f3b1c9e2a7d5f60b8c1e3a9d7f2b4c6e8a0d2f4b6c8e0a2c4e6f8a0b2d4f6a8";
    let mut config = common::config("pve-a100");
    config.inventory.images.push(ImageSpec {
        url: url.to_owned(),
        size: 3_221_225_472,
        checksums: [("sha256".to_owned(), sha256.to_owned())].into(),
        mimetype: Some("application/x-qemu-disk".to_owned()),
    });
    let sim = start_with(config).await;
    let meta = sim
        .call("GET", "/nodes/pve1/query-url-metadata", &[("url", url)])
        .await
        .ok();
    assert_eq!(meta["size"], 3_221_225_472u64);
    assert_eq!(meta["mimetype"], "application/x-qemu-disk");
    let wrong = "0".repeat(64);
    let download = |checksum: String, filename: &'static str| {
        let sim = &sim;
        async move {
            sim.call(
                "POST",
                "/nodes/pve1/storage/local/download-url",
                &[
                    ("url", url),
                    ("content", "import"),
                    ("filename", filename),
                    ("checksum", checksum.as_str()),
                    ("checksum-algorithm", "sha256"),
                ],
            )
            .await
            .ok()
        }
    };
    let upid = download(wrong.clone(), "bad.qcow2").await;
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        format!("checksum mismatch: got '{sha256}' != expect '{wrong}'")
    );
    let content = sim.get("/nodes/pve1/storage/local/content").await;
    assert!(content.as_array().unwrap().is_empty(), "{content}");
    let upid = download(sha256.to_uppercase(), "good.qcow2").await;
    assert_eq!(sim.wait(upid.as_str().unwrap()).await["exitstatus"], "OK");
    let log = sim.task_log(upid.as_str().unwrap()).await;
    assert!(
        log.iter()
            .any(|l| l == "calculating checksum...OK, checksum verified")
    );
    let info = sim
        .get("/nodes/pve1/storage/local/content/local:import/good.qcow2")
        .await;
    assert_eq!(info["size"], 3_221_225_472u64);
    sim.handle.shutdown().await;
}

/// `GET /nodes/{node}/tasks` as pve-manager's `node_tasks` answers it: a running task is in the
/// active list with status `RUNNING` and leaves it when it ends, to appear in the archive with
/// its exit status; a token without Sys.Audit on the node sees only its own tasks, with `user`
/// and `tokenid` apart; `typefilter` matches exactly, `statusfilter` picks by status, `limit=0`
/// lists nothing.
#[tokio::test]
async fn the_task_list_answers_like_node_tasks() {
    let mut config = config_with_tokens();
    config.mode = pve_sim::SimMode::Explicit;
    let sim = start_with(config).await;
    let stepper = sim.handle.stepper();
    let create = |vmid: &'static str| [("vmid", vmid), ("memory", "512")];
    let audited = sim
        .call("POST", "/nodes/pve1/qemu", &create("150"))
        .await
        .ok();
    let own = sim
        .call_as(NO_CPU, "POST", "/nodes/pve1/qemu", &create("151"))
        .await
        .ok();
    let list = |auth: &'static str, params: Vec<(&'static str, &'static str)>| {
        let sim = &sim;
        async move {
            let auth = if auth.is_empty() {
                sim.auth.as_str()
            } else {
                auth
            };
            let answer = sim.call_as(auth, "GET", "/nodes/pve1/tasks", &params).await;
            answer.ok().as_array().unwrap().clone()
        }
    };
    let active = list("", vec![("source", "active")]).await;
    assert_eq!(active.len(), 2, "{active:?}");
    assert!(
        active
            .iter()
            .all(|t| t["status"] == "RUNNING" && t.get("endtime").is_none())
    );
    let mine = list(NO_CPU, vec![("source", "active")]).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["upid"], own);
    assert_eq!(mine[0]["user"], "ci@pve");
    assert_eq!(mine[0]["tokenid"], "nocpu");

    stepper.finish_ok(audited.as_str().unwrap()).unwrap();
    stepper.fail(own.as_str().unwrap(), "boom").unwrap();
    assert!(list("", vec![("source", "active")]).await.is_empty());
    let archive = list("", vec![("typefilter", "qmcreate")]).await;
    assert_eq!(archive.len(), 2, "{archive:?}");
    assert!(archive.iter().all(|t| t["endtime"].is_u64()));
    let failed = list("", vec![("statusfilter", "error")]).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["upid"], own);
    assert_eq!(failed[0]["status"], "boom");
    let ok = list("", vec![("source", "all"), ("statusfilter", "ok")]).await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0]["upid"], audited);
    assert!(list("", vec![("typefilter", "qmcreat")]).await.is_empty());
    assert!(list("", vec![("limit", "0")]).await.is_empty());
    let mine = list(NO_CPU, vec![("source", "all")]).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["status"], "boom");
    sim.handle.shutdown().await;
}
