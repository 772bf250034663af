//! Unit tests of the client: endpoint forms, environment, error mapping, bodies, path segments.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::endpoints::*;
use super::http::*;
use super::*;
use crate::types::VmId;

#[test]
fn endpoint_forms_normalize() {
    for endpoint in [
        "https://pve1.lab:8006",
        "https://pve1.lab:8006/",
        "https://pve1.lab:8006/api2/json",
        "https://pve1.lab:8006/api2/json/",
        "pve1.lab:8006",
        "pve1.lab",
        " https://pve1.lab:8006 ",
    ] {
        assert_eq!(
            normalize_endpoint(endpoint).unwrap(),
            "https://pve1.lab:8006/api2/json",
            "{endpoint}"
        );
    }
    assert_eq!(
        normalize_endpoint("https://proxy.lab/pve/").unwrap(),
        "https://proxy.lab/pve/api2/json"
    );
    assert_eq!(
        normalize_endpoint("https://[::1]:8006").unwrap(),
        "https://[::1]:8006/api2/json"
    );
    assert!(matches!(
        normalize_endpoint("http://pve1:8006"),
        Err(PveError::Config { .. })
    ));
}

#[test]
fn env_without_endpoint_hints_simulate() {
    let error = ClientConfig::from_lookup(|_| None).unwrap_err();
    match &error {
        PveError::Config { hint, .. } => {
            assert_eq!(hint.as_deref(), Some(NO_ENDPOINT_HINT));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(error.hint().as_deref(), Some(NO_ENDPOINT_HINT));
}

#[test]
fn env_reads_token_and_insecure() {
    let vars: BTreeMap<&str, &str> = [
        ("PROXMOX_VE_ENDPOINT", "https://pve1:8006/"),
        ("PROXMOX_VE_API_TOKEN", "provision@pve!ci=s3cr3t"),
        ("PROXMOX_VE_INSECURE", "true"),
    ]
    .into();
    let config = ClientConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
    assert_eq!(config.tls, TlsMode::Insecure);
    assert_eq!(config.auth.identity(), "provision@pve!ci");
    assert!(!format!("{config:?}").contains("s3cr3t"));

    let vars: BTreeMap<&str, &str> = [
        ("PROXMOX_VE_ENDPOINT", "https://pve1:8006/"),
        ("PROXMOX_VE_USERNAME", "root@pam"),
        ("PROXMOX_VE_PASSWORD", "pw"),
    ]
    .into();
    let config = ClientConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
    assert!(config.auth.is_root_ticket());
    assert_eq!(config.tls, TlsMode::System);

    let vars: BTreeMap<&str, &str> = [
        ("PROXMOX_VE_ENDPOINT", "https://pve1:8006/"),
        ("PROXMOX_VE_API_TOKEN", "not-a-token-s3cr3t"),
    ]
    .into();
    let error =
        ClientConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap_err();
    assert!(!error.to_string().contains("s3cr3t"));
}

#[test]
fn bad_request_shows_each_parameter() {
    let error = status_error(
        "https://pve1:8006/api2/json",
        "POST",
        "/nodes/pve1/qemu",
        400,
        "Parameter verification failed.".into(),
        [
            (
                "hostpci0".to_owned(),
                "only root can set 'hostpci0' config for non-mapped devices\n".to_owned(),
            ),
            ("vmid".to_owned(), "VM 120 already exists".to_owned()),
        ]
        .into(),
    );
    let text = error.to_string();
    assert!(
        text.contains("\n  hostpci0: only root can set 'hostpci0' config for non-mapped devices"),
        "{text}"
    );
    assert!(text.contains("\n  vmid: VM 120 already exists"), "{text}");
    assert!(!error.retryable(false));
}

#[test]
fn lock_timeout_is_recognised_and_retryable() {
    let error = status_error(
        "e",
        "POST",
        "/nodes/pve1/qemu/9000/clone",
        500,
        "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout".into(),
        BTreeMap::new(),
    );
    match &error {
        PveError::LockTimeout { path, .. } => {
            assert_eq!(path, "/var/lock/qemu-server/lock-9000.conf");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.retryable(false));
}

#[test]
fn statuses_map_to_variants() {
    let map = |status, message: &str| {
        status_error(
            "e",
            "POST",
            "/nodes/pve1/qemu/120/status/start",
            status,
            message.into(),
            BTreeMap::new(),
        )
    };
    assert!(matches!(
        map(401, "authentication failure"),
        PveError::Unauthorized { .. }
    ));
    let forbidden = map(403, "Permission check failed (/vms/120, VM.PowerMgmt)");
    assert!(
        forbidden.to_string().contains("VM.PowerMgmt on /vms/120"),
        "{forbidden}"
    );
    assert!(matches!(
        map(
            500,
            "Configuration file 'nodes/pve1/qemu-server/120.conf' does not exist"
        ),
        PveError::NotFound { .. }
    ));
    let server = map(500, "VM 120 already exists on node 'pve1'");
    assert!(matches!(server, PveError::Server { status: 500, .. }));
    assert!(!server.retryable(false), "POST 500 is not repeated blindly");
    assert!(server.retryable(true));
    assert!(map(503, "service unavailable").retryable(false));
}

#[test]
fn every_variant_has_a_retry_decision() {
    let never = PveError::NeverSent {
        endpoint: "e".into(),
        message: "refused".into(),
    };
    assert!(never.retryable(false) && never.retryable(true));
    let mismatch = PveError::FingerprintMismatch {
        endpoint: "e".into(),
        expected: "AA".into(),
        actual: "BB".into(),
    };
    assert!(!mismatch.retryable(true));
    assert!(mismatch.hint().unwrap().contains("nothing was sent"));
    let failed = PveError::TaskFailed {
        upid: "UPID:pve1:1:2:3:qmstart:120:root@pam:".into(),
        exitstatus: "start failed".into(),
        log_tail: vec!["a".into(), "TASK ERROR: start failed".into()],
    };
    assert!(!failed.retryable(true));
    assert!(failed.hint().unwrap().contains("TASK ERROR"));
}

#[test]
fn config_values_become_strings() {
    assert_eq!(value_to_string(&serde_json::json!(4)), "4");
    assert_eq!(value_to_string(&serde_json::json!("q35")), "q35");
    assert_eq!(value_to_string(&serde_json::json!(1.5)), "1.5");
    assert_eq!(parse_vmid(&serde_json::json!("101")), Some(VmId(101)));
    assert_eq!(parse_vmid(&serde_json::json!(102)), Some(VmId(102)));
}

#[test]
fn multipart_puts_file_last() {
    let body = multipart_body("b", &[("content", "iso")], "filename", "ci.iso", b"DATA");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("--b\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n")
    );
    assert!(text.contains("name=\"filename\"; filename=\"ci.iso\""));
    assert!(text.ends_with("DATA\r\n--b--\r\n"));
}

#[test]
fn segments_escape_upids_and_volumes() {
    assert_eq!(segment("local:iso/a b.iso"), "local%3Aiso%2Fa%20b.iso");
    assert_eq!(
        segment("UPID:pve1:0001:02:03:qmstart:120:root@pam:"),
        "UPID%3Apve1%3A0001%3A02%3A03%3Aqmstart%3A120%3Aroot%40pam%3A"
    );
}
