//! The Secret that lets a GitOps engine read a private repository, in the shape each engine's CRD
//! expects, rendered from typed structs (never from a template): every value is base64 in `data:`, so
//! no key, password or URL can change the YAML around it.
//!
//! - Flux (source-controller `GitRepository` v1, `spec.secretRef.name`): keys `identity` + `known_hosts`
//!   for SSH, `username` + `password` for HTTPS.
//! - Argo CD: a Secret labelled `argocd.argoproj.io/secret-type: repository` with `type: git`, `url`
//!   and `sshPrivateKey` or `username` + `password`; Argo CD matches it to the Application by URL. Its
//!   known hosts live in `argocd-ssh-known-hosts-cm`, which the argo-cd chart owns: they go in as the
//!   chart value `configs.ssh.extraHosts` (see [`argocd_values`]).
//! - Fleet (`GitRepo` `spec.clientSecretName`, same namespace): `kubernetes.io/ssh-auth` with
//!   `ssh-privatekey` + `known_hosts`, or `kubernetes.io/basic-auth` with `username` + `password`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use crate::profile::credentials::GitCredentials;
use crate::profile::model::GitOpsEngine;

use super::K3sError;

/// Name of the credentials Secret, in the engine's namespace.
pub const CREDENTIALS_SECRET: &str = "gitops-credentials";

/// Where the engine's source object (and so its Secret) lives; `None` for no engine.
pub fn engine_namespace(engine: GitOpsEngine) -> Option<&'static str> {
    match engine {
        GitOpsEngine::Flux => Some("flux-system"),
        GitOpsEngine::Argocd => Some("argocd"),
        GitOpsEngine::Fleet => Some("fleet-local"),
        GitOpsEngine::None => None,
    }
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    secret_type: Option<&'static str>,
    /// Secret data, base64 (as the API stores it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: BTreeMap<&'static str, String>,
}

/// The manifest holding the credentials Secret (and its namespace, so the Secret can be applied before
/// the engine's chart has created it); `None` when the engine is `none`. Holds key material: it must
/// be written 0600 and never printed.
pub fn credentials_manifest(
    engine: GitOpsEngine,
    repo: &str,
    credentials: &GitCredentials,
) -> Result<Option<String>, K3sError> {
    let Some(namespace) = engine_namespace(engine) else {
        return Ok(None);
    };
    let encode = |value: &str| base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
    let mut data = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let secret_type = match (engine, credentials) {
        (
            GitOpsEngine::Flux,
            GitCredentials::Ssh {
                identity,
                known_hosts,
            },
        ) => {
            data.insert("identity", encode(identity.expose()));
            data.insert("known_hosts", encode(known_hosts));
            "Opaque"
        }
        (GitOpsEngine::Flux, GitCredentials::Https { username, password }) => {
            data.insert("username", encode(username.expose()));
            data.insert("password", encode(password.expose()));
            "Opaque"
        }
        (GitOpsEngine::Argocd, credentials) => {
            labels.insert(
                "argocd.argoproj.io/secret-type".to_owned(),
                "repository".to_owned(),
            );
            data.insert("type", encode("git"));
            data.insert("url", encode(repo));
            match credentials {
                GitCredentials::Ssh { identity, .. } => {
                    data.insert("sshPrivateKey", encode(identity.expose()));
                }
                GitCredentials::Https { username, password } => {
                    data.insert("username", encode(username.expose()));
                    data.insert("password", encode(password.expose()));
                }
            }
            "Opaque"
        }
        (
            GitOpsEngine::Fleet,
            GitCredentials::Ssh {
                identity,
                known_hosts,
            },
        ) => {
            data.insert("ssh-privatekey", encode(identity.expose()));
            data.insert("known_hosts", encode(known_hosts));
            "kubernetes.io/ssh-auth"
        }
        (GitOpsEngine::Fleet, GitCredentials::Https { username, password }) => {
            data.insert("username", encode(username.expose()));
            data.insert("password", encode(password.expose()));
            "kubernetes.io/basic-auth"
        }
        (GitOpsEngine::None, _) => return Ok(None),
    };
    let namespace_object = Object {
        api_version: "v1",
        kind: "Namespace",
        metadata: Metadata {
            name: namespace.to_owned(),
            namespace: None,
            labels: BTreeMap::new(),
        },
        secret_type: None,
        data: BTreeMap::new(),
    };
    let secret = Object {
        api_version: "v1",
        kind: "Secret",
        metadata: Metadata {
            name: CREDENTIALS_SECRET.to_owned(),
            namespace: Some(namespace.to_owned()),
            labels,
        },
        secret_type: Some(secret_type),
        data,
    };
    let yaml = |object: &Object| {
        serde_yaml_ng::to_string(object).map_err(|error| K3sError::Template {
            name: "gitops credentials".to_owned(),
            message: error.to_string(),
        })
    };
    Ok(Some(format!(
        "# Written by provision: credentials for the GitOps repository (mode 0600, never printed).\n{}---\n{}",
        yaml(&namespace_object)?,
        yaml(&secret)?
    )))
}

/// The argo-cd chart values that add the profile's known hosts to `argocd-ssh-known-hosts-cm`
/// (`configs.ssh.extraHosts` is appended to the chart's default hosts).
pub fn argocd_values(credentials: Option<&GitCredentials>) -> Result<Option<String>, K3sError> {
    match credentials {
        Some(GitCredentials::Ssh { known_hosts, .. }) => {
            flow_yaml(&serde_json::json!({ "configs": { "ssh": { "extraHosts": known_hosts } } }))
                .map(Some)
        }
        Some(GitCredentials::Https { .. }) | None => Ok(None),
    }
}

/// The fleet chart values that make Fleet refuse SSH hosts missing from the Secret's `known_hosts`
/// (before Fleet 0.13 host keys are not checked unless told so).
pub fn fleet_values(credentials: Option<&GitCredentials>) -> Result<Option<String>, K3sError> {
    match credentials {
        Some(GitCredentials::Ssh { .. }) => {
            flow_yaml(&serde_json::json!({ "insecureSkipHostKeyChecks": false })).map(Some)
        }
        Some(GitCredentials::Https { .. }) | None => Ok(None),
    }
}

/// Chart values as one YAML flow node that reads back unchanged, line separators included (plain
/// JSON leaves U+2028 and U+0085 raw, which YAML parsers take as line breaks).
fn flow_yaml(values: &serde_json::Value) -> Result<String, K3sError> {
    crate::templates::escape::json_scalar(minijinja::Value::from_serialize(values)).map_err(
        |error| K3sError::Template {
            name: "gitops chart values".to_owned(),
            message: error.to_string(),
        },
    )
}
