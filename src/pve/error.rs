//! Errors of the Proxmox layer. Retry decisions are made from these variants, by name.

use std::collections::BTreeMap;

/// Everything that can go wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
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
    /// HTTP 400 with Proxmox's per-parameter `errors` map.
    #[error("Proxmox refused {method} {path}: {message}")]
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
