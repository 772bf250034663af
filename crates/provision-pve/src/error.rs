//! Errors of the Proxmox layer. Retry decisions are made from these variants, by name.

use std::collections::BTreeMap;

/// Everything that can go wrong talking to Proxmox VE.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PveError {
    /// The request provably never reached the server (DNS, connect refused, TLS handshake):
    /// safe to retry, even a POST.
    #[error("could not reach Proxmox at {endpoint}: {message}")]
    NeverSent { endpoint: String, message: String },
    /// The request was sent but no answer arrived: the outcome is unknown, so state must be
    /// re-read before a POST is repeated.
    #[error("request {method} {path} was sent but its outcome is unknown: {message}")]
    OutcomeUnknown {
        method: String,
        path: String,
        message: String,
    },
    /// The server's certificate did not match the pinned fingerprint; nothing was sent.
    #[error("TLS certificate of {endpoint} has fingerprint {actual}, expected {expected}")]
    FingerprintMismatch {
        endpoint: String,
        expected: String,
        actual: String,
    },
    /// HTTP 400 with Proxmox's per-parameter `errors` map (shown one `param: message` per line).
    #[error(
        "Proxmox refused {method} {path}: {message}{}",
        render_parameter_errors(errors)
    )]
    BadRequest {
        method: String,
        path: String,
        message: String,
        errors: BTreeMap<String, String>,
    },
    /// HTTP 401: wrong or expired credentials.
    #[error("authentication failed for {endpoint}: {message}")]
    Unauthorized { endpoint: String, message: String },
    /// HTTP 403: the credentials lack a privilege on a path.
    #[error("permission denied for {method} {path}: {message}")]
    Forbidden {
        method: String,
        path: String,
        message: String,
    },
    /// HTTP 404 / unknown object.
    #[error("not found: {method} {path}: {message}")]
    NotFound {
        method: String,
        path: String,
        message: String,
    },
    /// `can't lock file '…' - got timeout` (HTTP 500 or a task failure): retry with backoff.
    #[error("Proxmox lock timeout on {path}: {message}")]
    LockTimeout { path: String, message: String },
    /// Other 5xx.
    #[error("Proxmox server error {status} on {method} {path}: {message}")]
    Server {
        status: u16,
        method: String,
        path: String,
        message: String,
    },
    /// A task ended with an exit status other than `OK`.
    #[error("task {upid} failed: {exitstatus}")]
    TaskFailed {
        upid: String,
        exitstatus: String,
        log_tail: Vec<String>,
    },
    /// A bounded wait expired.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout { what: String, seconds: u64 },
    /// The answer did not have the shape the schema promises.
    #[error("unexpected answer to {method} {path}: {message}")]
    Decode {
        method: String,
        path: String,
        message: String,
    },
    /// Local configuration problem (endpoint, credentials, CA file).
    #[error("{message}")]
    Config {
        message: String,
        hint: Option<String>,
    },
}

/// `\n  param: message` for each entry of a 400's `errors` map, in parameter order.
fn render_parameter_errors(errors: &BTreeMap<String, String>) -> String {
    errors
        .iter()
        .map(|(parameter, message)| format!("\n  {parameter}: {}", message.trim_end()))
        .collect()
}

impl PveError {
    /// Whether repeating the same request can succeed and is safe.
    ///
    /// `method_is_idempotent` is true for GET/PUT/DELETE-by-id requests: those may be repeated
    /// after an unknown outcome. A POST is repeated only when it provably never reached the
    /// server or Proxmox refused it before doing anything (lock timeout, proxy errors).
    pub fn retryable(&self, method_is_idempotent: bool) -> bool {
        match self {
            PveError::NeverSent { .. } => true,
            PveError::OutcomeUnknown { .. } => method_is_idempotent,
            PveError::FingerprintMismatch { .. } => false,
            PveError::BadRequest { .. } => false,
            PveError::Unauthorized { .. } => false,
            PveError::Forbidden { .. } => false,
            PveError::NotFound { .. } => false,
            PveError::LockTimeout { .. } => true,
            // Proxmox answers 500 for every error a handler raises ("VM 100 already exists"),
            // so a 500 is retried only where repeating is harmless; 502/503/504 come from the
            // proxy before the handler ran.
            PveError::Server { status, .. } => {
                matches!(status, 502..=504) || (method_is_idempotent && *status != 501)
            }
            PveError::TaskFailed { .. } => false,
            PveError::Timeout { .. } => false,
            PveError::Decode { .. } => false,
            PveError::Config { .. } => false,
        }
    }

