//! One Proxmox request: authentication (API token or ticket, renewed), the request itself with
//! its timeout, retries decided by the error, and the mapping of an answer to [`PveError`].

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{Auth, Secret, TicketSession};
use crate::error::PveError;
use crate::retry::{find_lock_timeout, method_is_idempotent};
use crate::types::{NodeName, Params, Upid, VmId};

use super::{PveClient, segment};

/// A request body.
#[derive(Debug, Clone)]
pub(super) enum Body {
    None,
    Form(Vec<(String, String)>),
    Multipart {
        boundary: String,
        bytes: bytes::Bytes,
    },
}

impl PveClient {
    /// One logical request with retries; returns the whole answer envelope (`{"data": …}`).
    pub(super) async fn call(
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
    pub(super) async fn send_authenticated(
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

    pub(super) async fn send_once(
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
    pub(super) fn transport_error(
        &self,
        method: &Method,
        path: &str,
        error: &reqwest::Error,
    ) -> PveError {
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

    pub(super) async fn read_response(
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
    pub(super) async fn auth_headers(
        &self,
        method: &Method,
    ) -> Result<Vec<(&'static str, String)>, PveError> {
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
    pub(super) async fn login(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<TicketSession, PveError> {
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

    pub(super) async fn get_data<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, PveError> {
        let envelope = self.call(Method::GET, path, query, Body::None).await?;
        decode_data("GET", path, envelope)
    }

    pub(super) async fn write_data<T: DeserializeOwned>(
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

    pub(super) async fn post_upid(&self, path: &str, params: &Params) -> Result<Upid, PveError> {
        self.write_data(Method::POST, path, params).await
    }

    pub(super) fn qemu_path(node: &NodeName, vmid: VmId, rest: &str) -> String {
        format!("/nodes/{}/qemu/{vmid}{rest}", segment(&node.0))
    }
}

/// The message of an error and its sources (reqwest hides the useful part in the chain).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
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
pub(super) fn value_to_string(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Bool(true) => "1".to_owned(),
        Value::Bool(false) => "0".to_owned(),
        Value::Null => String::new(),
        Value::Number(number) => number.to_string(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

pub(super) fn decode_data<T: DeserializeOwned>(
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

impl PveClient {
    /// Says at warn level that a request failed and will be tried again (what, attempt n of m, and
    /// until when at the latest when each remaining connection attempt waits its full timeout), so
    /// that an unreachable Proxmox is visible instead of a silent minute. Lock timeouts and server
    /// errors are routine under load and stay at debug level.
    pub(super) fn announce_retry(
        &self,
        what: &str,
        attempt: u32,
        delay: Duration,
        error: &PveError,
    ) {
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
        let until = provision_base::time::human_time(std::time::SystemTime::now() + remaining);
        tracing::warn!(
            "Proxmox request {what} failed (attempt {attempt} of {max}): {error}; retrying in \
             {:.1}s, giving up after the last attempt (by about {until})",
            delay.as_secs_f64()
        );
    }
}

/// Maps an HTTP error status (and Proxmox's message / `errors` map) to a [`PveError`].
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
            let (privilege, acl) = crate::privileges::missing_privilege(&method, &path, &message);
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
