//! k3s config and manifests for every built-in profile (and the fixtures): config keys ⊂ flags.json,
//! manifests parse with apiVersion/kind/metadata.name; the release checksum parser on a recorded file.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize as _;

use provision::k3s::config::{JoinMode, NodeSettings, render_config, render_unit};
use provision::k3s::manifests::render_manifests;
use provision::k3s::release::{checksum_for, parse_checksums};
use provision::k3s::templates::Templates;
use provision::k3s::token::K3sToken;
use provision::profile::Profile;
use provision::profile::credentials::GitCredentials;
use provision::profile::model::{GitOpsEngine, NvidiaDriver, NvidiaMode, Role};
use provision::secret::Secret;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the clone (CI); also one level further up for nested worktrees.
fn shared_dir() -> Option<PathBuf> {
    [root().join("../shared"), root().join("../../shared")]
        .into_iter()
        .find(|p| p.join("k3s/flags.json").is_file())
}

/// Built-in profiles (`profiles/*.toml`) plus the k3s test fixtures.
fn profiles() -> Vec<(PathBuf, Profile)> {
    let mut paths = Vec::new();
    for dir in [
        root().join("profiles"),
        root().join("tests/fixtures/k3s/profiles"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            paths.extend(
                entries
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "toml")),
            );
        }
    }
    paths.sort();
    if !root().join("profiles").is_dir() {
        eprintln!("NOTE: no profiles/ directory yet; checking the k3s fixture profiles only");
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let profile: Profile =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, profile)
        })
        .collect()
}

fn addresses(profile: &Profile, role: Role) -> Vec<IpAddr> {
    profile
        .node_groups
        .iter()
        .filter(|g| g.role == role)
        .flat_map(|g| {
            if g.addresses.is_empty() {
                vec![IpAddr::from([10, 9, 9, 9])]
            } else {
                g.addresses.clone()
            }
        })
        .collect()
}

fn configs(profile: &Profile) -> Vec<(Role, serde_yaml_ng::Mapping)> {
    let token = K3sToken::from_secret("0123abcd");
    let templates = Templates::builtin();
    let mut out = Vec::new();
    for group in &profile.node_groups {
        let joins = match group.role {
            Role::Server => vec![
                JoinMode::Init,
                JoinMode::Join {
                    server_url: "https://10.0.0.1:6443".into(),
                },
            ],
            Role::Agent => vec![JoinMode::Join {
                server_url: "https://10.0.0.1:6443".into(),
            }],
        };
        for join in joins {
            let settings = NodeSettings {
                name: format!("{}-{}-1", profile.cluster.name, group.name),
                address: addresses(profile, group.role)[0],
                role: group.role,
                join,
                labels: group
                    .labels
                    .clone()
                    .into_iter()
                    .chain([("special.gpu".to_owned(), "nvidia".to_owned())])
                    .collect(),
                taints: group.taints.clone(),
            };
            let text = render_config(&templates, profile, &settings, &token).unwrap();
            let parsed: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("config does not parse: {e}\n{text}"));
            out.push((group.role, parsed));
        }
    }
    out
}

