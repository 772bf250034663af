//! Profiles: every built-in validates (JSON snapshot), every malformed fixture fails with a located error.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use provision::profile::{self, BUILTIN_PROFILES, ProfileError, Severity};

use crate::support::cli::Provision;

#[test]
fn every_builtin_profile_validates_and_its_json_is_stable() {
    let workspace = tempfile::tempdir().unwrap();
    for builtin in BUILTIN_PROFILES {
        let output = Provision::new(&["validate", "--profile", builtin.name, "--output", "json"])
            .workspace(workspace.path())
            .output();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {stdout}{}",
            builtin.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["valid"], true, "{}", builtin.name);
        assert_eq!(json["source"], format!("builtin:{}", builtin.name));
        insta::assert_snapshot!(format!("validate_json_{}", builtin.name), stdout);
    }
}

#[test]
fn builtin_profiles_carry_the_numbers_of_the_issue() {
    let a100 = profile::load("a100-8x", Path::new("/nonexistent"))
        .unwrap()
        .profile;
    assert_eq!(a100.server_count(), 3);
    assert_eq!(a100.vm_count(), 7);
    assert_eq!(a100.gpu_count(), 8);
    assert_eq!(a100.cluster.api_vip.unwrap().to_string(), "10.0.0.100");
    let workers = a100.group("gpu").unwrap();
    assert_eq!(
        (workers.cores, workers.memory_mib, workers.disks.os_gb),
        (16, 131_072, 500)
    );
    assert_eq!(workers.disks.scratch_gb, Some(1000));
    assert_eq!(workers.hugepages, Some(1024));
    assert!(workers.numa_pinning);
    let servers = a100.group("server").unwrap();
    assert_eq!(
        (servers.cores, servers.memory_mib, servers.disks.os_gb),
        (4, 16_384, 100)
    );
    let nfs = a100.storage.nfs.as_ref().unwrap();
    assert_eq!(
        (nfs.server.to_string(), nfs.path.as_str()),
        ("10.0.0.30".to_owned(), "/export/k3s")
    );

    let homelab = profile::load("homelab-ha", Path::new("/nonexistent"))
        .unwrap()
        .profile;
    assert_eq!((homelab.server_count(), homelab.vm_count()), (3, 5));
    let vllm = profile::load("vllm-timeslice", Path::new("/nonexistent"))
        .unwrap()
        .profile;
    assert_eq!(vllm.nvidia.time_slicing_replicas, Some(4));
    let ci = profile::load("ci-nested", Path::new("/nonexistent"))
        .unwrap()
        .profile;
    assert_eq!(ci.cluster.ttl.as_deref(), Some("4h"));
    assert_eq!(ci.gpu_count(), 0);
    // VMID ranges never overlap between built-in profiles.
    let mut ranges: Vec<(u32, u32)> = BUILTIN_PROFILES
        .iter()
        .map(|b| {
            let range = profile::load(b.name, Path::new("/nonexistent"))
                .unwrap()
                .profile
                .proxmox
                .vmid_range;
            (range.start, range.end)
        })
        .collect();
    ranges.sort_unstable();
    assert!(
        ranges.windows(2).all(|pair| pair[0].1 < pair[1].0),
        "{ranges:?}"
    );
}

