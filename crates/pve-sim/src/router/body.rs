//! How a request's query string and body become its parameters: the body size limits,
//! url-encoded, JSON and `multipart/form-data` bodies (the uploaded file kept apart).

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri, header};
use serde_json::{Map, Value};

use crate::Shared;
use crate::state::{ApiError, ApiResult};

/// Largest body of an upload (a NoCloud seed is a few hundred KiB).
pub(crate) const MAX_UPLOAD_BODY: usize = 16 << 20;

/// Largest body of any other request (parameters only).
pub(crate) const MAX_BODY: usize = 1 << 20;

/// Reads the body, refusing more than the route's limit (413) without buffering it.
pub(super) async fn read_body(shared: &Shared, body: Body, template: &str) -> ApiResult<Bytes> {
    let limit = if template.ends_with("/upload") {
        MAX_UPLOAD_BODY
    } else {
        MAX_BODY
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError {
            status: 413,
            message: format!("request body larger than {limit} bytes or unreadable"),
            errors: None,
        })?;
    shared.count_body_bytes(bytes.len());
    Ok(bytes)
}

/// The uploaded file of a multipart request.
pub(crate) struct Upload {
    pub filename: String,
    pub data: Vec<u8>,
}

pub(super) fn parse_params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(Map<String, Value>, Option<Upload>)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(query) = uri.query() {
        pairs.extend(
            serde_urlencoded::from_str::<Vec<(String, String)>>(query)
                .map_err(|e| ApiError::param("query", e.to_string()))?,
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut upload = None;
    if *method != Method::GET && !body.is_empty() {
        if let Some(parameters) = content_type.strip_prefix("multipart/form-data") {
            let boundary = multipart_boundary(parameters)?;
            let (fields, file) = parse_multipart(body, boundary)?;
            pairs.extend(fields);
            upload = file;
        } else if content_type.starts_with("application/json") {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::param("body", format!("invalid JSON - {e}")))?;
            if let Value::Object(object) = value {
                for (key, value) in object {
                    let text = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    pairs.push((key, text));
                }
            }
        } else {
            pairs.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map_err(|e| ApiError::param("body", e.to_string()))?,
            );
        }
    }
    let mut params = Map::new();
    for (key, value) in pairs {
        match params.get_mut(&key) {
            Some(Value::Array(list)) => list.push(Value::String(value)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(value)]);
            }
            None => {
                params.insert(key, Value::String(value));
            }
        }
    }
    Ok((params, upload))
}

/// RFC 2046 §5.1.1: a boundary is 1 to 70 of these characters, not ending in a space.
const MAX_BOUNDARY: usize = 70;

/// The `boundary` parameter of a `multipart/form-data` content type (after the media type).
fn multipart_boundary(parameters: &str) -> ApiResult<&str> {
    let boundary = parameters
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim().trim_matches('"'))
        .unwrap_or("");
    let allowed = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if boundary.is_empty()
        || boundary.len() > MAX_BOUNDARY
        || boundary.ends_with(' ')
        || !boundary.chars().all(allowed)
    {
        return Err(ApiError::param(
            "body",
            format!("invalid multipart boundary (1 to {MAX_BOUNDARY} characters, RFC 2046)"),
        ));
    }
    Ok(boundary)
}

type MultipartParts = (Vec<(String, String)>, Option<Upload>);

fn parse_multipart(body: &[u8], boundary: &str) -> ApiResult<MultipartParts> {
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    let mut upload = None;
    let mut rest = body;
    let find = |haystack: &[u8], needle: &[u8]| {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    };
    let Some(start) = find(rest, delimiter.as_bytes()) else {
        return Err(ApiError::param("body", "malformed multipart body"));
    };
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let Some(header_end) = find(rest, b"\r\n\r\n") else {
            return Err(ApiError::param("body", "malformed multipart part"));
        };
        let head = String::from_utf8_lossy(&rest[..header_end]).into_owned();
        let after = &rest[header_end + 4..];
        let closing = format!("\r\n{delimiter}");
        let Some(end) = find(after, closing.as_bytes()) else {
            return Err(ApiError::param("body", "unterminated multipart part"));
        };
        let content = &after[..end];
        rest = &after[end + closing.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or("");
        let attribute = |name: &str| {
            disposition.split(';').find_map(|part| {
                part.trim()
                    .strip_prefix(&format!("{name}="))
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        let Some(name) = attribute("name") else {
            continue;
        };
        match attribute("filename") {
            Some(filename) => {
                fields.push((name, filename.clone()));
                upload = Some(Upload {
                    filename,
                    data: content.to_vec(),
                });
            }
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
    }
    Ok((fields, upload))
}
