//! The reqwest implementation of [`PveApi`](crate::PveApi): endpoint, auth, TLS trust, error mapping,
//! retries and per-node concurrency in one place.
//!
//! This file holds the configuration and the client itself; `http` sends one request
//! (auth, retries, error mapping), `endpoints` maps every `PveApi` method to its route.

mod endpoints;
mod http;
#[cfg(test)]
mod tests;

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::auth::{Auth, Secret, TICKET_RENEW_AFTER, TicketSession};
use crate::error::PveError;
use crate::retry::{ConcurrencyLimits, RetryPolicy};
use crate::tls::{MismatchSlot, TlsMode, normalize_fingerprint, rustls_config};

pub use http::{multipart_body, status_error};

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
                target: provision_base::SECURITY_TARGET,
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
}
