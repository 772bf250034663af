//! Route families over HTTPS: cluster, nodes, hardware, storage (download, multipart upload with
//! checksum, content, delete), NoCloud seeds read by the guest agent, config, resize, clone,
//! mappings, pools, the request log, the guest backend, and persistence across processes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use pve_sim::{GuestBackend, GuestBoot, SimMode};
use sha2::{Digest, Sha256};

const NETWORK_CONFIG: &str = "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: 'bc:24:11:00:00:01'\n    set-name: eth0\n    addresses: [10.20.0.31/24]\n    routes:\n      - to: default\n        via: 10.20.0.1\n";
const USER_DATA: &str = "#cloud-config\nhostname: gpu-w1\nssh_keys:\n  ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmv host@gpu-w1\n";

fn seed_iso() -> Vec<u8> {
    pve_sim::iso9660::write_image(
        &[
            ("user-data", USER_DATA.as_bytes()),
            (
                "meta-data",
                b"instance-id: gpu-w1\nlocal-hostname: gpu-w1\n",
            ),
            ("network-config", NETWORK_CONFIG.as_bytes()),
        ],
        true,
    )
}

async fn upload(sim: &Sim, content: &str, filename: &str, data: &[u8], checksum: &str) -> Answer {
    let boundary = "----provision-sim-test";
    let mut body = Vec::new();
    for (name, value) in [
        ("content", content),
        ("checksum-algorithm", "sha256"),
        ("checksum", checksum),
    ] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let response = sim
        .http
        .post(sim.url("/nodes/pve1/storage/local/upload"))
        .header("Authorization", &sim.auth)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

#[tokio::test]
async fn cluster_nodes_and_hardware() {
    let sim = start("pve-cluster-4").await;
    let status = sim.get("/cluster/status").await;
    assert_eq!(status[0]["type"], "cluster");
    assert_eq!(status[0]["nodes"], 4);
    assert_eq!(status.as_array().unwrap().len(), 5);
    let nodes = sim.get("/cluster/resources?type=node").await;
    assert_eq!(nodes.as_array().unwrap().len(), 4);
    let storages = sim.get("/cluster/resources?type=storage").await;
    assert_eq!(storages.as_array().unwrap().len(), 8);
    let bad = sim
        .call("GET", "/cluster/resources", &[("type", "qemu")])
        .await;
    assert_eq!(bad.status, 400);
    sim.handle.shutdown().await;

    let sim = start("pve-a100").await;
    let pci = sim.get("/nodes/pve1/hardware/pci").await;
    let pci = pci.as_array().unwrap();
    // The host bridge (class 06) is hidden by the default class blacklist.
    assert!(pci.iter().all(|p| p["class"] != "0x060000"));
    let gpus: Vec<_> = pci
        .iter()
        .filter(|p| p["vendor"] == "0x10de" && p["class"] == "0x030200")
        .collect();
    assert_eq!(gpus.len(), 8);
    let all = sim
        .get("/nodes/pve1/hardware/pci?pci-class-blacklist=")
        .await;
    assert_eq!(all.as_array().unwrap().len(), 12);
    let storage = sim.get("/nodes/pve1/storage?content=images").await;
    assert_eq!(storage.as_array().unwrap().len(), 1);
    assert_eq!(storage[0]["storage"], "local-lvm");
    let local = sim.get("/nodes/pve1/storage/local/status").await;
    assert_eq!(local["type"], "dir");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn downloads_uploads_and_volumes() {
    let sim = start("pve-ci").await;
    let params = [
        (
            "url",
            "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
        ),
        ("content", "import"),
        ("filename", "noble.qcow2"),
        ("checksum", "ab12"),
        ("checksum-algorithm", "sha256"),
    ];
    sim.task_ok("POST", "/nodes/pve1/storage/local/download-url", &params)
        .await;
    let again = sim
        .call("POST", "/nodes/pve1/storage/local/download-url", &params)
        .await;
    assert_eq!(again.status, 500);
    let wrong_storage = sim
        .call(
            "POST",
            "/nodes/pve1/storage/local-lvm/download-url",
            &params,
        )
        .await;
    assert_eq!(
        wrong_storage.reason,
        "storage 'local-lvm' does not support content-type 'import'"
    );
    let iso = seed_iso();
    let sha = hex(&Sha256::digest(&iso));
    let upid = upload(&sim, "iso", "seed.iso", &iso, &sha).await.ok();
    assert_eq!(sim.wait(upid.as_str().unwrap()).await["exitstatus"], "OK");
    let bad = upload(&sim, "iso", "bad.iso", &iso, &"0".repeat(64))
        .await
        .ok();
    let status = sim.wait(bad.as_str().unwrap()).await;
    assert!(
        status["exitstatus"]
            .as_str()
            .unwrap()
            .starts_with("checksum mismatch: got '"),
        "{status}"
    );
    let content = sim.get("/nodes/pve1/storage/local/content").await;
    let volids: Vec<&str> = content
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["volid"].as_str().unwrap())
        .collect();
    assert_eq!(volids, ["local:import/noble.qcow2", "local:iso/seed.iso"]);
    assert_eq!(content[1]["size"], iso.len());
    sim.task_ok(
        "DELETE",
        &format!(
            "/nodes/pve1/storage/local/content/{}",
            encode("local:iso/seed.iso")
        ),
        &[],
    )
    .await;
    assert_eq!(
        sim.get("/nodes/pve1/storage/local/content?content=iso")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    sim.handle.shutdown().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Recorder {
    started: Mutex<Vec<GuestBoot>>,
    stopped: Mutex<Vec<u32>>,
}

impl GuestBackend for Recorder {
    fn vm_started(&self, vm: &GuestBoot) {
        self.started.lock().unwrap().push(vm.clone());
    }
    fn vm_stopped(&self, _node: &str, vmid: u32) {
        self.stopped.lock().unwrap().push(vmid);
    }
}

#[tokio::test]
async fn nocloud_seed_drives_agent_answers_and_the_guest_backend() {
    let sim = start("pve-ci").await;
    let recorder = Arc::new(Recorder::default());
    sim.handle.set_guest_backend(recorder.clone());
    sim.task_ok(
        "POST",
        "/nodes/pve1/storage/local/download-url",
        &[
            ("url", "https://example.invalid/noble.img"),
            ("content", "import"),
            ("filename", "noble.qcow2"),
        ],
    )
    .await;
    let iso = seed_iso();
    let upid = upload(
        &sim,
        "iso",
        "provision-gpu-w1.iso",
        &iso,
        &hex(&Sha256::digest(&iso)),
    )
    .await
    .ok();
    sim.wait(upid.as_str().unwrap()).await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "101"),
            ("name", "gpu-w1"),
            ("memory", "4096"),
            ("agent", "enabled=1"),
            ("scsi0", "local-lvm:0,import-from=local:import/noble.qcow2"),
            ("ide2", "local:iso/provision-gpu-w1.iso,media=cdrom"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
        ],
    )
    .await;
    let config = sim.get("/nodes/pve1/qemu/101/config").await;
    assert_eq!(config["scsi0"], "local-lvm:vm-101-disk-0,size=2252M");
    assert_eq!(config["net0"], "virtio=BC:24:11:00:00:01,bridge=vmbr0");
    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await;
    sim.wait_agent("pve1", 101).await;
    let interfaces = sim
        .get("/nodes/pve1/qemu/101/agent/network-get-interfaces")
        .await;
    let eth0 = &interfaces["result"][1];
    assert_eq!(eth0["hardware-address"], "bc:24:11:00:00:01");
    assert_eq!(eth0["ip-addresses"][0]["ip-address"], "10.20.0.31");
    let hostname = sim
        .get("/nodes/pve1/qemu/101/agent/file-read?file=%2Fetc%2Fhostname")
        .await;
    assert_eq!(hostname["content"], "gpu-w1\n");
    let key = sim
        .get("/nodes/pve1/qemu/101/agent/file-read?file=%2Fetc%2Fssh%2Fssh_host_ed25519_key.pub")
        .await;
    assert!(
        key["content"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 AAAA")
    );
    let missing = sim
        .call(
            "GET",
            "/nodes/pve1/qemu/101/agent/file-read",
            &[("file", "/nope")],
        )
        .await;
    assert_eq!(missing.status, 500);
    {
        let started = recorder.started.lock().unwrap();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].vmid, 101);
        assert_eq!(
            started[0].addresses,
            vec![("10.20.0.31".parse().unwrap(), 24)]
        );
        let seed = started[0].seed.as_ref().unwrap();
        assert_eq!(seed.user_data, USER_DATA);
        assert_eq!(seed.network_config.as_deref(), Some(NETWORK_CONFIG));
    }
    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/stop", &[])
        .await;
    assert_eq!(*recorder.stopped.lock().unwrap(), vec![101]);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn config_resize_clone_mappings_pools() {
    let sim = start("pve-a100").await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "101"),
            ("scsi0", "local-lvm:10"),
            ("net0", "virtio,bridge=vmbr0"),
            ("tags", "provision"),
        ],
    )
    .await;
    config_changes_check_the_digest_and_keep_the_mac(&sim).await;
    resize_grows_and_refuses_to_shrink(&sim).await;
    a_clone_gets_its_name_and_a_new_mac(&sim).await;
    pci_mappings_are_created_updated_and_deleted(&sim).await;
    pools_hold_new_vms(&sim).await;
    sim.handle.shutdown().await;
}

