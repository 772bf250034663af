//! The drain preflight against pod, PDB, PVC and PV lists in the shapes `kubectl get -o json`
//! prints, and the commands it builds.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const NODE: &str = "homelab-worker-1";

fn node() -> NodeName {
    NodeName::new(NODE).unwrap()
}

fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
        .to_string()
}

fn pod(namespace: &str, name: &str, owner: Option<(&str, &str)>, extra: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": "0b4c", "labels": {}},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox"}], "volumes": []},
        "status": {"phase": "Running"}
    });
    if let Some((kind, owner_name)) = owner {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": "9f1e",
            "controller": true, "blockOwnerDeletion": true
        }]);
    }
    merge(&mut pod, extra);
    pod
}

fn merge(target: &mut Value, extra: Value) {
    match (target, extra) {
        (Value::Object(target), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, extra) => *target = extra,
    }
}

/// The pods of the examples: one of each kind drain treats differently.
fn pods() -> Vec<Value> {
    vec![
        pod(
            "kube-system",
            "svclb-traefik-x7k2p",
            Some(("DaemonSet", "svclb-traefik")),
            json!({}),
        ),
        pod(
            "kube-system",
            "kube-vip-homelab-worker-1",
            Some(("Node", NODE)),
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "3c1f", "kubernetes.io/config.source": "file"}}}),
        ),
        pod("default", "debug-shell", None, json!({})),
        pod(
            "default",
            "cache-5d8f7-abcde",
            Some(("ReplicaSet", "cache-5d8f7")),
            json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}),
        ),
        pod(
            "default",
            "web-6b9c4-qwert",
            Some(("ReplicaSet", "web-6b9c4")),
            json!({"metadata": {"labels": {"app": "web"}}}),
        ),
        pod(
            "db",
            "postgres-0",
            Some(("StatefulSet", "postgres")),
            json!({
                "metadata": {"labels": {"app": "postgres", "tier": "db"}},
                "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-postgres-0"}}]}
            }),
        ),
        pod(
            "default",
            "migrate-h8s9d",
            None,
            json!({"status": {"phase": "Succeeded"}, "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}]}}),
        ),
    ]
}

fn pdbs() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "postgres", "namespace": "db"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "postgres"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]}},
            "status": {"currentHealthy": 3, "desiredHealthy": 3, "disruptionsAllowed": 0, "expectedPods": 3, "observedGeneration": 1}
        }),
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3}
        }),
        // Same labels, other namespace: never selects pods of `db`.
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "postgres-elsewhere", "namespace": "other"},
            "spec": {"selector": {"matchLabels": {"app": "postgres"}}},
            "status": {"desiredHealthy": 1, "disruptionsAllowed": 0}
        }),
    ]
}

fn pvcs() -> Vec<Value> {
    vec![json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-postgres-0", "namespace": "db"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "volumeName": "pvc-4e2a", "resources": {"requests": {"storage": "10Gi"}}},
        "status": {"phase": "Bound"}
    })]
}

/// A volume of the local-path provisioner: hostPath, pinned to the node by affinity.
fn local_path_pv(node_name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pvc-4e2a", "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "hostPath": {"path": "/var/lib/rancher/k3s/storage/pvc-4e2a_db_data-postgres-0", "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}]}]}},
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "local-path",
            "claimRef": {"name": "data-postgres-0", "namespace": "db"}
        },
        "status": {"phase": "Bound"}
    })
}

fn objects(pods: Vec<Value>, pvs: Vec<Value>) -> ClusterObjects {
    ClusterObjects::parse(&list(pods), &list(pdbs()), &list(pvcs()), &list(pvs)).unwrap()
}

