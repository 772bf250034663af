//! CI's cluster lifecycle: per-run overrides (`--set`, `--name`, `PROVISION_SET_*`), several
//! clusters in one workspace, clusters side by side on one Proxmox (disjoint VMIDs and
//! addresses, also when created concurrently), and `list`, `gc` and a stateless `down` that
//! find clusters by their VMs' tags alone.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::support::cli::{BinaryWorkspace, provision_snapshot};
use crate::support::sim_serve::SimServer;

const SIM: [&str; 3] = ["--simulate", "--sim-time-scale", "0.005"];

fn with_sim<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &SIM[..]].concat()
}

fn up(binary: &BinaryWorkspace, name: &str) {
    let (code, _, stderr) =
        binary.run(&with_sim(&["up", "--profile", "ci-nested", "--name", name]));
    assert_eq!(code, 0, "up --name {name}: {stderr}");
}

fn json(binary: &BinaryWorkspace, args: &[&str]) -> Value {
    let (code, stdout, stderr) = binary.run(&[args, &["--output", "json"][..]].concat());
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

/// `provision list` as (cluster, VMIDs).
fn listed(binary: &BinaryWorkspace) -> Vec<(String, Vec<u64>)> {
    let list = json(binary, &with_sim(&["list"]));
    list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cluster| {
            let vmids = cluster["vms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|vm| vm["vmid"].as_u64().unwrap())
                .collect();
            (cluster["name"].as_str().unwrap().to_owned(), vmids)
        })
        .collect()
}

/// The state file of cluster `name` (the workspace's first cluster keeps `.provision/`).
fn state(workspace: &Path, name: &str) -> Value {
    let own = workspace
        .join(".provision/clusters")
        .join(name)
        .join("state.json");
    let path = if own.exists() {
        own
    } else {
        workspace.join(".provision/state.json")
    };
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(state["cluster"], name, "{}", path.display());
    state
}

/// (VMID, address) of every VM a state records.
fn recorded(state: &Value) -> BTreeSet<(u64, String)> {
    state["vms"]
        .as_object()
        .unwrap()
        .values()
        .map(|vm| {
            (
                vm["vmid"].as_u64().unwrap(),
                vm["address"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Edits the workspace simulator's saved state (between runs, as a fixture).
fn edit_sim(workspace: &Path, change: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = workspace.join(".provision/sim/state.json");
    let mut sim: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(sim["vms"].as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string(&sim).unwrap()).unwrap();
}

/// Edits the volumes of the workspace simulator's saved state.
fn edit_sim_volumes(workspace: &Path, change: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = workspace.join(".provision/sim/state.json");
    let mut sim: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(sim["volumes"].as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string(&sim).unwrap()).unwrap();
}

/// A copy of VM `from` as VMID `vmid` named `name` with `tags` (another tool's VM).
fn add_vm(vms: &mut serde_json::Map<String, Value>, from: u64, vmid: u64, name: &str, tags: &str) {
    let mut vm = vms[&from.to_string()].clone();
    vm["vmid"] = vmid.into();
    vm["config"]["name"] = name.into();
    vm["config"]["tags"] = tags.into();
    vms.insert(vmid.to_string(), vm);
}

/// Rewrites a tag of every VM of `cluster` (`provision-exp-…` → `provision-exp-1000`).
fn retag(vms: &mut serde_json::Map<String, Value>, cluster: &str, prefix: &str, value: u64) {
    for vm in vms.values_mut() {
        let tags = vm["config"]["tags"].as_str().unwrap_or_default().to_owned();
        if !tags
            .split(';')
            .any(|tag| tag == format!("cluster-{cluster}"))
        {
            continue;
        }
        let tags: Vec<String> = tags
            .split(';')
            .map(|tag| {
                if tag.starts_with(prefix) {
                    format!("{prefix}{value}")
                } else {
                    tag.to_owned()
                }
            })
            .collect();
        vm["config"]["tags"] = tags.join(";").into();
    }
}

/// VMIDs the simulator was asked to DELETE, from a `--sim-request-log` file.
fn deleted_vmids(log: &Path) -> BTreeSet<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|request| request["method"] == "DELETE")
        .filter_map(|request| {
            let path = request["path"].as_str()?.to_owned();
            let (_, vmid) = path.rsplit_once("/qemu/")?;
            vmid.parse().ok()
        })
        .collect()
}

#[test]
fn an_override_with_a_bad_value_is_reported_at_the_override() {
    let binary = BinaryWorkspace::new();
    let run = binary
        .provision(&[
            "validate",
            "--profile",
            "ci-nested",
            "--set",
            "cluster.ttl=4x",
        ])
        .run();
    provision_snapshot!(run, &[]);
    let run = binary
        .provision(&["validate", "--profile", "ci-nested"])
        .env("PROVISION_SET_CLUSTER__TTL", "4x")
        .run();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--> PROVISION_SET_CLUSTER__TTL=4x (cluster.ttl)"),
        "{}",
        run.stderr
    );
    let (code, _, stderr) = binary.run(&["validate", "--profile", "ci-nested", "--set", "ttl"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
}

#[test]
fn an_override_plans_exactly_like_the_edited_file() {
    let binary = BinaryWorkspace::new();
    let normalise = |plan: Value| {
        let text = plan.to_string();
        let text = regex_lite(&text, "provision-created-", "[created]");
        let text = regex_lite(&text, "provision-exp-", "[expires]");
        regex_iso(&text)
    };
    let by_override = json(
        &binary,
        &with_sim(&[
            "plan",
            "--profile",
            "ci-nested",
            "--set",
            "cluster.ttl=2h",
            "--set",
            "node_groups[1].cores=4",
            "--name",
            "ci-7",
        ]),
    );
    let edited = std::fs::read_to_string("profiles/ci-nested.toml")
        .unwrap()
        .replace("name = \"ci\"", "name = \"ci-7\"")
        .replace("ttl = \"4h\"", "ttl = \"2h\"")
        .replacen(
            "cores = 2\nmemory_mib = 4096\naddress_range = \"10.99.0.21",
            "cores = 4\nmemory_mib = 4096\naddress_range = \"10.99.0.21",
            1,
        );
    assert!(edited.contains("cores = 4"));
    let file = binary.file("edited.toml", &edited);
    let by_file = json(&binary, &with_sim(&["plan", "--profile", &file]));
    assert_eq!(normalise(by_override.clone()), normalise(by_file));
    assert!(by_override.to_string().contains("ci-7-agent-1"));
    // The environment's form says the same.
    let run = binary
        .provision(&with_sim(&[
            "plan",
            "--profile",
            "ci-nested",
            "--output",
            "json",
        ]))
        .env("PROVISION_NAME", "ci-7")
        .env("PROVISION_SET_CLUSTER__TTL", "2h")
        .env("PROVISION_SET_NODE_GROUPS__1__CORES", "4")
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        normalise(serde_json::from_str(&run.stdout).unwrap()),
        normalise(by_override)
    );
}

/// `text` with the digits after each `prefix` replaced by `placeholder`.
fn regex_lite(text: &str, prefix: &str, placeholder: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        out.push_str(placeholder);
        rest = rest[at + prefix.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Seed ISO names hash the seed, whose host keys `plan` previews at random: `-[seed].iso`.
fn regex_iso(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(".iso") {
        let head = &rest[..at];
        match head.rsplit_once('-') {
            Some((before, hash))
                if hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                out.push_str(before);
                out.push_str("-[seed].iso");
            }
            _ => {
                out.push_str(head);
                out.push_str(".iso");
            }
        }
        rest = &rest[at + 4..];
    }
    out.push_str(rest);
    out
}

#[test]
fn two_clusters_share_a_workspace_and_down_of_one_leaves_the_other() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    up(&binary, "a");
    up(&binary, "b");
    let (a, b) = (state(&workspace, "a"), state(&workspace, "b"));
    // The first cluster keeps the single-cluster layout; the second has its own directory.
    assert!(workspace.join(".provision/state.json").is_file());
    assert!(workspace.join(".provision/clusters/b/state.json").is_file());
    assert!(
        workspace
            .join(".provision/secrets/host-keys/a-server-1")
            .is_file()
    );
    assert!(
        workspace
            .join(".provision/clusters/b/secrets/host-keys/b-server-1")
            .is_file()
    );
    let (a_vms, b_vms) = (recorded(&a), recorded(&b));
    let vmids =
        |vms: &BTreeSet<(u64, String)>| vms.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>();
    let addresses = |vms: &BTreeSet<(u64, String)>| {
        vms.iter()
            .map(|(_, ip)| ip.clone())
            .collect::<BTreeSet<_>>()
    };
    assert!(
        vmids(&a_vms).is_disjoint(&vmids(&b_vms)),
        "{a_vms:?} {b_vms:?}"
    );
    assert!(
        addresses(&a_vms).is_disjoint(&addresses(&b_vms)),
        "{a_vms:?} {b_vms:?}"
    );
    assert_eq!(
        listed(&binary)
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );

    let (code, _, stderr) = binary.run(&with_sim(&[
        "down",
        "--profile",
        "ci-nested",
        "--name",
        "a",
        "--yes",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        listed(&binary),
        vec![("b".to_owned(), vmids(&b_vms).into_iter().collect())]
    );
    assert_eq!(
        recorded(&state(&workspace, "b")),
        b_vms,
        "b's state is untouched"
    );
    // Each cluster has its own kubeconfig (none yet: the simulated VMs have no guests).
    let (code, _, stderr) = binary.run(&["kubeconfig", "--name", "b"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(".provision/clusters/b/kubeconfig does not exist"),
        "{stderr}"
    );
    // b converged: a second `up` changes nothing.
    let (code, _, stderr) = binary.run(&with_sim(&["up", "--profile", "ci-nested", "--name", "b"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already matches the profile"), "{stderr}");
}

#[test]
fn down_without_state_finds_the_cluster_by_tag_and_never_touches_other_vms() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    up(&binary, "a");
    up(&binary, "b");
    let a_vmids: BTreeSet<u64> = recorded(&state(&workspace, "a"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let first = *a_vmids.iter().next().unwrap();
    let templates = state(&workspace, "a")["templates"].clone();
    let templates = templates.as_object().unwrap();
    assert_eq!(templates.len(), 1, "{templates:?}");
    let template_vmid = templates.values().next().unwrap()["vmid"].as_u64().unwrap();
    let seed = "local:iso/provision-a-a-server-1-0123abcd.iso";
    edit_sim(&workspace, |vms| {
        add_vm(vms, first, 9000, "someone-elses", "ci;team-x");
        // The cluster's tag without provision's: not provably ours.
        add_vm(vms, first, 9001, "b-server-9", "cluster-b");
        // A VM that never got ready still mounts its seed (it holds the VM's host keys).
        vms[&first.to_string()]["config"]["ide2"] = format!("{seed},media=cdrom").into();
    });
    edit_sim_volumes(&workspace, |volumes| {
        volumes.insert(
            format!("pve1/{seed}"),
            serde_json::json!({"volid": seed, "node": "pve1", "content": "iso", "format": "iso",
                "size": 1024, "vmid": null, "ctime": 1_767_225_600, "data": null}),
        );
    });
    // The CI runner lost a's state.
    std::fs::remove_file(workspace.join(".provision/state.json")).unwrap();
    std::fs::remove_file(workspace.join(".provision/state.json.bak")).unwrap();
    let log = binary.dir().join("down-a.jsonl");
    let (code, stdout, stderr) = binary.run(&with_sim(&[
        "down",
        "--profile",
        "ci-nested",
        "--name",
        "a",
        "--yes",
        "--sim-request-log",
        log.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "no state for cluster a: found 2 of its VMs and its template on Proxmox by their tags"
        ),
        "{stderr}"
    );
    assert!(stdout.contains("destroyed 2 VMs"), "{stdout}");
    // ci-nested clones its VMs from a template (image.strategy): it goes too, after them.
    let mut expected = a_vmids.clone();
    expected.insert(template_vmid);
    assert_eq!(deleted_vmids(&log), expected);
    let requests = std::fs::read_to_string(&log).unwrap();
    assert!(
        requests.contains("provision-a-a-server-1-0123abcd.iso") && requests.contains("DELETE"),
        "the seed ISO goes with its VM"
    );
    let sim: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join(".provision/sim/state.json")).unwrap(),
    )
    .unwrap();
    assert!(
        sim["volumes"].get(format!("pve1/{seed}")).is_none(),
        "the seed ISO is gone"
    );

    // b's tag finds a VM without provision's tag: refused, nothing destroyed.
    std::fs::remove_dir_all(workspace.join(".provision/clusters/b")).unwrap();
    let log = binary.dir().join("down-b.jsonl");
    let (code, _, stderr) = binary.run(&with_sim(&[
        "down",
        "--profile",
        "ci-nested",
        "--name",
        "b",
        "--yes",
        "--sim-request-log",
        log.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("b-server-9 (VMID 9001"), "{stderr}");
    assert!(stderr.contains("nothing was destroyed"), "{stderr}");
    assert!(deleted_vmids(&log).is_empty());
    let sim: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join(".provision/sim/state.json")).unwrap(),
    )
    .unwrap();
    for vmid in ["9000", "9001"] {
        assert!(sim["vms"].get(vmid).is_some(), "VM {vmid} was touched");
    }
}

#[test]
fn gc_destroys_what_its_dry_run_lists_and_only_provision_clusters() {
    let binary = BinaryWorkspace::new();
    let workspace = binary.workspace();
    for name in ["old", "expired", "fresh"] {
        up(&binary, name);
    }
    let first = recorded(&state(&workspace, "old"))
        .into_iter()
        .next()
        .unwrap()
        .0;
    edit_sim(&workspace, |vms| {
        retag(vms, "expired", "provision-exp-", 1000);
        retag(vms, "old", "provision-created-", 1000);
        // Expired-looking tags without provision's: never touched.
        add_vm(
            vms,
            first,
            9000,
            "lookalike",
            "cluster-lookalike;provision-exp-1000",
        );
        add_vm(vms, first, 9001, "plain", "");
    });
    let listing = json(&binary, &with_sim(&["list"]));
    let expired: Vec<&Value> = listing["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|cluster| cluster["expired"] == true)
        .collect();
    assert_eq!(expired.len(), 1, "{listing}");
    assert_eq!(expired[0]["name"], "expired");

    let dry = json(&binary, &with_sim(&["gc", "--expired", "--dry-run"]));
    let names = |output: &Value| -> Vec<String> {
        output["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cluster| cluster["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&dry), vec!["expired"]);
    let dry = json(
        &binary,
        &with_sim(&["gc", "--expired", "--older-than", "2d", "--dry-run"]),
    );
    assert_eq!(names(&dry), vec!["expired", "old"]);
    assert_eq!(dry["mutating_calls"], 0);
    let would_go: BTreeSet<u64> = dry["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|cluster| cluster["vms"].as_array().unwrap().clone())
        .map(|vm| vm["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(would_go.len(), 4);

    let log = binary.dir().join("gc.jsonl");
    let done = json(
        &binary,
        &with_sim(&[
            "gc",
            "--expired",
            "--older-than",
            "2d",
            "--sim-request-log",
            log.to_str().unwrap(),
        ]),
    );
    assert_eq!(names(&done), vec!["expired", "old"]);
    assert_eq!(
        deleted_vmids(&log),
        would_go,
        "the dry run listed exactly what went"
    );
    // Stopped before purged.
    let requests = std::fs::read_to_string(&log).unwrap();
    let first_stop = requests.find("/status/stop").unwrap();
    let first_delete = requests.find(r#""method":"DELETE""#).unwrap();
    assert!(first_stop < first_delete);
    assert_eq!(
        listed(&binary)
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        vec!["fresh"]
    );
    let sim: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace.join(".provision/sim/state.json")).unwrap(),
    )
    .unwrap();
    for vmid in ["9000", "9001"] {
        assert!(sim["vms"].get(vmid).is_some(), "VM {vmid} was touched");
    }
}

#[test]
fn list_and_gc_json_shapes() {
    let binary = BinaryWorkspace::new();
    up(&binary, "shape");
    edit_sim(&binary.workspace(), |vms| {
        retag(vms, "shape", "provision-created-", 1_767_225_600);
        retag(vms, "shape", "provision-exp-", 1_767_240_000);
    });
    let mut list = json(&binary, &with_sim(&["list"]));
    list["now"] = "[now]".into();
    insta::assert_json_snapshot!("list_json", list);
    let mut gc = json(&binary, &with_sim(&["gc", "--expired", "--dry-run"]));
    gc["now"] = "[now]".into();
    insta::assert_json_snapshot!("gc_dry_run_json", gc);
    let (code, stdout, stderr) = binary.run(&with_sim(&["gc", "--expired", "--dry-run"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "would destroy cluster shape (expired): shape-server-1 (7600), shape-agent-1 (7601)\n"
    );
}

#[test]
fn concurrent_ups_against_one_simulator_converge_apart() {
    // The same profile: both plan the same VMIDs and addresses.
    concurrent_ups(&[]);
}

#[test]
fn concurrent_ups_with_disjoint_vmid_ranges_still_get_disjoint_addresses() {
    // VMIDs never collide here, so only the address check after the create keeps them apart.
    concurrent_ups(&["--set", "proxmox.vmid_range={ start = 7650, end = 7699 }"]);
}

/// `up --name x` and `up --name y [y_options]` of ci-nested at the same time against one
/// `sim serve`, from one workspace: both converge with disjoint VMIDs and addresses.
fn concurrent_ups(y_options: &'static [&'static str]) {
    let binary = BinaryWorkspace::new();
    let server = SimServer::start_with("127.0.0.1:0", "pve-ci", &["--time-scale", "0.01"]);
    let token = server.token("provision@pve!ci").to_owned();
    let fingerprint = server.fingerprint.clone();
    let (first, second) = std::thread::scope(|scope| {
        let run = |name: &'static str, options: &'static [&'static str]| {
            let (binary, server, token, fingerprint) = (&binary, &server, &token, &fingerprint);
            scope.spawn(move || {
                let args = [
                    &["up", "--profile", "ci-nested", "--name", name, "--vms-only"][..],
                    options,
                ]
                .concat();
                server.provision(binary, token, fingerprint, &args)
            })
        };
        let (x, y) = (run("x", &[]), run("y", y_options));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(first.0, 0, "x: {}", first.2);
    assert_eq!(second.0, 0, "y: {}", second.2);
    let workspace = binary.workspace();
    let (x, y) = (
        recorded(&state(&workspace, "x")),
        recorded(&state(&workspace, "y")),
    );
    assert_eq!((x.len(), y.len()), (2, 2));
    let vmids =
        |vms: &BTreeSet<(u64, String)>| vms.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>();
    let addresses = |vms: &BTreeSet<(u64, String)>| {
        vms.iter()
            .map(|(_, ip)| ip.clone())
            .collect::<BTreeSet<_>>()
    };
    assert!(vmids(&x).is_disjoint(&vmids(&y)), "{x:?} {y:?}");
    assert!(addresses(&x).is_disjoint(&addresses(&y)), "{x:?} {y:?}");
    // Both converged: Proxmox shows exactly the recorded VMs, each cluster's with its tags.
    let (code, stdout, stderr) =
        server.provision(&binary, &token, &fingerprint, &["list", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let shown: Vec<(String, BTreeSet<u64>)> = list["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cluster| {
            (
                cluster["name"].as_str().unwrap().to_owned(),
                cluster["vms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|vm| vm["vmid"].as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![("x".to_owned(), vmids(&x)), ("y".to_owned(), vmids(&y))]
    );
    server.stop();
}

#[test]
fn doctor_says_whether_a_nested_proxmox_passes_virtualisation_through() {
    let binary = BinaryWorkspace::new();
    let fixture = std::fs::read_to_string("crates/pve-sim/fixtures/pve-ci.toml").unwrap();
    let nested = fixture.replacen(
        "memory_gib = 64\n",
        "memory_gib = 64\ncpu_flags = [\"hypervisor\"]\n",
        1,
    );
    assert_ne!(nested, fixture);
    let on = binary.file("nested-on.toml", &nested);
    let (code, stdout, stderr) = binary.doctor("ci-nested", &on);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("a nested Proxmox (runs in a VM) with nested virtualisation on"),
        "{stdout}"
    );
    let off = binary.file(
        "nested-off.toml",
        &nested.replacen(
            "cpu_flags = [\"hypervisor\"]\n",
            "cpu_flags = [\"hypervisor\"]\nhvm = false\n",
            1,
        ),
    );
    // A fresh workspace: the simulator keeps the first fixture in the workspace's state.
    let (code, stdout, stderr) = BinaryWorkspace::new().doctor("ci-nested", &off);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("whose outer host does not pass virtualisation through"),
        "{stdout}"
    );
}

#[test]
fn the_readme_ci_example_runs_as_written() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let (_, after) = readme
        .split_once("Locally, against the simulator:\n\n```sh\n")
        .unwrap();
    let (block, _) = after.split_once("```").unwrap();
    let binary = BinaryWorkspace::new();
    let mut ran = 0;
    for line in block.lines() {
        let args: Vec<&str> = line
            .strip_prefix("provision ")
            .unwrap()
            .split(' ')
            .collect();
        let (code, stdout, stderr) = binary.run(&args);
        assert_eq!(code, 0, "{line}: {stdout}{stderr}");
        ran += 1;
        if args[0] == "list" {
            assert!(
                stdout.contains("ci-1 ") && stdout.contains("ci-2 "),
                "{stdout}"
            );
        }
        if args[0] == "gc" {
            assert_eq!(stdout, "no cluster to collect\nkept: ci-2\n");
        }
    }
    assert_eq!(ran, 6);
}

#[test]
fn gc_tries_every_cluster_and_fails_naming_those_left() {
    let binary = BinaryWorkspace::new();
    up(&binary, "one");
    up(&binary, "two");
    edit_sim(&binary.workspace(), |vms| {
        retag(vms, "one", "provision-exp-", 1000);
        retag(vms, "two", "provision-exp-", 1000);
    });
    // Every stop task fails: neither cluster can be destroyed.
    let (code, stdout, stderr) = binary.run(&with_sim(&[
        "gc",
        "--expired",
        "--sim-task-fail-rate",
        "1",
        "--output",
        "json",
    ]));
    assert_eq!(code, 2, "{stdout}{stderr}");
    let output: Value = serde_json::from_str(&stdout).unwrap();
    let failed: Vec<&str> = output["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| failure["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["one", "two"], "{output}");
    assert_eq!(listed(&binary).len(), 2, "both are still there");
}
