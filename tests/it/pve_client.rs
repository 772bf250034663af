//! The Proxmox client over real HTTPS on loopback, against a small scripted server (axum +
//! rustls + an rcgen certificate): auth headers, ticket login and CSRF, TLS trust modes,
//! error mapping, retries, concurrency bounds and task waiting.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use provision::pve::types::{PciMapping, UploadContent};
use provision::pve::{
    Auth, ClientConfig, NodeName, PveApi, PveClient, PveError, RetryPolicy, Secret, TlsMode, Upid,
    VmId, WaitOptions, fingerprint_of, wait_for_task,
};
use serde_json::{Value, json};

const TOKEN_ID: &str = "provision@pve!ci";
const TOKEN_SECRET: &str = "5f1c7e2a-0000-4000-8000-123456789abc";
const PASSWORD: &str = "correct horse";

/// One request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    logins: AtomicUsize,
    valid_tickets: Mutex<Vec<String>>,
    clone_lock_failures_left: AtomicUsize,
    slow_posts: AtomicBool,
    slow_gets_left: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    task_polls: Mutex<HashMap<String, usize>>,
}

struct TestServer {
    addr: SocketAddr,
    fingerprint: String,
    ca_pem: String,
    shared: Arc<Shared>,
}

impl TestServer {
    async fn start() -> TestServer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "Proxmox Virtual Environment test CA",
        );
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let fingerprint = fingerprint_of(leaf.der());
        let tls = axum_server::tls_rustls::RustlsConfig::from_der(
            vec![leaf.der().to_vec()],
            leaf_key.serialize_der(),
        )
        .await
        .unwrap();

        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(async move {
            server.serve(app.into_make_service()).await.unwrap();
        });
        TestServer {
            addr,
            fingerprint,
            ca_pem: ca_cert.pem(),
            shared,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn config(&self, auth: Auth) -> ClientConfig {
        let mut config = ClientConfig::new(
            self.endpoint(),
            auth,
            TlsMode::Fingerprint(self.fingerprint.clone()),
        );
        config.retry = RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_attempts: 6,
        };
        config
    }

    fn client(&self, auth: Auth) -> PveClient {
        PveClient::new(self.config(auth)).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn seen_at(&self, method: &str, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.method == method && seen.path == format!("/api2/json{path}"))
            .collect()
    }
}

fn token_auth() -> Auth {
    Auth::ApiToken {
        user_realm_tokenid: TOKEN_ID.to_owned(),
        secret: Secret::new(TOKEN_SECRET),
    }
}

fn ticket_auth() -> Auth {
    Auth::Ticket {
        username: "root@pam".to_owned(),
        password: Secret::new(PASSWORD),
    }
}

fn data(value: Value) -> Response {
    (StatusCode::OK, axum::Json(json!({ "data": value }))).into_response()
}

/// An error the way pveproxy sends it: the message in the reason phrase, `data: null`.
fn proxmox_error(status: u16, message: &str) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "data": null })),
    )
        .into_response();
    response.extensions_mut().insert(
        hyper::ext::ReasonPhrase::try_from(message.replace('\n', " ").into_bytes()).unwrap(),
    );
    response
}

fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&shared);
    let path = uri.path().to_owned();
    shared.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let Some(api_path) = path.strip_prefix("/api2/json") else {
        return proxmox_error(404, "not found");
    };

    if method == Method::POST && api_path == "/access/ticket" {
        let form = parse_form(&body);
        if form.get("username").map(String::as_str) == Some("root@pam")
            && form.get("password").map(String::as_str) == Some(PASSWORD)
        {
            let n = shared.logins.fetch_add(1, Ordering::SeqCst) + 1;
            let ticket = format!("PVE:root@pam:6600000{n}::c2lnbmF0dXJl+/=");
            shared.valid_tickets.lock().unwrap().push(ticket.clone());
            return data(json!({
                "ticket": ticket,
                "CSRFPreventionToken": format!("6600000{n}:csrf{n}"),
                "username": "root@pam",
            }));
        }
        return proxmox_error(401, "authentication failure");
    }

    // Authentication, as pveproxy checks it.
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let cookie = headers
        .get("cookie")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !authorization.is_empty() {
        if authorization != format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}") {
            return proxmox_error(401, "invalid token value!");
        }
    } else if let Some(ticket) = cookie.strip_prefix("PVEAuthCookie=") {
        if !shared
            .valid_tickets
            .lock()
            .unwrap()
            .iter()
            .any(|known| known == ticket)
        {
            return proxmox_error(401, "authentication failure");
        }
        if method != Method::GET {
            let stamp = ticket.split(':').nth(2).unwrap_or("");
            let expected = format!("{stamp}:csrf{}", stamp.get(7..).unwrap_or(""));
            let csrf = headers
                .get("csrfpreventiontoken")
                .and_then(|value| value.to_str().ok());
            if csrf != Some(expected.as_str()) {
                return proxmox_error(401, "Permission denied - invalid csrf token");
            }
        }
    } else {
        return proxmox_error(401, "No ticket");
    }

    let segments: Vec<&str> = api_path.trim_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["version"]) => {
            if shared
                .slow_gets_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            data(json!({"version": "9.1.1", "release": "9.1", "repoid": "42fb6fb7"}))
        }
        ("GET", ["nodes", _node, "status"]) => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            data(json!({
                "cpuinfo": {"cpus": 128, "cores": 32, "sockets": 2, "model": "AMD EPYC 7543"},
                "memory": {"total": 1_081_000_000_000u64, "used": 10, "free": 1_080_999_999_990u64}
            }))
        }
        ("POST", ["pools"]) => data(Value::Null),
        ("POST", ["nodes", _node, "qemu"]) => {
            if shared.slow_posts.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let form = parse_form(&body);
            if form.keys().any(|key| key.starts_with("hostpci")) {
                let mut errors = serde_json::Map::new();
                errors.insert(
                    "hostpci0".to_owned(),
                    json!("only root can set 'hostpci0' config for non-mapped devices\n"),
                );
                let mut response = (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"data": null, "errors": errors})),
                )
                    .into_response();
                response
                    .extensions_mut()
                    .insert(hyper::ext::ReasonPhrase::from_static(
                        b"Parameter verification failed.",
                    ));
                return response;
            }
            data(json!(
                "UPID:pve1:00001234:00005678:66000001:qmcreate:120:root@pam:"
            ))
        }
        ("POST", ["nodes", _node, "qemu", "9000", "clone"]) => {
            if shared
                .clone_lock_failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return proxmox_error(
                    500,
                    "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout",
                );
            }
            data(json!(
                "UPID:pve1:00001235:00005679:66000002:qmclone:9000:root@pam:"
            ))
        }
        ("POST", ["nodes", _node, "qemu", vmid, "status", "start"]) => proxmox_error(
            403,
            &format!("Permission check failed (/vms/{vmid}, VM.PowerMgmt)"),
        ),
        ("GET", ["nodes", _node, "qemu", "120", "config"]) => data(json!({
            "cores": 16, "memory": "65536", "machine": "q35", "balloon": 0,
            "hostpci0": "mapping=a100-0,pcie=1", "digest": "abc"
        })),
        ("GET", ["nodes", _node, "qemu", "404", "config"]) => proxmox_error(
            500,
            "Configuration file 'nodes/pve1/qemu-server/404.conf' does not exist",
        ),
        ("POST", ["nodes", _node, "storage", "local", "upload"]) => data(json!(
            "UPID:pve1:00001236:0000567a:66000003:imgcopy::root@pam:"
        )),
        ("POST", ["cluster", "mapping", "pci"]) => data(Value::Null),
        ("DELETE", ["nodes", _node, "qemu", vmid]) => data(json!(format!(
            "UPID:pve1:0000123a:0000567e:66000007:qmdestroy:{vmid}:root@pam:"
        ))),
        ("GET", ["cluster", "nextid"]) => {
            if uri.query().is_some_and(|query| query.contains("vmid=120")) {
                let mut response = (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"data": null, "errors": {"vmid": "VM 120 already exists"}})),
                )
                    .into_response();
                response
                    .extensions_mut()
                    .insert(hyper::ext::ReasonPhrase::from_static(
                        b"Parameter verification failed.",
                    ));
                return response;
            }
            data(json!("121"))
        }
        ("GET", ["nodes", node, "tasks", upid, "status"]) => {
            let upid = percent_encoding::percent_decode_str(upid)
                .decode_utf8_lossy()
                .into_owned();
            let polls = {
                let mut polls = shared.task_polls.lock().unwrap();
                let count = polls.entry(upid.clone()).or_insert(0);
                *count += 1;
                *count
            };
            let kind = upid.split(':').nth(5).unwrap_or("").to_owned();
            let running = kind == "hang" || polls < 3;
            let exitstatus = match kind.as_str() {
                "qmstart" => "start failed: QEMU exited with code 1",
                "qmclone" => {
                    "clone failed: can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"
                }
                _ => "OK",
            };
            let mut status = json!({
                "upid": upid, "node": node, "type": kind, "id": "120",
                "starttime": 1_720_000_000u64, "pid": 1234,
                "status": if running { "running" } else { "stopped" },
            });
            if !running {
                status["exitstatus"] = json!(exitstatus);
            }
            data(status)
        }
        ("GET", ["nodes", _node, "tasks", _upid, "log"]) => {
            let query: BTreeMap<String, String> =
                serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap();
            let start: usize = query.get("start").map_or(0, |s| s.parse().unwrap());
            let limit: usize = query.get("limit").map_or(50, |s| s.parse().unwrap());
            let total = 40;
            let lines: Vec<Value> = (start..total.min(start + limit))
                .map(|n| {
                    let text = if n == total - 1 {
                        "TASK ERROR: start failed: QEMU exited with code 1".to_owned()
                    } else {
                        format!("log line {n}")
                    };
                    json!({"n": n + 1, "t": text})
                })
                .collect();
            (
                StatusCode::OK,
                axum::Json(json!({"data": lines, "total": total})),
            )
                .into_response()
        }
        _ => proxmox_error(
            501,
            &format!("Method '{method} {api_path}' not implemented"),
        ),
    }
}

