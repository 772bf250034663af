//! Each documented Proxmox failure mode, reproduced over HTTPS with Proxmox's wording.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pve_sim::SimMode;

async fn small_vm(sim: &Sim, vmid: &str) {
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", vmid),
            ("memory", "2048"),
            ("scsi0", "local-lvm:8"),
            ("net0", "virtio,bridge=vmbr0"),
        ],
    )
    .await;
}

async fn root_ticket(sim: &Sim) -> (String, String) {
    let login = sim
        .call_as(
            "",
            "POST",
            "/access/ticket",
            &[("username", "root@pam"), ("password", "sim-root-password")],
        )
        .await
        .ok();
    (
        login["ticket"].as_str().unwrap().to_owned(),
        login["CSRFPreventionToken"].as_str().unwrap().to_owned(),
    )
}

/// A task started by root@pam (hugepages are root's alone), waited for successfully.
async fn root_task(sim: &Sim, path: &str, params: &[(&str, &str)]) {
    let upid = as_root(sim, "POST", path, params).await.ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK", "{status}");
}

async fn as_root(sim: &Sim, method: &str, path: &str, params: &[(&str, &str)]) -> Answer {
    let (ticket, csrf) = root_ticket(sim).await;
    let request = sim
        .http
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            sim.url(path),
        )
        .header("Cookie", format!("PVEAuthCookie={}", encode(&ticket)))
        .header("CSRFPreventionToken", csrf)
        .form(params);
    answer(request.send().await.unwrap()).await
}

