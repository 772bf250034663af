//! Templates and clones as qemu-server and pve-storage make them: conversion to a template,
//! linked clones only from base volumes on storages that link, clone names per storage
//! plugin, permissions, the source's shared or exclusive lock, and destroying a template that
//! linked clones still use. Every request is held to the official schema at the end.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::PathBuf;

use common::*;
use pve_sim::inventory::{StorageSpec, TokenSpec};
use pve_sim::{SimConfig, SimMode};
use serde_json::Value;

/// `pve-ci` plus a zfspool, a file storage that holds images and a thick LVM, and tokens that
/// each miss one privilege the clone path needs.
fn inventory_config(mode: SimMode) -> SimConfig {
    let mut config = config("pve-ci");
    config.mode = mode;
    for (name, kind) in [("tank", "zfspool"), ("images", "dir"), ("thick", "lvm")] {
        config.inventory.storages.push(StorageSpec {
            name: name.to_owned(),
            kind: kind.to_owned(),
            content: vec!["images".to_owned()],
            size_gib: 500,
            shared: false,
            bandwidth_mib_s: None,
            overhead_ms: None,
            lock_ms: None,
        });
    }
    let all = [
        "VM.Audit",
        "VM.Clone",
        "VM.Allocate",
        "Datastore.AllocateSpace",
        "VM.Config.Disk",
        "VM.Config.Options",
    ];
    for (tokenid, missing) in [
        ("clone@pve!noclone", "VM.Clone"),
        ("clone@pve!noalloc", "VM.Allocate"),
        ("clone@pve!nospace", "Datastore.AllocateSpace"),
    ] {
        config.inventory.tokens.push(TokenSpec {
            tokenid: tokenid.to_owned(),
            secret: "secret".to_owned(),
            privileges: all
                .iter()
                .filter(|p| **p != missing)
                .map(|p| (*p).to_owned())
                .collect(),
        });
    }
    config
}

fn auth(tokenid: &str) -> String {
    format!("PVEAPIToken={tokenid}=secret")
}

/// A stopped VM `vmid` with an 8 GiB disk on `storage` and a cloud-init drive.
async fn vm_on(sim: &Sim, vmid: &str, storage: &str) {
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", vmid),
            ("name", "tmpl"),
            ("scsi0", &format!("{storage}:8")),
            ("ide2", "local-lvm:cloudinit"),
        ],
    )
    .await;
}

async fn config_of(sim: &Sim, vmid: &str) -> Value {
    sim.get(&format!("/nodes/pve1/qemu/{vmid}/config")).await
}

fn official_schema() -> Option<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pve-api/schema-9.1.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(_) => {
            eprintln!("SKIPPED: ../shared/pve-api/schema-9.1.json not found; schema check skipped");
            None
        }
    }
}

