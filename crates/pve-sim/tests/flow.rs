//! End-to-end flows over real HTTPS: auth, version, nodes, VM create → start → status → agent →
//! stop → delete, task status and log.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn version_and_nodes() {
    let sim = start("pve-a100").await;
    let version = sim.get("/version").await;
    assert_eq!(version["version"], "9.1.1");
    assert_eq!(version["release"], "9.1");
    let nodes = sim.get("/nodes").await;
    assert_eq!(nodes[0]["node"], "pve1");
    assert_eq!(nodes[0]["maxcpu"], 128);
    let status = sim.get("/nodes/pve1/status").await;
    assert_eq!(status["cpuinfo"]["sockets"], 2);
    assert_eq!(status["memory"]["total"], 1024u64 << 30);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn create_start_agent_stop_delete() {
    let sim = start("pve-a100").await;
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &gpu_vm("101", "host=0000:41:00,pcie=1"),
        )
        .await;
    // A token may not pass raw devices.
    assert_eq!(upid.status, 500);
    assert_eq!(
        upid.reason,
        "only root can set 'hostpci0' config for non-mapped devices"
    );
    sim.call(
        "POST",
        "/cluster/mapping/pci",
        &[
            ("id", "a100"),
            (
                "map",
                "node=pve1,path=0000:41:00,id=10de:20b0,iommugroup=22",
            ),
            (
                "map",
                "node=pve1,path=0000:61:00,id=10de:20b0,iommugroup=23",
            ),
        ],
    )
    .await
    .ok();
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &gpu_vm("101", "mapping=a100,pcie=1"),
        )
        .await
        .ok();
    let upid = upid.as_str().unwrap().to_owned();
    assert!(upid.starts_with("UPID:pve1:"), "{upid}");
    assert!(upid.ends_with(":qmcreate:101:provision@pve!ci:"), "{upid}");
    let status = sim.wait(&upid).await;
    assert_eq!(status["exitstatus"], "OK");
    let config = sim.get("/nodes/pve1/qemu/101/config").await;
    assert!(
        config["scsi0"]
            .as_str()
            .unwrap()
            .starts_with("local-lvm:vm-101-disk-"),
        "{config}"
    );
    assert!(config["scsi0"].as_str().unwrap().contains("size=32G"));
    assert!(config["efidisk0"].as_str().unwrap().contains("size=4M"));
    assert!(
        config["net0"]
            .as_str()
            .unwrap()
            .starts_with("virtio=BC:24:11:")
    );
    assert_eq!(config["ide2"], "local-lvm:vm-101-cloudinit,media=cdrom");
    assert!(config.get("lock").is_none());

    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await;
    let status = sim.get("/nodes/pve1/qemu/101/status/current").await;
    assert_eq!(status["status"], "running");
    sim.wait_agent("pve1", 101).await;
    let interfaces = sim
        .get("/nodes/pve1/qemu/101/agent/network-get-interfaces")
        .await;
    let eth0 = &interfaces["result"][1];
    assert_eq!(eth0["ip-addresses"][0]["ip-address"], "10.0.0.21");
    assert_eq!(eth0["ip-addresses"][0]["prefix"], 24);

    let answer = sim
        .call("DELETE", "/nodes/pve1/qemu/101", &[("purge", "1")])
        .await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.reason, "VM 101 is running - destroy failed");
    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/stop", &[])
        .await;
    let answer = sim
        .call("POST", "/nodes/pve1/qemu/101/agent/ping", &[])
        .await;
    assert_eq!(answer.reason, "VM 101 is not running");
    sim.task_ok(
        "DELETE",
        "/nodes/pve1/qemu/101",
        &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
    )
    .await;
    let answer = sim.call("GET", "/nodes/pve1/qemu/101/config", &[]).await;
    assert_eq!(answer.status, 500);
    assert_eq!(
        answer.reason,
        "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist"
    );
    let content = sim.get("/nodes/pve1/storage/local-lvm/content").await;
    assert_eq!(content.as_array().unwrap().len(), 0, "{content}");
    assert!(sim.handle.mutating_requests() >= 6);
    sim.handle.shutdown().await;
}