fn bad_profiles() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("tests/fixtures/bad-profiles")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_bad_profile_fails_with_a_located_error_and_a_hint() {
    let paths = bad_profiles();
    assert!(paths.len() >= 30, "only {} bad profiles", paths.len());
    for path in paths {
        let spec = path.to_str().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{spec}: first line must be `# expect: <message part>`"));
        let error = match profile::load(spec, Path::new(".")) {
            Ok(_) => panic!("{spec} validated but must not"),
            Err(error) => error,
        };
        assert!(
            matches!(error, ProfileError::Invalid { .. }),
            "{spec}: {error}"
        );
        let diagnostics = error.diagnostics();
        let errors: Vec<_> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert!(
            errors.iter().any(|d| d.message.contains(expect)),
            "{spec}: no error mentions `{expect}`: {errors:#?}"
        );
        for diagnostic in &errors {
            assert!(
                diagnostic.line.is_some() && diagnostic.column.is_some(),
                "{spec}: unlocated {diagnostic:?}"
            );
            assert!(
                diagnostic.hint.is_some(),
                "{spec}: no hint in {diagnostic:?}"
            );
        }
        let mut rendered = String::new();
        for diagnostic in &diagnostics {
            rendered += &profile::diagnostic::render(diagnostic, error.text(), false);
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        insta::assert_snapshot!(format!("bad_{name}"), rendered);
    }
}

#[test]
fn workspace_profiles_win_over_builtins_only_in_a_workspace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    let text = BUILTIN_PROFILES[0]
        .text
        .replace("name = \"a100\"", "name = \"mine\"");
    std::fs::write(dir.path().join("profiles/a100-8x.toml"), text).unwrap();
    let builtin = profile::load("a100-8x", dir.path()).unwrap();
    assert_eq!(builtin.source_name, "builtin:a100-8x");
    std::fs::write(dir.path().join("provision.toml"), "").unwrap();
    let local = profile::load("a100-8x", dir.path()).unwrap();
    assert_eq!(local.profile.cluster.name, "mine");
    assert!(local.source_name.ends_with("profiles/a100-8x.toml"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any edit of a real profile either loads or yields located diagnostics; nothing panics.
    #[test]
    fn edited_profiles_never_panic_and_stay_located(
        which in 0..BUILTIN_PROFILES.len(),
        position in 0usize..10_000,
        cut in 0usize..12,
        insert in "[ -~\n]{0,10}",
    ) {
        let original = BUILTIN_PROFILES[which].text;
        let mut start = position % original.len();
        while !original.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(original.len());
        while !original.is_char_boundary(end) {
            end += 1;
        }
        let text = format!("{}{}{}", &original[..start], insert, &original[end..]);
        let lines = text.lines().count().max(1) + 1;
        if let Err(error) = profile::parse("edited.toml", text) {
            for diagnostic in error.diagnostics() {
                let line = diagnostic.line.unwrap_or(1);
                proptest::prop_assert!(line <= lines, "{diagnostic:?}");
                proptest::prop_assert!(!diagnostic.message.is_empty());
            }
        }
    }
}

/// The built-in GPU profiles boot a guest OS the NVIDIA stack supports, and a100-8x describes the
/// host `--simulate` gives it: its filter matches exactly the fixture's 8 GPUs (PCIe A100s, not
/// the SXM4 modules of `pve-a100`), and its topology puts each GPU on the fixture's NUMA node.
#[test]
fn gpu_builtin_profiles_match_their_guest_os_and_simulated_host() {
    use provision::exec::simulate::inventory_for;
    use provision::profile::model::{GuestOs, NvidiaMode};
    for name in ["a100-8x", "sentinel", "vllm-timeslice"] {
        let profile = profile::load(name, Path::new("/nonexistent"))
            .unwrap()
            .profile;
        assert!(profile.gpu_count() > 0, "{name}");
        assert_eq!(profile.nvidia.mode, NvidiaMode::Operator, "{name}");
        assert_eq!(
            profile.image.guest_os(),
            Some(GuestOs::Ubuntu2404),
            "{name}"
        );
        assert_eq!(
            profile.image.inferred_os(),
            Some(GuestOs::Ubuntu2404),
            "{name}"
        );
    }
    let a100 = profile::load("a100-8x", Path::new("/nonexistent"))
        .unwrap()
        .profile;
    let fixture = inventory_for(&a100.proxmox.nodes, &a100.cluster.name);
    assert_eq!(fixture, "pve-a100-pcie");
    let inventory = pve_sim::Inventory::builtin(fixture).unwrap();
    let filter = a100
        .group("gpu")
        .unwrap()
        .gpus
        .as_ref()
        .unwrap()
        .filter
        .clone()
        .unwrap();
    let host = &inventory.nodes[0];
    let matching: Vec<_> = host
        .pci_devices
        .iter()
        .filter(|pci| {
            let id = format!(
                "{}:{}",
                pci.vendor.trim_start_matches("0x"),
                pci.device.trim_start_matches("0x")
            );
            filter.ids().contains(&id)
        })
        .collect();
    assert_eq!(matching.len(), 8, "{filter}");
    let topology = &a100.proxmox.topology[0];
    assert_eq!(topology.node, host.name);
    for gpu in &matching {
        let numa = topology
            .numa_nodes
            .iter()
            .find(|numa| {
                numa.pci_devices
                    .iter()
                    .any(|prefix| gpu.id.starts_with(prefix.as_str()))
            })
            .unwrap_or_else(|| panic!("{} is in no NUMA node's pci_devices", gpu.id));
        assert_eq!(Some(numa.id), gpu.numa_node, "{}", gpu.id);
        let host_numa = host.numa_nodes.iter().find(|n| n.id == numa.id).unwrap();
        assert_eq!(numa.cpus, host_numa.cpus);
        assert_eq!(numa.hugepages_1g, Some(host_numa.hugepages_1g));
    }
    // The SXM4 fixture has no device the filter accepts.
    let sxm = pve_sim::Inventory::builtin("pve-a100").unwrap();
    assert!(
        sxm.nodes[0]
            .pci_devices
            .iter()
            .all(|pci| pci.device != "0x20f1" && pci.device != "0x20b5")
    );
}

#[test]
fn profiles_show_prints_every_builtin_exactly_as_shipped() {
    let workspace = tempfile::tempdir().unwrap();
    for builtin in BUILTIN_PROFILES {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("profiles")
                .join(format!("{}.toml", builtin.name)),
        )
        .unwrap();
        let output = Provision::new(&["profiles", "show", builtin.name])
            .workspace(workspace.path())
            .output();
        assert_eq!(output.status.code(), Some(0), "{}", builtin.name);
        assert_eq!(String::from_utf8(output.stdout).unwrap(), shipped);
        assert!(output.stderr.is_empty(), "{}", builtin.name);
    }
    let output = Provision::new(&["profiles", "show", "homelab-ha", "--output", "json"])
        .workspace(workspace.path())
        .output();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["name"], "homelab-ha");
    assert_eq!(
        json["text"],
        profile::builtin::builtin("homelab-ha").unwrap().text
    );
}