    /// What the user should do about it, for the `hint:` line at the top level.
    pub fn hint(&self) -> Option<String> {
        match self {
            PveError::NeverSent { .. } => Some(
                "check that the endpoint is right and that port 8006 is reachable from here"
                    .to_owned(),
            ),
            PveError::OutcomeUnknown { .. } => Some(
                "the change may or may not have happened: run `provision status` (it re-reads \
                 Proxmox) before retrying"
                    .to_owned(),
            ),
            PveError::FingerprintMismatch { .. } => Some(
                "nothing was sent. If the host's certificate was renewed, compare with \
                 `pvenode cert info` on the host and update the pinned fingerprint; otherwise \
                 this may not be the host you expect"
                    .to_owned(),
            ),
            PveError::BadRequest { errors, .. } if errors.is_empty() => None,
            PveError::BadRequest { .. } => {
                Some("fix the parameters listed above (names are Proxmox's own)".to_owned())
            }
            PveError::Unauthorized { .. } => Some(
                "the credentials are wrong or expired: check PROXMOX_VE_API_TOKEN \
                 (USER@REALM!TOKENID=SECRET) or PROXMOX_VE_USERNAME/PROXMOX_VE_PASSWORD, and \
                 that the token still exists and has not expired (Datacenter → Permissions → \
                 API Tokens)"
                    .to_owned(),
            ),
            PveError::Forbidden {
                method,
                path,
                message,
            } => Some(super::privileges::forbidden_hint(method, path, message)),
            PveError::NotFound { .. } => None,
            PveError::LockTimeout { .. } => Some(
                "another task holds the lock (often parallel clones of one template): retry \
                 later or lower the parallelism"
                    .to_owned(),
            ),
            PveError::Server { .. } => {
                Some("see the Proxmox task list and syslog (journalctl -u pvedaemon)".to_owned())
            }
            PveError::TaskFailed { log_tail, .. } if log_tail.is_empty() => None,
            PveError::TaskFailed { log_tail, .. } => Some(format!(
                "last lines of the task log:\n  {}",
                log_tail.join("\n  ")
            )),
            PveError::Timeout { .. } => Some(
                "the operation may still be running on Proxmox: check its task list before \
                 retrying"
                    .to_owned(),
            ),
            PveError::Decode { .. } => Some(
                "the Proxmox version may be unsupported (provision targets Proxmox VE 9.x)"
                    .to_owned(),
            ),
            PveError::Config { hint, .. } => hint.clone(),
        }
    }
}

/// Wrong credentials, a missing privilege, a certificate that is not the pinned one or a bad
/// local configuration are the user's to fix; everything else failed on the way or on Proxmox.
impl provision_base::error::UserFacing for PveError {
    fn exit_status(&self) -> provision_base::exit::ExitStatus {
        use provision_base::exit::ExitStatus;
        match self {
            PveError::Unauthorized { .. }
            | PveError::Forbidden { .. }
            | PveError::FingerprintMismatch { .. }
            | PveError::Config { .. } => ExitStatus::UserError,
            PveError::NeverSent { .. }
            | PveError::OutcomeUnknown { .. }
            | PveError::BadRequest { .. }
            | PveError::NotFound { .. }
            | PveError::LockTimeout { .. }
            | PveError::Server { .. }
            | PveError::TaskFailed { .. }
            | PveError::Timeout { .. }
            | PveError::Decode { .. } => ExitStatus::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        PveError::hint(self)
    }
}
