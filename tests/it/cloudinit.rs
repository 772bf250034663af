//! Cloud-init seeds checked against the real tools: `cloud-init schema`, `cloud-init devel
//! net-convert`, `isoinfo`, `xorriso`, `blkid` (installed by `scripts/ci-setup-cloudinit.sh`).
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use provision::cloudinit::{
    HostKeys, Seed, SeedInput, WriteFile, build_nocloud_iso, build_seed, iso_file_name,
};

/// The path of `name`, or `None` (with a loud message) when it is missing outside CI.
/// In CI (`CI` set) a missing tool fails the test: the setup script must have installed it.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("`{name}` is not installed but CI is set: run scripts/ci-setup-cloudinit.sh");
        }
        eprintln!(
            "SKIPPED: `{name}` is not installed; run scripts/ci-setup-cloudinit.sh to check the seed against it"
        );
    }
    found
}

fn run(program: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {:?} failed ({}):\nstdout: {}\nstderr: {}",
        program.display(),
        args,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const USER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEpydjo2bsaF1piJ8pbBDshhi+/I2e7qQ7B1Rn1jrEIR ops@laptop";

/// Inputs shaped like the built-in profiles' VMs.
fn profile_like_inputs(keys: &HostKeys) -> Vec<(&'static str, SeedInput<'_>)> {
    let base = SeedInput {
        hostname: "homelab-ha-cp-1".to_owned(),
        fqdn: None,
        instance_id: "provision-homelab-ha-cp-1".to_owned(),
        user: "debian".to_owned(),
        authorized_keys: vec![USER_KEY.to_owned()],
        address: "192.168.50.11".parse().unwrap(),
        prefix_len: 24,
        gateway: "192.168.50.1".parse().unwrap(),
        dns: vec!["192.168.50.1".parse().unwrap()],
        search_domain: None,
        mtu: None,
        mac: None,
        host_keys: keys,
        packages: vec![],
        extra_runcmd: vec![],
        write_files: vec![],
    };
    let gpu_worker = SeedInput {
        hostname: "a100-8x-gpu-3".to_owned(),
        fqdn: Some("a100-8x-gpu-3.ml.example.com".to_owned()),
        instance_id: "provision-a100-8x-gpu-3".to_owned(),
        user: "ops".to_owned(),
        authorized_keys: vec![
            USER_KEY.to_owned(),
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDDHr/jh2Jy4yALcK4JyWbVkPRaWmhck3IgCoeOO3z1e2dBowLh64QAM+Qb72pxekALga2oi4GvT+TlWNhzPH4V4lR8e+kMIomsnpISEnLYTSSBaGVgLXNmchKLYkGGMtGeV4Gx0nVU3UWQsqXt0/Mz3ylFr7gnAQoR2sbAlKOVuw== ci@runner".to_owned(),
        ],
        address: "10.40.0.23".parse().unwrap(),
        prefix_len: 22,
        gateway: "10.40.0.1".parse().unwrap(),
        dns: vec!["10.40.0.2".parse().unwrap(), "10.40.0.3".parse().unwrap()],
        search_domain: Some("ml.example.com".to_owned()),
        mtu: Some(9000),
        mac: Some("BC:24:11:5E:00:17".to_owned()),
        host_keys: keys,
        packages: vec!["nfs-common".to_owned(), "pciutils".to_owned()],
        extra_runcmd: vec![vec!["modprobe".to_owned(), "br_netfilter".to_owned()]],
        write_files: vec![WriteFile {
            path: "/etc/modules-load.d/provision.conf".to_owned(),
            content: "overlay\nbr_netfilter\n".to_owned(),
            permissions: "0644".to_owned(),
            owner: Some("root:root".to_owned()),
        }],
    };
    let ipv6_agent = SeedInput {
        hostname: "edge-agent-1".to_owned(),
        fqdn: None,
        instance_id: "provision-edge-agent-1".to_owned(),
        address: "fd00:10::31".parse().unwrap(),
        prefix_len: 64,
        gateway: "fd00:10::1".parse().unwrap(),
        dns: vec!["fd00:10::2".parse().unwrap()],
        search_domain: Some("edge.lan".to_owned()),
        mac: Some("bc:24:11:00:00:31".to_owned()),
        ..base.clone()
    };
    vec![
        ("homelab-ha control plane", base),
        ("a100-8x gpu worker", gpu_worker),
        ("ipv6 agent", ipv6_agent),
    ]
}

fn gpu_seed(keys: &HostKeys) -> Seed {
    let (_, input) = profile_like_inputs(keys).remove(1);
    build_seed(&input).unwrap()
}

#[test]
fn user_data_passes_the_real_cloud_init_schema() {
    let Some(cloud_init) = tool("cloud-init") else {
        return;
    };
    let keys = HostKeys::generate("schema-test").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, input) in profile_like_inputs(&keys) {
        let seed = build_seed(&input).unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, &seed.user_data).unwrap();
        let output = Command::new(&cloud_init)
            .args(["schema", "--config-file"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("Valid cloud-config"),
            "{name}: cloud-init schema rejected the user-data ({}):\n{stdout}\n{stderr}\n---\n{}",
            output.status,
            seed.user_data
        );
    }
    // The system config the user-data drops into /etc/cloud/cloud.cfg.d is valid as well.
    let keys_input = profile_like_inputs(&keys).remove(0).1;
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&build_seed(&keys_input).unwrap().user_data).unwrap();
    let dropped = &document["write_files"][0];
    assert_eq!(
        dropped["path"].as_str(),
        Some("/etc/cloud/cloud.cfg.d/90-provision.cfg")
    );
    let path = dir.path().join("90-provision.cfg");
    std::fs::write(
        &path,
        format!("#cloud-config\n{}", dropped["content"].as_str().unwrap()),
    )
    .unwrap();
    let output = Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "90-provision.cfg: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn cloud_init_schema_rejects_a_broken_document() {
    // Proves the schema check above can fail.
    let Some(cloud_init) = tool("cloud-init") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data");
    std::fs::write(&path, "#cloud-config\nssh_pwauth: maybe-later\nusers: 5\n").unwrap();
    let output = Command::new(&cloud_init)
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[test]
fn network_config_is_version_2_yaml() {
    let keys = HostKeys::generate("net-test").unwrap();
    for (name, input) in profile_like_inputs(&keys) {
        let seed = build_seed(&input).unwrap();
        let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&seed.network_config).unwrap();
        assert_eq!(document["version"].as_u64(), Some(2), "{name}");
        let ethernets = document["ethernets"].as_mapping().unwrap();
        assert_eq!(ethernets.len(), 1, "{name}");
        let meta: serde_yaml_ng::Value = serde_yaml_ng::from_str(&seed.meta_data).unwrap();
        assert_eq!(
            meta["local-hostname"].as_str(),
            Some(input.hostname.as_str())
        );
        assert!(
            meta["instance-id"]
                .as_str()
                .unwrap()
                .starts_with(&input.instance_id)
        );
    }
}

