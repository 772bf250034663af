//! The HTTP face of the simulator: authentication, parameter parsing and validation, the route
//! table, and Proxmox-style answers (`{"data": …}`, 400 with an `errors` map, other errors with
//! the message in the status line).
//!
//! Routes (all below `/api2/json`):
//!
//! Paths are percent-decoded per segment; a `/` inside one segment (a volume id such as
//! `local:iso/seed.iso`) stays `%2F` in the request log. The content routes also take a volume
//! id with its slash unencoded (`…/content/local:import/debian.qcow2`), as pve-storage does.
//!
//! | Method | Path                                                   | Answer / task type          | Module       |
//! |--------|--------------------------------------------------------|-----------------------------|--------------|
//! | POST   | /access/ticket                                         | ticket + CSRF token         | access       |
//! | GET    | /access/permissions                                    | path -> privileges          | access       |
//! | GET    | /version                                               | version                     | cluster      |
//! | GET    | /cluster/status                                        | cluster + node entries      | cluster      |
//! | GET    | /cluster/resources[?type=vm\|node\|storage\|pool]      | resources                   | cluster      |
//! | GET    | /cluster/nextid[?vmid=N]                               | id (not reserved)           | cluster      |
//! | GET    | /cluster/mapping/pci                                   | mappings                    | cluster      |
//! | POST   | /cluster/mapping/pci                                   | null                        | cluster      |
//! | GET    | /cluster/mapping/pci/{id}                              | mapping                     | cluster      |
//! | PUT    | /cluster/mapping/pci/{id}                              | null                        | cluster      |
//! | DELETE | /cluster/mapping/pci/{id}                              | null                        | cluster      |
//! | GET    | /nodes                                                 | nodes                       | nodes        |
//! | GET    | /nodes/{node}/status                                   | cpu, memory                 | nodes        |
//! | GET    | /nodes/{node}/hardware/pci                             | PCI functions               | nodes        |
//! | GET    | /nodes/{node}/storage                                  | storages                    | storage      |
//! | GET    | /nodes/{node}/storage/{storage}/status                 | storage status              | storage      |
//! | GET    | /nodes/{node}/storage/{storage}/content                | volumes                     | storage      |
//! | DELETE | /nodes/{node}/storage/{storage}/content/{volume}       | UPID imgdel                 | storage      |
//! | POST   | /nodes/{node}/storage/{storage}/download-url           | UPID download               | storage      |
//! | POST   | /nodes/{node}/storage/{storage}/upload                 | UPID imgcopy (multipart)    | storage      |
//! | GET    | /nodes/{node}/qemu                                     | VMs                         | qemu         |
//! | POST   | /nodes/{node}/qemu                                     | UPID qmcreate               | qemu::create |
//! | DELETE | /nodes/{node}/qemu/{vmid}                              | UPID qmdestroy              | qemu         |
//! | GET    | /nodes/{node}/qemu/{vmid}/config                       | config (+digest)            | qemu::config |
//! | PUT    | /nodes/{node}/qemu/{vmid}/config                       | null (synchronous)          | qemu::config |
//! | POST   | /nodes/{node}/qemu/{vmid}/config                       | UPID qmconfig               | qemu::config |
//! | GET    | /nodes/{node}/qemu/{vmid}/pending                      | pending entries             | qemu::config |
//! | POST   | /nodes/{node}/qemu/{vmid}/clone                        | UPID qmclone                | qemu::clone  |
//! | POST   | /nodes/{node}/qemu/{vmid}/template                     | UPID qmtemplate             | qemu::clone  |
//! | PUT    | /nodes/{node}/qemu/{vmid}/resize                       | UPID qmresize               | qemu::disks  |
//! | GET    | /nodes/{node}/qemu/{vmid}/status/current               | status                      | qemu         |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/start                 | UPID qmstart                | qemu         |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/stop                  | UPID qmstop                 | qemu         |
//! | POST   | /nodes/{node}/qemu/{vmid}/status/shutdown              | UPID qmshutdown             | qemu         |
//! | POST   | /nodes/{node}/qemu/{vmid}/agent/ping                   | {result:{}}                 | agent        |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent/network-get-interfaces | {result:[…]}                | agent        |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent/file-read?file=        | {content, bytes-read}       | agent        |
//! | GET    | /nodes/{node}/tasks/{upid}/status                      | task status                 | tasks        |
//! | GET    | /nodes/{node}/tasks/{upid}/log                         | [{n, t}]                    | tasks        |
//! | GET    | /pools                                                 | pools                       | cluster      |
//! | POST   | /pools                                                 | null                        | cluster      |
//! | GET    | /pools/{poolid}                                        | members, comment            | cluster      |
//! | PUT    | /pools/{poolid}                                        | null (vms, storage, delete) | cluster      |
//! | DELETE | /pools/{poolid}                                        | null (empty pools only)     | cluster      |
//! | GET    | /storage                                               | storage configuration       | storage      |
//! | GET    | /nodes/{node}/network                                  | interfaces (bridges)        | nodes        |
//! | GET    | /nodes/{node}/query-url-metadata?url=                  | filename, size, mimetype    | nodes        |
//! | GET    | /nodes/{node}/tasks                                    | tasks (source, vmid, …)     | tasks        |
//! | GET    | /nodes/{node}/hardware/pci/{pci-id-or-mapping}         | [{method: mdev}]            | nodes        |
//! | GET    | /nodes/{node}/storage/{storage}/content/{volume}       | path, size, used, format    | storage      |
//! | GET    | /nodes/{node}/qemu/{vmid}                              | directory index             | qemu         |
//! | GET    | /nodes/{node}/qemu/{vmid}/status                       | directory index             | qemu         |
//! | GET    | /nodes/{node}/qemu/{vmid}/agent                        | agent commands              | agent        |
//! | GET    | /nodes/{node}/qemu/{vmid}/cloudinit/dump?type=         | user/network/meta text      | qemu::config |
//! | PUT    | /nodes/{node}/qemu/{vmid}/unlink                       | null                        | qemu::disks  |
//!
//! Each handler module answers one API area; this module holds what they share: the route
//! table, the request pipeline ([`handle`]: route, authenticate, read and validate the body,
//! dispatch, log), the [`Request`] a handler reads its parameters from, and the rendering of
//! answers and errors.

