//! The reqwest implementation of [`PveApi`]: endpoint, auth, TLS trust, error mapping,
//! retries and per-node concurrency in one place.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::api::PveApi;
use super::auth::{Auth, Secret, TICKET_RENEW_AFTER, TicketSession};
use super::error::PveError;
use super::retry::{ConcurrencyLimits, RetryPolicy, find_lock_timeout, method_is_idempotent};
use super::tls::{MismatchSlot, TlsMode, normalize_fingerprint, rustls_config};
use super::types::{
    ClusterResource, GuestInterface, NetworkInterface, NodeName, NodeStatus, NodeSummary, Params,
    PciDevice, PciMapping, Permissions, PoolSummary, StorageStatus, StorageVolume, TaskStatus,
    Upid, UploadContent, Version, VmId, VmStatus, VolumeId,
};

/// The hint shown when no endpoint is configured at all.
pub const NO_ENDPOINT_HINT: &str =
    "set PROXMOX_VE_ENDPOINT (or endpoint in provision.toml), or add --simulate";

/// Everything needed to talk to one Proxmox VE cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// `https://host:8006`, with or without a trailing `/` or `/api2/json`.
    pub endpoint: String,
    pub auth: Auth,
    pub tls: TlsMode,
    /// Concurrent requests to one Proxmox node (`/nodes/{node}/…`).
    pub per_node_concurrency: usize,
    /// Concurrent requests in total.
    pub global_concurrency: usize,
    /// TCP + TLS connection setup.
    pub connect_timeout: Duration,
    /// One request, from sending to the last byte of the answer.
    pub request_timeout: Duration,
    /// One upload (`…/storage/{storage}/upload`), which carries whole images.
    pub upload_timeout: Duration,
    pub retry: RetryPolicy,
    /// Tickets live 2 h; this is when the client logs in again.
    pub ticket_renew_after: Duration,
}

impl ClientConfig {
    /// A configuration from explicit values (what `provision.toml` resolves to), with the
    /// default limits and timeouts.
    pub fn new(endpoint: impl Into<String>, auth: Auth, tls: TlsMode) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            auth,
            tls,
            per_node_concurrency: 8,
            global_concurrency: 32,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            upload_timeout: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            ticket_renew_after: TICKET_RENEW_AFTER,
        }
    }

    /// From the environment variables the Terraform provider also uses:
    /// `PROXMOX_VE_ENDPOINT`, `PROXMOX_VE_API_TOKEN` (`USER@REALM!TOKENID=SECRET`), or
    /// `PROXMOX_VE_USERNAME` + `PROXMOX_VE_PASSWORD`, and `PROXMOX_VE_INSECURE`.
    pub fn from_env() -> Result<Self, PveError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`ClientConfig::from_env`] over any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, PveError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let endpoint = get("PROXMOX_VE_ENDPOINT").ok_or_else(|| PveError::Config {
            message: "no Proxmox endpoint configured".to_owned(),
            hint: Some(NO_ENDPOINT_HINT.to_owned()),
        })?;
        normalize_endpoint(&endpoint)?;
        let auth = if let Some(token) = get("PROXMOX_VE_API_TOKEN") {
            Auth::parse_api_token(&token).ok_or_else(|| PveError::Config {
                message: "PROXMOX_VE_API_TOKEN is not of the form USER@REALM!TOKENID=SECRET"
                    .to_owned(),
                hint: Some(
                    "e.g. provision@pve!ci=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee (Datacenter → \
                     Permissions → API Tokens)"
                        .to_owned(),
                ),
            })?
        } else {
            match (get("PROXMOX_VE_USERNAME"), get("PROXMOX_VE_PASSWORD")) {
                (Some(username), Some(password)) => Auth::Ticket {
                    username,
                    password: Secret::new(password),
                },
                (Some(_), None) | (None, Some(_)) | (None, None) => {
                    return Err(PveError::Config {
                        message: "no Proxmox credentials configured".to_owned(),
                        hint: Some(
                            "set PROXMOX_VE_API_TOKEN=USER@REALM!TOKENID=SECRET, or both \
                             PROXMOX_VE_USERNAME and PROXMOX_VE_PASSWORD"
                                .to_owned(),
                        ),
                    });
                }
            }
        };
        let insecure = get("PROXMOX_VE_INSECURE").is_some_and(|value| {
            matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let tls = if insecure {
            TlsMode::Insecure
        } else {
            TlsMode::System
        };
        Ok(ClientConfig::new(endpoint, auth, tls))
    }
}

