//! Regressions of what the real third-party clients (proxmoxer, Ansible's proxmox_kvm) found
//! when `tests/it/third_party.rs` first drove `provision sim serve` with them; each answer is
//! checked against the Proxmox source that produces it.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use common::*;

/// proxmox_kvm joins its `tags` list with `,` and asserts on the config it reads back; qemu-server
/// stores `PVE::GuestHelpers::get_unique_tags` of the value on create and on config changes
/// (pve-guest-common `src/PVE/GuestHelpers.pm`): split on `;`, `,` and white space, lowercased,
/// sorted, deduplicated, joined with `;` (datacenter.cfg's default tag-style).
#[tokio::test]
async fn tags_are_stored_sorted_lowercased_and_joined_by_semicolons() {
    let sim = start("pve-a100").await;
    let mut params = gpu_vm("140", "");
    // No device: a raw id needs root@pam, and the tags are the point here.
    params.retain(|(key, _)| *key != "hostpci0");
    params.push(("tags", "gpu,Ansible;gpu  k3s"));
    let create = sim.call("POST", "/nodes/pve1/qemu", &params).await;
    assert_eq!(create.status, 200, "{:?}", create.body);
    sim.wait(create.data().as_str().unwrap()).await;
    let config = sim.get("/nodes/pve1/qemu/140/config").await;
    assert_eq!(config["tags"], "ansible;gpu;k3s");
    let resources = sim.get("/cluster/resources?type=vm").await;
    assert_eq!(resources[0]["tags"], "ansible;gpu;k3s");

    let path = "/nodes/pve1/qemu/140/config";
    let answer = sim.call("PUT", path, &[("tags", "Zeta,alpha,ZETA")]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(sim.get(path).await["tags"], "alpha;zeta");
    sim.handle.shutdown().await;
}

/// A VM that is not (or no longer) on the node: every qemu route loads its config first, and
/// `PVE::AbstractConfig::load_config` dies `Configuration file 'nodes/N/qemu-server/ID.conf'
/// does not exist` (pve-guest-common `src/PVE/AbstractConfig.pm`); clone asks
/// `PVE::QemuServer::check_running` first (qemu-server `src/PVE/API2/Qemu.pm`, `clone_vm`),
/// which dies `unable to find configuration file for VM ID - no such machine`.
#[tokio::test]
async fn a_missing_vm_answers_with_the_words_of_load_config() {
    let sim = start("pve-a100").await;
    let missing = "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist";
    for (method, path) in [
        ("GET", "/nodes/pve1/qemu/999/config"),
        ("GET", "/nodes/pve1/qemu/999/status/current"),
        ("PUT", "/nodes/pve1/qemu/999/config"),
        ("POST", "/nodes/pve1/qemu/999/status/start"),
        ("DELETE", "/nodes/pve1/qemu/999"),
    ] {
        let params: &[(&str, &str)] = if method == "PUT" {
            &[("cores", "2")]
        } else {
            &[]
        };
        let answer = sim.call(method, path, params).await;
        assert_eq!(
            (answer.status, answer.reason.as_str()),
            (500, missing),
            "{method} {path}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["message"], format!("{missing}\n"));
    }
    let clone = sim
        .call("POST", "/nodes/pve1/qemu/999/clone", &[("newid", "1000")])
        .await;
    assert_eq!(
        (clone.status, clone.reason.as_str()),
        (
            500,
            "unable to find configuration file for VM 999 - no such machine"
        )
    );
    sim.handle.shutdown().await;
}