mod access;
mod agent;
mod body;
mod cluster;
mod nodes;
mod qemu;
mod storage;
mod tasks;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use crate::state::{ApiError, ApiResult};
use crate::{LoggedRequest, Shared, guest, schema};

use access::{Identity, authenticate, login};
use agent::AGENT_COMMANDS;
use body::{Upload, parse_params, read_body};
use qemu::{VM_STATUS_SUBDIRS, VM_SUBDIRS};
use tasks::wait_for_config_lock;

pub(crate) fn app(shared: Shared) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    AxumState(shared): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if shared.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.latency_ms)).await;
    }
    shared.advance();
    let raw_path = uri.path();
    let path = api_path(raw_path);
    let route = if raw_path.starts_with("/api2/json") {
        find_route(&method, &path)
    } else {
        None
    };
    let Some((template, vars)) = route else {
        let error = ApiError::not_implemented(method.as_str(), &path);
        return finish(&shared, &method, &path, Map::new(), Err(error));
    };
    // Authentication comes from the headers alone and is checked before the body is read: an
    // anonymous client cannot make the simulator buffer or parse anything.
    let identity = if template == LOGIN {
        None
    } else {
        match authenticate(&shared, &method, &headers) {
            Ok(identity) => Some(identity),
            Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
        }
    };
    let body = match read_body(&shared, body, template).await {
        Ok(body) => body,
        Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
    };
    let (params, upload) = match parse_params(&method, &uri, &headers, &body) {
        Ok(parsed) => parsed,
        Err(error) => return finish(&shared, &method, &path, Map::new(), Err(error)),
    };
    wait_for_config_lock(&shared, &method, &path).await;
    let result = match identity {
        None => login_route(&shared, &method, template, &vars, &params),
        Some(identity) => dispatch(
            &shared, &method, template, &vars, &identity, &params, upload,
        ),
    };
    finish(&shared, &method, &path, params, result)
}

