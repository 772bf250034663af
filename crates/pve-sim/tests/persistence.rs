//! The state file under load and attack: concurrent changes never leave an invalid file, it
//! stays small over many upload/delete cycles and keeps no private keys, and a symlink planted
//! where the old implementation put its temp file is not followed.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;

const PRIVATE_USER_DATA: &str = "#cloud-config\nhostname: w1\nssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmv host@w1\n";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A NoCloud seed with a private host key, padded to `padding` bytes by an extra file.
fn seed_with_private_key(padding: usize) -> Vec<u8> {
    let pad = vec![b'x'; padding];
    pve_sim::iso9660::write_image(
        &[
            ("user-data", PRIVATE_USER_DATA.as_bytes()),
            ("meta-data", b"local-hostname: w1\n"),
            ("padding", &pad),
        ],
        true,
    )
}

async fn upload_seed(sim: &Sim, iso: &[u8]) {
    let checksum = sha256_hex(iso);
    let fields = [
        ("content", "iso"),
        ("checksum-algorithm", "sha256"),
        ("checksum", checksum.as_str()),
    ];
    let body = multipart_body("b0undary", &fields, "seed.iso", iso);
    let upid = sim.post_multipart(&sim.auth, "b0undary", body).await.ok();
    let status = sim.wait(upid.as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK", "{status}");
}

/// The saved state: the snapshot with its journal replayed.
fn state_at(path: &Path) -> serde_json::Value {
    pve_sim::read_state_file(path).unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_never_leave_an_invalid_file_and_all_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut config = config("pve-ci");
    config.state_file = Some(path.clone());
    let sim = Arc::new(start_with(config).await);

    // A reader parses every version of the file it sees while 48 pools are created at once.
    let done = Arc::new(AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (path, done) = (path.clone(), done.clone());
        move || {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                if let Ok(bytes) = std::fs::read(&path) {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .unwrap_or_else(|e| panic!("invalid state file after {reads} reads: {e}"));
                    reads += 1;
                }
            }
        }
    });
    let creates = (0..48).map(|n| {
        let sim = sim.clone();
        tokio::spawn(async move {
            let poolid = format!("pool{n}");
            sim.call("POST", "/pools", &[("poolid", &poolid)])
                .await
                .ok();
        })
    });
    for create in futures::future::join_all(creates).await {
        create.unwrap();
    }
    // Without a shutdown: the writer thread saves the last change shortly after it (on a loaded
    // machine the first save may not have happened yet: wait for the file, up to 10 s in all).
    let mut pools = 0;
    for _ in 0..1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Ok(Some(state)) = pve_sim::read_state_file(&path) else {
            continue;
        };
        pools = state["pools"].as_object().unwrap().len();
        if (0..48).all(|n| state["pools"].get(format!("pool{n}")).is_some()) {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(pools >= 48, "only {pools} pools reached the file");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No temp file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["state.json", "state.json.journal"]);
}

#[tokio::test]
async fn the_file_stays_small_over_upload_and_delete_cycles_and_keeps_no_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut config = config("pve-ci");
    config.state_file = Some(path.clone());
    let sim = start_with(config.clone()).await;
    let iso = seed_with_private_key(64 * 1024);
    for _ in 0..25 {
        upload_seed(&sim, &iso).await;
        sim.task_ok(
            "DELETE",
            "/nodes/pve1/storage/local/content/local:iso%2Fseed.iso",
            &[],
        )
        .await;
    }
    upload_seed(&sim, &iso).await;
    sim.handle.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    // 26 uploads of a 100 KiB image used to add ~135 KiB each (3.5 MB).
    assert!(
        text.len() < 128 * 1024,
        "state file is {} bytes",
        text.len()
    );
    assert!(!text.contains("PRIVATE KEY"));
    assert!(!text.contains("xxxxxxxx"), "the padding file was kept");

    // What the guest needs of the seed comes back: the volume lists with its size.
    let sim = start_with(config).await;
    let content = sim.get("/nodes/pve1/storage/local/content").await;
    let volume = content
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volid"] == "local:iso/seed.iso")
        .unwrap_or_else(|| panic!("{content}"))
        .clone();
    assert_eq!(volume["size"], iso.len());
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn a_symlink_planted_at_the_old_temp_path_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim-state.json");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    // The previous implementation wrote `sim-state.tmp` through whatever was there.
    std::os::unix::fs::symlink(&victim, dir.path().join("sim-state.tmp")).unwrap();
    let mut config = config("pve-ci");
    config.state_file = Some(path.clone());
    let sim = start_with(config).await;
    sim.call("POST", "/pools", &[("poolid", "p1")]).await.ok();
    sim.handle.shutdown().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert!(state_at(&path)["pools"].get("p1").is_some());
}