fn fate<'a>(preflight: &'a Preflight, name: &str) -> &'a PodFate {
    preflight.pods.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn each_kind_of_pod_gets_kubectl_drains_verdict() {
    let objects = objects(pods(), vec![local_path_pv(NODE)]);
    let preflight = preflight(&node(), &objects, DrainFlags::default());
    assert_eq!(preflight.pods.len(), 7);

    let daemon = fate(&preflight, "svclb-traefik-x7k2p");
    assert_eq!(daemon.fate, Fate::Skip);
    assert_eq!(
        daemon.reasons,
        [Reason::DaemonSet {
            name: "svclb-traefik".into()
        }]
    );

    let mirror = fate(&preflight, "kube-vip-homelab-worker-1");
    assert_eq!(
        (mirror.fate, &mirror.reasons[..]),
        (Fate::Skip, &[Reason::Mirror][..])
    );

    let bare = fate(&preflight, "debug-shell");
    assert_eq!(bare.fate, Fate::Refuse);
    assert_eq!(bare.missing_flags(), [Flag::Force]);
    assert_eq!(bare.controller, None);

    let cache = fate(&preflight, "cache-5d8f7-abcde");
    assert_eq!(cache.fate, Fate::Refuse);
    assert_eq!(cache.missing_flags(), [Flag::DeleteEmptydirData]);

    let web = fate(&preflight, "web-6b9c4-qwert");
    assert_eq!(web.fate, Fate::Evict);
    assert!(web.reasons.is_empty(), "{:?}", web.reasons);
    assert_eq!(web.controller.as_deref(), Some("ReplicaSet/web-6b9c4"));

    let postgres = fate(&preflight, "postgres-0");
    assert_eq!(postgres.fate, Fate::Refuse);
    assert_eq!(
        postgres.reasons,
        [
            Reason::LocalVolume {
                claim: "data-postgres-0".into(),
                volume: "pvc-4e2a".into(),
                allowed: false
            },
            Reason::PdbBlocked {
                pdb: "postgres".into(),
                desired_healthy: 3
            }
        ]
    );
    assert_eq!(postgres.missing_flags(), [Flag::AllowLocalVolumes]);

    // A finished pod is deleted whatever its controller or volumes (kubectl's rule).
    let finished = fate(&preflight, "migrate-h8s9d");
    assert_eq!(
        (finished.fate, &finished.reasons[..]),
        (Fate::Evict, &[Reason::Finished][..])
    );
}

#[test]
fn the_flags_turn_refusals_into_evictions() {
    let objects = objects(pods(), vec![local_path_pv(NODE)]);
    let all = DrainFlags {
        force: true,
        delete_emptydir_data: true,
        allow_local_volumes: true,
    };
    let preflight = preflight(&node(), &objects, all);
    assert!(preflight.refusal().is_none());
    assert!(preflight.refused().is_empty());
    assert_eq!(fate(&preflight, "debug-shell").fate, Fate::Evict);
    assert_eq!(
        fate(&preflight, "debug-shell").reasons,
        [Reason::Unmanaged { allowed: true }]
    );
    assert_eq!(fate(&preflight, "cache-5d8f7-abcde").fate, Fate::Evict);
    assert_eq!(fate(&preflight, "postgres-0").fate, Fate::Evict);
    // DaemonSet and mirror pods stay skipped whatever the flags.
    assert_eq!(fate(&preflight, "svclb-traefik-x7k2p").fate, Fate::Skip);

    // Each flag lifts only its own refusal.
    let force_only = preflight_with(
        &objects,
        DrainFlags {
            force: true,
            ..DrainFlags::default()
        },
    );
    assert_eq!(fate(&force_only, "debug-shell").fate, Fate::Evict);
    assert_eq!(fate(&force_only, "cache-5d8f7-abcde").fate, Fate::Refuse);
    assert_eq!(fate(&force_only, "postgres-0").fate, Fate::Refuse);
}

fn preflight_with(objects: &ClusterObjects, flags: DrainFlags) -> Preflight {
    preflight(&node(), objects, flags)
}

#[test]
fn a_bare_pod_with_an_empty_dir_needs_both_flags() {
    let bare = pod(
        "default",
        "scratch",
        None,
        json!({"spec": {"volumes": [{"name": "a", "emptyDir": {"medium": "Memory"}}, {"name": "b", "emptyDir": {}}]}}),
    );
    let objects = objects(vec![bare], vec![]);
    let preflight = preflight_with(&objects, DrainFlags::default());
    assert_eq!(
        preflight.pods[0].missing_flags(),
        [Flag::Force, Flag::DeleteEmptydirData]
    );
    let Some(DrainError::Refused { pods, .. }) = preflight.refusal() else {
        panic!("refused");
    };
    assert_eq!(
        pods,
        "  default/scratch: needs --force --delete-emptydir-data"
    );
}