/// `cloud-init devel net-convert` renders the network-config for Debian with each renderer and
/// the result carries the static address, default gateway (natively, not through net-tools'
/// `route`), DNS and MTU, on the interface the VM really has.
#[test]
fn network_config_converts_with_real_cloud_init() {
    let Some(cloud_init) = tool("cloud-init") else {
        return;
    };
    let keys = HostKeys::generate("net-test").unwrap();
    let inputs = profile_like_inputs(&keys);
    // (input, interface on the fake system, expected fragments per renderer)
    let cases = [
        (
            &inputs[1].1,
            "eth0,bc:24:11:5e:00:17",
            [
                (
                    "eni",
                    vec![
                        "iface eth0 inet static",
                        "address 10.40.0.23/22",
                        "gateway 10.40.0.1",
                        "mtu 9000",
                        "dns-nameservers 10.40.0.2 10.40.0.3",
                        "dns-search ml.example.com",
                        "ATTR{address}==\"bc:24:11:5e:00:17\", NAME=\"eth0\"",
                    ],
                ),
                (
                    "networkd",
                    vec![
                        "MACAddress=bc:24:11:5e:00:17",
                        "Address=10.40.0.23/22",
                        "Gateway=10.40.0.1",
                        "MTUBytes=9000",
                        "DNS=10.40.0.2 10.40.0.3",
                    ],
                ),
                (
                    "netplan",
                    vec![
                        "macaddress: bc:24:11:5e:00:17",
                        "- 10.40.0.23/22",
                        "gateway4: 10.40.0.1",
                        "mtu: 9000",
                    ],
                ),
            ],
        ),
        (
            &inputs[0].1,
            "ens18,bc:24:11:00:00:11",
            [
                (
                    "eni",
                    vec![
                        "iface ens18 inet static",
                        "address 192.168.50.11/24",
                        "gateway 192.168.50.1",
                    ],
                ),
                (
                    "networkd",
                    vec![
                        "Name=ens18",
                        "Address=192.168.50.11/24",
                        "Gateway=192.168.50.1",
                    ],
                ),
                (
                    "netplan",
                    vec!["name: e*", "- 192.168.50.11/24", "gateway4: 192.168.50.1"],
                ),
            ],
        ),
        (
            &inputs[2].1,
            "eth0,bc:24:11:00:00:31",
            [
                (
                    "eni",
                    vec![
                        "iface eth0 inet6 static",
                        "address fd00:10::31/64",
                        "gateway fd00:10::1",
                    ],
                ),
                (
                    "networkd",
                    vec!["Address=fd00:10::31/64", "Gateway=fd00:10::1"],
                ),
                ("netplan", vec!["- fd00:10::31/64", "gateway6: fd00:10::1"]),
            ],
        ),
    ];
    for (input, mac_mapping, renderers) in cases {
        let seed = build_seed(input).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("network-config");
        std::fs::write(&config, &seed.network_config).unwrap();
        for (renderer, expected) in renderers {
            let out = dir.path().join(renderer);
            let output = run(
                &cloud_init,
                &[
                    "devel",
                    "net-convert",
                    "-p",
                    config.to_str().unwrap(),
                    "-k",
                    "yaml",
                    "-d",
                    out.to_str().unwrap(),
                    "-D",
                    "debian",
                    "-m",
                    mac_mapping,
                    "-O",
                    renderer,
                ],
            );
            let rendered = read_tree(&out);
            let stderr = String::from_utf8_lossy(&output.stderr);
            for fragment in expected {
                assert!(
                    rendered.contains(fragment),
                    "{}/{renderer}: {fragment:?} missing from\n{rendered}\n{stderr}",
                    input.hostname
                );
            }
            assert!(
                !rendered.contains("route add"),
                "{}/{renderer}: default route needs net-tools:\n{rendered}",
                input.hostname
            );
        }
    }
}