#[tokio::test]
async fn credentials_of_this_start_replace_those_saved_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("pve-ci");
    config.state_file = Some(dir.path().join("state.json"));
    let with_secret = |secret: &str| {
        let mut config = config.clone();
        for token in &mut config.inventory.tokens {
            token.secret = secret.to_owned();
        }
        config
    };
    let sim = start_with(with_secret("first-secret")).await;
    let first = "PVEAPIToken=provision@pve!ci=first-secret";
    sim.call_as(first, "POST", "/pools", &[("poolid", "p1")])
        .await
        .ok();
    sim.handle.shutdown().await;

    let sim = start_with(with_secret("second-secret")).await;
    let answer = sim.call_as(first, "GET", "/pools", &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let second = "PVEAPIToken=provision@pve!ci=second-secret";
    let pools = sim.call_as(second, "GET", "/pools", &[]).await.ok();
    assert_eq!(pools[0]["poolid"], "p1", "{pools}");
    sim.handle.shutdown().await;
}

/// A save after one change writes that change (a journal line), not the cluster; the state
/// replayed from snapshot + journal, as a crash leaves them, is the state in memory.
#[tokio::test]
async fn a_save_writes_the_change_and_a_crash_reload_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let mut config = config("pve-ci");
    config.state_file = Some(path.clone());
    let sim = start_with(config.clone()).await;
    for vmid in 200..230 {
        small_vm_on(&sim, &vmid.to_string()).await;
    }
    sim.handle.save_state_now();
    let before = sim.handle.state_bytes_written();
    let whole = serde_json::to_vec(&state_at(&path)).unwrap().len() as u64;
    sim.call(
        "PUT",
        "/nodes/pve1/qemu/217/config",
        &[("description", "one change")],
    )
    .await
    .ok();
    sim.handle.save_state_now();
    let written = sim.handle.state_bytes_written() - before;
    assert!(
        written > 0 && written < 4096,
        "{written} bytes for one change"
    );
    assert!(
        whole > 20 * written,
        "state {whole} bytes, change {written}"
    );

    // A crash: no clean stop; a second simulator loads snapshot + journal.
    let saved = state_at(&path);
    assert_eq!(saved["vms"]["217"]["config"]["description"], "one change");
    let reloaded = start_with(config).await;
    for vmid in 200..230 {
        assert_eq!(
            reloaded.handle.vm_config(vmid),
            sim.handle.vm_config(vmid),
            "VM {vmid}"
        );
    }
    let summary = |resources: serde_json::Value| -> Vec<String> {
        let mut list: Vec<String> = resources
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {} {}", r["vmid"], r["name"], r["node"], r["status"]))
            .collect();
        list.sort();
        list
    };
    let path = "/cluster/resources?type=vm";
    assert_eq!(
        summary(reloaded.get(path).await),
        summary(sim.get(path).await)
    );
    reloaded.handle.shutdown().await;
    sim.handle.shutdown().await;
}

/// A 512 MiB VM with one 4 GiB disk on `pve1`.
async fn small_vm_on(sim: &Sim, vmid: &str) {
    sim.task_ok(
        "POST",
        "/nodes/pve1/qemu",
        &[("vmid", vmid), ("memory", "512"), ("scsi0", "local-lvm:4")],
    )
    .await;
}