/// Every request the session made (those refused by the simulator included) is valid for the
/// official schema.
fn assert_log_conforms(sim: &Sim) {
    let Some(schema) = official_schema() else {
        return;
    };
    let log = sim.handle.request_log();
    let clones = log.iter().filter(|e| e.path.ends_with("/clone")).count();
    assert!(clones > 0);
    let failures: Vec<String> = log
        .iter()
        .filter_map(|entry| {
            pve_sim::schema::validate_against_official(
                &schema,
                &entry.method,
                &entry.path,
                &entry.params,
            )
            .err()
            .map(|errors| format!("{} {}: {errors:?}", entry.method, entry.path))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_stopped_vm_becomes_a_template_with_base_volumes() {
    let sim = start_with(inventory_config(SimMode::Auto)).await;
    vm_on(&sim, "9000", "local-lvm").await;
    sim.task_ok("POST", "/nodes/pve1/qemu/9000/status/start", &[])
        .await;
    let running = sim
        .call("POST", "/nodes/pve1/qemu/9000/template", &[])
        .await;
    assert_eq!(
        (running.status, running.reason.as_str()),
        (500, "you can't convert a VM to template if VM is running")
    );
    sim.task_ok("POST", "/nodes/pve1/qemu/9000/status/stop", &[])
        .await;
    sim.task_ok("POST", "/nodes/pve1/qemu/9000/template", &[])
        .await;
    let config = config_of(&sim, "9000").await;
    assert_eq!(config["template"], 1);
    assert_eq!(config["scsi0"], "local-lvm:base-9000-disk-0,size=8G");
    assert_eq!(config["ide2"], "local-lvm:vm-9000-cloudinit,media=cdrom");
    let again = sim
        .call("POST", "/nodes/pve1/qemu/9000/template", &[])
        .await;
    assert_eq!(again.reason, "you can't convert a template to a template");
    let start = sim
        .call("POST", "/nodes/pve1/qemu/9000/status/start", &[])
        .await
        .ok();
    let status = sim.wait(start.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "you can't start a vm if it's a template"
    );
    // Created as a template at once: create_disks makes base volumes directly.
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[("vmid", "9001"), ("scsi0", "tank:4"), ("template", "1")],
    )
    .await;
    assert_eq!(
        config_of(&sim, "9001").await["scsi0"],
        "tank:base-9001-disk-0,size=4G"
    );
    let denied = sim
        .call_as(
            &auth("clone@pve!noalloc"),
            "POST",
            "/nodes/pve1/qemu/9000/template",
            &[],
        )
        .await;
    assert_eq!(
        (denied.status, denied.reason.as_str()),
        (403, "Permission check failed (/vms/9000, VM.Allocate)")
    );
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn linked_clones_are_named_per_storage_and_full_clones_copy() {
    let sim = start_with(inventory_config(SimMode::Auto)).await;
    for (vmid, storage) in [("9000", "local-lvm"), ("9001", "tank"), ("9002", "images")] {
        vm_on(&sim, vmid, storage).await;
        sim.task_ok("POST", &format!("/nodes/pve1/qemu/{vmid}/template"), &[])
            .await;
    }
    let cases = [
        ("9000", "101", "local-lvm:vm-101-disk-0,size=8G"),
        ("9001", "102", "tank:base-9001-disk-0/vm-102-disk-0,size=8G"),
        (
            "9002",
            "103",
            "images:9002/base-9002-disk-0.raw/103/vm-103-disk-0.qcow2,size=8G",
        ),
    ];
    for (source, newid, scsi0) in cases {
        let upid = sim
            .task_ok(
                "POST",
                &format!("/nodes/pve1/qemu/{source}/clone"),
                &[("newid", newid), ("name", "worker")],
            )
            .await;
        assert_eq!(upid["type"], "qmclone");
        let config = config_of(&sim, newid).await;
        assert_eq!(config["scsi0"], scsi0, "clone of {source}");
        assert_eq!(
            config["ide2"],
            format!("local-lvm:vm-{newid}-cloudinit,media=cdrom")
        );
        assert_eq!(config["name"], "worker");
        assert!(config.get("template").is_none() && config.get("lock").is_none());
    }
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/9000/clone",
        &[("newid", "104"), ("full", "1"), ("storage", "tank")],
    )
    .await;
    let full = config_of(&sim, "104").await;
    assert_eq!(full["scsi0"], "tank:vm-104-disk-0,size=8G");
    assert_eq!(full["name"], "Copy-of-VM-tmpl");
    let content = sim.get("/nodes/pve1/storage/tank/content").await;
    let copied = content
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volid"] == "tank:vm-104-disk-0")
        .unwrap();
    assert_eq!(copied["size"], 8u64 << 30);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn linked_clones_need_a_template_and_a_storage_that_links() {
    let sim = start_with(inventory_config(SimMode::Auto)).await;
    vm_on(&sim, "100", "local-lvm").await;
    let not_template = sim
        .call(
            "POST",
            "/nodes/pve1/qemu/100/clone",
            &[("newid", "101"), ("full", "0")],
        )
        .await;
    assert_eq!(
        (not_template.status, not_template.reason.as_str()),
        (
            500,
            "Linked clone feature is not supported for 'local-lvm:vm-100-disk-0' (scsi0)"
        )
    );
    vm_on(&sim, "9000", "thick").await;
    sim.task_ok("POST", "/nodes/pve1/qemu/9000/template", &[])
        .await;
    // LVM (thick) has no `template` feature: the disk stays `vm-…` and cannot be linked.
    assert_eq!(
        config_of(&sim, "9000").await["scsi0"],
        "thick:vm-9000-disk-0,size=8G"
    );
    let thick = sim
        .call("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "102")])
        .await;
    assert_eq!(
        thick.reason,
        "Linked clone feature is not supported for 'thick:vm-9000-disk-0' (scsi0)"
    );
    let storage = sim
        .call(
            "POST",
            "/nodes/pve1/qemu/9000/clone",
            &[("newid", "102"), ("full", "0"), ("storage", "tank")],
        )
        .await;
    assert_eq!(
        storage.reason,
        "parameter 'storage' not allowed for linked clones"
    );
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/9000/clone",
        &[("newid", "102"), ("full", "1")],
    )
    .await;
    assert!(sim.handle.vm_config(101).is_none());
    assert_log_conforms(&sim);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn clone_permissions_are_checked_like_clone_vm() {
    let sim = start_with(inventory_config(SimMode::Auto)).await;
    vm_on(&sim, "9000", "local-lvm").await;
    sim.task_ok("POST", "/nodes/pve1/qemu/9000/template", &[])
        .await;
    let cases = [
        (
            "clone@pve!noclone",
            "Permission check failed (/vms/9000, VM.Clone)",
        ),
        // ['or', /vms/{newid}, /pool/{pool}] fails without naming a path.
        ("clone@pve!noalloc", "Permission check failed"),
        (
            "clone@pve!nospace",
            "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)",
        ),
    ];
    for (token, message) in cases {
        let answer = sim
            .call_as(
                &auth(token),
                "POST",
                "/nodes/pve1/qemu/9000/clone",
                &[("newid", "101")],
            )
            .await;
        assert_eq!((answer.status, answer.reason.as_str()), (403, message));
    }
    assert!(sim.handle.vm_config(101).is_none());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn clones_of_a_stopped_template_share_its_lock_and_a_running_source_is_exclusive() {
    let sim = start_with(inventory_config(SimMode::Explicit)).await;
    let stepper = sim.handle.stepper();
    let create = sim
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "9000"),
                ("scsi0", "local-lvm:8"),
                ("template", "1"),
            ],
        )
        .await
        .ok();
    stepper.finish_ok(create.as_str().unwrap()).unwrap();
    // qemu-server `clone_vm`: `lock_config_shared` on a stopped source, so clones run together.
    let first = sim
        .call("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "101")])
        .await
        .ok();
    let second = sim
        .call("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", "102")])
        .await
        .ok();
    assert_eq!(stepper.running_tasks().len(), 2);
    // The clone being made is locked: cloning it in turn is refused by check_lock.
    let of_clone = sim
        .call("POST", "/nodes/pve1/qemu/101/clone", &[("newid", "103")])
        .await;
    assert_eq!(
        (of_clone.status, of_clone.reason.as_str()),
        (500, "VM is locked (clone)")
    );
    // An exclusive locker of the template (a config change) times out while clones hold it.
    let config = sim
        .call(
            "POST",
            "/nodes/pve1/qemu/9000/config",
            &[("description", "x")],
        )
        .await
        .ok();
    // Explicit mode: the doomed worker ends when stepped, failing with its lock error.
    stepper.finish_ok(config.as_str().unwrap()).unwrap();
    let status = sim.wait(config.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
    );
    for upid in [&first, &second] {
        stepper.finish_ok(upid.as_str().unwrap()).unwrap();
        assert_eq!(sim.wait(upid.as_str().unwrap()).await["exitstatus"], "OK");
    }
    // A running source is locked exclusively (`lock_config_full($vmid, 1, …)`): a second
    // clone's worker gives up after one second.
    let start = sim
        .call("POST", "/nodes/pve1/qemu/101/status/start", &[])
        .await
        .ok();
    stepper.finish_ok(start.as_str().unwrap()).unwrap();
    let holder = sim
        .call("POST", "/nodes/pve1/qemu/101/clone", &[("newid", "201")])
        .await
        .ok();
    let loser = sim
        .call("POST", "/nodes/pve1/qemu/101/clone", &[("newid", "202")])
        .await
        .ok();
    stepper.finish_ok(loser.as_str().unwrap()).unwrap();
    let status = sim.wait(loser.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    );
    assert!(sim.handle.vm_config(202).is_none());
    stepper.finish_ok(holder.as_str().unwrap()).unwrap();
    assert_eq!(
        sim.handle.vm_config(201).unwrap()["scsi0"],
        "local-lvm:vm-201-disk-0,size=8G"
    );
    assert_log_conforms(&sim);
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_template_whose_base_a_linked_clone_uses_is_not_destroyed() {
    let sim = start_with(inventory_config(SimMode::Auto)).await;
    for (vmid, storage, newid) in [("9000", "tank", "101"), ("9001", "local-lvm", "102")] {
        vm_on(&sim, vmid, storage).await;
        sim.task_ok("POST", &format!("/nodes/pve1/qemu/{vmid}/template"), &[])
            .await;
        sim.task_ok(
            "POST",
            &format!("/nodes/pve1/qemu/{vmid}/clone"),
            &[("newid", newid)],
        )
        .await;
    }
    let destroy = sim.call("DELETE", "/nodes/pve1/qemu/9000", &[]).await.ok();
    let status = sim.wait(destroy.as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "base volume 'tank:base-9000-disk-0' is still in use by linked cloned"
    );
    let template = config_of(&sim, "9000").await;
    assert!(template.get("lock").is_none());
    sim.task_ok("DELETE", "/nodes/pve1/qemu/101", &[]).await;
    sim.task_ok("DELETE", "/nodes/pve1/qemu/9000", &[]).await;
    assert!(sim.handle.vm_config(9000).is_none());
    // pve-storage finds linked clones by name; an lvmthin clone (`vm-102-disk-0`) does not
    // name its base, and LVM-thin lets the base go while the snapshot lives on.
    sim.task_ok("DELETE", "/nodes/pve1/qemu/9001", &[]).await;
    assert_eq!(
        config_of(&sim, "102").await["scsi0"],
        "local-lvm:vm-102-disk-0,size=8G"
    );
    sim.handle.shutdown().await;
}

/// pve-storage clones (`vdisk_clone`) and allocates (`vdisk_alloc`) inside
/// `cluster_lock_storage`: linked clones of one storage take turns on its lock, and one that
/// would wait past the lock's 10 s fails as Proxmox says, leaving no VM behind.
#[tokio::test]
async fn linked_clones_take_turns_on_the_storage_lock_and_time_out_past_ten_seconds() {
    let mut config = inventory_config(SimMode::Auto);
    // 1 s of lock per disk: 30 clones of a two-disk template queue 60 s, far past the 10 s
    // timeout. At time scale 0.01 the whole queue takes 0.6 s.
    config.time_scale = 0.01;
    for storage in &mut config.inventory.storages {
        if storage.name == "local-lvm" {
            storage.overhead_ms = Some(1000);
            storage.lock_ms = Some(1000);
        }
    }
    let sim = start_with(config).await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[
            ("vmid", "9000"),
            ("scsi0", "local-lvm:8"),
            ("efidisk0", "local-lvm:1,efitype=4m"),
            ("bios", "ovmf"),
            ("template", "1"),
        ],
    )
    .await;
    let mut upids = Vec::new();
    for n in 0..30u32 {
        let newid = (1000 + n).to_string();
        let upid = sim
            .call("POST", "/nodes/pve1/qemu/9000/clone", &[("newid", &newid)])
            .await
            .ok();
        upids.push((newid, upid.as_str().unwrap().to_owned()));
    }
    let mut ok = Vec::new();
    let mut timed_out = Vec::new();
    for (newid, upid) in &upids {
        let status = sim.wait(upid).await;
        match status["exitstatus"].as_str().unwrap() {
            "OK" => ok.push(newid.clone()),
            failure => {
                assert_eq!(
                    failure,
                    "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
                );
                timed_out.push(newid.clone());
            }
        }
    }
    // Two disks of 1 s each: the clones that waited at most 10 s are the first six (a few more
    // when sending the requests took part of the queue's time).
    assert!((5..=8).contains(&ok.len()), "{ok:?}");
    assert_eq!(ok.len() + timed_out.len(), 30);
    for newid in &timed_out {
        assert!(
            sim.handle.vm_config(newid.parse().unwrap()).is_none(),
            "{newid} was rolled back"
        );
    }
    for newid in &ok {
        let config = sim.handle.vm_config(newid.parse().unwrap()).unwrap();
        let scsi0 = &config["scsi0"];
        assert!(
            scsi0.starts_with(&format!("local-lvm:vm-{newid}-disk-"))
                && scsi0.ends_with(",size=8G"),
            "{scsi0}"
        );
    }
    assert_log_conforms(&sim);
    sim.handle.shutdown().await;
}