fn read_tree(dir: &Path) -> String {
    let mut all = String::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else {
            all.push_str(&format!("== {}\n", path.display()));
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    all
}

fn write_iso(seed: &Seed) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(iso_file_name("a100-8x", "gpu-3", seed));
    std::fs::write(&path, build_nocloud_iso(seed)).unwrap();
    (dir, path)
}

const NAMES: [&str; 3] = ["user-data", "meta-data", "network-config"];

fn seed_file<'a>(seed: &'a Seed, name: &str) -> &'a str {
    match name {
        "user-data" => &seed.user_data,
        "meta-data" => &seed.meta_data,
        "network-config" => &seed.network_config,
        other => panic!("unknown seed file {other}"),
    }
}

#[test]
fn isoinfo_reads_label_joliet_and_rock_ridge() {
    let Some(isoinfo) = tool("isoinfo") else {
        return;
    };
    let keys = HostKeys::generate("iso-test").unwrap();
    let seed = gpu_seed(&keys);
    let (_dir, iso) = write_iso(&seed);
    let iso = iso.to_str().unwrap();

    let describe = text(&run(&isoinfo, &["-d", "-i", iso]));
    assert!(describe.contains("Volume id: cidata\n"), "{describe}");
    assert!(
        describe.contains("Joliet with UCS level 3 found"),
        "{describe}"
    );
    assert!(
        describe.contains("Rock Ridge signatures version 1 found"),
        "{describe}"
    );

    for (mode, flag) in [("Joliet", "-J"), ("Rock Ridge", "-R")] {
        let listing = text(&run(&isoinfo, &[flag, "-l", "-i", iso]));
        for name in NAMES {
            assert!(
                listing
                    .lines()
                    .any(|line| line.trim_end().ends_with(&format!(" {name}"))),
                "{mode} listing lacks {name}:\n{listing}"
            );
        }
        for name in NAMES {
            let extracted = run(&isoinfo, &[flag, "-x", &format!("/{name}"), "-i", iso]).stdout;
            assert_eq!(
                extracted,
                seed_file(&seed, name).as_bytes(),
                "{mode}: /{name} differs"
            );
        }
    }
}