/// A synchronous change with a stale `digest` is refused; an edited NIC keeps its MAC; a deleted
/// disk stays as `unused0`.
async fn config_changes_check_the_digest_and_keep_the_mac(sim: &Sim) {
    let config = sim.get("/nodes/pve1/qemu/101/config").await;
    let digest = config["digest"].as_str().unwrap().to_owned();
    sim.call(
        "PUT",
        "/nodes/pve1/qemu/101/config",
        &[("cores", "4"), ("digest", &digest)],
    )
    .await
    .ok();
    let stale = sim
        .call(
            "PUT",
            "/nodes/pve1/qemu/101/config",
            &[("cores", "8"), ("digest", &digest)],
        )
        .await;
    assert_eq!(
        stale.reason,
        "detected modified configuration - file changed by other user? Try again."
    );
    // net0 keeps its MAC when only the bridge changes.
    let mac = config["net0"]
        .as_str()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/101/config",
        &[
            ("net0", "virtio,bridge=vmbr0,firewall=1"),
            ("scsi1", "local-lvm:20"),
        ],
    )
    .await;
    let config = sim.get("/nodes/pve1/qemu/101/config").await;
    assert_eq!(config["net0"], format!("{mac},bridge=vmbr0,firewall=1"));
    assert_eq!(config["cores"], 4);
    assert_eq!(config["scsi1"], "local-lvm:vm-101-disk-1,size=20G");
    sim.call("PUT", "/nodes/pve1/qemu/101/config", &[("delete", "scsi1")])
        .await
        .ok();
    let config = sim.get("/nodes/pve1/qemu/101/config").await;
    assert_eq!(config["unused0"], "local-lvm:vm-101-disk-1");
}