fn node() -> NodeName {
    NodeName("pve1".to_owned())
}

#[tokio::test]
async fn token_header_is_sent() {
    let server = TestServer::start().await;
    let version = server.client(token_auth()).version().await.unwrap();
    assert_eq!(version.release, "9.1");
    let seen = server.seen_at("GET", "/version");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}").as_str())
    );
    assert!(!seen[0].headers.contains_key("csrfpreventiontoken"));
}

#[tokio::test]
async fn ticket_login_sends_cookie_and_csrf_on_writes() {
    let server = TestServer::start().await;
    let client = server.client(ticket_auth());
    client.version().await.unwrap();
    client
        .pool_create("gpu", Some("GPU cluster"))
        .await
        .unwrap();
    assert_eq!(server.shared.logins.load(Ordering::SeqCst), 1);

    let login = server.seen_at("POST", "/access/ticket");
    assert_eq!(login.len(), 1);
    let form = parse_form(&login[0].body);
    assert_eq!(form["username"], "root@pam");

    let get = &server.seen_at("GET", "/version")[0];
    assert!(get.headers["cookie"].starts_with("PVEAuthCookie=PVE:root@pam:"));
    assert!(!get.headers.contains_key("csrfpreventiontoken"));
    let post = &server.seen_at("POST", "/pools")[0];
    assert_eq!(post.headers["csrfpreventiontoken"], "66000001:csrf1");
    assert_eq!(parse_form(&post.body)["poolid"], "gpu");
}