#[test]
fn xorriso_extracts_the_exact_files() {
    let Some(xorriso) = tool("xorriso") else {
        return;
    };
    let keys = HostKeys::generate("iso-test").unwrap();
    let seed = gpu_seed(&keys);
    let (dir, iso) = write_iso(&seed);
    let out = dir.path().join("extracted");
    let output = run(
        &xorriso,
        &[
            "-abort_on",
            "WARNING",
            "-indev",
            iso.to_str().unwrap(),
            "-osirrox",
            "on",
            "-extract",
            "/",
            out.to_str().unwrap(),
        ],
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("Volume id    : 'cidata'"), "{log}");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    for name in NAMES {
        assert_eq!(
            std::fs::read_to_string(out.join(name)).unwrap(),
            seed_file(&seed, name)
        );
    }
    // Without Rock Ridge, xorriso falls back to Joliet: same names.
    let listing = run(
        &xorriso,
        &[
            "-abort_on",
            "WARNING",
            "-rockridge",
            "off",
            "-indev",
            iso.to_str().unwrap(),
            "-ls",
            "/",
        ],
    );
    let listing = text(&listing);
    for name in NAMES {
        assert!(listing.contains(&format!("'{name}'")), "{listing}");
    }
}

#[test]
fn blkid_sees_an_iso9660_labelled_cidata() {
    // cloud-init's NoCloud datasource finds its seed by this label.
    let Some(blkid) = tool("blkid") else {
        return;
    };
    let keys = HostKeys::generate("iso-test").unwrap();
    let (_dir, iso) = write_iso(&gpu_seed(&keys));
    let output = run(&blkid, &["-p", "-o", "export", iso.to_str().unwrap()]);
    let exported = text(&output);
    assert!(exported.contains("TYPE=iso9660\n"), "{exported}");
    assert!(exported.contains("LABEL=cidata\n"), "{exported}");
}

#[test]
fn same_seed_gives_the_same_iso_bytes() {
    let keys = HostKeys::generate("iso-test").unwrap();
    let first = gpu_seed(&keys);
    let second = gpu_seed(&keys);
    assert_eq!(first, second);
    assert_eq!(build_nocloud_iso(&first), build_nocloud_iso(&second));
    assert_eq!(
        iso_file_name("a100-8x", "gpu-3", &first),
        iso_file_name("a100-8x", "gpu-3", &second)
    );
}

