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
    VmId, WaitOptions, fingerprint_of, wait_for_task, wait_for_task_on,
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
    /// Answer every request with `302 Found` to this URL.
    redirect_to: Mutex<Option<String>>,
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
    if let Some(target) = shared.redirect_to.lock().unwrap().clone() {
        return (
            StatusCode::FOUND,
            [(axum::http::header::LOCATION, format!("{target}{path}"))],
        )
            .into_response();
    }

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
        // The task list is refused, so a batched waiter must fall back to per-task status.
        ("GET", ["nodes", _node, "tasks"]) => {
            proxmox_error(403, "Permission check failed (/nodes/pve1, Sys.Audit)")
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
                "qmwarn" => "WARNINGS: 2",
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
async fn redirects_are_never_followed_so_credentials_stay_with_the_endpoint() {
    let server = TestServer::start().await;
    let elsewhere = TestServer::start().await;
    *server.shared.redirect_to.lock().unwrap() = Some(elsewhere.endpoint());
    let mut config = server.config(token_auth());
    // The other address is trusted too: only the redirect policy keeps the token from it.
    config.tls = TlsMode::Insecure;
    let error = PveClient::new(config).unwrap().version().await.unwrap_err();
    assert!(
        elsewhere.seen().is_empty(),
        "the redirect was followed: {:?}",
        elsewhere.seen()
    );
    assert_eq!(server.seen().len(), 1, "a redirect is not retried");
    let message = error.to_string();
    assert!(message.contains("302"), "{message}");
    assert!(message.contains(&elsewhere.endpoint()), "{message}");
    assert!(error.hint().unwrap().contains("endpoint"), "{error:?}");
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
        growth: 2.0,
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
async fn task_with_warnings_succeeds_and_every_poll_is_observed() {
    let server = TestServer::start().await;
    let client = server.client(token_auth());
    let upid = Upid("UPID:pve1:0000123a:0000567e:66000007:qmwarn:120:root@pam:".to_owned());
    let polls = std::sync::atomic::AtomicU32::new(0);
    let status = wait_for_task_on(&client, &node(), &upid, &fast_wait(), &|status| {
        assert_eq!(status.upid, upid.0);
        polls.fetch_add(1, Ordering::SeqCst);
    })
    .await
    .unwrap();
    assert_eq!(status.exitstatus.as_deref(), Some("WARNINGS: 2"));
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

/// A node's task poller whose list request is refused (403) asks each task's status instead,
/// and a failed task still reports its exit status and log tail.
#[tokio::test]
async fn batched_waits_fall_back_to_task_status_when_the_list_is_refused() {
    let server = TestServer::start().await;
    let client: Arc<dyn PveApi> = Arc::new(server.client(token_auth()));
    let options = provision::pve::PollOptions {
        initial_interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        ..provision::pve::PollOptions::default()
    };
    let poller = provision::pve::NodeTaskPoller::spawn(Arc::clone(&client), node(), options);
    let ok = Upid("UPID:pve1:00001234:00005678:66000001:qmcreate:120:root@pam:".to_owned());
    let failing = Upid("UPID:pve1:00001237:0000567b:66000004:qmstart:120:root@pam:".to_owned());
    let timeout = Duration::from_secs(10);
    let (ok_status, failed) = tokio::join!(
        poller.wait(client.as_ref(), &ok, timeout, 20),
        poller.wait(client.as_ref(), &failing, timeout, 20),
    );
    assert_eq!(ok_status.unwrap().exitstatus.as_deref(), Some("OK"));
    match failed.unwrap_err() {
        PveError::TaskFailed {
            exitstatus,
            log_tail,
            ..
        } => {
            assert_eq!(exitstatus, "start failed: QEMU exited with code 1");
            assert_eq!(log_tail.len(), 20);
        }
        other => panic!("unexpected {other:?}"),
    }
    // One refused list, then only per-task status requests (three per task).
    assert_eq!(server.seen_at("GET", "/nodes/pve1/tasks").len(), 1);
    let polls = server.shared.task_polls.lock().unwrap().clone();
    assert_eq!(polls[&ok.0], 3);
    assert_eq!(polls[&failing.0], 3);
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

/// The client against the real simulator (`crates/pve-sim`) over HTTPS: auth, every failure
/// mode the simulator reproduces, and a whole session checked against the official schema.
mod simulator {
    use super::*;
    use provision::pve::propstr::{
        Agent, Cpu, Disk, EfiDisk, HostPci, IpConfig, Ipv4Setting, Net, Numa, NumaPolicy,
        PropertyFormat,
    };
    use pve_sim::{Inventory, SimConfig, SimHandle, SimMode, Simulator};

    const SIM_TOKEN: &str = "provision@pve!ci";
    const SIM_SECRET: &str = "5f1c3a6e-8d2b-4c71-9e0a-2b7d4f6a9c13";
    const SIM_ROOT_PASSWORD: &str = "sim-root-password";

    async fn start(mode: SimMode, time_scale: f64) -> SimHandle {
        let mut config = SimConfig::new(Inventory::builtin("pve-a100").unwrap());
        config.time_scale = time_scale;
        config.mode = mode;
        Simulator::start(config).await.unwrap()
    }

    fn client(sim: &SimHandle, auth: Auth) -> PveClient {
        let mut config = ClientConfig::new(
            sim.base_url(),
            auth,
            TlsMode::Fingerprint(sim.fingerprint()),
        );
        config.retry = RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            max_attempts: 8,
        };
        PveClient::new(config).unwrap()
    }

    fn sim_token() -> Auth {
        Auth::ApiToken {
            user_realm_tokenid: SIM_TOKEN.to_owned(),
            secret: Secret::new(SIM_SECRET),
        }
    }

    fn sim_root() -> Auth {
        Auth::Ticket {
            username: "root@pam".to_owned(),
            password: Secret::new(SIM_ROOT_PASSWORD),
        }
    }

    fn sim_wait() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_secs(30),
            initial_interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(100),
            growth: 2.0,
            poll_scale: 1.0,
            log_lines: 20,
        }
    }

    /// The parameters of a GPU worker VM, built with the client's property-string types.
    fn gpu_vm_params(vmid: u32, hostpci: HostPci) -> BTreeMap<String, String> {
        let mut scsi0 = Disk::new("local-lvm:32");
        scsi0.iothread = Some(true);
        scsi0.discard = Some("on".to_owned());
        scsi0.ssd = Some(true);
        let efidisk0 = EfiDisk {
            file: "local-lvm:1".to_owned(),
            efitype: Some("4m".to_owned()),
            pre_enrolled_keys: Some(false),
            format: None,
            extra: Vec::new(),
        };
        let numa0 = Numa {
            cpus: "0-15".parse().unwrap(),
            hostnodes: Some("0".parse().unwrap()),
            memory: Some(65536),
            policy: Some(NumaPolicy::Bind),
            extra: Vec::new(),
        };
        let net0 = Net {
            model: "virtio".to_owned(),
            macaddr: None,
            bridge: Some("vmbr0".to_owned()),
            tag: None,
            firewall: Some(false),
            mtu: None,
            queues: None,
            extra: Vec::new(),
        };
        let ipconfig0 = IpConfig {
            ip: Some(Ipv4Setting::Static("10.0.0.21/24".parse().unwrap())),
            gw: Some("10.0.0.1".parse().unwrap()),
            ip6: None,
            gw6: None,
        };
        let mut cpu = Cpu::host();
        cpu.flags = vec![provision::pve::propstr::CpuFlag {
            enabled: true,
            name: "pdpe1gb".to_owned(),
        }];
        let agent = Agent {
            enabled: true,
            fstrim_cloned_disks: Some(true),
            kind: None,
            extra: Vec::new(),
        };
        [
            ("vmid", vmid.to_string()),
            ("name", format!("gpu-w{vmid}")),
            ("machine", "q35".to_owned()),
            ("bios", "ovmf".to_owned()),
            ("ostype", "l26".to_owned()),
            ("scsihw", "virtio-scsi-single".to_owned()),
            ("efidisk0", efidisk0.render()),
            ("scsi0", scsi0.render()),
            ("ide2", "local-lvm:cloudinit".to_owned()),
            ("sockets", "1".to_owned()),
            ("cores", "16".to_owned()),
            ("memory", "65536".to_owned()),
            ("balloon", "0".to_owned()),
            ("numa", "1".to_owned()),
            ("numa0", numa0.render()),
            ("cpu", cpu.render()),
            ("hostpci0", hostpci.render()),
            ("net0", net0.render()),
            ("ipconfig0", ipconfig0.render()),
            ("agent", agent.render()),
            ("ciuser", "provision".to_owned()),
            ("tags", "provision;gpu".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    async fn create_plain_vm(client: &PveClient, vmid: u32) {
        let params: BTreeMap<String, String> = [
            ("vmid", vmid.to_string()),
            ("name", format!("plain{vmid}")),
            ("memory", "2048".to_owned()),
            ("scsi0", Disk::new("local-lvm:8").render()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let upid = client.vm_create(&node(), &params).await.unwrap();
        wait_for_task(client, &upid, &sim_wait()).await.unwrap();
    }

    #[tokio::test]
    async fn token_auth_against_simulator() {
        let sim = start(SimMode::Auto, 0.01).await;
        let client = client(&sim, sim_token());
        let version = client.version().await.unwrap();
        assert!(version.version.starts_with('9'), "{version:?}");
        let devices = client.pci_devices(&node()).await.unwrap();
        assert_eq!(
            devices
                .iter()
                .filter(|device| device.vendor == "0x10de" && device.class.starts_with("0x0302"))
                .count(),
            8
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn ticket_auth_and_csrf_against_simulator() {
        let sim = start(SimMode::Auto, 0.01).await;
        let client = client(&sim, sim_root());
        client.pool_create("provision-test", None).await.unwrap();
        let pools = client.pools().await.unwrap();
        assert!(pools.iter().any(|pool| pool.poolid == "provision-test"));
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn bad_token_and_pin_mismatch_against_simulator() {
        let sim = start(SimMode::Auto, 0.01).await;
        let bad = client(
            &sim,
            Auth::ApiToken {
                user_realm_tokenid: SIM_TOKEN.to_owned(),
                secret: Secret::new("00000000-0000-0000-0000-000000000000"),
            },
        );
        let error = bad.version().await.unwrap_err();
        assert!(matches!(error, PveError::Unauthorized { .. }), "{error:?}");
        let logged = sim.request_log().len();

        let mut config = ClientConfig::new(
            sim.base_url(),
            sim_token(),
            TlsMode::Fingerprint("AB:".repeat(31) + "AB"),
        );
        config.retry = RetryPolicy::none();
        let error = PveClient::new(config).unwrap().version().await.unwrap_err();
        match &error {
            PveError::FingerprintMismatch { actual, .. } => {
                assert_eq!(actual, &sim.fingerprint());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            sim.request_log().len(),
            logged,
            "nothing reached the simulator"
        );
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn concurrent_clones_retry_lock_timeouts() {
        // A running source is locked exclusively for a clone's whole task (qemu-server
        // `clone_vm`: `lock_config_full($vmid, 1, …)`); full clones take 20 s × 0.004 = 0.08 s,
        // so parallel clones collide: the loser's task fails with the lock timeout, which the
        // client reports as the retryable `LockTimeout`, and a retry gets it done. (Clones of a
        // stopped source share its lock and do not collide.)
        let sim = start(SimMode::Auto, 0.004).await;
        let client = Arc::new(client(&sim, sim_token()));
        create_plain_vm(&client, 9000).await;
        let upid = client.vm_start(&node(), VmId(9000)).await.unwrap();
        wait_for_task(client.as_ref(), &upid, &sim_wait())
            .await
            .unwrap();
        let mut handles = Vec::new();
        for newid in 201..205u32 {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let params: BTreeMap<String, String> =
                    [("newid".to_owned(), newid.to_string())].into();
                let mut lock_errors = 0;
                loop {
                    let upid = client.vm_clone(&node(), VmId(9000), &params).await?;
                    match wait_for_task(client.as_ref(), &upid, &sim_wait()).await {
                        Ok(status) => return Ok::<_, PveError>((status, lock_errors)),
                        Err(error @ PveError::LockTimeout { .. }) if lock_errors < 50 => {
                            assert!(error.retryable(false), "{error:?}");
                            lock_errors += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(error) => return Err(error),
                    }
                }
            }));
        }
        let mut lock_failures = 0;
        for handle in handles {
            lock_failures += handle.await.unwrap().unwrap().1;
        }
        assert!(lock_failures > 0, "the clones should have collided");
        for newid in 201..205 {
            assert!(sim.vm_config(newid).is_some(), "clone {newid} exists");
        }
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn nextid_does_not_reserve_and_collision_is_clear() {
        let sim = start(SimMode::Auto, 0.01).await;
        let client = client(&sim, sim_token());
        let first = client.next_id(None).await.unwrap();
        let second = client.next_id(None).await.unwrap();
        assert_eq!(first, second, "nextid does not reserve");
        create_plain_vm(&client, first.0).await;
        let error = client.next_id(Some(first)).await.unwrap_err();
        assert!(
            matches!(&error, PveError::BadRequest { errors, .. } if errors.contains_key("vmid")),
            "{error:?}"
        );
        let params: BTreeMap<String, String> = [
            ("vmid".to_owned(), first.to_string()),
            ("memory".to_owned(), "1024".to_owned()),
        ]
        .into();
        let error = match client.vm_create(&node(), &params).await {
            Err(error) => error,
            Ok(upid) => wait_for_task(&client, &upid, &sim_wait())
                .await
                .unwrap_err(),
        };
        assert!(!error.retryable(false), "{error:?}");
        assert!(error.to_string().contains("already exists"), "{error}");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn raw_hostpci_from_a_token_names_hostpci0() {
        let sim = start(SimMode::Auto, 0.01).await;
        let token = client(&sim, sim_token());
        let params = gpu_vm_params(130, HostPci::host("0000:41:00"));
        let error = token.vm_create(&node(), &params).await.unwrap_err();
        // Proxmox raises this as a plain error (HTTP 500); the client calls it a permission
        // problem and points at mappings.
        assert!(matches!(error, PveError::Forbidden { .. }), "{error:?}");
        assert!(!error.retryable(false));
        assert!(
            error
                .to_string()
                .contains("only root can set 'hostpci0' config for non-mapped devices"),
            "{error}"
        );
        assert!(error.hint().unwrap().contains("mapping=<id>"));
        // root@pam with a ticket may.
        let root = client(&sim, sim_root());
        let upid = root.vm_create(&node(), &params).await.unwrap();
        wait_for_task(&root, &upid, &sim_wait()).await.unwrap();
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn failed_task_surfaces_exitstatus_and_log() {
        let sim = start(SimMode::Explicit, 0.01).await;
        let client = client(&sim, sim_token());
        let params: BTreeMap<String, String> = [
            ("vmid".to_owned(), "140".to_owned()),
            ("memory".to_owned(), "1024".to_owned()),
        ]
        .into();
        let upid = client.vm_create(&node(), &params).await.unwrap();
        let stepper = sim.stepper();
        let waiter = {
            let upid = upid.clone();
            let client = Arc::new(client);
            let waiting = client.clone();
            (
                tokio::spawn(
                    async move { wait_for_task(waiting.as_ref(), &upid, &sim_wait()).await },
                ),
                client,
            )
        };
        stepper
            .fail(&upid.0, "unable to create VM 140 - storage full")
            .unwrap();
        let error = waiter.0.await.unwrap().unwrap_err();
        match &error {
            PveError::TaskFailed {
                exitstatus,
                log_tail,
                ..
            } => {
                assert!(exitstatus.contains("storage full"), "{exitstatus}");
                assert!(
                    log_tail.iter().any(|line| line.contains("storage full")),
                    "{log_tail:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        sim.shutdown().await;
    }

    /// The official schema, or `None` (with a loud message) when `../shared` is absent.
    #[allow(clippy::print_stderr)]
    fn official_schema() -> Option<Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/pve-api/schema-9.1.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(serde_json::from_str(&text).unwrap()),
            Err(error) => {
                eprintln!(
                    "SKIPPING schema conformance: cannot read {} ({error})",
                    path.display()
                );
                None
            }
        }
    }

    fn schema_route<'a>(nodes: &'a Value, path: &str) -> Option<&'a Value> {
        let wanted: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut stack: Vec<&Value> = nodes.as_array()?.iter().collect();
        while let Some(node) = stack.pop() {
            let route: Vec<&str> = node["path"]
                .as_str()
                .unwrap_or("")
                .trim_matches('/')
                .split('/')
                .collect();
            if route.len() == wanted.len()
                && route
                    .iter()
                    .zip(&wanted)
                    .all(|(pattern, segment)| pattern.starts_with('{') || pattern == segment)
            {
                return Some(node);
            }
            if let Some(children) = node["children"].as_array() {
                stack.extend(children);
            }
        }
        None
    }

    /// Checks one value against a schema property (type, enum, bounds, property-string keys).
    fn check_value(name: &str, property: &Value, value: &str, problems: &mut Vec<String>) {
        if let Some(values) = property["enum"].as_array()
            && !values.iter().any(|allowed| allowed.as_str() == Some(value))
        {
            problems.push(format!("{name}={value}: not in enum {values:?}"));
        }
        match property["type"].as_str() {
            Some("integer") => match value.parse::<i64>() {
                Ok(number) => {
                    if property["minimum"].as_i64().is_some_and(|min| number < min)
                        || property["maximum"].as_i64().is_some_and(|max| number > max)
                    {
                        problems.push(format!("{name}={value}: out of range"));
                    }
                }
                Err(_) => problems.push(format!("{name}={value}: not an integer")),
            },
            Some("number") if value.parse::<f64>().is_err() => {
                problems.push(format!("{name}={value}: not a number"));
            }
            Some("boolean")
                if !matches!(
                    value,
                    "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
                ) =>
            {
                problems.push(format!("{name}={value}: not a boolean"));
            }
            _ => {}
        }
        let Some(format) = property["format"].as_object() else {
            // Named formats (`pve-qm-hostpci`) only list their keys in `typetext`.
            if let (Some(_), Some(typetext)) =
                (property["format"].as_str(), property["typetext"].as_str())
                && typetext.contains('=')
            {
                let keys: Vec<String> = typetext
                    .split('[')
                    .filter_map(|piece| {
                        let piece = piece.trim_start_matches(',');
                        let key: String = piece
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                            .collect();
                        (!key.is_empty() && piece[key.len()..].starts_with('=')).then_some(key)
                    })
                    .collect();
                let has_default = typetext.starts_with("[[");
                for part in value.split(',') {
                    match part.split_once('=') {
                        Some((key, _)) if !keys.iter().any(|known| known == key) => {
                            problems.push(format!("{name}: unknown key {key:?}"));
                        }
                        None if !has_default => {
                            problems.push(format!("{name}: bare value {part:?}"));
                        }
                        _ => {}
                    }
                }
            }
            return;
        };
        for part in value.split(',') {
            match part.split_once('=') {
                Some((key, inner)) => match format.get(key) {
                    Some(inner_property) => {
                        let resolved = inner_property["alias"]
                            .as_str()
                            .and_then(|alias| format.get(alias))
                            .unwrap_or(inner_property);
                        check_value(&format!("{name}.{key}"), resolved, inner, problems);
                    }
                    None => problems.push(format!("{name}: unknown key {key:?}")),
                },
                None => {
                    if !format
                        .values()
                        .any(|p| p["default_key"].as_i64() == Some(1))
                    {
                        problems.push(format!("{name}: bare value {part:?} without default key"));
                    }
                }
            }
        }
    }

    /// Every parameter of a logged request against the official schema.
    fn check_request(schema: &Value, entry: &pve_sim::LoggedRequest) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(route) = schema_route(schema, &entry.path) else {
            return vec![format!("{} {}: no such route", entry.method, entry.path)];
        };
        let info = &route["info"][entry.method.as_str()];
        if info.is_null() {
            return vec![format!(
                "{} {}: method not in schema",
                entry.method, entry.path
            )];
        }
        let properties = &info["parameters"]["properties"];
        for (key, value) in &entry.params {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let indexed = key
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned()
                + "[n]";
            let property = if properties[key.as_str()].is_object() {
                &properties[key.as_str()]
            } else {
                &properties[indexed.as_str()]
            };
            if !property.is_object() {
                problems.push(format!(
                    "{} {}: unknown parameter {key}",
                    entry.method, entry.path
                ));
                continue;
            }
            // Array parameters (mapping `map`) arrive joined; check each entry.
            if property["type"] == "array" {
                for item in text.split(['\n', '\0']) {
                    check_value(key, &property["items"], item, &mut problems);
                }
            } else {
                check_value(key, property, &text, &mut problems);
            }
        }
        problems
    }

    #[tokio::test]
    async fn gpu_session_conforms_to_the_official_schema() {
        let Some(schema) = official_schema() else {
            return;
        };
        let sim = start(SimMode::Auto, 0.01).await;
        let client = client(&sim, sim_token());
        let wait = sim_wait();
        client
            .pci_mapping_create(&PciMapping {
                id: "a100-0".to_owned(),
                description: Some("A100 #0".to_owned()),
                map: vec!["node=pve1,path=0000:41:00,id=10de:20b0,iommugroup=22".to_owned()],
            })
            .await
            .unwrap();
        assert!(
            client
                .pci_mappings()
                .await
                .unwrap()
                .iter()
                .any(|m| m.id == "a100-0")
        );
        let upid = client
            .vm_create(&node(), &gpu_vm_params(150, HostPci::mapping("a100-0")))
            .await
            .unwrap();
        wait_for_task(&client, &upid, &wait).await.unwrap();
        let clone: BTreeMap<String, String> = [
            ("newid".to_owned(), "151".to_owned()),
            ("name".to_owned(), "gpu-w151".to_owned()),
            ("full".to_owned(), "1".to_owned()),
        ]
        .into();
        let upid = client.vm_clone(&node(), VmId(150), &clone).await.unwrap();
        wait_for_task(&client, &upid, &wait).await.unwrap();
        let update: BTreeMap<String, String> = [
            ("delete".to_owned(), "hostpci0".to_owned()),
            ("cores".to_owned(), "8".to_owned()),
        ]
        .into();
        client
            .vm_config_put(&node(), VmId(151), &update)
            .await
            .unwrap();
        // hugepages only from root@pam: a token is refused as Proxmox refuses it, a root ticket
        // (what provision uses for root-only keys beside a token) sets it.
        let hugepages: BTreeMap<String, String> =
            [("hugepages".to_owned(), "1024".to_owned())].into();
        let refused = client
            .vm_config_put(&node(), VmId(150), &hugepages)
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("only root can set 'hugepages' config"),
            "{refused}"
        );
        assert!(
            refused
                .hint()
                .unwrap()
                .contains("PROXMOX_VE_USERNAME=root@pam")
        );
        let root = self::client(&sim, sim_root());
        root.vm_config_put(&node(), VmId(150), &hugepages)
            .await
            .unwrap();
        let config = client.vm_config(&node(), VmId(150)).await.unwrap();
        assert_eq!(config["hugepages"], "1024");
        assert_eq!(config["hostpci0"], "mapping=a100-0,pcie=1");
        assert_eq!(config["machine"], "q35");

        let upid = client.vm_start(&node(), VmId(150)).await.unwrap();
        wait_for_task(&client, &upid, &wait).await.unwrap();
        assert_eq!(
            client.vm_status(&node(), VmId(150)).await.unwrap().status,
            "running"
        );
        // The agent answers once the guest has booted: a bounded wait.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match client.agent_ping(&node(), VmId(150)).await {
                Ok(()) => break,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    assert!(error.to_string().contains("agent"), "{error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("agent never answered: {error}"),
            }
        }
        let interfaces = client
            .agent_network_interfaces(&node(), VmId(150))
            .await
            .unwrap();
        assert!(
            interfaces
                .iter()
                .flat_map(|interface| &interface.ip_addresses)
                .any(|address| address.ip_address == "10.0.0.21"),
            "{interfaces:?}"
        );
        let upid = client.vm_stop(&node(), VmId(150), Some(30)).await.unwrap();
        wait_for_task(&client, &upid, &wait).await.unwrap();
        for vmid in [150, 151] {
            let upid = client.vm_delete(&node(), VmId(vmid)).await.unwrap();
            wait_for_task(&client, &upid, &wait).await.unwrap();
            assert!(sim.vm_config(vmid).is_none());
        }

        let log = sim.request_log();
        assert!(log.len() > 15, "{log:?}");
        // The simulator's validator and this file's independent one must both accept it.
        let mut problems: Vec<String> = log
            .iter()
            .flat_map(|entry| check_request(&schema, entry))
            .collect();
        for entry in &log {
            if let Err(errors) = pve_sim::schema::validate_against_official(
                &schema,
                &entry.method,
                &entry.path,
                &entry.params,
            ) {
                problems.push(format!("{} {}: {errors:?}", entry.method, entry.path));
            }
        }
        assert!(
            problems.is_empty(),
            "schema violations:\n{}",
            problems.join("\n")
        );
        sim.shutdown().await;
    }

    #[test]
    fn schema_checker_can_fail() {
        let Some(schema) = official_schema() else {
            return;
        };
        let request = |params: Value| pve_sim::LoggedRequest {
            method: "POST".to_owned(),
            path: "/nodes/pve1/qemu".to_owned(),
            params: params.as_object().unwrap().clone(),
            status: 200,
        };
        let good = request(json!({"vmid": "120", "hostpci0": "mapping=a100-0,pcie=1"}));
        assert!(check_request(&schema, &good).is_empty());
        for bad in [
            json!({"vmid": "120", "gpu0": "x"}),
            json!({"vmid": "12x"}),
            json!({"vmid": "120", "machine": "q35", "bios": "uefi"}),
            json!({"vmid": "120", "hostpci0": "mapping=a100-0,pcie=1,gpu=1"}),
            json!({"vmid": "120", "numa0": "0-7"}),
        ] {
            assert!(
                !check_request(&schema, &request(bad.clone())).is_empty(),
                "{bad}"
            );
        }
    }

    /// Requests per second the simulator serves on loopback (`scripts/bench-sim.sh`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark: run with scripts/bench-sim.sh"]
    #[allow(clippy::print_stderr)]
    async fn bench_simulator_version_requests_per_second() {
        let sim = start(SimMode::Auto, 1.0).await;
        let client = Arc::new(client(&sim, sim_token()));
        client.version().await.unwrap();
        let total: usize = std::env::var("BENCH_REQUESTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000);

        let started = std::time::Instant::now();
        for _ in 0..total {
            client.version().await.unwrap();
        }
        let sequential = total as f64 / started.elapsed().as_secs_f64();

        let concurrency = 16;
        let started = std::time::Instant::now();
        let mut handles = Vec::new();
        for _ in 0..concurrency {
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..total / concurrency {
                    client.version().await.unwrap();
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let parallel = (total / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "simulator GET /version over HTTPS loopback: {sequential:.0} req/s sequential, \
             {parallel:.0} req/s with {concurrency} concurrent requests ({total} requests per run)"
        );
        sim.shutdown().await;
    }
}
