//! The project's parameter description (`params/params.toml`) against the official Proxmox VE
//! schema, a representative session's logged requests validated against the official schema,
//! and every parameter of the official create/config schema sent to the simulator and stored.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// What the skip message names for the description and request-log checks.
const CONFORMANCE: &str = "the schema conformance checks";

fn official(what: &str) -> Option<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/pve-api/schema-9.1.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(_) => {
            eprintln!(
                "SKIPPED: ../shared/pve-api/schema-9.1.json not found beside the repository; \
                 {what} did not run"
            );
            None
        }
    }
}

#[test]
fn description_agrees_with_the_official_schema() {
    let Some(schema) = official(CONFORMANCE) else {
        return;
    };
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
    let Some(schema) = official(CONFORMANCE) else {
        return;
    };
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
    let Some(schema) = official(CONFORMANCE) else {
        return;
    };
    for (method, template) in pve_sim::routes() {
        assert!(
            pve_sim::schema::official_endpoint(&schema, method, template).is_some(),
            "{method} {template} is not an official route"
        );
    }
}

#[test]
fn official_validator_rejects_what_proxmox_rejects() {
    let Some(schema) = official(CONFORMANCE) else {
        return;
    };
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
    let Some(schema) = official(CONFORMANCE) else {
        return;
    };
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
    sim.get("/nodes/pve1/tasks?source=active&limit=500&statusfilter=ok,error")
        .await;
}

/// Hand-written values for parameters whose property strings or patterns a generic value
/// cannot satisfy.
fn hand_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "agent" => "enabled=1,fstrim_cloned_disks=1",
        "amd-sev" => "type=std",
        "audio0" => "device=ich9-intel-hda,driver=spice",
        "boot" => "order=scsi0",
        "bootdisk" => "scsi0",
        "cdrom" => "none",
        "cicustom" => "user=local:snippets/user.yaml",
        "cpu" => "host,flags=+aes",
        "efidisk0" => "local-lvm:1,efitype=4m,pre-enrolled-keys=1",
        "hookscript" => "local:snippets/hook.pl",
        "hostpci[n]" => "0000:41:00,pcie=1",
        "ide[n]" => "none,media=cdrom",
        "intel-tdx" => "type=tdx,attestation=0",
        "ipconfig[n]" => "ip=10.0.0.9/24,gw=10.0.0.1",
        "ivshmem" => "size=32,name=shm",
        "machine" => "q35,viommu=virtio",
        "memory" => "2048",
        "name" => "walk-vm",
        "nameserver" => "10.0.0.1 10.0.0.2",
        "net[n]" => "virtio,bridge=vmbr0,firewall=1",
        "numa[n]" => "cpus=0-1,hostnodes=0,memory=1024,policy=bind",
        "parallel[n]" => "/dev/parport0",
        "rng0" => "source=/dev/urandom,max_bytes=1024,period=1000",
        "sata[n]" | "scsi[n]" | "virtio[n]" => "local-lvm:1",
        "serial[n]" => "socket",
        "smbios1" => "uuid=7b3d4c2e-1f5a-4e6b-9c8d-0a1b2c3d4e5f,manufacturer=UE1V",
        "spice_enhancements" => "foldersharing=1,videostreaming=all",
        "sshkeys" => "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIB%20k%40host",
        "startdate" => "now",
        "startup" => "order=1,up=30",
        "affinity" => "0-3,8",
        "args" => "-no-reboot",
        "tags" => "gpu;A100",
        "tpmstate0" => "local-lvm:1,version=v2.0",
        "unused[n]" => "local-lvm:vm-999-disk-9",
        "usb[n]" => "host=spice,usb3=1",
        "vga" => "std,memory=32",
        "virtiofs[n]" => "dirid=share,cache=auto",
        "vmgenid" => "1",
        "vmstatestorage" => "local-lvm",
        "watchdog" => "model=i6300esb,action=reset",
        "description" => "walked from the official schema",
        _ => return None,
    })
}