/// The path below `/api2/json`, percent-decoded except that a `/` inside a segment (a volume
/// id) stays `%2F`, without a trailing `/`.
fn api_path(raw_path: &str) -> String {
    let path: String = raw_path
        .strip_prefix("/api2/json")
        .unwrap_or(raw_path)
        .split('/')
        .map(|segment| {
            percent_decode_str(segment)
                .decode_utf8_lossy()
                .replace('/', "%2F")
        })
        .collect::<Vec<_>>()
        .join("/");
    if path.len() > 1 {
        path.trim_end_matches('/').to_owned()
    } else {
        path
    }
}

/// The only route served without authentication.
const LOGIN: &str = "/access/ticket";

fn finish(
    shared: &Shared,
    method: &Method,
    path: &str,
    mut params: Map<String, Value>,
    result: ApiResult<Reply>,
) -> Response {
    for secret in ["password", "new-password"] {
        if params.contains_key(secret) {
            params.insert(secret.to_owned(), json!("********"));
        }
    }
    let (status, response) = match result {
        Ok(reply) => (200, reply.into_response()),
        Err(error) => (error.status, error_response(&error)),
    };
    shared.log_request(LoggedRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        params,
        status,
    });
    response
}

/// A successful answer: `{"data": …}` plus cookies for a ticket login.
struct Reply {
    data: Value,
    cookie: Option<String>,
    /// The `total` beside `data` (pve-manager's `set_result_attrib('total', …)`).
    total: Option<usize>,
}

impl Reply {
    fn data(data: Value) -> ApiResult<Reply> {
        Ok(Reply {
            data,
            cookie: None,
            total: None,
        })
    }