#[test]
fn host_keys_round_trip_through_the_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let workspace = tempfile::tempdir().unwrap();
    let dir = workspace.path().join(".provision/secrets/hostkeys");
    let first = HostKeys::load_or_generate(&dir, "a100-8x-gpu-3").unwrap();
    let second = HostKeys::load_or_generate(&dir, "a100-8x-gpu-3").unwrap();
    assert_eq!(first, second);
    let mode = std::fs::metadata(dir.join("a100-8x-gpu-3"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The user-data carries exactly that key.
    let (_, mut input) = profile_like_inputs(&first).remove(0);
    input.host_keys = &second;
    let seed = build_seed(&input).unwrap();
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&seed.user_data).unwrap();
    assert_eq!(
        document["ssh_keys"]["ed25519_private"].as_str(),
        Some(first.private_openssh.expose())
    );
    // And ssh-keygen agrees on the fingerprint, when available.
    if let Some(ssh_keygen) = tool("ssh-keygen") {
        let output = run(
            &ssh_keygen,
            &["-l", "-f", dir.join("a100-8x-gpu-3.pub").to_str().unwrap()],
        );
        let line = text(&output);
        assert!(
            line.contains(&first.fingerprint_sha256().unwrap()),
            "{line}"
        );
        // ssh-keygen derives the same public key from the stored private key.
        let derived = run(
            &ssh_keygen,
            &["-y", "-f", dir.join("a100-8x-gpu-3").to_str().unwrap()],
        );
        assert!(text(&derived).starts_with(&first.public_openssh[..80]));
    }
}

/// `../shared/pve-api/schema-9.1.json` beside the repository (CI layout), or one level further up
/// (a worktree checkout); `None` with a loud message when absent.
fn pve_schema() -> Option<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        root.join("../shared/pve-api/schema-9.1.json"),
        root.join("../../shared/pve-api/schema-9.1.json"),
    ];
    let Some(path) = candidates.iter().find(|path| path.is_file()) else {
        eprintln!("SKIPPED: ../shared/pve-api/schema-9.1.json not found beside the repository");
        return None;
    };
    Some(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap())
}

fn find_path<'a>(node: &'a serde_json::Value, wanted: &str) -> Option<&'a serde_json::Value> {
    if let Some(nodes) = node.as_array() {
        return nodes.iter().find_map(|child| find_path(child, wanted));
    }
    if node["path"].as_str() == Some(wanted) {
        return Some(node);
    }
    node["children"]
        .as_array()
        .and_then(|children| children.iter().find_map(|child| find_path(child, wanted)))
}

/// Every parameter provision sends for cloud-init exists in Proxmox's `POST …/config` schema, and
/// property-string values only use keys the schema defines.
#[test]
fn proxmox_parameters_exist_in_the_pve_schema() {
    use provision::cloudinit::{
        ProxmoxCloudInitInput, nocloud_cdrom_param, proxmox_cloudinit_params,
    };
    let Some(schema) = pve_schema() else {
        return;
    };
    let config = find_path(&schema, "/nodes/{node}/qemu/{vmid}/config").unwrap();
    let properties = &config["info"]["POST"]["parameters"]["properties"];
    let keys = HostKeys::generate("pve-test").unwrap();
    for (_, input) in profile_like_inputs(&keys) {
        let mut params =
            proxmox_cloudinit_params(&ProxmoxCloudInitInput::from_seed_input(&input, "local-lvm"));
        let (drive, cdrom) = nocloud_cdrom_param("local", "provision-x-y-01234567.iso");
        params.insert(format!("{drive}-iso"), cdrom);
        for (name, value) in &params {
            let schema_name = match name.as_str() {
                "ide2" | "ide2-iso" => "ide[n]",
                "ipconfig0" => "ipconfig[n]",
                other => other,
            };
            let property = &properties[schema_name];
            assert!(
                property.is_object(),
                "{name} is not a Proxmox config parameter"
            );
            if schema_name == "ipconfig[n]" {
                let typetext = property["typetext"].as_str().unwrap();
                for part in value.split(',') {
                    let key = part.split('=').next().unwrap();
                    assert!(
                        typetext.contains(&format!("{key}=")),
                        "{value}: {key} not in {typetext}"
                    );
                }
            }
            if schema_name == "ide[n]" {
                let format = &property["format"];
                for part in value.split(',').skip(1) {
                    let key = part.split('=').next().unwrap();
                    assert!(
                        format[key].is_object(),
                        "{value}: {key} is not an ide option"
                    );
                }
            }
            if property["format"].as_str() == Some("urlencoded") {
                assert!(
                    value
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"-%_.!~*'()".contains(&byte)),
                    "{name}={value} fails Proxmox's urlencoded check"
                );
            }
            if property["type"].as_str() == Some("boolean") {
                assert!(value == "0" || value == "1", "{name}={value}");
            }
        }
    }
}