/// `+22G` grows `scsi0` to 32G; a smaller size is refused.
async fn resize_grows_and_refuses_to_shrink(sim: &Sim) {
    sim.task_ok(
        "PUT",
        "/nodes/pve1/qemu/101/resize",
        &[("disk", "scsi0"), ("size", "+22G")],
    )
    .await;
    assert_eq!(
        sim.get("/nodes/pve1/qemu/101/config").await["scsi0"],
        "local-lvm:vm-101-disk-0,size=32G"
    );
    let shrink = sim
        .call(
            "PUT",
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi0"), ("size", "16G")],
        )
        .await;
    assert!(
        shrink
            .reason
            .starts_with("shrinking disks is not supported")
    );
}

/// A clone of VM 101 as 102 gets its name and a new MAC; both VMs are listed with their tags.
async fn a_clone_gets_its_name_and_a_new_mac(sim: &Sim) {
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/101/clone",
        &[("newid", "102"), ("name", "copy")],
    )
    .await;
    let copy = sim.get("/nodes/pve1/qemu/102/config").await;
    assert_eq!(copy["name"], "copy");
    assert_ne!(
        copy["net0"],
        sim.get("/nodes/pve1/qemu/101/config").await["net0"]
    );
    let vms = sim.get("/nodes/pve1/qemu").await;
    assert_eq!(vms.as_array().unwrap().len(), 2);
    assert_eq!(
        sim.get("/cluster/resources?type=vm").await[0]["tags"],
        "provision"
    );
}

/// A PCI mapping: created (a second with its id refused), given a second path, deleted.
async fn pci_mappings_are_created_updated_and_deleted(sim: &Sim) {
    sim.call(
        "POST",
        "/cluster/mapping/pci",
        &[
            ("id", "a100"),
            ("description", "A100s"),
            ("map", "node=pve1,path=0000:41:00,id=10de:20b0"),
        ],
    )
    .await
    .ok();
    let dup = sim
        .call(
            "POST",
            "/cluster/mapping/pci",
            &[
                ("id", "a100"),
                ("map", "node=pve1,path=0000:41:00,id=10de:20b0"),
            ],
        )
        .await;
    assert_eq!(dup.status, 500);
    sim.call(
        "PUT",
        "/cluster/mapping/pci/a100",
        &[
            ("map", "node=pve1,path=0000:41:00,id=10de:20b0"),
            ("map", "node=pve1,path=0000:61:00,id=10de:20b0"),
        ],
    )
    .await
    .ok();
    let mapping = sim.get("/cluster/mapping/pci/a100").await;
    assert_eq!(mapping["map"].as_array().unwrap().len(), 2);
    assert_eq!(
        sim.get("/cluster/mapping/pci").await[0]["description"],
        "A100s"
    );
    sim.call("DELETE", "/cluster/mapping/pci/a100", &[])
        .await
        .ok();
    assert_eq!(
        sim.get("/cluster/mapping/pci")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// A pool: created once, listed, given a new VM; an unknown pool refuses a create.
async fn pools_hold_new_vms(sim: &Sim) {
    sim.call(
        "POST",
        "/pools",
        &[("poolid", "k3s"), ("comment", "cluster")],
    )
    .await
    .ok();
    let dup = sim.call("POST", "/pools", &[("poolid", "k3s")]).await;
    assert_eq!(dup.status, 500);
    assert_eq!(sim.get("/pools").await[0]["poolid"], "k3s");
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[("vmid", "103"), ("pool", "k3s")],
    )
    .await;
    let unknown_pool = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[("vmid", "104"), ("pool", "nope")],
        )
        .await;
    assert_eq!(unknown_pool.status, 500);
}