#[tokio::test]
async fn nextid_does_not_reserve_and_existing_ids_are_refused() {
    let sim = start("pve-ci").await;
    let a = sim.get("/cluster/nextid").await;
    let b = sim.get("/cluster/nextid").await;
    assert_eq!(a, b);
    assert_eq!(a, "100");
    small_vm(&sim, "100").await;
    let taken = sim.call("GET", "/cluster/nextid", &[("vmid", "100")]).await;
    assert_eq!(taken.status, 400);
    assert_eq!(taken.body["errors"]["vmid"], "VM 100 already exists");
    assert_eq!(sim.get("/cluster/nextid?vmid=105").await, "105");
    let again = sim
        .call("POST", "/nodes/pve1/qemu", &[("vmid", "100")])
        .await;
    assert_eq!(again.status, 500);
    assert!(
        again
            .reason
            .contains("VM 100 already exists on node 'pve1'"),
        "{}",
        again.reason
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn raw_hostpci_needs_root_and_mappings_need_mapping_modify() {
    let sim = start("pve-a100").await;
    // hugepages alone would be refused first ("only root can set 'hugepages' config").
    let mut raw = gpu_vm("101", "host=0000:41:00,pcie=1");
    raw.retain(|(k, _)| *k != "hugepages");
    let refused = sim.call("POST", "/nodes/pve1/qemu", &raw).await;
    assert_eq!(refused.status, 500);
    assert_eq!(
        refused.reason,
        "only root can set 'hostpci0' config for non-mapped devices"
    );
    assert!(sim.handle.vm_config(101).is_none());
    let upid = as_root(&sim, "POST", "/nodes/pve1/qemu", &raw).await.ok();
    sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(
        sim.handle.vm_config(101).unwrap()["hostpci0"],
        "host=0000:41:00,pcie=1"
    );

    let limited = sim
        .call_as(
            LIMITED,
            "POST",
            "/cluster/mapping/pci",
            &[
                ("id", "gpu"),
                ("map", "node=pve1,path=0000:41:00,id=10de:20b0"),
            ],
        )
        .await;
    assert_eq!(limited.status, 403);
    assert_eq!(
        limited.reason,
        "Permission check failed (/mapping/pci, Mapping.Modify)"
    );
    let wrong_id = sim
        .call(
            "POST",
            "/cluster/mapping/pci",
            &[
                ("id", "gpu"),
                ("map", "node=pve1,path=0000:41:00,id=10de:2489"),
            ],
        )
        .await;
    assert_eq!(wrong_id.status, 500);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_pci_device_in_use_fails_the_second_start() {
    let sim = start("pve-a100").await;
    for vmid in ["101", "102"] {
        let mut params = gpu_vm(vmid, "host=0000:41:00,pcie=1");
        params.retain(|(k, _)| *k != "hugepages");
        let upid = as_root(&sim, "POST", "/nodes/pve1/qemu", &params)
            .await
            .ok();
        sim.wait(upid.as_str().unwrap()).await;
    }
    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/102/status/start", &[])
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "PCI device '0000:41:00' already in use by VMID '101'"
    );
    let log = sim.task_log(upid.as_str().unwrap()).await;
    assert_eq!(
        log.last().unwrap(),
        "TASK ERROR: PCI device '0000:41:00' already in use by VMID '101'"
    );
    assert_eq!(
        sim.get("/nodes/pve1/qemu/102/status/current").await["status"],
        "stopped"
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_mapping_with_several_paths_takes_the_first_free_device() {
    let sim = start("pve-a100").await;
    sim.call(
        "POST",
        "/cluster/mapping/pci",
        &[
            ("id", "a100"),
            ("map", "node=pve1,path=0000:01:00,id=10de:20b0"),
            ("map", "node=pve1,path=0000:21:00,id=10de:20b0"),
        ],
    )
    .await
    .ok();
    for vmid in ["101", "102", "103"] {
        let mut params = gpu_vm(vmid, "mapping=a100,pcie=1");
        params.retain(|(k, _)| *k != "hugepages");
        sim.task_ok("POST", "/nodes/pve1/qemu", &params).await;
    }
    sim.task_ok("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await;
    sim.task_ok("POST", "/nodes/pve1/qemu/102/status/start", &[])
        .await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/103/status/start", &[])
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert!(
        status["exitstatus"]
            .as_str()
            .unwrap()
            .contains("already in use by VMID"),
        "{status}"
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn start_fails_without_free_hugepages_or_memory() {
    let sim = start("pve-a100").await;
    // 480 free 1 GiB pages on host NUMA node 0: 500 GiB bound there cannot start.
    let params = [
        ("vmid", "101"),
        ("memory", "512000"),
        ("numa", "1"),
        ("hugepages", "1024"),
        ("sockets", "1"),
        ("numa0", "cpus=0-7,hostnodes=0,memory=512000,policy=bind"),
    ];
    root_task(&sim, "/nodes/pve1/qemu", &params).await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "hugepage allocation failed");
    // Two 300 GiB guests on node 0 (480 pages): the second one fails.
    for vmid in ["102", "103"] {
        let numa0 = "cpus=0-7,hostnodes=0,memory=307200,policy=bind";
        root_task(
            &sim,
            "/nodes/pve1/qemu",
            &[
                ("vmid", vmid),
                ("memory", "307200"),
                ("numa", "1"),
                ("hugepages", "1024"),
                ("numa0", numa0),
            ],
        )
        .await;
    }
    sim.task_ok("POST", "/nodes/pve1/qemu/102/status/start", &[])
        .await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/103/status/start", &[])
        .await
        .ok();
    assert_eq!(
        sim.wait(upid.as_str().unwrap()).await["exitstatus"],
        "hugepage allocation failed"
    );
    // Stopping 102 frees its pages.
    sim.task_ok("POST", "/nodes/pve1/qemu/102/status/stop", &[])
        .await;
    sim.task_ok("POST", "/nodes/pve1/qemu/103/status/start", &[])
        .await;
    // Hugepages without NUMA are refused.
    root_task(
        &sim,
        "/nodes/pve1/qemu",
        &[("vmid", "104"), ("memory", "4096"), ("hugepages", "1024")],
    )
    .await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/104/status/start", &[])
        .await
        .ok();
    assert!(
        sim.wait(upid.as_str().unwrap()).await["exitstatus"]
            .as_str()
            .unwrap()
            .contains("NUMA")
    );
    sim.handle.shutdown().await;

    // Plain memory: the 64 GiB CI node cannot start a 80 GiB guest.
    let sim = start("pve-ci").await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[("vmid", "101"), ("memory", "81920")],
    )
    .await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    let upid = upid.as_str().unwrap();
    assert_eq!(
        sim.wait(upid).await["exitstatus"],
        "start failed: QEMU exited with code 1"
    );
    let log = sim.task_log(upid).await.join("\n");
    assert!(log.contains("not enough memory"), "{log}");
    assert!(log.contains("Cannot allocate memory"), "{log}");
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn iommu_problems_fail_the_start() {
    let sim = start("pve-iommu-off").await;
    let upid = as_root(
        &sim,
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "101"),
            ("memory", "4096"),
            ("hostpci0", "0000:17:00,pcie=1"),
            ("machine", "q35"),
        ],
    )
    .await
    .ok();
    sim.wait(upid.as_str().unwrap()).await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert!(
        status["exitstatus"]
            .as_str()
            .unwrap()
            .contains("no iommu_group found"),
        "{status}"
    );
    assert_eq!(
        sim.get("/nodes/pve1/hardware/pci").await[0]["iommugroup"],
        -1
    );
    sim.handle.shutdown().await;

    let sim = start("pve-sentinel").await;
    let upid = as_root(
        &sim,
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "101"),
            ("memory", "4096"),
            ("hostpci0", "0000:0a:00,pcie=1,x-vga=1"),
            ("machine", "q35"),
        ],
    )
    .await
    .ok();
    sim.wait(upid.as_str().unwrap()).await;
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert!(
        status["exitstatus"]
            .as_str()
            .unwrap()
            .contains("group 14 is not viable"),
        "{status}"
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn parameter_errors_are_a_400_map() {
    let sim = start("pve-ci").await;
    let answer = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "101"),
                ("cores", "0"),
                ("bios", "uefi"),
                ("gpus", "1"),
                ("net0", "virtio,bridge=vmbr0,speed=1"),
            ],
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["data"], serde_json::Value::Null);
    let errors = &answer.body["errors"];
    assert_eq!(errors["cores"], "value must have a minimum value of 1");
    assert_eq!(
        errors["bios"],
        "value 'uefi' does not have a value in the enumeration 'seabios, ovmf'"
    );
    assert_eq!(
        errors["gpus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );
    assert!(
        errors["net0"]
            .as_str()
            .unwrap()
            .contains("speed: property is not defined")
    );
    assert!(sim.handle.vm_config(101).is_none());
    let missing = sim.call("POST", "/nodes/pve1/qemu/101/clone", &[]).await;
    assert_eq!(
        missing.body["errors"]["newid"],
        "property is missing and it is not optional"
    );
    let unknown = sim.call("GET", "/nodes/pve1/lxc", &[]).await;
    assert_eq!(unknown.status, 501);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn authentication_failures() {
    let sim = start("pve-ci").await;
    let none = sim.call_as("", "GET", "/version", &[]).await;
    assert_eq!((none.status, none.reason.as_str()), (401, "No ticket"));
    let bad = sim
        .call_as("PVEAPIToken=provision@pve!ci=wrong", "GET", "/version", &[])
        .await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (401, "authentication failure")
    );
    let wrong_password = sim
        .call_as(
            "",
            "POST",
            "/access/ticket",
            &[("username", "root@pam"), ("password", "nope")],
        )
        .await;
    assert_eq!(wrong_password.status, 401);
    let (ticket, csrf) = root_ticket(&sim).await;
    let cookie = format!("PVEAuthCookie={}", encode(&ticket));
    let read = sim
        .http
        .get(sim.url("/version"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = sim
        .http
        .post(sim.url("/pools"))
        .header("Cookie", &cookie)
        .form(&[("poolid", "p")])
        .send()
        .await
        .unwrap();
    let write = answer(write).await;
    assert_eq!(
        (write.status, write.reason.as_str()),
        (401, "Permission denied - invalid csrf token")
    );
    let write = sim
        .http
        .post(sim.url("/pools"))
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", csrf)
        .form(&[("poolid", "p")])
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 200);
    // Username without realm plus realm parameter.
    sim.call_as(
        "",
        "POST",
        "/access/ticket",
        &[
            ("username", "provision"),
            ("realm", "pve"),
            ("password", "sim-provision-password"),
        ],
    )
    .await
    .ok();
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn injected_request_and_task_failures_change_nothing() {
    let mut config = common::config("pve-ci");
    config.fail_rate = 1.0;
    let sim = start_with(config).await;
    let answer = sim
        .call("POST", "/nodes/pve1/qemu", &[("vmid", "101")])
        .await;
    assert_eq!(answer.status, 500);
    assert!(sim.handle.vm_config(101).is_none());
    sim.handle.shutdown().await;

    let mut config = common::config("pve-ci");
    config.task_fail_rate = 1.0;
    let sim = start_with(config).await;
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[("vmid", "101"), ("scsi0", "local-lvm:8")],
        )
        .await
        .ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_ne!(status["exitstatus"], "OK");
    assert!(sim.handle.vm_config(101).is_none());
    assert_eq!(
        sim.get("/nodes/pve1/storage/local-lvm/content")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn latency_is_added() {
    let mut config = common::config("pve-ci");
    config.latency_ms = 50;
    let sim = start_with(config).await;
    let started = Instant::now();
    sim.get("/version").await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn agent_answers_only_after_boot() {
    let mut config = common::config("pve-ci");
    config.mode = SimMode::Explicit;
    config.time_scale = 1.0; // boot takes 15 s after the start task
    let sim = start_with(config).await;
    let stepper = sim.handle.stepper();
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "101"),
                ("agent", "1"),
                ("net0", "virtio,bridge=vmbr0"),
            ],
        )
        .await
        .ok();
    stepper.finish_ok(upid.as_str().unwrap()).unwrap();
    let upid = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    assert_eq!(
        sim.get("/nodes/pve1/qemu/101/status/current").await["status"],
        "stopped"
    );
    stepper.finish_ok(upid.as_str().unwrap()).unwrap();
    assert_eq!(
        sim.get("/nodes/pve1/qemu/101/status/current").await["status"],
        "running"
    );
    let ping = sim
        .call("POST", "/nodes/pve1/qemu/101/agent/ping", &[])
        .await;
    assert_eq!(
        (ping.status, ping.reason.as_str()),
        (500, "QEMU guest agent is not running")
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn stepper_fails_a_task_and_rolls_it_back() {
    let sim = start_explicit("pve-ci").await;
    let stepper = sim.handle.stepper();
    let upid = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[("vmid", "101"), ("scsi0", "local-lvm:8")],
        )
        .await
        .ok();
    let upid = upid.as_str().unwrap();
    let task = stepper
        .wait_for_running("qmcreate", Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(task.upid, upid);
    assert_eq!(
        sim.get(&format!("/nodes/pve1/tasks/{}/status", encode(upid)))
            .await["status"],
        "running"
    );
    stepper
        .fail(upid, "unable to create VM 101 - lvcreate failed")
        .unwrap();
    let status = sim
        .get(&format!("/nodes/pve1/tasks/{}/status", encode(upid)))
        .await;
    assert_eq!(
        status["exitstatus"],
        "unable to create VM 101 - lvcreate failed"
    );
    assert!(sim.handle.vm_config(101).is_none());
    assert!(stepper.finish_ok(upid).is_err());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_held_task_outlives_its_duration_until_released() {
    let mut config = common::config("pve-ci");
    config.time_scale = 0.05; // create: 150 ms
    let slow = start_with(config).await;
    let slow_stepper = slow.handle.stepper();
    slow_stepper.hold_next("qmcreate");
    let upid = slow
        .call("POST", "/nodes/pve1/qemu", &[("vmid", "101")])
        .await
        .ok();
    let upid = upid.as_str().unwrap();
    assert!(slow_stepper.running_tasks()[0].held);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let running = slow_stepper.running_tasks();
    assert_eq!(running.len(), 1);
    assert!(running[0].held);
    assert_eq!(
        slow.get("/nodes/pve1/qemu/101/status/current").await["lock"],
        "create"
    );
    slow_stepper.finish_ok(upid).unwrap();
    assert_eq!(slow.wait(upid).await["exitstatus"], "OK");
    assert!(slow_stepper.running_tasks().is_empty());
    slow.handle.shutdown().await;
}