#[test]
fn every_config_key_is_a_k3s_flag() {
    let Some(shared) = shared_dir() else {
        eprintln!("SKIPPED: ../shared/k3s/flags.json not found; cannot check config keys");
        return;
    };
    let flags: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared.join("k3s/flags.json")).unwrap())
            .unwrap();
    let list = |role: &str| -> BTreeSet<String> {
        flags[role]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    let (server_flags, agent_flags) = (list("server"), list("agent"));
    let all = profiles();
    assert!(all.len() >= 3, "expected at least the fixture profiles");
    for (path, profile) in &all {
        for (role, config) in configs(profile) {
            let allowed = if role == Role::Server {
                &server_flags
            } else {
                &agent_flags
            };
            for key in config.keys() {
                let key = key.as_str().unwrap();
                assert!(
                    allowed.contains(key),
                    "{}: key `{key}` is not a k3s {role:?} flag",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn critical_settings_are_identical_on_every_server() {
    const CRITICAL: [&str; 6] = [
        "cluster-cidr",
        "service-cidr",
        "flannel-backend",
        "disable",
        "tls-san",
        "secrets-encryption",
    ];
    for (path, profile) in profiles() {
        let servers: Vec<_> = configs(&profile)
            .into_iter()
            .filter(|(role, _)| *role == Role::Server)
            .map(|(_, c)| c)
            .collect();
        for key in CRITICAL {
            let values: Vec<_> = servers.iter().map(|c| c.get(key).cloned()).collect();
            assert!(
                values.windows(2).all(|w| w[0] == w[1]),
                "{}: {key} differs between servers",
                path.display()
            );
        }
        for config in &servers {
            assert_eq!(config["write-kubeconfig-mode"], "0600");
            assert_eq!(config["token"], "0123abcd");
            let init = config.get("cluster-init").is_some();
            assert!(
                init != config.get("server").is_some(),
                "exactly one of cluster-init/server"
            );
        }
    }
}

#[test]
fn homelab_config_snapshot() {
    let profile = profiles()
        .into_iter()
        .find(|(p, _)| p.ends_with("tests/fixtures/k3s/profiles/homelab-ha.toml"))
        .unwrap()
        .1;
    let settings = NodeSettings {
        name: "homelab-server-2".into(),
        address: "10.77.0.12".parse().unwrap(),
        role: Role::Server,
        join: JoinMode::Join {
            server_url: "https://10.77.0.11:6443".into(),
        },
        labels: BTreeMap::from([("node-role.example/control".into(), "true".into())]),
        taints: vec![],
    };
    let config = render_config(
        &Templates::builtin(),
        &profile,
        &settings,
        &K3sToken::from_secret("REDACTED"),
    )
    .unwrap();
    insta::assert_snapshot!(config);
    insta::assert_snapshot!(render_unit(&Templates::builtin(), Role::Agent).unwrap());
}

#[test]
fn every_manifest_parses_with_kind_and_name() {
    let mut seen_kinds = BTreeSet::new();
    for (path, profile) in profiles() {
        for manifest in render_manifests(&Templates::builtin(), &profile, None).unwrap() {
            assert!(
                manifest.file_name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'.'),
                "{} is not an RFC 1123 file name",
                manifest.file_name
            );
            let mut documents = 0;
            for document in serde_yaml_ng::Deserializer::from_str(&manifest.content) {
                let value = serde_yaml_ng::Value::deserialize(document).unwrap_or_else(|e| {
                    panic!(
                        "{} / {}: {e}\n{}",
                        path.display(),
                        manifest.file_name,
                        manifest.content
                    )
                });
                let what = format!("{} / {}", path.display(), manifest.file_name);
                assert!(value["apiVersion"].as_str().is_some(), "{what}: apiVersion");
                let kind = value["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: kind"));
                assert!(
                    value["metadata"]["name"].as_str().is_some(),
                    "{what}: metadata.name"
                );
                if kind == "HelmChart" {
                    let values = value["spec"]["valuesContent"].as_str().unwrap_or("{}");
                    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(values)
                        .unwrap_or_else(|e| panic!("{what}: valuesContent: {e}"));
                }
                if kind == "ConfigMap" && value["metadata"]["name"] == "local-path-config" {
                    let config: serde_json::Value =
                        serde_json::from_str(value["data"]["config.json"].as_str().unwrap())
                            .unwrap();
                    assert!(config["storageClassConfigs"]["fast-scratch"].is_object());
                    assert!(config["storageClassConfigs"]["local-path"].is_object());
                }
                seen_kinds.insert(kind.to_owned());
                documents += 1;
            }
            assert!(documents > 0, "{}: empty", manifest.file_name);
        }
    }
    for kind in [
        "DaemonSet",
        "HelmChart",
        "RuntimeClass",
        "StorageClass",
        "GitRepository",
        "Kustomization",
        "Application",
        "GitRepo",
    ] {
        assert!(seen_kinds.contains(kind), "no profile produced a {kind}");
    }
}

#[test]
fn gpu_operator_values_point_at_k3s_containerd() {
    let profile = profiles()
        .into_iter()
        .find(|(p, _)| p.ends_with("gpu-operator.toml"))
        .unwrap()
        .1;
    let manifests = render_manifests(&Templates::builtin(), &profile, None).unwrap();
    let operator = manifests
        .iter()
        .find(|m| m.file_name == "provision-nvidia-gpu-operator.yaml")
        .unwrap();
    assert!(
        operator
            .content
            .contains("/run/k3s/containerd/containerd.sock")
    );
    assert!(
        operator
            .content
            .contains("/var/lib/rancher/k3s/agent/etc/containerd/config.toml")
    );
    assert!(operator.content.contains("replicas: 4"));
    // CONTAINERD_SET_AS_DEFAULT follows nvidia.default_runtime (default false: pods opt in).
    let set_as_default = |profile: &Profile| -> String {
        let manifests = render_manifests(&Templates::builtin(), profile, None).unwrap();
        let operator = manifests
            .iter()
            .find(|m| m.file_name == "provision-nvidia-gpu-operator.yaml")
            .unwrap();
        let chart = yaml_documents(&operator.content)
            .into_iter()
            .find(|d| d["kind"] == "HelmChart")
            .unwrap();
        let values: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
        let env = values["toolkit"]["env"].as_sequence().unwrap();
        env.iter()
            .find(|e| e["name"] == "CONTAINERD_SET_AS_DEFAULT")
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(!profile.nvidia.default_runtime);
    assert_eq!(set_as_default(&profile), "false");
    let mut default_nvidia = profile.clone();
    default_nvidia.nvidia.default_runtime = true;
    assert_eq!(set_as_default(&default_nvidia), "true");
    assert!(operator.content.contains("name: time-slicing-config"));
    assert!(
        operator
            .content
            .contains("driver:\n      enabled: true\n    toolkit:\n      enabled: true\n"),
        "{}",
        operator.content
    );
    let config = configs(&profile);
    let disable = config[0].1["disable"].as_sequence().unwrap();
    assert!(disable.iter().any(|v| v == "local-storage"));
}

/// The `driver:` / `toolkit:` switches of the GPU Operator's values for `profile`.
fn operator_switches(profile: &Profile) -> (bool, bool) {
    let manifests = render_manifests(&Templates::builtin(), profile, None).unwrap();
    let operator = manifests
        .iter()
        .find(|m| m.file_name == "provision-nvidia-gpu-operator.yaml")
        .unwrap();
    let chart = serde_yaml_ng::Deserializer::from_str(&operator.content)
        .map(|document| serde_yaml_ng::Value::deserialize(document).unwrap())
        .find(|document| document["kind"] == "HelmChart")
        .unwrap();
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    (
        values["driver"]["enabled"].as_bool().unwrap(),
        values["toolkit"]["enabled"].as_bool().unwrap(),
    )
}

#[test]
fn gpu_operator_driver_container_only_when_the_image_lacks_the_driver() {
    let mut profile = profiles()
        .into_iter()
        .find(|(p, _)| p.ends_with("gpu-operator.toml"))
        .unwrap()
        .1;
    assert_eq!(operator_switches(&profile), (true, true));
    // The image carries the driver: the operator still brings the toolkit.
    profile.nvidia.driver = Some(NvidiaDriver::Preinstalled);
    assert_eq!(operator_switches(&profile), (false, true));
    // Host mode: provision installs both on the node.
    profile.nvidia.mode = NvidiaMode::Host;
    assert_eq!(operator_switches(&profile), (false, false));
    profile.nvidia.driver = None;
    assert_eq!(operator_switches(&profile), (false, false));
}

#[test]
fn fast_scratch_volumes_land_only_on_nodes_with_the_scratch_disk() {
    use provision::k3s::manifests::{FAST_SCRATCH_LABEL, storage_labels};
    let profile = profiles()
        .into_iter()
        .find(|(p, _)| p.ends_with("gpu-operator.toml"))
        .unwrap()
        .1;
    let scratch = profile.storage.fast_scratch.as_ref().unwrap();
    let manifests = render_manifests(&Templates::builtin(), &profile, None).unwrap();
    let local_path = manifests
        .iter()
        .find(|m| m.file_name == "provision-local-path-provisioner.yaml")
        .unwrap();
    let documents = yaml_documents(&local_path.content);
    let class = |name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == "StorageClass" && d["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let fast = class(&scratch.class_name);
    let expressions = fast["allowedTopologies"][0]["matchLabelExpressions"]
        .as_sequence()
        .unwrap();
    assert_eq!(expressions.len(), 1);
    assert_eq!(expressions[0]["key"].as_str(), Some(FAST_SCRATCH_LABEL));
    assert_eq!(
        expressions[0]["values"].as_sequence().unwrap(),
        &[serde_yaml_ng::Value::from("true")]
    );
    assert!(
        class("local-path").get("allowedTopologies").is_none(),
        "local-path stays usable everywhere"
    );
    // The label goes exactly on the groups whose scratch disk holds the path.
    let mut labelled = 0;
    for group in &profile.node_groups {
        let labels = storage_labels(&profile, group);
        let on_scratch = group
            .disks
            .scratch_mount
            .as_deref()
            .is_some_and(|mount| scratch.path.starts_with(mount));
        assert_eq!(
            labels.get(FAST_SCRATCH_LABEL).map(String::as_str),
            on_scratch.then_some("true"),
            "{}",
            group.name
        );
        labelled += usize::from(on_scratch);
    }
    assert!(labelled > 0, "the fixture has a scratch group");
    // Without any scratch disk the class is not restricted (the path is on every OS disk).
    let mut no_disk = profile.clone();
    for group in &mut no_disk.node_groups {
        group.disks.scratch_mount = None;
    }
    let manifests = render_manifests(&Templates::builtin(), &no_disk, None).unwrap();
    let text = &manifests
        .iter()
        .find(|m| m.file_name == "provision-local-path-provisioner.yaml")
        .unwrap()
        .content;
    assert!(!text.contains("allowedTopologies"), "{text}");
}

#[test]
fn recorded_release_checksums_parse() {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/k3s/sha256sum-amd64.txt")).unwrap();
    let sums = parse_checksums(&text).unwrap();
    assert_eq!(sums.len(), 4);
    assert_eq!(
        checksum_for(&sums, "k3s").unwrap(),
        "86945269160fdd1bbd06283ea5b3bafd6c0ec0d1df3ac68ad3686656632081a5"
    );
    assert!(sums.contains_key("k3s-airgap-images-amd64.tar.zst"));
}

/// Values that would add YAML keys, documents or Kubernetes objects if printed raw.
const HOSTILE_YAML: [&str; 6] = [
    "https://git.example/x\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding",
    "a: b # c",
    "'\"\\ {x} [y] &anchor *alias !tag |",
    "--- \n...\n",
    "line\u{2028}sep\u{85}next\r\nlast",
    "\u{7f}\u{1}\u{9b}é💥",
];

/// Every document of a multi-document YAML text.
fn yaml_documents(text: &str) -> Vec<serde_yaml_ng::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| serde_yaml_ng::Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .collect()
}

fn kinds(documents: &[serde_yaml_ng::Value]) -> Vec<String> {
    documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn gitops_manifests_keep_hostile_values_as_strings() {
    let templates = Templates::builtin();
    for hostile in HOSTILE_YAML {
        let context = serde_json::json!({
            "repo": hostile, "branch": hostile, "path": hostile, "secret_name": hostile,
        });
        let flux = yaml_documents(
            &templates
                .render("manifests/flux-sync.yaml.j2", &context)
                .unwrap(),
        );
        assert_eq!(
            kinds(&flux),
            ["GitRepository", "Kustomization"],
            "{hostile:?}"
        );
        assert_eq!(flux[0]["spec"]["url"].as_str(), Some(hostile));
        assert_eq!(flux[0]["spec"]["ref"]["branch"].as_str(), Some(hostile));
        assert_eq!(flux[1]["spec"]["path"].as_str(), Some(hostile));
        assert_eq!(flux[0]["spec"]["secretRef"]["name"].as_str(), Some(hostile));
        let argo_text = templates
            .render("manifests/argocd-root.yaml.j2", &context)
            .unwrap();
        let argo = yaml_documents(&argo_text);
        assert_eq!(kinds(&argo), ["Application"], "{argo_text}");
        assert_eq!(argo[0]["spec"]["source"]["repoURL"].as_str(), Some(hostile));
        let fleet = yaml_documents(
            &templates
                .render("manifests/fleet-gitrepo.yaml.j2", &context)
                .unwrap(),
        );
        assert_eq!(kinds(&fleet), ["GitRepo"]);
        assert_eq!(fleet[0]["spec"]["repo"].as_str(), Some(hostile));
        assert_eq!(fleet[0]["spec"]["paths"][0].as_str(), Some(hostile));
        assert_eq!(fleet[0]["spec"]["clientSecretName"].as_str(), Some(hostile));
        assert_eq!(
            fleet[0].as_mapping().unwrap().len(),
            4,
            "apiVersion, kind, metadata, spec only"
        );
    }
}

#[test]
fn nfs_and_local_path_manifests_keep_hostile_values_as_strings() {
    let templates = Templates::builtin();
    for hostile in HOSTILE_YAML {
        let text = templates
            .render(
                "manifests/nfs-provisioner.yaml.j2",
                &serde_json::json!({
                    "server": hostile, "path": hostile, "class_name": hostile,
                    "default_class": true, "version": "4.0.18",
                }),
            )
            .unwrap();
        let documents = yaml_documents(&text);
        assert_eq!(kinds(&documents), ["HelmChart"], "{text}");
        let values: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(documents[0]["spec"]["valuesContent"].as_str().unwrap())
                .unwrap();
        assert_eq!(values["nfs"]["server"].as_str(), Some(hostile));
        assert_eq!(values["nfs"]["path"].as_str(), Some(hostile));
        assert_eq!(values["storageClass"]["name"].as_str(), Some(hostile));
        assert_eq!(values["storageClass"]["defaultClass"].as_bool(), Some(true));
        let text = templates
            .render(
                "manifests/local-path-provisioner.yaml.j2",
                &serde_json::json!({
                    "image": "i", "helper_image": "h",
                    "classes": [{ "name": hostile, "path": hostile, "default": false }],
                }),
            )
            .unwrap();
        let documents = yaml_documents(&text);
        let classes: Vec<_> = documents
            .iter()
            .filter(|d| d["kind"] == "StorageClass")
            .collect();
        assert_eq!(classes.len(), 1, "{text}");
        assert_eq!(classes[0]["metadata"]["name"].as_str(), Some(hostile));
        let config_map = documents.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
        let config: serde_json::Value =
            serde_json::from_str(config_map["data"]["config.json"].as_str().unwrap()).unwrap();
        let paths = config.to_string();
        assert!(
            paths.contains(&serde_json::to_string(hostile).unwrap()),
            "{paths}"
        );
    }
}

#[test]
fn k3s_config_keeps_hostile_values_as_strings() {
    let profile = profiles()
        .into_iter()
        .find(|(path, _)| path.ends_with("homelab-ha.toml"))
        .unwrap()
        .1;
    for hostile in HOSTILE_YAML {
        let node = NodeSettings {
            name: hostile.to_owned(),
            address: "10.0.0.5".parse().unwrap(),
            role: Role::Server,
            join: JoinMode::Join {
                server_url: hostile.to_owned(),
            },
            labels: BTreeMap::from([(hostile.to_owned(), hostile.to_owned())]),
            taints: vec![hostile.to_owned()],
        };
        let text = render_config(
            &Templates::builtin(),
            &profile,
            &node,
            &K3sToken::from_secret(hostile),
        )
        .unwrap();
        let documents = yaml_documents(&text);
        assert_eq!(documents.len(), 1, "{text}");
        let config = &documents[0];
        assert_eq!(config["node-name"].as_str(), Some(hostile));
        assert_eq!(config["server"].as_str(), Some(hostile));
        assert_eq!(config["token"].as_str(), Some(hostile));
        assert_eq!(
            config["node-label"][0].as_str(),
            Some(format!("{hostile}={hostile}").as_str())
        );
        assert_eq!(config["node-taint"][0].as_str(), Some(hostile));
        let keys: BTreeSet<&str> = config
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        let allowed = BTreeSet::from([
            "server",
            "token",
            "node-name",
            "node-ip",
            "node-label",
            "node-taint",
            "write-kubeconfig-mode",
            "cluster-cidr",
            "service-cidr",
            "flannel-backend",
            "secrets-encryption",
            "tls-san",
            "disable",
        ]);
        assert!(keys.is_subset(&allowed), "{keys:?}\n{text}");
        for line in text.lines().filter(|l| l.starts_with('#')) {
            assert!(
                !line.contains('\u{2028}') && !line.contains('\u{85}'),
                "{line:?}"
            );
        }
    }
}

/// k3s and SSH-executor command builders fed hostile values, run in the recording shell.
mod hostile_values {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use crate::nodeprep::sandbox::{Sandbox, assert_syntax, hostile, hostile_dash};
    use provision::k3s::cluster::{ClusterNode, label_taint_commands, probe_script};
    use provision::ssh::commands;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![hostile(), hostile_dash()]
    }

    proptest! {
        #![proptest_config(config())]

        /// The node name comes from the guest (`kubectl get nodes`); labels and taints from the profile.
        /// Each reaches kubectl as one argument; one starting with `-` (an option) is refused.
        #[test]
        fn label_and_taint_values_reach_kubectl_as_whole_arguments(
            name in value(),
            key in value(),
            label in value(),
            taint in value(),
        ) {
            let node = ClusterNode {
                name: name.clone(),
                ready: true,
                etcd_member: false,
                labels: BTreeMap::new(),
                taints: vec![],
            };
            let labels = BTreeMap::from([(key.clone(), label.clone())]);
            let result = label_taint_commands(&node, &labels, std::slice::from_ref(&taint));
            if [&name, &key, &taint].iter().any(|v| v.starts_with('-')) {
                let error = result.unwrap_err().to_string();
                prop_assert!(error.contains("starts with `-`"), "{}", error);
                return Ok(());
            }
            let commands = result.unwrap();
            prop_assert_eq!(commands.len(), 2);
            let label_arg = format!("{key}={label}");
            let expected = [
                ["kubectl", "label", "node", name.as_str(), "--overwrite", label_arg.as_str()],
                ["kubectl", "taint", "node", name.as_str(), "--overwrite", taint.as_str()],
            ];
            for (command, expected) in commands.iter().zip(expected) {
                assert_syntax(command);
                let run = Sandbox::new().run(command, b"");
                run.assert_nothing_injected(command);
                let calls = run.calls_to("k3s");
                prop_assert_eq!(calls.len(), 1, "{:?}", run);
                prop_assert_eq!(&calls[0].args, &expected.map(str::to_owned).to_vec());
            }
        }

        /// The probe's unit is a constant, but the token it compares arrives on stdin from the workspace:
        /// a hostile token is compared, never run.
        #[test]
        fn probe_reads_the_token_as_data(token in hostile()) {
            prop_assume!(!token.contains('\n'));
            let script = probe_script("k3s.service");
            assert_syntax(&script);
            let run = Sandbox::new().run(&script, format!("{token}\n").as_bytes());
            run.assert_nothing_injected(&script);
            prop_assert_eq!(run.status, Some(0), "{:?}", run);
        }

        /// The SSH executor's own commands (upload staging, install, read, remove, sudo) with hostile
        /// remote paths.
        #[test]
        fn executor_commands_keep_paths_as_whole_arguments(name in value()) {
            let name = name.replace('/', "_");
            let path = format!("/srv/{name}");
            let staged = commands::staging_path(&path, "1");
            let upload = format!("/tmp/.provision-upload-{name}");
            let install = commands::verify_and_install(&staged, &path, &"0".repeat(64), 0o600);
            let sandbox = Sandbox::new()
                .behave("sha256sum", &"0".repeat(64), 0)
                .behave("cat", "", 0);
            for (command, tool, expected) in [
                (commands::prepare_dir(&path), "mkdir", vec!["-p", "--", "/srv"]),
                (commands::move_staged(&upload, &staged), "cp", vec!["--", upload.as_str(), staged.as_str()]),
                (commands::read_file(&path), "cat", vec!["--", path.as_str()]),
                (commands::remove_file(&path), "rm", vec!["-f", "--", path.as_str()]),
                (install.clone(), "mv", vec!["-f", "--", staged.as_str(), path.as_str()]),
            ] {
                assert_syntax(&command);
                let run = sandbox.run(&command, b"");
                run.assert_nothing_injected(&command);
                let calls = run.calls_to(tool);
                prop_assert_eq!(calls.len(), 1, "{}: {:?}", command, run);
                prop_assert_eq!(&calls[0].args, &expected.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>());
            }
            let wrapped = commands::as_root(&install);
            assert_syntax(&wrapped);
            let run = sandbox.run(&wrapped, b"");
            run.assert_nothing_injected(&wrapped);
            prop_assert_eq!(
                &run.calls_to("sudo")[0].args,
                &vec!["-n".to_owned(), "sh".to_owned(), "-c".to_owned(), install]
            );
        }
    }
}

/// The k3s fixture profile with `engine` following `repo`.
fn gitops_profile(engine: GitOpsEngine, repo: &str) -> Profile {
    let mut profile = profiles()
        .into_iter()
        .find(|(p, _)| p.ends_with("k3s/profiles/homelab-ha.toml"))
        .unwrap()
        .1;
    profile.gitops.engine = engine;
    profile.gitops.repo = Some(repo.to_owned());
    profile
}

fn ssh_credentials(identity: &str, known_hosts: &str) -> GitCredentials {
    GitCredentials::Ssh {
        identity: Secret::new(identity),
        known_hosts: known_hosts.to_owned(),
    }
}

fn https_credentials(username: &str, password: &str) -> GitCredentials {
    GitCredentials::Https {
        username: Secret::new(username),
        password: Secret::new(password),
    }
}

/// The manifest documents by file name.
fn rendered(
    profile: &Profile,
    credentials: Option<&GitCredentials>,
) -> BTreeMap<String, Vec<serde_yaml_ng::Value>> {
    render_manifests(&Templates::builtin(), profile, credentials)
        .unwrap()
        .into_iter()
        .map(|manifest| (manifest.file_name, yaml_documents(&manifest.content)))
        .collect()
}

/// The credentials Secret's `data`, decoded; checks the manifest is exactly Namespace + Secret.
fn secret_data(
    manifests: &BTreeMap<String, Vec<serde_yaml_ng::Value>>,
    namespace: &str,
    secret_type: &str,
) -> (BTreeMap<String, String>, serde_yaml_ng::Value) {
    use base64::Engine as _;
    let documents = &manifests["provision-gitops-credentials.yaml"];
    assert_eq!(kinds(documents), ["Namespace", "Secret"]);
    assert_eq!(documents[0]["metadata"]["name"].as_str(), Some(namespace));
    let secret = &documents[1];
    assert_eq!(
        secret["metadata"]["name"].as_str(),
        Some("gitops-credentials")
    );
    assert_eq!(secret["metadata"]["namespace"].as_str(), Some(namespace));
    assert_eq!(secret["type"].as_str(), Some(secret_type));
    let data = secret["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(key, value)| {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().unwrap())
                .unwrap();
            (
                key.as_str().unwrap().to_owned(),
                String::from_utf8(decoded).unwrap(),
            )
        })
        .collect();
    (data, secret["metadata"]["labels"].clone())
}

fn keys(data: &BTreeMap<String, String>) -> Vec<&str> {
    data.keys().map(String::as_str).collect()
}

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
const KNOWN_HOSTS: &str = "git.example ssh-ed25519 AAAAC3Nz\n";

#[test]
fn flux_gets_an_identity_or_basic_auth_secret_and_the_git_repository_references_it() {
    let profile = gitops_profile(GitOpsEngine::Flux, "ssh://git@git.example/org/fleet.git");
    let manifests = rendered(&profile, Some(&ssh_credentials(KEY, KNOWN_HOSTS)));
    let (data, labels) = secret_data(&manifests, "flux-system", "Opaque");
    assert_eq!(keys(&data), ["identity", "known_hosts"]);
    assert_eq!(data["identity"], KEY);
    assert_eq!(data["known_hosts"], KNOWN_HOSTS);
    assert!(labels.is_null());
    let sync = &manifests["provision-flux-sync.yaml"];
    assert_eq!(
        sync[0]["spec"]["secretRef"]["name"].as_str(),
        Some("gitops-credentials")
    );
    assert_eq!(
        sync[0]["spec"]["url"].as_str(),
        Some("ssh://git@git.example/org/fleet.git")
    );

    let profile = gitops_profile(GitOpsEngine::Flux, "https://git.example/org/fleet.git");
    let manifests = rendered(&profile, Some(&https_credentials("bot", "ghp_token")));
    let (data, _) = secret_data(&manifests, "flux-system", "Opaque");
    assert_eq!(keys(&data), ["password", "username"]);
    assert_eq!(
        (data["username"].as_str(), data["password"].as_str()),
        ("bot", "ghp_token")
    );

    let public = rendered(&profile, None);
    assert!(!public.contains_key("provision-gitops-credentials.yaml"));
    assert!(public["provision-flux-sync.yaml"][0]["spec"]["secretRef"].is_null());
}

#[test]
fn argocd_gets_a_labelled_repository_secret_and_known_hosts_through_the_chart() {
    let repo = "ssh://git@git.example/org/fleet.git";
    let profile = gitops_profile(GitOpsEngine::Argocd, repo);
    let manifests = rendered(&profile, Some(&ssh_credentials(KEY, KNOWN_HOSTS)));
    let (data, labels) = secret_data(&manifests, "argocd", "Opaque");
    assert_eq!(keys(&data), ["sshPrivateKey", "type", "url"]);
    assert_eq!(data["sshPrivateKey"], KEY);
    assert_eq!(data["type"], "git");
    assert_eq!(
        labels["argocd.argoproj.io/secret-type"].as_str(),
        Some("repository")
    );
    let application = &manifests["provision-argocd-root.yaml"][0];
    assert_eq!(
        application["spec"]["source"]["repoURL"].as_str(),
        Some(data["url"].as_str()),
        "Argo CD finds the Secret by the Application's URL"
    );
    let chart = &manifests["provision-argocd.yaml"][0];
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(
        values["configs"]["ssh"]["extraHosts"].as_str(),
        Some(KNOWN_HOSTS)
    );

    let profile = gitops_profile(GitOpsEngine::Argocd, "https://git.example/org/fleet.git");
    let manifests = rendered(&profile, Some(&https_credentials("bot", "ghp_token")));
    let (data, _) = secret_data(&manifests, "argocd", "Opaque");
    assert_eq!(keys(&data), ["password", "type", "url", "username"]);
    assert_eq!(data["url"], "https://git.example/org/fleet.git");
    assert!(manifests["provision-argocd.yaml"][0]["spec"]["valuesContent"].is_null());
}

#[test]
fn fleet_gets_ssh_auth_or_basic_auth_secrets_named_by_client_secret_name() {
    let profile = gitops_profile(GitOpsEngine::Fleet, "ssh://git@git.example/org/fleet.git");
    let manifests = rendered(&profile, Some(&ssh_credentials(KEY, KNOWN_HOSTS)));
    let (data, _) = secret_data(&manifests, "fleet-local", "kubernetes.io/ssh-auth");
    assert_eq!(keys(&data), ["known_hosts", "ssh-privatekey"]);
    assert_eq!(data["ssh-privatekey"], KEY);
    let gitrepo = &manifests["provision-fleet-gitrepo.yaml"][0];
    assert_eq!(
        gitrepo["metadata"]["namespace"].as_str(),
        Some("fleet-local")
    );
    assert_eq!(
        gitrepo["spec"]["clientSecretName"].as_str(),
        Some("gitops-credentials")
    );
    let fleet_chart = manifests["provision-fleet.yaml"]
        .iter()
        .find(|d| d["metadata"]["name"] == "fleet")
        .unwrap();
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(fleet_chart["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(values["insecureSkipHostKeyChecks"].as_bool(), Some(false));

    let profile = gitops_profile(GitOpsEngine::Fleet, "https://git.example/org/fleet.git");
    let manifests = rendered(&profile, Some(&https_credentials("bot", "ghp_token")));
    let (data, _) = secret_data(&manifests, "fleet-local", "kubernetes.io/basic-auth");
    assert_eq!(keys(&data), ["password", "username"]);
}

#[test]
fn credential_secrets_keep_hostile_values_as_data() {
    for engine in [
        GitOpsEngine::Flux,
        GitOpsEngine::Argocd,
        GitOpsEngine::Fleet,
    ] {
        for hostile in HOSTILE_YAML {
            let profile = gitops_profile(engine, hostile);
            for credentials in [
                ssh_credentials(hostile, hostile),
                https_credentials(hostile, hostile),
            ] {
                let manifests = rendered(&profile, Some(&credentials));
                let documents = &manifests["provision-gitops-credentials.yaml"];
                assert_eq!(kinds(documents), ["Namespace", "Secret"], "{hostile:?}");
                let secret_type = match (engine, &credentials) {
                    (GitOpsEngine::Fleet, GitCredentials::Ssh { .. }) => "kubernetes.io/ssh-auth",
                    (GitOpsEngine::Fleet, GitCredentials::Https { .. }) => {
                        "kubernetes.io/basic-auth"
                    }
                    _ => "Opaque",
                };
                let namespace = documents[0]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let (data, _) = secret_data(&manifests, &namespace, secret_type);
                assert!(data.values().any(|value| value == hostile), "{hostile:?}");
                for values in manifests
                    .values()
                    .flatten()
                    .filter(|d| d["kind"] == "HelmChart")
                    .filter_map(|d| d["spec"]["valuesContent"].as_str())
                {
                    let values: serde_yaml_ng::Value = serde_yaml_ng::from_str(values).unwrap();
                    if let Some(hosts) = values["configs"]["ssh"]["extraHosts"].as_str() {
                        assert_eq!(hosts, hostile);
                    }
                }
            }
        }
    }
}