#[test]
fn volumes_of_other_nodes_and_network_volumes_do_not_refuse() {
    // The same claim bound to a volume pinned to another node (the pod would not be here, but
    // the rule must name this node), and a network volume without affinity.
    let objects_elsewhere = objects(pods(), vec![local_path_pv("homelab-worker-2")]);
    let preflight = preflight_with(&objects_elsewhere, DrainFlags::default());
    assert_eq!(
        fate(&preflight, "postgres-0").reasons,
        [Reason::PdbBlocked {
            pdb: "postgres".into(),
            desired_healthy: 3
        }]
    );
    let nfs = json!({
        "metadata": {"name": "pvc-4e2a"},
        "spec": {"nfs": {"server": "10.0.0.5", "path": "/export"}, "storageClassName": "nfs-client"}
    });
    let preflight = preflight_with(&objects(pods(), vec![nfs]), DrainFlags::default());
    assert_eq!(fate(&preflight, "postgres-0").fate, Fate::Evict);
}

#[test]
fn a_local_volume_and_an_ephemeral_claim_count_as_bound_to_the_node() {
    let local = json!({
        "metadata": {"name": "local-pv-1"},
        "spec": {
            "local": {"path": "/mnt/disks/ssd1"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["homelab-worker-1"]}]}]}}
        }
    });
    let ephemeral_pod = pod(
        "default",
        "builder-1",
        Some(("Job", "builder")),
        json!({"spec": {"volumes": [{"name": "work", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "local"}}}}]}}),
    );
    let claim = json!({
        "metadata": {"name": "builder-1-work", "namespace": "default"},
        "spec": {"volumeName": "local-pv-1"}
    });
    let objects = ClusterObjects::parse(
        &list(vec![ephemeral_pod]),
        &list(vec![]),
        &list(vec![claim]),
        &list(vec![local]),
    )
    .unwrap();
    let preflight = preflight_with(&objects, DrainFlags::default());
    assert_eq!(
        preflight.pods[0].reasons,
        [Reason::LocalVolume {
            claim: "builder-1-work".into(),
            volume: "local-pv-1".into(),
            allowed: false
        }]
    );
}