fn schema_value(name: &str, property: &Value) -> String {
    if let Some(value) = hand_value(name) {
        return value.to_owned();
    }
    if let Some(first) = property["enum"].as_array().and_then(|e| e.first()) {
        return first
            .as_str()
            .map_or_else(|| first.to_string(), str::to_owned);
    }
    let number = |key: &str| {
        property[key]
            .as_f64()
            .or_else(|| property[key].as_str()?.parse().ok())
    };
    match property["type"].as_str() {
        Some("boolean") => "1".to_owned(),
        Some("integer") => {
            let value = number("minimum").unwrap_or(1.0).max(1.0);
            (number("maximum").map_or(value, |m| value.min(m)) as i64).to_string()
        }
        Some("number") => number("minimum").unwrap_or(1.0).max(0.5).to_string(),
        _ => match property["format"].as_str() {
            Some("pve-storage-id") => "local-lvm".to_owned(),
            _ => "walk".to_owned(),
        },
    }
}

fn official_properties<'a>(
    schema: &'a Value,
    path: &str,
    method: &str,
) -> &'a serde_json::Map<String, Value> {
    fn walk<'a>(nodes: &'a Value, path: &str) -> Option<&'a Value> {
        for node in nodes.as_array()? {
            if node["path"] == path {
                return Some(node);
            }
            if let Some(found) = walk(&node["children"], path) {
                return Some(found);
            }
        }
        None
    }
    walk(schema, path).unwrap()["info"][method]["parameters"]["properties"]
        .as_object()
        .unwrap()
}

fn concrete(name: &str) -> String {
    name.replace("[n]", "0")
}

/// Parameters that are not config values (or act on the request itself).
const NOT_CONFIG: &[&str] = &[
    "node",
    "vmid",
    "archive",
    "start",
    "pool",
    "storage",
    "force",
    "unique",
    "live-restore",
    "bwlimit",
    "import-working-storage",
    "ha-managed",
    "delete",
    "digest",
    "revert",
    "skiplock",
    "background_delay",
    "lock",
    "template",
];

#[tokio::test]
async fn every_create_and_config_parameter_of_the_official_schema_is_accepted() {
    let Some(schema) = official("the create/config parameter walk") else {
        return;
    };
    let sim = start("pve-a100").await;
    let create = official_properties(&schema, "/nodes/{node}/qemu", "POST");
    let mut vmid = 300;
    for (name, property) in create {
        if NOT_CONFIG.contains(&name.as_str()) && name != "template" {
            continue;
        }
        vmid += 1;
        let key = concrete(name);
        let value = schema_value(name, property);
        let id = vmid.to_string();
        let params = [("vmid", id.as_str()), (key.as_str(), value.as_str())];
        let answer = as_root(&sim, "POST", "/nodes/pve1/qemu", &params).await;
        assert_eq!(
            answer.status, 200,
            "create with {key}={value}: {} {:?}",
            answer.reason, answer.body
        );
        sim.wait(answer.data().as_str().unwrap()).await;
        let config = sim.handle.vm_config(vmid).unwrap();
        // qemu-server's `$resolve_cdrom_alias` stores `cdrom` as `ide2`.
        let stored = if key == "cdrom" { "ide2" } else { key.as_str() };
        assert!(config.contains_key(stored), "{key} not stored: {config:?}");
    }
    small_vm(&sim, "299").await;
    for method in ["PUT", "POST"] {
        let properties = official_properties(&schema, "/nodes/{node}/qemu/{vmid}/config", method);
        for (name, property) in properties {
            if NOT_CONFIG.contains(&name.as_str()) {
                continue;
            }
            let key = concrete(name);
            let value = schema_value(name, property);
            let answer = as_root(
                &sim,
                method,
                "/nodes/pve1/qemu/299/config",
                &[(key.as_str(), value.as_str())],
            )
            .await;
            assert_eq!(
                answer.status, 200,
                "{method} config {key}={value}: {} {:?}",
                answer.reason, answer.body
            );
            if let Some(upid) = answer.data().as_str() {
                sim.wait(upid).await;
            }
            let config = sim.get("/nodes/pve1/qemu/299/config").await;
            // `cdrom` is stored as `ide2`.
            let stored = if key == "cdrom" { "ide2" } else { key.as_str() };
            assert!(
                config.get(stored).is_some(),
                "{method} {key} not returned: {config}"
            );
        }
    }
    sim.handle.shutdown().await;
}