#[test]
fn profiles_show_of_an_unknown_name_lists_the_builtin_names() {
    let output = Provision::new(&["profiles", "show", "a100"]).output();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("no built-in profile named `a100`"),
        "{stderr}"
    );
    for builtin in BUILTIN_PROFILES {
        assert!(stderr.contains(builtin.name), "{stderr}");
    }
}

#[test]
fn profiles_list_is_the_listing_of_profiles() {
    let workspace = tempfile::tempdir().unwrap();
    let listing = |args: &[&str]| Provision::new(args).workspace(workspace.path()).output();
    let bare = listing(&["profiles"]);
    let list = listing(&["profiles", "list"]);
    assert_eq!(bare.status.code(), Some(0));
    assert_eq!(bare.stdout, list.stdout);
}

#[test]
fn init_with_a_profile_writes_the_builtin_that_validate_then_reads() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ws");
    let output = Provision::new(&["init", dir.to_str().unwrap(), "--profile", "homelab-ha"])
        .cwd(root.path())
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("created profiles/homelab-ha.toml"),
        "{stderr}"
    );
    let written = std::fs::read(dir.join("profiles/homelab-ha.toml")).unwrap();
    let builtin = profile::builtin::builtin("homelab-ha").unwrap();
    assert_eq!(written, builtin.text.as_bytes());

    let output = Provision::new(&["validate", "--profile", "homelab-ha", "--output", "json"])
        .cwd(&dir)
        .output();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["source"], "profiles/homelab-ha.toml");

    // A second init keeps the (edited) file, as init keeps every file; JSON names the profile.
    std::fs::write(dir.join("profiles/homelab-ha.toml"), "# mine\n").unwrap();
    let output = Provision::new(&["init", "--profile", "homelab-ha", "--output", "json"])
        .cwd(&dir)
        .output();
    assert_eq!(output.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["profile"], "homelab-ha");
    let files = json["files"].as_array().unwrap();
    assert!(files.contains(&serde_json::json!({
        "path": "profiles/homelab-ha.toml",
        "action": "kept",
    })));
    assert_eq!(
        std::fs::read_to_string(dir.join("profiles/homelab-ha.toml")).unwrap(),
        "# mine\n"
    );

    // An unknown name is refused before anything is written.
    let fresh = root.path().join("fresh");
    let output = Provision::new(&["init", fresh.to_str().unwrap(), "--profile", "nope"]).output();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("homelab-ha"));
    assert!(!fresh.exists());
}

