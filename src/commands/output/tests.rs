//! The output structs render the JSON documents the commands printed before they existed.
#![allow(clippy::unwrap_used)]

use super::*;

use std::time::Duration;

use crate::exec::phase2::StepTiming;
use crate::nodeprep::StepReport;
use crate::profile::Role;

/// The pretty JSON of `value`, as the reporter prints it.
fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

fn record(name: &str, address: Option<&str>) -> VmRecord {
    VmRecord {
        name: name.to_owned(),
        vmid: 9001,
        node: "pve1".to_owned(),
        group: "servers".to_owned(),
        role: Role::Server,
        phase: VmPhase::Ready,
        params_hash: "abc".to_owned(),
        address: address.map(str::to_owned),
        gpus: vec!["0000:41:00".to_owned()],
        iso: None,
    }
}

fn phase2_report() -> Phase2Report {
    Phase2Report {
        nodes: vec![crate::exec::phase2::NodeReport {
            name: "ci-server-1".to_owned(),
            steps: vec![
                StepReport {
                    description: "write /etc/rancher/k3s/config.yaml".to_owned(),
                    outcome: StepOutcome::Changed,
                },
                StepReport {
                    description: "load br_netfilter".to_owned(),
                    outcome: StepOutcome::BuiltIn("in the kernel".to_owned()),
                },
                StepReport {
                    description: "sysctl".to_owned(),
                    outcome: StepOutcome::Unchanged,
                },
            ],
            started: true,
            restarted: false,
            labels: BTreeMap::from([("a".to_owned(), "b".to_owned())]),
            timeline: vec![StepTiming {
                step: "install",
                start: Duration::from_millis(1500),
                duration: Duration::from_micros(2_000_400),
            }],
        }],
        bootstrap: "ci-server-1".to_owned(),
        existing_cluster: false,
        api_commands: vec!["kubectl label node x a=b".to_owned()],
        kubeconfig: "/ws/.provision/kubeconfig".into(),
        kubeconfig_changed: true,
        upgrade: crate::exec::phase2::UpgradeReport::default(),
        timeline: vec![StepTiming {
            step: "kubeconfig",
            start: Duration::from_millis(4000),
            duration: Duration::from_millis(20),
        }],
        elapsed: Duration::from_millis(4020),
    }
}

/// The JSON is what the hand-assembled `json!` values printed before (same keys, order and
/// values); those values are written out here as they were.
#[test]
fn json_matches_the_former_hand_built_documents() {
    let ready = record("ci-server-1", Some("10.0.0.11"));
    let missing = record("ci-agent-1", None);
    let status = StatusOutput {
        vms: vec![
            StatusRow::new(
                &ready,
                Some((Some("pve2".to_owned()), Some("running".to_owned()))),
            ),
            StatusRow::new(&missing, None),
        ],
        cluster: ClusterObservation::NotChecked {
            reason: "simulated VMs have no guests".to_owned(),
        },
    };
    let rows: Vec<serde_json::Value> = [
        (&ready, Some("pve2"), "running"),
        (&missing, None, "missing"),
    ]
    .iter()
    .map(|(record, node, proxmox)| {
        serde_json::json!({
            "name": record.name,
            "vmid": record.vmid,
            "node": node.map(str::to_owned).unwrap_or_else(|| record.node.clone()),
            "phase": record.phase,
            "proxmox": proxmox,
            "address": record.address,
            "gpus": record.gpus,
        })
    })
    .collect();
    assert_eq!(
        pretty(&status),
        pretty(&serde_json::json!({
            "vms": rows,
            "cluster": {"state": "not-checked", "reason": "simulated VMs have no guests"},
        }))
    );
    assert_eq!(
        status.to_string(),
        "ci-server-1                  vmid 9001 pve2       ready    running  10.0.0.11\n\
         ci-agent-1                   vmid 9001 pve1       ready    missing  \n\
         cluster: not checked: simulated VMs have no guests\n"
    );
    assert_eq!(
        status.exit_status(),
        ExitStatus::Unhealthy,
        "a VM is missing"
    );

    let kubeconfig = Path::new("/ws/.provision/kubeconfig");
    let merged = Path::new("/home/u/.kube/config");
    assert_eq!(
        pretty(&KubeconfigOutput {
            kubeconfig,
            context: "ci",
            merged_into: Some(merged),
        }),
        pretty(&serde_json::json!({
            "kubeconfig": kubeconfig,
            "context": "ci",
            "merged_into": Some(merged),
        }))
    );

    let init = InitOutput {
        workspace: "ws".to_owned(),
        profile: None,
        files: vec![InitFile {
            path: ".provision/".to_owned(),
            action: InitFileAction::Kept,
        }],
    };
    assert_eq!(
        pretty(&init),
        pretty(&serde_json::json!({
            "workspace": "ws",
            "files": [{ "path": ".provision/", "action": "kept" }],
        }))
    );
    let with_profile = InitOutput {
        workspace: "ws".to_owned(),
        profile: Some("homelab-ha".to_owned()),
        files: vec![InitFile {
            path: "profiles/homelab-ha.toml".to_owned(),
            action: InitFileAction::Created,
        }],
    };
    assert_eq!(
        pretty(&with_profile),
        pretty(&serde_json::json!({
            "workspace": "ws",
            "profile": "homelab-ha",
            "files": [{ "path": "profiles/homelab-ha.toml", "action": "created" }],
        }))
    );
}