    fn into_response(self) -> Response {
        let mut body = json!({ "data": self.data });
        if let Some(total) = self.total {
            body["total"] = json!(total);
        }
        let mut response = axum::Json(body).into_response();
        if let Some(cookie) = self.cookie
            && let Ok(value) = cookie.parse()
        {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({ "data": null, "message": format!("{}\n", error.message) });
    if let Some(errors) = &error.errors {
        body["errors"] = json!(errors);
    }
    let mut response = (status, axum::Json(body)).into_response();
    let phrase: String = error
        .message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// Matches a concrete path against a template (`/nodes/{node}/qemu/{vmid}`), returning the
/// template's variables.
fn matches(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let template_parts: Vec<&str> = template.trim_matches('/').split('/').collect();
    let mut path_parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    // pve-storage mounts the content subtree with no fragment delimiter: a volume id's slash
    // may come unencoded (`…/content/local:import/debian.qcow2`).
    if template_parts.last() == Some(&"{volume}") && path_parts.len() > template_parts.len() {
        let rest = path_parts.split_off(template_parts.len() - 1).join("/");
        path_parts.push(rest);
    }
    if template_parts.len() != path_parts.len() {
        return None;
    }
    let mut vars = BTreeMap::new();
    for (t, p) in template_parts
        .iter()
        .zip(path_parts.iter().map(String::as_str))
    {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            if p.is_empty() {
                return None;
            }
            vars.insert(name.to_owned(), p.replace("%2F", "/"));
        } else if *t != p {
            return None;
        }
    }
    Some(vars)
}

/// Every route the simulator serves: (method, template).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("POST", "/access/ticket"),
    ("GET", "/access/permissions"),
    ("GET", "/version"),
    ("GET", "/cluster/status"),
    ("GET", "/cluster/resources"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/mapping/pci"),
    ("POST", "/cluster/mapping/pci"),
    ("GET", "/cluster/mapping/pci/{id}"),
    ("PUT", "/cluster/mapping/pci/{id}"),
    ("DELETE", "/cluster/mapping/pci/{id}"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/status"),
    ("GET", "/nodes/{node}/network"),
    ("GET", "/nodes/{node}/hardware/pci"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/status"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("POST", "/nodes/{node}/storage/{storage}/download-url"),
    ("POST", "/nodes/{node}/storage/{storage}/upload"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("GET", "/nodes/{node}/qemu/{vmid}/pending"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"),
    (
        "GET",
        "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces",
    ),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("GET", "/pools"),
    ("POST", "/pools"),
    ("GET", "/pools/{poolid}"),
    ("PUT", "/pools/{poolid}"),
    ("DELETE", "/pools/{poolid}"),
    ("GET", "/storage"),
    ("GET", "/nodes/{node}/query-url-metadata"),
    ("GET", "/nodes/{node}/tasks"),
    ("GET", "/nodes/{node}/hardware/pci/{pci-id-or-mapping}"),
    ("GET", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("GET", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent"),
    ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/unlink"),
];

/// The route template `path` matches for `method`, and its variables.
fn find_route(method: &Method, path: &str) -> Option<(&'static str, BTreeMap<String, String>)> {
    ROUTES.iter().find_map(|(m, template)| {
        (*m == method.as_str())
            .then(|| matches(template, path).map(|vars| (*template, vars)))
            .flatten()
    })
}

fn login_route(
    shared: &Shared,
    method: &Method,
    template: &str,
    vars: &BTreeMap<String, String>,
    params: &Map<String, Value>,
) -> ApiResult<Reply> {
    if let Err(errors) = schema::validate(method.as_str(), template, &with_vars(params, vars)) {
        return Err(ApiError::params(errors));
    }
    login(shared, params)
}

fn dispatch(
    shared: &Shared,
    method: &Method,
    template: &str,
    vars: &BTreeMap<String, String>,
    identity: &Identity,
    params: &Map<String, Value>,
    upload: Option<Upload>,
) -> ApiResult<Reply> {
    let all = with_vars(params, vars);
    if let Err(errors) = schema::validate(method.as_str(), template, &all) {
        return Err(ApiError::params(errors));
    }
    if shared.config.fail_rate > 0.0 && shared.random_unit() < shared.config.fail_rate {
        return Err(ApiError::internal("simulated internal error (--fail-rate)"));
    }
    let request = Request {
        shared,
        identity,
        params: &all,
        vars,
    };
    let reply = request.route(method.as_str(), template, upload);
    if method != Method::GET && reply.is_ok() {
        shared.save();
    }
    reply
}

fn with_vars(params: &Map<String, Value>, vars: &BTreeMap<String, String>) -> Map<String, Value> {
    let mut all = params.clone();
    for (key, value) in vars {
        all.insert(key.clone(), Value::String(value.clone()));
    }
    all
}

struct Request<'a> {
    shared: &'a Shared,
    identity: &'a Identity,
    params: &'a Map<String, Value>,
    vars: &'a BTreeMap<String, String>,
}

fn bool_value(value: &str) -> bool {
    matches!(value, "1" | "true" | "yes" | "on")
}

impl Request<'_> {
    fn text(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.text(key).is_some_and(bool_value)
    }

    fn node(&self) -> &str {
        self.vars.get("node").map_or("", String::as_str)
    }

    fn vmid(&self) -> u32 {
        self.vars
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    fn route(&self, method: &str, template: &str, upload: Option<Upload>) -> ApiResult<Reply> {
        match (method, template) {
            ("GET", "/access/permissions") => self.permissions(),
            ("GET", "/version") => Reply::data(self.version()),
            ("GET", "/cluster/status") => self.cluster_status(),
            ("GET", "/cluster/resources") => self.cluster_resources(),
            ("GET", "/cluster/nextid") => self.next_id(),
            ("GET", "/cluster/mapping/pci") => self.mappings(),
            ("POST", "/cluster/mapping/pci") => self.mapping_create(),
            ("GET", "/cluster/mapping/pci/{id}") => self.mapping_get(),
            ("PUT", "/cluster/mapping/pci/{id}") => self.mapping_update(),
            ("DELETE", "/cluster/mapping/pci/{id}") => self.mapping_delete(),
            ("GET", "/nodes") => self.nodes(),
            ("GET", "/nodes/{node}/status") => self.node_status(),
            ("GET", "/nodes/{node}/network") => self.node_network(),
            ("GET", "/nodes/{node}/hardware/pci") => self.hardware_pci(),
            ("GET", "/nodes/{node}/storage") => self.storages(),
            ("GET", "/nodes/{node}/storage/{storage}/status") => self.storage_status(),
            ("GET", "/nodes/{node}/storage/{storage}/content") => self.storage_content(),
            ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => self.volume_delete(),
            ("POST", "/nodes/{node}/storage/{storage}/download-url") => self.download_url(),
            ("POST", "/nodes/{node}/storage/{storage}/upload") => self.upload(upload),
            ("GET", "/nodes/{node}/qemu") => self.vm_list(),
            ("POST", "/nodes/{node}/qemu") => self.vm_create(),
            ("DELETE", "/nodes/{node}/qemu/{vmid}") => self.vm_delete(),
            ("GET", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config_update(false),
            ("POST", "/nodes/{node}/qemu/{vmid}/config") => self.vm_config_update(true),
            ("GET", "/nodes/{node}/qemu/{vmid}/pending") => self.vm_pending(),
            ("POST", "/nodes/{node}/qemu/{vmid}/clone") => self.vm_clone(),
            ("POST", "/nodes/{node}/qemu/{vmid}/template") => self.vm_template(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => self.vm_resize(),
            ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => self.vm_status(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => self.vm_start(),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => self.vm_stop("qmstop"),
            ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown") => self.vm_stop("qmshutdown"),
            ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping") => {
                self.agent(|_, _| Ok(json!({ "result": {} })))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces") => {
                self.agent(|state, vm| Ok(guest::interfaces_json(state, vm)))
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent/file-read") => self.agent_file_read(),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => self.task_status(),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => self.task_log(),
            ("GET", "/pools") => self.pools(),
            ("POST", "/pools") => self.pool_create(),
            ("GET", "/pools/{poolid}") => self.pool_get(),
            ("PUT", "/pools/{poolid}") => self.pool_update(),
            ("DELETE", "/pools/{poolid}") => self.pool_delete(),
            ("GET", "/storage") => self.storage_config_list(),
            ("GET", "/nodes/{node}/query-url-metadata") => self.query_url_metadata(),
            ("GET", "/nodes/{node}/tasks") => self.task_list(),
            ("GET", "/nodes/{node}/hardware/pci/{pci-id-or-mapping}") => self.hardware_pci_index(),
            ("GET", "/nodes/{node}/storage/{storage}/content/{volume}") => self.volume_get(),
            ("GET", "/nodes/{node}/qemu/{vmid}") => self.vm_index(&VM_SUBDIRS, "subdir"),
            ("GET", "/nodes/{node}/qemu/{vmid}/status") => {
                self.vm_index(&VM_STATUS_SUBDIRS, "subdir")
            }
            ("GET", "/nodes/{node}/qemu/{vmid}/agent") => self.vm_index(&AGENT_COMMANDS, "name"),
            ("GET", "/nodes/{node}/qemu/{vmid}/cloudinit/dump") => self.cloudinit_dump(),
            ("PUT", "/nodes/{node}/qemu/{vmid}/unlink") => self.vm_unlink(),
            _ => Err(ApiError::not_implemented(method, template)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn template_matching() {
        let vars = matches("/nodes/{node}/qemu/{vmid}", "/nodes/pve1/qemu/101").unwrap();
        assert_eq!(vars["node"], "pve1");
        assert_eq!(vars["vmid"], "101");
        assert!(matches("/nodes/{node}/qemu", "/nodes/pve1/qemu/101").is_none());
    }

    #[test]
    fn every_route_is_in_the_header_table() {
        let source = include_str!("mod.rs");
        for (method, template) in ROUTES {
            let row = format!("| {method:<6} | {template}");
            assert!(
                source
                    .lines()
                    .any(|l| l.contains(&row) || (l.contains(method) && l.contains(template))),
                "route {method} {template} missing from the table"
            );
        }
    }
}