#[tokio::test]
async fn request_log_file_has_one_json_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("requests.jsonl");
    let mut config = common::config("pve-ci");
    config.request_log = Some(log_path.clone());
    let sim = start_with(config).await;
    sim.get("/version").await;
    sim.call("POST", "/nodes/pve1/qemu", &[("vmid", "99")])
        .await;
    sim.call_as(
        "",
        "POST",
        "/access/ticket",
        &[("username", "root@pam"), ("password", "sim-root-password")],
    )
    .await
    .ok();
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/version");
    assert_eq!(lines[1]["status"], 400);
    assert_eq!(lines[1]["params"]["vmid"], "99");
    assert_eq!(lines[2]["params"]["password"], "********");
    assert_eq!(sim.handle.request_log().len(), 3);
    assert_eq!(sim.handle.mutating_requests(), 2);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_restart_and_running_tasks_complete_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sim-state.json");
    let mut config = common::config("pve-ci");
    config.state_file = Some(state_file.clone());
    config.mode = SimMode::Explicit;
    let sim = start_with(config.clone()).await;
    let stepper = sim.handle.stepper();
    let iso = seed_iso();
    let upid = upload(&sim, "iso", "seed.iso", &iso, &hex(&Sha256::digest(&iso)))
        .await
        .ok();
    stepper.finish_ok(upid.as_str().unwrap()).unwrap();
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "101"),
                ("agent", "1"),
                ("ide2", "local:iso/seed.iso,media=cdrom"),
                ("net0", "virtio,bridge=vmbr0"),
            ],
        )
        .await
        .ok();
    stepper.finish_ok(upid.as_str().unwrap()).unwrap();
    let config_before = sim.get("/nodes/pve1/qemu/101/config").await;
    // Left running when the process stops: completed at the next load.
    let start_upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    sim.handle.shutdown().await;
    assert!(state_file.exists());

    config.mode = SimMode::Auto;
    let sim = start_with(config).await;
    let config_after = sim.get("/nodes/pve1/qemu/101/config").await;
    assert_eq!(config_before, config_after);
    let status = sim
        .get(&format!(
            "/nodes/pve1/tasks/{}/status",
            encode(start_upid.as_str().unwrap())
        ))
        .await;
    assert_eq!(status["exitstatus"], "OK");
    assert_eq!(
        sim.get("/nodes/pve1/qemu/101/status/current").await["status"],
        "running"
    );
    // Booted while the simulator was down; the seed ISO came back with the state.
    let interfaces = sim
        .get("/nodes/pve1/qemu/101/agent/network-get-interfaces")
        .await;
    assert_eq!(
        interfaces["result"][1]["ip-addresses"][0]["ip-address"],
        "10.20.0.31"
    );
    // Tickets from the previous process stay valid (the signing secret is persisted).
    assert_eq!(sim.get("/cluster/nextid").await, "100");
    sim.handle.shutdown().await;
}

/// An upload to the storage a download is writing to shares its bandwidth for a moment; the
/// download still takes its time over the internet (here 13 s × 0.1) after the upload ended.
#[tokio::test]
async fn an_upload_beside_a_download_leaves_the_download_running() {
    let mut config = pve_sim::SimConfig::new(pve_sim::Inventory::builtin("pve-a100-pcie").unwrap());
    config.time_scale = 1.0;
    let sim = start_with(config).await;
    let params = [
        (
            "url",
            "https://cloud-images.ubuntu.com/releases/noble/release-20250430/ubuntu-24.04-server-cloudimg-amd64.img",
        ),
        ("content", "import"),
        ("filename", "noble.qcow2"),
    ];
    let download = sim
        .call("POST", "/nodes/pve1/storage/local/download-url", &params)
        .await
        .ok();
    let iso = seed_iso();
    let sha = hex(&Sha256::digest(&iso));
    let upload = upload(&sim, "iso", "seed.iso", &iso, &sha).await.ok();
    assert_eq!(sim.wait(upload.as_str().unwrap()).await["exitstatus"], "OK");
    let node = "pve1";
    let status = sim
        .get(&format!(
            "/nodes/{node}/tasks/{}/status",
            encode(download.as_str().unwrap())
        ))
        .await;
    assert_eq!(status["status"], "running", "{status}");
    sim.handle.shutdown().await;
}