/// The API base URL (`https://host:8006/api2/json`) of an endpoint given as `host`,
/// `host:8006`, `https://host:8006`, `https://host:8006/` or `https://host:8006/api2/json`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, PveError> {
    let trimmed = endpoint.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else if trimmed.contains(':') && !trimmed.starts_with('[') {
        format!("https://{trimmed}")
    } else {
        format!("https://{trimmed}:8006")
    };
    let bad = |why: &str| PveError::Config {
        message: format!("Proxmox endpoint {endpoint:?} {why}"),
        hint: Some("use the form https://pve.example.com:8006".to_owned()),
    };
    let url =
        url::Url::parse(&with_scheme).map_err(|error| bad(&format!("is invalid: {error}")))?;
    if url.scheme() != "https" {
        return Err(bad("must use https (Proxmox serves its API only over TLS)"));
    }
    let host = url.host_str().ok_or_else(|| bad("has no host"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api2/json").unwrap_or(path);
    let port = url
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    Ok(format!("https://{host}{port}{path}/api2/json"))
}

/// Characters escaped in a path segment (UPIDs and volume ids carry `:` `/` `@` `!`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

/// A request body.
#[derive(Debug, Clone)]
enum Body {
    None,
    Form(Vec<(String, String)>),
    Multipart {
        boundary: String,
        bytes: bytes::Bytes,
    },
}

/// The Proxmox VE REST client.
pub struct PveClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    session: tokio::sync::Mutex<Option<TicketSession>>,
    limits: ConcurrencyLimits,
    retry: RetryPolicy,
    pinned: Option<(String, MismatchSlot)>,
    request_timeout: Duration,
    upload_timeout: Duration,
    ticket_renew_after: Duration,
    /// For the "giving up by" estimate of a retried request.
    connect_timeout: Duration,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl PveClient {
    /// Builds the client. Nothing is sent yet; a ticket login happens on the first request.
    pub fn new(config: ClientConfig) -> Result<Self, PveError> {
        let base = normalize_endpoint(&config.endpoint)?;
        if config.tls == TlsMode::Insecure {
            tracing::warn!(
                target: crate::reporter::SECURITY_TARGET,
                endpoint = %base,
                "TLS certificate verification is OFF (insecure): anyone on the path can read \
                 the Proxmox credentials. Pin the certificate fingerprint instead \
                 (pvenode cert info)"
            );
        }
        let (tls, mismatch_slot) = rustls_config(&config.tls)?;
        let pinned = match (&config.tls, mismatch_slot) {
            (TlsMode::Fingerprint(expected), Some(slot)) => {
                Some((normalize_fingerprint(expected)?, slot))
            }
            _ => None,
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // A redirect would carry the API token or ticket to another address: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(10))
            .http1_only()
            .user_agent(concat!("provision/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| PveError::Config {
                message: format!("cannot build the HTTP client: {error}"),
                hint: None,
            })?;
        Ok(PveClient {
            http,
            base,
            auth: config.auth,
            session: tokio::sync::Mutex::new(None),
            limits: ConcurrencyLimits::new(config.per_node_concurrency, config.global_concurrency),
            retry: config.retry,
            pinned,
            request_timeout: config.request_timeout,
            upload_timeout: config.upload_timeout,
            ticket_renew_after: config.ticket_renew_after,
            connect_timeout: config.connect_timeout,
        })
    }

    /// The API base URL (`https://host:8006/api2/json`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// One logical request with retries; returns the whole answer envelope (`{"data": …}`).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<Value, PveError> {
        let idempotent = method_is_idempotent(method.as_str());
        let mut attempt = 1;
        loop {
            match self.send_authenticated(&method, path, query, &body).await {
                Ok(envelope) => return Ok(envelope),
                Err(error) if self.retry.should_retry(&error, idempotent, attempt) => {
                    let delay = self.retry.delay(attempt);
                    self.announce_retry(&format!("{method} {path}"), attempt, delay, &error);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One attempt, logging in again once if a ticket was refused.
    async fn send_authenticated(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body,
    ) -> Result<Value, PveError> {
        // Only a ticket obtained earlier can have expired; a refused fresh login is final.
        let had_session = match self.auth {
            Auth::Ticket { .. } => self.session.lock().await.is_some(),
            Auth::ApiToken { .. } => false,
        };
        let first = self.send_once(method, path, query, body, false).await;
        match (&self.auth, first) {
            (Auth::Ticket { .. }, Err(PveError::Unauthorized { .. })) if had_session => {
                // The ticket may have expired or been revoked: log in again, once.
                self.session.lock().await.take();
                self.send_once(method, path, query, body, true).await
            }
            (_, result) => result,
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body,
        after_relogin: bool,
    ) -> Result<Value, PveError> {
        let auth_headers = self.auth_headers(method).await?;
        let _permit = self.limits.acquire(path).await;
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        if !query.is_empty() {
            request = request.query(query);
        }
        for (name, value) in auth_headers {
            request = request.header(name, value);
        }
        let timeout = match body {
            Body::Multipart { .. } => self.upload_timeout,
            Body::None | Body::Form(_) => self.request_timeout,
        };
        request = request.timeout(timeout);
        request = match body {
            Body::None => request,
            Body::Form(fields) => request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(
                    serde_urlencoded::to_string(fields).map_err(|error| PveError::Config {
                        message: format!("cannot encode parameters of {method} {path}: {error}"),
                        hint: None,
                    })?,
                ),
            Body::Multipart { boundary, bytes } => request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(bytes.clone()),
        };
        tracing::debug!(%method, path, after_relogin, "Proxmox request");
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(method, path, &error))?;
        self.read_response(method, path, response).await
    }

    /// Maps a reqwest failure to "never sent" (connect/DNS/TLS) or "outcome unknown".
    fn transport_error(&self, method: &Method, path: &str, error: &reqwest::Error) -> PveError {
        if let Some((expected, slot)) = &self.pinned {
            let seen = match slot.lock() {
                Ok(mut seen) => seen.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            if let Some(actual) = seen {
                return PveError::FingerprintMismatch {
                    endpoint: self.base.clone(),
                    expected: expected.clone(),
                    actual,
                };
            }
        }
        let message = error_chain(error);
        if error.is_connect() {
            PveError::NeverSent {
                endpoint: self.base.clone(),
                message,
            }
        } else if error.is_builder() {
            PveError::Config {
                message: format!("cannot build request {method} {path}: {message}"),
                hint: None,
            }
        } else {
            PveError::OutcomeUnknown {
                method: method.to_string(),
                path: path.to_owned(),
                message,
            }
        }
    }

    async fn read_response(
        &self,
        method: &Method,
        path: &str,
        response: reqwest::Response,
    ) -> Result<Value, PveError> {
        let status = response.status();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|reason| String::from_utf8_lossy(reason.as_bytes()).into_owned());
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let bytes = response
            .bytes()
            .await
            .map_err(|error| PveError::OutcomeUnknown {
                method: method.to_string(),
                path: path.to_owned(),
                message: format!("answer cut off: {}", error_chain(&error)),
            })?;
        if status.is_redirection() {
            return Err(PveError::Config {
                message: format!(
                    "{method} {path}: Proxmox answered HTTP {status} redirecting to {}; provision \
                     never follows redirects (they would carry the credentials elsewhere)",
                    location.as_deref().unwrap_or("an unnamed address")
                ),
                hint: Some(
                    "set the endpoint to the API address itself (https://HOST:8006), not to a \
                     proxy or login page that redirects"
                        .to_owned(),
                ),
            });
        }
        let envelope: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return envelope.ok_or_else(|| PveError::Decode {
                method: method.to_string(),
                path: path.to_owned(),
                message: format!(
                    "answer is not JSON: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            });
        }
        let body_message = envelope
            .as_ref()
            .and_then(|envelope| envelope.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = body_message
            .or(reason)
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        let errors: BTreeMap<String, String> = envelope
            .as_ref()
            .and_then(|envelope| envelope.get("errors"))
            .and_then(Value::as_object)
            .map(|errors| {
                errors
                    .iter()
                    .map(|(key, value)| (key.clone(), value_to_string(value).trim_end().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Err(status_error(
            &self.base,
            method.as_str(),
            path,
            status.as_u16(),
            message,
            errors,
        ))
    }

    /// The headers that authenticate a request, logging in first if needed.
    async fn auth_headers(&self, method: &Method) -> Result<Vec<(&'static str, String)>, PveError> {
        match &self.auth {
            Auth::ApiToken { .. } => Ok(self
                .auth
                .token_header()
                .map(|header| vec![("Authorization", header)])
                .unwrap_or_default()),
            Auth::Ticket { username, password } => {
                let mut session = self.session.lock().await;
                let fresh = session
                    .as_ref()
                    .is_some_and(|session| session.is_fresh(self.ticket_renew_after));
                if !fresh {
                    *session = Some(self.login(username, password).await?);
                }
                let Some(session) = session.as_ref() else {
                    return Err(PveError::Config {
                        message: "ticket login produced no session".to_owned(),
                        hint: None,
                    });
                };
                let mut headers = vec![(
                    "Cookie",
                    format!("PVEAuthCookie={}", session.ticket.expose()),
                )];
                if *method != Method::GET && *method != Method::HEAD {
                    headers.push((
                        "CSRFPreventionToken",
                        session.csrf_token.expose().to_owned(),
                    ));
                }
                Ok(headers)
            }
        }
    }

    /// `POST /access/ticket`.
    async fn login(&self, username: &str, password: &Secret) -> Result<TicketSession, PveError> {
        let path = "/access/ticket";
        let mut attempt = 1;
        let envelope = loop {
            let fields = vec![
                ("username".to_owned(), username.to_owned()),
                ("password".to_owned(), password.expose().to_owned()),
            ];
            let result = async {
                let _permit = self.limits.acquire(path).await;
                let response = self
                    .http
                    .post(format!("{}{}", self.base, path))
                    .timeout(self.request_timeout)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(serde_urlencoded::to_string(&fields).unwrap_or_default())
                    .send()
                    .await
                    .map_err(|error| self.transport_error(&Method::POST, path, &error))?;
                self.read_response(&Method::POST, path, response).await
            }
            .await;
            match result {
                Ok(envelope) => break envelope,
                // A login changes nothing on the server, so it may always be repeated.
                Err(error) if self.retry.should_retry(&error, true, attempt) => {
                    let delay = self.retry.delay(attempt);
                    self.announce_retry("login", attempt, delay, &error);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(PveError::Unauthorized { endpoint, .. }) => {
                    return Err(PveError::Unauthorized {
                        endpoint,
                        message: format!("login as {username} refused: wrong user or password"),
                    });
                }
                Err(error) => return Err(error),
            }
        };
        let data = envelope.get("data").cloned().unwrap_or(Value::Null);
        if data.get("NeedTFA").is_some() {
            return Err(PveError::Config {
                message: format!("user {username} requires two-factor authentication"),
                hint: Some("use an API token (PROXMOX_VE_API_TOKEN) for automation".to_owned()),
            });
        }
        let field = |name: &str| {
            data.get(name)
                .and_then(Value::as_str)
                .map(Secret::new)
                .ok_or_else(|| PveError::Decode {
                    method: "POST".to_owned(),
                    path: path.to_owned(),
                    message: format!("login answer has no {name}"),
                })
        };
        Ok(TicketSession {
            ticket: field("ticket")?,
            csrf_token: field("CSRFPreventionToken")?,
            obtained: std::time::Instant::now(),
        })
    }

    async fn get_data<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, PveError> {
        let envelope = self.call(Method::GET, path, query, Body::None).await?;
        decode_data("GET", path, envelope)
    }

    async fn write_data<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let fields = params
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let envelope = self
            .call(method.clone(), path, &[], Body::Form(fields))
            .await?;
        decode_data(method.as_str(), path, envelope)
    }

    async fn post_upid(&self, path: &str, params: &Params) -> Result<Upid, PveError> {
        self.write_data(Method::POST, path, params).await
    }

    fn qemu_path(node: &NodeName, vmid: VmId, rest: &str) -> String {
        format!("/nodes/{}/qemu/{vmid}{rest}", segment(&node.0))
    }
}

/// The message of an error and its sources (reqwest hides the useful part in the chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = inner.source();
    }
    message
}

/// A JSON value as Proxmox config text: strings as they are, numbers and booleans printed.
fn value_to_string(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Bool(true) => "1".to_owned(),
        Value::Bool(false) => "0".to_owned(),
        Value::Null => String::new(),
        Value::Number(number) => number.to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

fn decode_data<T: DeserializeOwned>(
    method: &str,
    path: &str,
    envelope: Value,
) -> Result<T, PveError> {
    let data = match envelope {
        Value::Object(mut map) => map.remove("data").unwrap_or(Value::Null),
        other => other,
    };
    serde_json::from_value(data).map_err(|error| PveError::Decode {
        method: method.to_owned(),
        path: path.to_owned(),
        message: error.to_string(),
    })
}

/// Maps an HTTP error status (and Proxmox's message / `errors` map) to a [`PveError`].
impl PveClient {
    /// Says at warn level that a request failed and will be tried again (what, attempt n of m, and
    /// until when at the latest when each remaining connection attempt waits its full timeout), so
    /// that an unreachable Proxmox is visible instead of a silent minute. Lock timeouts and server
    /// errors are routine under load and stay at debug level.
    fn announce_retry(&self, what: &str, attempt: u32, delay: Duration, error: &PveError) {
        let unreachable = match error {
            PveError::NeverSent { .. }
            | PveError::OutcomeUnknown { .. }
            | PveError::Timeout { .. } => true,
            PveError::FingerprintMismatch { .. }
            | PveError::BadRequest { .. }
            | PveError::Unauthorized { .. }
            | PveError::Forbidden { .. }
            | PveError::NotFound { .. }
            | PveError::LockTimeout { .. }
            | PveError::Server { .. }
            | PveError::TaskFailed { .. }
            | PveError::Decode { .. }
            | PveError::Config { .. } => false,
        };
        let max = self.retry.max_attempts;
        if !unreachable {
            tracing::debug!(what, attempt, max, ?delay, %error, "retrying Proxmox request");
            return;
        }
        let remaining: Duration = (attempt..max)
            .map(|n| self.retry.ceiling(n) + self.connect_timeout)
            .sum();
        let until = crate::state::human_time(std::time::SystemTime::now() + remaining);
        tracing::warn!(
            "Proxmox request {what} failed (attempt {attempt} of {max}): {error}; retrying in \
             {:.1}s, giving up after the last attempt (by about {until})",
            delay.as_secs_f64()
        );
    }
}

pub fn status_error(
    endpoint: &str,
    method: &str,
    path: &str,
    status: u16,
    message: String,
    errors: BTreeMap<String, String>,
) -> PveError {
    let method = method.to_owned();
    let path = path.to_owned();
    let lock = find_lock_timeout(
        std::iter::once(message.as_str()).chain(errors.values().map(String::as_str)),
    )
    .map(|(_, file)| file.map(str::to_owned));
    if let Some(file) = lock {
        return PveError::LockTimeout {
            path: file.unwrap_or_else(|| path.clone()),
            message,
        };
    }
    // `only root can set 'hostpci0' config for non-mapped devices` (a plain die: HTTP 500).
    if message.contains("only root can set") && errors.is_empty() {
        return PveError::Forbidden {
            method,
            path,
            message,
        };
    }
    match status {
        400 => PveError::BadRequest {
            method,
            path,
            message,
            errors,
        },
        401 => PveError::Unauthorized {
            endpoint: endpoint.to_owned(),
            message: format!("{message} (the API token or ticket is wrong, expired or revoked)"),
        },
        403 => {
            let (privilege, acl) = super::privileges::missing_privilege(&method, &path, &message);
            PveError::Forbidden {
                method,
                path,
                message: format!("{message} (likely missing {privilege} on {acl})"),
            }
        }
        404 => PveError::NotFound {
            method,
            path,
            message,
        },
        // Proxmox answers a missing VM or storage with 500 "… does not exist".
        500 if message.contains("does not exist") => PveError::NotFound {
            method,
            path,
            message,
        },
        500..=599 => PveError::Server {
            status,
            method,
            path,
            message,
        },
        _ => PveError::BadRequest {
            method,
            path,
            message: format!("HTTP {status}: {message}"),
            errors,
        },
    }
}

/// A `multipart/form-data` body with text fields first and the file last (Proxmox streams the
/// file part to disk and reads the fields before it).
pub fn multipart_body(
    boundary: &str,
    fields: &[(&str, &str)],
    file_field: &str,
    file_name: &str,
    data: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 512);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let escaped_name = file_name.replace(['"', '\r', '\n'], "_");
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; \
             filename=\"{escaped_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

fn params(pairs: &[(&str, String)]) -> Params {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

/// `GET /cluster/nextid` answers the id as a string (the schema says integer).
fn parse_vmid(value: &Value) -> Option<VmId> {
    match value {
        Value::String(text) => text.trim().parse().ok().map(VmId),
        Value::Number(number) => number
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(VmId),
        _ => None,
    }
}

#[async_trait]
impl PveApi for PveClient {
    async fn access_permissions(&self) -> Result<Permissions, PveError> {
        self.get_data("/access/permissions", &[]).await
    }

    async fn version(&self) -> Result<Version, PveError> {
        self.get_data("/version", &[]).await
    }

    async fn cluster_status(&self) -> Result<Vec<Value>, PveError> {
        self.get_data("/cluster/status", &[]).await
    }

    async fn cluster_resources(
        &self,
        kind: Option<&str>,
    ) -> Result<Vec<ClusterResource>, PveError> {
        let query: Vec<(&str, String)> = kind
            .map(|kind| ("type", kind.to_owned()))
            .into_iter()
            .collect();
        self.get_data("/cluster/resources", &query).await
    }

    async fn nodes(&self) -> Result<Vec<NodeSummary>, PveError> {
        self.get_data("/nodes", &[]).await
    }

    async fn node_status(&self, node: &NodeName) -> Result<NodeStatus, PveError> {
        self.get_data(&format!("/nodes/{}/status", segment(&node.0)), &[])
            .await
    }

    async fn node_network(&self, node: &NodeName) -> Result<Vec<NetworkInterface>, PveError> {
        self.get_data(&format!("/nodes/{}/network", segment(&node.0)), &[])
            .await
    }

    async fn pci_devices(&self, node: &NodeName) -> Result<Vec<PciDevice>, PveError> {
        self.get_data(&format!("/nodes/{}/hardware/pci", segment(&node.0)), &[])
            .await
    }

    async fn storages(&self, node: &NodeName) -> Result<Vec<StorageStatus>, PveError> {
        self.get_data(&format!("/nodes/{}/storage", segment(&node.0)), &[])
            .await
    }

    async fn storage_content(
        &self,
        node: &NodeName,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, PveError> {
        let query: Vec<(&str, String)> = content
            .map(|content| ("content", content.to_owned()))
            .into_iter()
            .collect();
        self.get_data(
            &format!(
                "/nodes/{}/storage/{}/content",
                segment(&node.0),
                segment(storage)
            ),
            &query,
        )
        .await
    }

    async fn download_url(
        &self,
        node: &NodeName,
        storage: &str,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(
            &format!(
                "/nodes/{}/storage/{}/download-url",
                segment(&node.0),
                segment(storage)
            ),
            params,
        )
        .await
    }

    async fn upload(
        &self,
        node: &NodeName,
        storage: &str,
        content: UploadContent,
        filename: &str,
        data: Vec<u8>,
        sha256: &str,
    ) -> Result<Upid, PveError> {
        let path = format!(
            "/nodes/{}/storage/{}/upload",
            segment(&node.0),
            segment(storage)
        );
        let content = match content {
            UploadContent::Iso => "iso",
            UploadContent::Import => "import",
        };
        let boundary = format!("provision-{:032x}", rand::random::<u128>());
        let bytes = multipart_body(
            &boundary,
            &[
                ("content", content),
                ("checksum-algorithm", "sha256"),
                ("checksum", sha256),
            ],
            "filename",
            filename,
            &data,
        );
        let envelope = self
            .call(
                Method::POST,
                &path,
                &[],
                Body::Multipart {
                    boundary,
                    bytes: bytes::Bytes::from(bytes),
                },
            )
            .await?;
        decode_data("POST", &path, envelope)
    }

    async fn delete_volume(
        &self,
        node: &NodeName,
        volume: &VolumeId,
    ) -> Result<Option<Upid>, PveError> {
        let path = format!(
            "/nodes/{}/storage/{}/content/{}",
            segment(&node.0),
            segment(volume.storage()),
            segment(&volume.0)
        );
        let envelope = self.call(Method::DELETE, &path, &[], Body::None).await?;
        decode_data("DELETE", &path, envelope)
    }

    async fn next_id(&self, check: Option<VmId>) -> Result<VmId, PveError> {
        let query: Vec<(&str, String)> = check
            .map(|vmid| ("vmid", vmid.to_string()))
            .into_iter()
            .collect();
        let data: Value = self.get_data("/cluster/nextid", &query).await?;
        parse_vmid(&data).ok_or_else(|| PveError::Decode {
            method: "GET".to_owned(),
            path: "/cluster/nextid".to_owned(),
            message: format!("expected a VM id, got {data}"),
        })
    }

    async fn vm_create(&self, node: &NodeName, params: &Params) -> Result<Upid, PveError> {
        self.post_upid(&format!("/nodes/{}/qemu", segment(&node.0)), params)
            .await
    }

    async fn vm_clone(
        &self,
        node: &NodeName,
        source: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(&Self::qemu_path(node, source, "/clone"), params)
            .await
    }

    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<Params, PveError> {
        let data: BTreeMap<String, Value> = self
            .get_data(&Self::qemu_path(node, vmid, "/config"), &[])
            .await?;
        Ok(data
            .into_iter()
            .map(|(key, value)| (key, value_to_string(&value)))
            .collect())
    }

    async fn vm_config_put(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<(), PveError> {
        let _ignored: Value = self
            .write_data(Method::PUT, &Self::qemu_path(node, vmid, "/config"), params)
            .await?;
        Ok(())
    }

    async fn vm_config_post(
        &self,
        node: &NodeName,
        vmid: VmId,
        params: &Params,
    ) -> Result<Upid, PveError> {
        self.post_upid(&Self::qemu_path(node, vmid, "/config"), params)
            .await
    }

    async fn vm_resize(
        &self,
        node: &NodeName,
        vmid: VmId,
        disk: &str,
        size: &str,
    ) -> Result<Upid, PveError> {
        self.write_data(
            Method::PUT,
            &Self::qemu_path(node, vmid, "/resize"),
            &params(&[("disk", disk.to_owned()), ("size", size.to_owned())]),
        )
        .await
    }

    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, PveError> {
        self.get_data(&Self::qemu_path(node, vmid, "/status/current"), &[])
            .await
    }

    async fn vm_start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        self.post_upid(
            &Self::qemu_path(node, vmid, "/status/start"),
            &Params::new(),
        )
        .await
    }

    async fn vm_stop(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: Option<u32>,
    ) -> Result<Upid, PveError> {
        let mut body = Params::new();
        if let Some(timeout) = timeout_secs {
            body.insert("timeout".to_owned(), timeout.to_string());
        }
        self.post_upid(&Self::qemu_path(node, vmid, "/status/stop"), &body)
            .await
    }

    async fn vm_shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout_secs: u32,
    ) -> Result<Upid, PveError> {
        self.post_upid(
            &Self::qemu_path(node, vmid, "/status/shutdown"),
            &params(&[
                ("timeout", timeout_secs.to_string()),
                ("forceStop", "1".to_owned()),
            ]),
        )
        .await
    }

    async fn vm_delete(&self, node: &NodeName, vmid: VmId) -> Result<Upid, PveError> {
        let path = Self::qemu_path(node, vmid, "");
        let envelope = self
            .call(
                Method::DELETE,
                &path,
                &[
                    ("purge", "1".to_owned()),
                    ("destroy-unreferenced-disks", "1".to_owned()),
                ],
                Body::None,
            )
            .await?;
        decode_data("DELETE", &path, envelope)
    }

    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), PveError> {
        let _answer: Value = self
            .write_data(
                Method::POST,
                &Self::qemu_path(node, vmid, "/agent/ping"),
                &Params::new(),
            )
            .await?;
        Ok(())
    }

    async fn agent_network_interfaces(
        &self,
        node: &NodeName,
        vmid: VmId,
    ) -> Result<Vec<GuestInterface>, PveError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            result: Vec<GuestInterface>,
        }
        let answer: Answer = self
            .get_data(
                &Self::qemu_path(node, vmid, "/agent/network-get-interfaces"),
                &[],
            )
            .await?;
        Ok(answer.result)
    }

    async fn agent_file_read(
        &self,
        node: &NodeName,
        vmid: VmId,
        file: &str,
    ) -> Result<String, PveError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            content: String,
        }
        let answer: Answer = self
            .get_data(
                &Self::qemu_path(node, vmid, "/agent/file-read"),
                &[("file", file.to_owned())],
            )
            .await?;
        Ok(answer.content)
    }

    async fn pci_mappings(&self) -> Result<Vec<PciMapping>, PveError> {
        self.get_data("/cluster/mapping/pci", &[]).await
    }

    async fn pci_mapping_create(&self, mapping: &PciMapping) -> Result<(), PveError> {
        // `map` is an array parameter: one form field per entry.
        let mut fields = vec![("id".to_owned(), mapping.id.clone())];
        if let Some(description) = &mapping.description {
            fields.push(("description".to_owned(), description.clone()));
        }
        fields.extend(
            mapping
                .map
                .iter()
                .map(|entry| ("map".to_owned(), entry.clone())),
        );
        let path = "/cluster/mapping/pci";
        self.call(Method::POST, path, &[], Body::Form(fields))
            .await?;
        Ok(())
    }

    async fn pools(&self) -> Result<Vec<PoolSummary>, PveError> {
        self.get_data("/pools", &[]).await
    }

    async fn pool_create(&self, poolid: &str, comment: Option<&str>) -> Result<(), PveError> {
        let mut body = params(&[("poolid", poolid.to_owned())]);
        if let Some(comment) = comment {
            body.insert("comment".to_owned(), comment.to_owned());
        }
        let _ignored: Value = self.write_data(Method::POST, "/pools", &body).await?;
        Ok(())
    }

    async fn task_status(&self, node: &NodeName, upid: &Upid) -> Result<TaskStatus, PveError> {
        self.get_data(
            &format!(
                "/nodes/{}/tasks/{}/status",
                segment(&node.0),
                segment(&upid.0)
            ),
            &[],
        )
        .await
    }

    async fn task_log(
        &self,
        node: &NodeName,
        upid: &Upid,
        limit: u32,
    ) -> Result<Vec<String>, PveError> {
        #[derive(serde::Deserialize)]
        struct Line {
            t: String,
        }
        let path = format!("/nodes/{}/tasks/{}/log", segment(&node.0), segment(&upid.0));
        let read = |start: u64| {
            let path = path.clone();
            async move {
                let envelope = self
                    .call(
                        Method::GET,
                        &path,
                        &[("start", start.to_string()), ("limit", limit.to_string())],
                        Body::None,
                    )
                    .await?;
                let total = envelope.get("total").and_then(Value::as_u64);
                let lines: Vec<Line> = decode_data("GET", &path, envelope)?;
                Ok::<_, PveError>((total, lines))
            }
        };
        let (total, mut lines) = read(0).await?;
        // The log is read from the start; when it is longer than `limit`, read its tail.
        if let Some(total) = total
            && total > u64::from(limit)
            && lines.len() as u64 >= u64::from(limit)
        {
            lines = read(total - u64::from(limit)).await?.1;
        }
        Ok(lines.into_iter().map(|line| line.t).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
        let config =
            ClientConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(config.tls, TlsMode::Insecure);
        assert_eq!(config.auth.identity(), "provision@pve!ci");
        assert!(!format!("{config:?}").contains("s3cr3t"));

        let vars: BTreeMap<&str, &str> = [
            ("PROXMOX_VE_ENDPOINT", "https://pve1:8006/"),
            ("PROXMOX_VE_USERNAME", "root@pam"),
            ("PROXMOX_VE_PASSWORD", "pw"),
        ]
        .into();
        let config =
            ClientConfig::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned())).unwrap();
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
            text.contains(
                "\n  hostpci0: only root can set 'hostpci0' config for non-mapped devices"
            ),
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
            text.starts_with(
                "--b\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n"
            )
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
}