#[test]
fn up_json_matches_the_former_hand_built_document() {
    let vms = vec![ProvisionedVm {
        name: "ci-server-1".to_owned(),
        vmid: 9001,
        node: "pve1".to_owned(),
        address: "10.0.0.11".parse().unwrap(),
        role: Role::Server,
        group: "servers".to_owned(),
        gpus: vec![],
        seconds: 1.25,
    }];
    let destroyed = vec!["old".to_owned()];
    let phase1 = || PhaseOneOutput {
        cluster: "ci",
        vms: &vms,
        destroyed: &destroyed,
        mutating_calls: 7,
        seconds: 3.5,
    };
    let former = |phase2: serde_json::Value| {
        let mut json = serde_json::json!({
            "cluster": "ci",
            "vms": vms,
            "destroyed": destroyed,
            "mutating_calls": 7,
            "seconds": 3.5,
        });
        json.as_object_mut()
            .unwrap()
            .insert("phase2".into(), phase2);
        pretty(&json)
    };
    let skipped = UpOutput {
        phase1: phase1(),
        phase2: Phase2Output::Skipped {
            skipped: "--vms-only",
        },
    };
    assert_eq!(
        pretty(&skipped),
        former(serde_json::json!({ "skipped": "--vms-only" }))
    );

    let report = phase2_report();
    let commands = vec!["ssh ci-server-1 true".to_owned()];
    let former_phase2 = |with_commands: bool| {
        let mut json = serde_json::json!({
            "bootstrap": report.bootstrap,
            "existing_cluster": report.existing_cluster,
            "changed": report.changed(),
            "restarted": report.restarted(),
            "api_commands": report.api_commands,
            "kubeconfig": report.kubeconfig,
            "kubeconfig_changed": report.kubeconfig_changed,
            // Added with the timelines: phase 2's time and where it went, to the millisecond.
            "seconds": 4.02,
            "timeline": [{ "step": "kubeconfig", "start": 4.0, "seconds": 0.02 }],
            "nodes": report.nodes.iter().map(|node| serde_json::json!({
                "name": node.name,
                "changed": node.changed(),
                "started": node.started,
                "restarted": node.restarted,
                "labels": node.labels,
                "steps": node.steps.iter().map(|step| serde_json::json!({
                    "description": step.description,
                    "outcome": step.outcome.to_string(),
                    "changed": step.outcome.is_change(),
                })).collect::<Vec<_>>(),
                "timeline": [{ "step": "install", "start": 1.5, "seconds": 2.0 }],
            })).collect::<Vec<_>>(),
        });
        if with_commands {
            json.as_object_mut()
                .unwrap()
                .insert("commands".into(), serde_json::json!(commands));
        }
        json
    };
    for with_commands in [false, true] {
        let done = UpOutput {
            phase1: phase1(),
            phase2: Phase2Output::Done(Box::new(Phase2Summary::new(
                &report,
                with_commands.then_some(commands.as_slice()),
            ))),
        };
        assert_eq!(pretty(&done), former(former_phase2(with_commands)));
    }
    assert_eq!(
        Phase2Summary::new(&report, None).to_string(),
        "ci-server-1                  1 changes, k3s started\n\
         \x20 write /etc/rancher/k3s/config.yaml                           changed\n\
         \x20 load br_netfilter                                            built in (in the kernel)\n\
         api: kubectl label node x a=b\n\
         cluster created around ci-server-1: changes made; kubeconfig /ws/.provision/kubeconfig (written)\n"
    );
}

#[test]
fn phase_names_are_the_serialized_ones() {
    for phase in [VmPhase::Intent, VmPhase::Created, VmPhase::Ready] {
        assert_eq!(
            serde_json::to_value(phase).unwrap().as_str(),
            Some(phase_name(phase))
        );
    }
}

#[test]
fn a_k3s_upgrade_is_reported_with_its_order_and_snapshot() {
    let mut report = phase2_report();
    report.upgrade = crate::exec::phase2::UpgradeReport {
        from: Some("v1.31.4+k3s1".to_owned()),
        to: "v1.31.5+k3s1".to_owned(),
        upgraded: vec!["ci-server-1".to_owned(), "ci-agent-1".to_owned()],
        snapshot: Some("provision-pre-upgrade-v1-31-5-k3s1-ci-server-1-1764570000".to_owned()),
    };
    assert!(report.changed());
    let summary = Phase2Summary::new(&report, None);
    assert!(summary.to_string().starts_with(
        "k3s upgraded v1.31.4+k3s1 → v1.31.5+k3s1 (etcd snapshot provision-pre-upgrade-v1-31-5-k3s1-ci-server-1-1764570000), one wave after the other: ci-server-1, ci-agent-1\n"
    ));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["upgrade"]["upgraded"][1], "ci-agent-1");
    assert_eq!(json["upgrade"]["from"], "v1.31.4+k3s1");
    let unchanged = phase2_report();
    let json = serde_json::to_value(Phase2Summary::new(&unchanged, None)).unwrap();
    assert!(json.get("upgrade").is_none(), "no upgrade, no key");
}

#[test]
fn the_testbed_boot_is_reported_only_with_guests() {
    let report = phase2_report();
    let json = serde_json::to_value(Phase2Summary::new(&report, None)).unwrap();
    assert!(
        json.get("testbed_boot_seconds").is_none(),
        "no guests, no key"
    );
    let summary =
        Phase2Summary::new(&report, None).with_testbed_boot(Some(Duration::from_millis(87_654)));
    let json = serde_json::to_value(summary).unwrap();
    assert_eq!(json["testbed_boot_seconds"], 87.654);
}