#[test]
fn pdb_selectors_follow_label_selector_rules() {
    let pdb = |name: &str, selector: Value, allowed: i64| {
        json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector},
            "status": {"disruptionsAllowed": allowed, "desiredHealthy": 2}
        })
    };
    let labelled = pod(
        "default",
        "api-1",
        Some(("ReplicaSet", "api-1")),
        json!({"metadata": {"labels": {"app": "api", "track": "stable"}}}),
    );
    let pdbs = vec![
        pdb(
            "exists",
            json!({"matchExpressions": [{"key": "track", "operator": "Exists"}]}),
            0,
        ),
        pdb(
            "not-in",
            json!({"matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}]}),
            0,
        ),
        pdb(
            "absent",
            json!({"matchExpressions": [{"key": "track", "operator": "DoesNotExist"}]}),
            0,
        ),
        pdb("other-app", json!({"matchLabels": {"app": "web"}}), 0),
        pdb("everything", json!({}), 0),
        pdb("room-left", json!({"matchLabels": {"app": "api"}}), 1),
        json!({"metadata": {"name": "no-selector", "namespace": "default"}, "spec": {}, "status": {"disruptionsAllowed": 0}}),
    ];
    let objects = ClusterObjects::parse(
        &list(vec![labelled]),
        &list(pdbs),
        &list(vec![]),
        &list(vec![]),
    )
    .unwrap();
    let preflight = preflight_with(&objects, DrainFlags::default());
    let blocked: Vec<&str> = preflight.pods[0]
        .reasons
        .iter()
        .map(|reason| match reason {
            Reason::PdbBlocked { pdb, .. } => pdb.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(blocked, ["exists", "not-in", "everything"]);
    // A PDB does not refuse: kubectl retries the eviction until its timeout.
    assert_eq!(preflight.pods[0].fate, Fate::Evict);
}

#[test]
fn the_table_names_each_pod_its_fate_and_why() {
    let objects = objects(pods(), vec![local_path_pv(NODE)]);
    let text = preflight(&node(), &objects, DrainFlags::default()).to_string();
    let expected = "\
NAMESPACE    POD                        CONTROLLER               FATE    WHY
db           postgres-0                 StatefulSet/postgres     refuse  will not reschedule: volume pvc-4e2a (claim data-postgres-0) is bound to this node (needs --allow-local-volumes); blocked by PDB postgres needing 3 healthy
default      cache-5d8f7-abcde          ReplicaSet/cache-5d8f7   refuse  emptyDir scratch (needs --delete-emptydir-data)
default      debug-shell                -                        refuse  no controller (needs --force)
default      migrate-h8s9d              -                        evict   finished
default      web-6b9c4-qwert            ReplicaSet/web-6b9c4     evict
kube-system  kube-vip-homelab-worker-1  Node/homelab-worker-1    skip    mirror pod
kube-system  svclb-traefik-x7k2p        DaemonSet/svclb-traefik  skip    DaemonSet svclb-traefik
";
    assert_eq!(text, expected);
    let empty = preflight(&node(), &ClusterObjects::default(), DrainFlags::default());
    assert_eq!(empty.to_string(), "no pods on homelab-worker-1\n");
}

#[test]
fn only_pods_still_moved_count_as_left_behind() {
    let objects = objects(pods(), vec![local_path_pv(NODE)]);
    let preflight = preflight(&node(), &objects, DrainFlags::default());
    let left = preflight.still_on_node(&preflight.pods);
    assert_eq!(
        left,
        [
            "db/postgres-0",
            "default/cache-5d8f7-abcde",
            "default/debug-shell",
            "default/migrate-h8s9d",
            "default/web-6b9c4-qwert"
        ]
    );
}

#[test]
fn garbage_is_a_parse_error_naming_the_command() {
    let error = ClusterObjects::parse("{}", "not json", "{}", "{}").unwrap_err();
    assert!(error.to_string().contains("get pdb -A -o json"), "{error}");
    // `{}` is an empty list (kubectl prints `items: []`, but nothing else may be assumed).
    assert!(ClusterObjects::parse("{}", "{}", "{}", "{}").is_ok());
}

#[test]
fn node_names_are_rfc_1123_subdomains() {
    for good in ["homelab-worker-1", "a", "node.example.com", "1-2"] {
        assert!(NodeName::new(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "-x",
        "x-",
        "Worker",
        "a..b",
        "a b",
        "$(reboot)",
        "x;y",
        ".a",
        &"a".repeat(254),
    ] {
        assert!(NodeName::new(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn commands_quote_values_and_carry_exactly_the_flags() {
    let node = node();
    assert_eq!(
        list_pods_command(&node),
        "k3s kubectl get pods -A -o json --field-selector spec.nodeName=homelab-worker-1"
    );
    let ten_minutes = Duration::from_secs(600);
    assert_eq!(
        drain_command(&node, DrainFlags::default(), ten_minutes),
        "k3s kubectl drain homelab-worker-1 --ignore-daemonsets --timeout 600s"
    );
    // --allow-local-volumes is provision's own: kubectl never sees it.
    assert_eq!(
        drain_command(
            &node,
            DrainFlags {
                force: true,
                delete_emptydir_data: true,
                allow_local_volumes: true
            },
            Duration::from_secs(90)
        ),
        "k3s kubectl drain homelab-worker-1 --ignore-daemonsets --force --delete-emptydir-data --timeout 90s"
    );
    assert_eq!(
        drain_command(
            &node,
            DrainFlags {
                delete_emptydir_data: true,
                ..DrainFlags::default()
            },
            ten_minutes
        ),
        "k3s kubectl drain homelab-worker-1 --ignore-daemonsets --delete-emptydir-data --timeout 600s"
    );
    assert_eq!(
        uncordon_command(&node),
        "k3s kubectl uncordon homelab-worker-1"
    );
    // The builders quote even what validation already made safe.
    let dotted = NodeName::new("n1.example.com").unwrap();
    assert!(list_pods_command(&dotted).ends_with("spec.nodeName=n1.example.com"));
    assert_eq!(
        crate::nodeprep::shell::quote("spec.nodeName=a b"),
        "'spec.nodeName=a b'"
    );
}

#[test]
fn node_states_read_readiness_and_cordons() {
    let nodes = json!({"items": [
        {"metadata": {"name": "s1"}, "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"name": "s2"}, "spec": {}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    ]});
    let states = parse_node_states(&nodes.to_string()).unwrap();
    assert_eq!(
        states,
        [
            NodeState {
                name: "s1".into(),
                ready: true,
                unschedulable: true
            },
            NodeState {
                name: "s2".into(),
                ready: false,
                unschedulable: false
            }
        ]
    );
}
