//! The project's parameter description (`params/params.toml`) against the official Proxmox VE
//! schema, and a representative session's logged requests validated against the official schema.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn official() -> Option<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pve-api/schema-9.1.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(_) => {
            eprintln!(
                "SKIPPED: ../shared/pve-api/schema-9.1.json not found beside the repository; \
                 the schema conformance checks did not run"
            );
            None
        }
    }
}

#[test]
fn description_agrees_with_the_official_schema() {
    let Some(schema) = official() else { return };
    let problems = pve_sim::schema::compare_with_official(&schema);
    assert!(
        problems.is_empty(),
        "{} disagreements:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The comparison is not vacuous: each kind of mistake is reported.
#[test]
fn comparison_catches_wrong_descriptions() {
    let Some(schema) = official() else { return };
    let wrong = r#"
[formats.net]
default-key = "model"
keys.model = { type = "string", required = true, enum = ["virtio", "virtio-net"] }
keys.speed = { type = "integer" }

[sets.none]

[endpoints."POST /nodes/{node}/qemu"]
params.node = { type = "string", required = true, format = "pve-node" }
params.vmid = { type = "integer", required = true, format = "pve-vmid", minimum = 1, maximum = 999999999 }
params.cores = { type = "string" }
params.gpus = { type = "integer" }
params."net[n]" = { type = "string", format = "net" }

[endpoints."GET /nodes/{node}/made-up"]
"#;
    let description = pve_sim::schema::Description::parse(wrong).unwrap();
    let problems = pve_sim::schema::compare_description(&description, &schema).join("\n");
    for expected in [
        "vmid: minimum Some(1.0) but official Some(100.0)",
        "cores: type String but official Integer",
        "parameter 'gpus' is not in the official schema",
        "enum value 'virtio-net' not in the official enum",
        "key 'speed' is not in the official format",
        "GET /nodes/{node}/made-up: not in the official schema",
    ] {
        assert!(
            problems.contains(expected),
            "missing {expected:?} in:\n{problems}"
        );
    }
}

#[test]
fn every_served_route_is_described() {
    let Some(schema) = official() else { return };
    for (method, template) in pve_sim::routes() {
        assert!(
            pve_sim::schema::official_endpoint(&schema, method, template).is_some(),
            "{method} {template} is not an official route"
        );
    }
}

#[test]
fn official_validator_rejects_what_proxmox_rejects() {
    let Some(schema) = official() else { return };
    let params = |pairs: &[(&str, &str)]| -> serde_json::Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    };
    let ok = params(&[
        ("vmid", "101"),
        ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
        ("hostpci0", "mapping=a100,pcie=1"),
        ("numa0", "cpus=0-15,hostnodes=0,memory=65536,policy=bind"),
    ]);
    pve_sim::schema::validate_against_official(&schema, "POST", "/nodes/pve1/qemu", &ok).unwrap();
    let bad = params(&[
        ("vmid", "101"),
        ("hostpci0", "mapping=a100,bogus=1"),
        ("cores", "0"),
    ]);
    let errors =
        pve_sim::schema::validate_against_official(&schema, "POST", "/nodes/pve1/qemu", &bad)
            .unwrap_err();
    assert!(errors.contains_key("hostpci0"), "{errors:?}");
    assert_eq!(errors["cores"], "value must have a minimum value of 1");
}

/// A representative session (GPU VM create, clone, config, resize, start, agent, delete,
/// mappings, downloads, uploads): every request the simulator logged is valid for Proxmox.
#[tokio::test]
async fn session_requests_conform_to_the_official_schema() {
    let Some(schema) = official() else { return };
    let sim = start("pve-a100").await;
    session(&sim).await;
    let log = sim.handle.request_log();
    assert!(log.len() > 25, "{}", log.len());
    let mut failures = Vec::new();
    for entry in &log {
        if let Err(errors) = pve_sim::schema::validate_against_official(
            &schema,
            &entry.method,
            &entry.path,
            &entry.params,
        ) {
            failures.push(format!(
                "{} {} {:?}: {errors:?}",
                entry.method, entry.path, entry.params
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    sim.handle.shutdown().await;
}

async fn session(sim: &Sim) {
    sim.get("/version").await;
    sim.get("/cluster/status").await;
    sim.get("/cluster/resources?type=vm").await;
    sim.get("/nodes/pve1/hardware/pci").await;
    sim.get("/nodes/pve1/storage").await;
    sim.get("/cluster/nextid").await;
    sim.call(
        "POST",
        "/cluster/mapping/pci",
        &[
            ("id", "a100"),
            (
                "map",
                "node=pve1,path=0000:41:00,id=10de:20b0,iommugroup=22",
            ),
        ],
    )
    .await
    .ok();
    sim.task_ok(
        "POST",
        "/nodes/pve1/storage/local/download-url",
        &[
            (
                "url",
                "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
            ),
            ("content", "import"),
            ("filename", "noble.qcow2"),
            ("checksum", "0123abcd"),
            ("checksum-algorithm", "sha256"),
        ],
    )
    .await;
    let mut params = gpu_vm("101", "mapping=a100,pcie=1");
    params.retain(|(k, _)| *k != "scsi0");
    params.push((
        "scsi0",
        "local-lvm:0,import-from=local:import/noble.qcow2,discard=on",
    ));
    params.push(("numa0", "cpus=0-7,hostnodes=0,memory=16384,policy=bind"));
    params.push(("tags", "provision;cluster-a100"));
    sim.task_ok("POST", "/nodes/pve1/qemu", &params).await;
    sim.task_ok(
        "PUT",
        "/nodes/pve1/qemu/101/resize",
        &[("disk", "scsi0"), ("size", "+10G")],
    )
    .await;
    sim.call(
        "PUT",
        "/nodes/pve1/qemu/101/config",
        &[("description", "worker")],
    )
    .await
    .ok();
    sim.task_ok("POST", "/nodes/pve1/qemu/101/config", &[("onboot", "1")])
        .await;
    sim.task_ok("POST", "/nodes/pve1/qemu/101/config", &[("template", "1")])
        .await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/101/clone",
        &[("newid", "102"), ("name", "clone"), ("full", "1")],
    )
    .await;
    sim.call(
        "PUT",
        "/nodes/pve1/qemu/102/config",
        &[("delete", "hostpci0")],
    )
    .await
    .ok();
    sim.task_ok("POST", "/nodes/pve1/qemu/102/status/start", &[])
        .await;
    sim.wait_agent("pve1", 102).await;
    sim.get("/nodes/pve1/qemu/102/agent/network-get-interfaces")
        .await;
    sim.get("/nodes/pve1/qemu/102/agent/file-read?file=%2Fetc%2Fhostname")
        .await;
    sim.get("/nodes/pve1/qemu/102/status/current").await;
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu/102/status/shutdown",
        &[("timeout", "60"), ("forceStop", "1")],
    )
    .await;
    sim.task_ok(
        "DELETE",
        "/nodes/pve1/qemu/102",
        &[("purge", "1"), ("destroy-unreferenced-disks", "1")],
    )
    .await;
    sim.call(
        "POST",
        "/pools",
        &[("poolid", "provision"), ("comment", "k3s")],
    )
    .await
    .ok();
    sim.get("/pools").await;
    sim.get("/nodes/pve1/storage/local/content?content=import")
        .await;
}