/// For a user with only the binary: `profiles show NAME` saved to a file and `init --profile
/// NAME` both give the built-in text byte for byte, the file validates as the built-in does,
/// and the comments point at documentation the binary prints, not at source paths.
#[test]
fn every_builtin_round_trips_through_show_and_init_and_validates() {
    let root = tempfile::tempdir().unwrap();
    for builtin in BUILTIN_PROFILES {
        let shown = Provision::new(&["profiles", "show", builtin.name])
            .cwd(root.path())
            .output();
        assert_eq!(shown.status.code(), Some(0), "{}", builtin.name);
        let file = root.path().join(format!("{}-shown.toml", builtin.name));
        std::fs::write(&file, &shown.stdout).unwrap();
        let validated = Provision::new(&["validate", "--profile", file.to_str().unwrap()])
            .cwd(root.path())
            .output();
        assert_eq!(
            validated.status.code(),
            Some(0),
            "{}: {}",
            builtin.name,
            String::from_utf8_lossy(&validated.stderr)
        );
        let dir = root.path().join(builtin.name);
        let init = Provision::new(&["init", dir.to_str().unwrap(), "--profile", builtin.name])
            .cwd(root.path())
            .output();
        assert_eq!(init.status.code(), Some(0), "{}", builtin.name);
        let written =
            std::fs::read(dir.join("profiles").join(format!("{}.toml", builtin.name))).unwrap();
        assert_eq!(written, shown.stdout, "{}", builtin.name);
        assert_eq!(written, builtin.text.as_bytes(), "{}", builtin.name);
        assert!(
            builtin.text.contains("`provision profiles docs`"),
            "{}: no pointer to the field reference",
            builtin.name
        );
        assert!(
            !builtin.text.contains("README.md") && !builtin.text.contains("src/"),
            "{}: points at a source path",
            builtin.name
        );
    }
    let docs = Provision::new(&["profiles", "docs"])
        .cwd(root.path())
        .output();
    assert_eq!(docs.status.code(), Some(0));
    assert_eq!(docs.stdout, profile::builtin::PROFILE_REFERENCE.as_bytes());
}

/// `image.strategy`: `import` by default, the clone strategies by name; an unknown value and a
/// clone strategy with `template_vmid` are each one located error with a hint.
#[test]
fn image_strategy_is_validated_where_it_is_written() {
    use provision::profile::model::ImageStrategy;
    let ci = BUILTIN_PROFILES
        .iter()
        .find(|builtin| builtin.name == "ci-nested")
        .unwrap()
        .text;
    let loaded = profile::parse("ci.toml", ci.to_owned()).unwrap();
    assert_eq!(loaded.profile.image.strategy, ImageStrategy::LinkedClone);
    let import = ci.replace("strategy = \"linked-clone\"\n", "");
    let loaded = profile::parse("ci.toml", import).unwrap();
    assert_eq!(loaded.profile.image.strategy, ImageStrategy::Import);

    let unknown = ci.replace("\"linked-clone\"", "\"linked\"");
    let line = unknown
        .lines()
        .position(|l| l.starts_with("strategy = "))
        .unwrap()
        + 1;
    let error = profile::parse("ci.toml", unknown).unwrap_err();
    let diagnostics = error.diagnostics();
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, Some(line), "{diagnostics:?}");
    assert!(
        diagnostics[0].message.contains("linked-clone"),
        "{diagnostics:?}"
    );

    let with_template = ci.replace(
        "strategy = \"linked-clone\"\n",
        "strategy = \"linked-clone\"\ntemplate_vmid = 9000\n",
    );
    let error = profile::parse("ci.toml", with_template).unwrap_err();
    let strategy = error
        .diagnostics()
        .iter()
        .find(|d| d.path == "image.strategy")
        .cloned()
        .unwrap_or_else(|| panic!("{:?}", error.diagnostics()));
    assert_eq!(strategy.line, Some(line));
    assert!(strategy.hint.is_some());
}