/// Edge-sized files (empty, one block exactly, just over) survive the round trip through isoinfo.
#[test]
fn isoinfo_round_trips_edge_sized_files() {
    let Some(isoinfo) = tool("isoinfo") else {
        return;
    };
    for size in [0usize, 1, 2047, 2048, 2049, 10_000] {
        let seed = Seed {
            user_data: format!("#cloud-config\n{}", "#".repeat(size.saturating_sub(14)))
                .chars()
                .take(size)
                .collect(),
            meta_data: "instance-id: edge\n".to_owned(),
            network_config: "x".repeat(size),
        };
        let (_dir, iso) = write_iso(&seed);
        let iso = iso.to_str().unwrap();
        for flag in ["-J", "-R"] {
            for name in NAMES {
                let extracted = run(&isoinfo, &[flag, "-x", &format!("/{name}"), "-i", iso]).stdout;
                assert_eq!(
                    extracted,
                    seed_file(&seed, name).as_bytes(),
                    "size {size}, {flag} /{name}"
                );
            }
        }
    }
}

/// The ISO bytes of a fixed seed never change by accident: uploads are skipped when the name
/// (which hashes the seed) is already on the storage, so a layout change must bump
/// `FORMAT_VERSION` in `src/cloudinit/iso.rs` and update this digest.
#[test]
fn iso_layout_is_pinned() {
    use sha2::{Digest, Sha256};
    let seed = Seed {
        user_data: "#cloud-config\nhostname: pinned\n".to_owned(),
        meta_data: "instance-id: pinned-1\nlocal-hostname: pinned\n".to_owned(),
        network_config: "version: 2\n".to_owned(),
    };
    let digest = hex::encode(Sha256::digest(build_nocloud_iso(&seed)));
    assert_eq!(
        digest,
        "b45fef36faf231d5fbce8c9a5ce648d7508286f7a910d6d721137f77b0819923"
    );
    assert_eq!(
        iso_file_name("lab", "pinned", &seed),
        "provision-lab-pinned-1023023a.iso"
    );
}

/// cloud-init reads user-data with PyYAML (YAML 1.1): awkward `write_files` content (quotes,
/// YAML syntax, control characters, Unicode line separators, emoji) comes back byte-exact.
#[test]
fn pyyaml_reads_awkward_write_files_content_exactly() {
    let Some(cloud_init) = tool("cloud-init") else {
        return;
    };
    // cloud-init's own interpreter, which has PyYAML.
    let interpreter = std::fs::read_to_string(&cloud_init)
        .ok()
        .and_then(|script| {
            script
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("#!"))
                .map(|line| line.trim().to_owned())
        })
        .unwrap_or_else(|| "python3".to_owned());
    let keys = HostKeys::generate("yaml-test").unwrap();
    let (_, mut input) = profile_like_inputs(&keys).remove(0);
    let content = "key: \"value\" # not a comment\n- item\n\ttab\u{1}\u{7f}\u{85}next\u{2028}sep \u{1F600} ümlaut\\ end\n";
    input.write_files = vec![WriteFile {
        path: "/etc/awkward".to_owned(),
        content: content.to_owned(),
        permissions: "0600".to_owned(),
        owner: None,
    }];
    let seed = build_seed(&input).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data");
    std::fs::write(&path, &seed.user_data).unwrap();
    let output = run(
        Path::new(&interpreter),
        &[
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))['write_files'][-1]['content']))",
            path.to_str().unwrap(),
        ],
    );
    let parsed: String = serde_json::from_str(text(&output).trim()).unwrap();
    assert_eq!(parsed, content);
}