#[tokio::test]
async fn expired_ticket_is_renewed_once() {
    let server = TestServer::start().await;
    let client = server.client(ticket_auth());
    client.version().await.unwrap();
    // The server forgets every ticket (as after the 2 h expiry).
    server.shared.valid_tickets.lock().unwrap().clear();
    client.version().await.unwrap();
    assert_eq!(server.shared.logins.load(Ordering::SeqCst), 2);

    // Renewal by age: with a zero renewal period every request logs in first.
    let mut config = server.config(ticket_auth());
    config.ticket_renew_after = Duration::ZERO;
    let renewing = PveClient::new(config).unwrap();
    renewing.version().await.unwrap();
    renewing.version().await.unwrap();
    assert_eq!(server.shared.logins.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wrong_password_is_a_clear_error() {
    let server = TestServer::start().await;
    let client = server.client(Auth::Ticket {
        username: "root@pam".to_owned(),
        password: Secret::new("pa55-guess-xyz"),
    });
    let error = client.version().await.unwrap_err();
    assert!(matches!(error, PveError::Unauthorized { .. }), "{error:?}");
    assert!(error.to_string().contains("root@pam"), "{error}");
    assert!(!format!("{error} {error:?}").contains("pa55-guess-xyz"));
    // Not retried: one login attempt only.
    assert_eq!(server.seen_at("POST", "/access/ticket").len(), 1);
}

#[tokio::test]
async fn bad_token_is_a_clear_401() {
    let server = TestServer::start().await;
    let client = server.client(Auth::ApiToken {
        user_realm_tokenid: TOKEN_ID.to_owned(),
        secret: Secret::new("not-the-secret"),
    });
    let error = client.version().await.unwrap_err();
    match &error {
        PveError::Unauthorized { message, .. } => {
            assert!(message.contains("invalid token value"), "{message}");
            assert!(message.contains("expired"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.hint().unwrap().contains("PROXMOX_VE_API_TOKEN"));
    assert!(!format!("{error} {error:?}").contains("not-the-secret"));
    assert_eq!(server.seen().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn fingerprint_mismatch_refuses_before_sending_credentials() {
    let server = TestServer::start().await;
    let wrong = "00:".repeat(31) + "00";
    let mut config = server.config(token_auth());
    config.tls = TlsMode::Fingerprint(wrong.clone());
    let error = PveClient::new(config).unwrap().version().await.unwrap_err();
    match &error {
        PveError::FingerprintMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &server.fingerprint);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!error.retryable(true));
    assert!(
        server.seen().is_empty(),
        "the server must not have received any request"
    );
}

#[tokio::test]
async fn fingerprint_pin_accepts_lowercase_without_colons() {
    let server = TestServer::start().await;
    let mut config = server.config(token_auth());
    config.tls = TlsMode::Fingerprint(server.fingerprint.replace(':', "").to_lowercase());
    PveClient::new(config).unwrap().version().await.unwrap();
}

#[tokio::test]
async fn ca_file_mode_trusts_the_ca_and_system_mode_does_not() {
    let server = TestServer::start().await;
    let directory = tempfile::tempdir().unwrap();
    let ca_file = directory.path().join("pve-root-ca.pem");
    std::fs::write(&ca_file, &server.ca_pem).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let mut config = server.config(token_auth());
        config.endpoint = format!("https://{host}:{}/api2/json", server.addr.port());
        config.tls = TlsMode::CaFile(ca_file.clone());
        PveClient::new(config).unwrap().version().await.unwrap();
    }
    assert_eq!(server.seen().len(), 2);

    let mut config = server.config(token_auth());
    config.tls = TlsMode::System;
    config.retry = RetryPolicy::none();
    match PveClient::new(config) {
        // A machine without system roots refuses at construction.
        Err(PveError::Config { .. }) => {}
        Ok(client) => {
            let error = client.version().await.unwrap_err();
            assert!(matches!(error, PveError::NeverSent { .. }), "{error:?}");
        }
        Err(other) => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        server.seen().len(),
        2,
        "untrusted certificate: nothing sent"
    );

    let mut config = server.config(token_auth());
    config.tls = TlsMode::CaFile(directory.path().join("missing.pem"));
    assert!(matches!(
        PveClient::new(config),
        Err(PveError::Config { .. })
    ));
}

#[tokio::test]
async fn insecure_mode_connects() {
    let server = TestServer::start().await;
    let mut config = server.config(token_auth());
    config.tls = TlsMode::Insecure;
    PveClient::new(config).unwrap().version().await.unwrap();
}

#[tokio::test]
async fn refused_connection_is_never_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut config = ClientConfig::new(
        format!("https://127.0.0.1:{port}"),
        token_auth(),
        TlsMode::Insecure,
    );
    config.retry = RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_attempts: 2,
    };
    let error = PveClient::new(config)
        .unwrap()
        .vm_create(&node(), &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(error, PveError::NeverSent { .. }), "{error:?}");
    assert!(
        error.retryable(false),
        "never sent: even a POST may be repeated"
    );
}

#[tokio::test]
async fn lock_timeout_is_retried_with_backoff() {
    let server = TestServer::start().await;
    server
        .shared
        .clone_lock_failures_left
        .store(2, Ordering::SeqCst);
    let params: BTreeMap<String, String> = [("newid".to_owned(), "121".to_owned())].into();
    let upid = server
        .client(token_auth())
        .vm_clone(&node(), VmId(9000), &params)
        .await
        .unwrap();
    assert_eq!(upid.node(), Some("pve1"));
    assert_eq!(
        server.seen_at("POST", "/nodes/pve1/qemu/9000/clone").len(),
        3
    );

    // More failures than attempts: the lock timeout surfaces, read from the reason phrase.
    server
        .shared
        .clone_lock_failures_left
        .store(100, Ordering::SeqCst);
    let error = server
        .client(token_auth())
        .vm_clone(&node(), VmId(9000), &params)
        .await
        .unwrap_err();
    match error {
        PveError::LockTimeout { path, .. } => {
            assert_eq!(path, "/var/lock/qemu-server/lock-9000.conf");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        server.seen_at("POST", "/nodes/pve1/qemu/9000/clone").len(),
        3 + 6
    );
}

#[tokio::test]
async fn post_with_unknown_outcome_is_not_repeated_but_get_is() {
    let server = TestServer::start().await;
    server.shared.slow_posts.store(true, Ordering::SeqCst);
    let mut config = server.config(token_auth());
    config.request_timeout = Duration::from_millis(300);
    let client = PveClient::new(config).unwrap();
    let params: BTreeMap<String, String> = [("vmid".to_owned(), "120".to_owned())].into();
    let error = client.vm_create(&node(), &params).await.unwrap_err();
    assert!(
        matches!(error, PveError::OutcomeUnknown { .. }),
        "{error:?}"
    );
    assert!(error.hint().unwrap().contains("re-read") || error.hint().unwrap().contains("status"));
    assert_eq!(server.seen_at("POST", "/nodes/pve1/qemu").len(), 1);

    server.shared.slow_gets_left.store(1, Ordering::SeqCst);
    client.version().await.unwrap();
    assert_eq!(server.seen_at("GET", "/version").len(), 2);
}

#[tokio::test]
async fn bad_request_shows_proxmox_errors_map() {
    let server = TestServer::start().await;
    let params: BTreeMap<String, String> = [
        ("vmid".to_owned(), "120".to_owned()),
        ("hostpci0".to_owned(), "0000:41:00,pcie=1".to_owned()),
    ]
    .into();
    let error = server
        .client(token_auth())
        .vm_create(&node(), &params)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("Parameter verification failed."), "{text}");
    assert!(
        text.contains("hostpci0: only root can set 'hostpci0' config for non-mapped devices"),
        "{text}"
    );
    match &error {
        PveError::BadRequest { errors, .. } => assert!(errors.contains_key("hostpci0")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(server.seen_at("POST", "/nodes/pve1/qemu").len(), 1);
}

#[tokio::test]
async fn forbidden_names_path_and_privilege() {
    let server = TestServer::start().await;
    let error = server
        .client(token_auth())
        .vm_start(&node(), VmId(120))
        .await
        .unwrap_err();
    assert!(matches!(error, PveError::Forbidden { .. }), "{error:?}");
    assert!(
        error.to_string().contains("VM.PowerMgmt on /vms/120"),
        "{error}"
    );
    assert!(error.hint().unwrap().contains("VM.PowerMgmt on /vms/120"));
}

#[tokio::test]
async fn nextid_check_of_a_taken_id_is_clear() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    assert_eq!(client.next_id(None).await.unwrap(), VmId(121));
    let error = client.next_id(Some(VmId(120))).await.unwrap_err();
    assert!(
        error.to_string().contains("vmid: VM 120 already exists"),
        "{error}"
    );
}

#[tokio::test]
async fn vm_config_values_are_strings_and_missing_vm_is_not_found() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let config = client.vm_config(&node(), VmId(120)).await.unwrap();
    assert_eq!(config["cores"], "16");
    assert_eq!(config["balloon"], "0");
    assert_eq!(config["hostpci0"], "mapping=a100-0,pcie=1");
    let error = client.vm_config(&node(), VmId(404)).await.unwrap_err();
    assert!(matches!(error, PveError::NotFound { .. }), "{error:?}");
    assert_eq!(
        server.seen_at("GET", "/nodes/pve1/qemu/404/config").len(),
        1
    );
}

#[tokio::test]
async fn upload_is_multipart_with_sha256() {
    let server = TestServer::start().await;
    let payload = b"CD001 cidata".to_vec();
    let checksum = "a".repeat(64);
    server
        .client(token_auth())
        .upload(
            &node(),
            "local",
            UploadContent::Iso,
            "provision-w1.iso",
            payload.clone(),
            &checksum,
        )
        .await
        .unwrap();
    let seen = &server.seen_at("POST", "/nodes/pve1/storage/local/upload")[0];
    let content_type = &seen.headers["content-type"];
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap();
    let body = String::from_utf8_lossy(&seen.body);
    let field = |name: &str| {
        body.split(&format!("--{boundary}"))
            .find(|part| part.contains(&format!("name=\"{name}\"")))
            .map(|part| part.split("\r\n\r\n").nth(1).unwrap().trim_end().to_owned())
    };
    assert_eq!(field("content").as_deref(), Some("iso"));
    assert_eq!(field("checksum-algorithm").as_deref(), Some("sha256"));
    assert_eq!(field("checksum").as_deref(), Some(checksum.as_str()));
    assert!(body.contains("filename=\"provision-w1.iso\""));
    assert_eq!(field("filename").as_deref(), Some("CD001 cidata"));
}

#[tokio::test]
async fn pci_mapping_sends_one_map_field_per_node() {
    let server = TestServer::start().await;
    let mapping = PciMapping {
        id: "a100-0".to_owned(),
        description: Some("A100 #0".to_owned()),
        map: vec![
            "node=pve1,path=0000:41:00,id=10de:20b0".to_owned(),
            "node=pve2,path=0000:41:00,id=10de:20b0".to_owned(),
        ],
    };
    server
        .client(token_auth())
        .pci_mapping_create(&mapping)
        .await
        .unwrap();
    let seen = &server.seen_at("POST", "/cluster/mapping/pci")[0];
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&seen.body).unwrap();
    let maps: Vec<&str> = fields
        .iter()
        .filter(|(key, _)| key == "map")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(
        maps,
        mapping.map.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn requests_to_one_node_are_bounded() {
    let server = TestServer::start().await;
    let mut config = server.config(token_auth());
    config.per_node_concurrency = 2;
    let client = Arc::new(PveClient::new(config).unwrap());
    let mut handles = Vec::new();
    for _ in 0..6 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            client.node_status(&node()).await.unwrap()
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(server.seen_at("GET", "/nodes/pve1/status").len(), 6);
    assert!(server.shared.max_in_flight.load(Ordering::SeqCst) <= 2);
}

fn fast_wait() -> WaitOptions {
    WaitOptions {
        timeout: Duration::from_secs(5),
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        poll_scale: 1.0,
        log_lines: 20,
    }
}

#[tokio::test]
async fn wait_for_task_polls_until_ok() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let upid = Upid("UPID:pve1:00001234:00005678:66000001:qmcreate:120:root@pam:".to_owned());
    let status = wait_for_task(&client, &upid, &fast_wait()).await.unwrap();
    assert_eq!(status.exitstatus.as_deref(), Some("OK"));
    assert_eq!(server.shared.task_polls.lock().unwrap()[&upid.0], 3);
}

#[tokio::test]
async fn failed_task_reports_exitstatus_and_log_tail() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let upid = Upid("UPID:pve1:00001237:0000567b:66000004:qmstart:120:root@pam:".to_owned());
    let error = wait_for_task(&client, &upid, &fast_wait())
        .await
        .unwrap_err();
    match &error {
        PveError::TaskFailed {
            exitstatus,
            log_tail,
            ..
        } => {
            assert_eq!(exitstatus, "start failed: QEMU exited with code 1");
            assert_eq!(log_tail.len(), 20);
            assert_eq!(log_tail[0], "log line 20");
            assert_eq!(
                log_tail.last().unwrap(),
                "TASK ERROR: start failed: QEMU exited with code 1"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.hint().unwrap().contains("TASK ERROR"));
}

#[tokio::test]
async fn task_failing_on_a_lock_is_a_lock_timeout() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let upid = Upid("UPID:pve1:00001238:0000567c:66000005:qmclone:9000:root@pam:".to_owned());
    let error = wait_for_task(&client, &upid, &fast_wait())
        .await
        .unwrap_err();
    match &error {
        PveError::LockTimeout { path, .. } => {
            assert_eq!(path, "/var/lock/qemu-server/lock-9000.conf");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.retryable(false));
}

#[tokio::test]
async fn wait_for_task_is_bounded_and_names_the_task() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let upid = Upid("UPID:pve1:00001239:0000567d:66000006:hang:120:root@pam:".to_owned());
    let options = WaitOptions {
        timeout: Duration::from_millis(200),
        ..fast_wait()
    };
    let started = std::time::Instant::now();
    let error = wait_for_task(&client, &upid, &options).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &error {
        PveError::Timeout { what, .. } => {
            assert!(what.contains("hang 120"), "{what}");
            assert!(what.contains(&upid.0), "{what}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn delete_purges_and_destroys_unreferenced_disks() {
    let server = TestServer::start().await;
    let upid = server
        .client(token_auth())
        .vm_delete(&node(), VmId(120))
        .await
        .unwrap();
    assert!(upid.0.contains(":qmdestroy:120:"));
    let seen = &server.seen_at("DELETE", "/nodes/pve1/qemu/120")[0];
    assert_eq!(seen.query, "purge=1&destroy-unreferenced-disks=1");
    assert!(seen.body.is_empty());
}
