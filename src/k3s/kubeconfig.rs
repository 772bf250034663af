//! Kubeconfig handling: build the workspace kubeconfig from the one k3s writes (server URL → VIP or
//! first server, names → cluster name) and merge it into another kubeconfig without touching unrelated
//! entries.
//!
//! A guest's `k3s.yaml` is not trusted whole: a compromised server could add `exec:` or `auth-provider:`
//! (commands run on the operator's machine), `proxy-url`, `insecure-skip-tls-verify` or more clusters
//! and users. Only an allow-list is copied: the CA (`certificate-authority-data`) and the credentials
//! (`client-certificate-data` + `client-key-data`, or `token`); the server URL is the one provision
//! computed. Everything else is dropped; malformed or oversized input is refused.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use super::K3sError;

/// Upper bound on a kubeconfig read from a guest or the workspace (k3s writes about 3 KiB).
pub const KUBECONFIG_MAX_BYTES: usize = 64 * 1024;

fn bad(path: &str, message: impl Into<String>) -> K3sError {
    K3sError::Kubeconfig {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The parts of a kubeconfig provision reads; every other field is ignored (and so never copied).
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    clusters: Vec<RawNamedCluster>,
    #[serde(default)]
    users: Vec<RawNamedUser>,
    #[serde(default)]
    contexts: Vec<RawNamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct RawNamedCluster {
    name: String,
    cluster: RawCluster,
}

#[derive(Deserialize)]
struct RawCluster {
    server: Option<String>,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize)]
struct RawNamedUser {
    name: String,
    user: RawUser,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
struct RawNamedContext {
    name: String,
    context: RawContext,
}

#[derive(Deserialize)]
struct RawContext {
    cluster: String,
    user: String,
}

/// The kubeconfig provision writes: one cluster, one user, one context, nothing else.
#[derive(Serialize)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [NamedCluster; 1],
    users: [NamedUser; 1],
    contexts: [NamedContext; 1],
    #[serde(rename = "current-context")]
    current_context: String,
    preferences: Mapping,
}

#[derive(Serialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Serialize)]
struct Cluster {
    server: String,
    #[serde(
        rename = "certificate-authority-data",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_authority_data: Option<String>,
}

#[derive(Serialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Serialize)]
#[serde(untagged)]
enum User {
    ClientCertificate {
        #[serde(rename = "client-certificate-data")]
        client_certificate_data: String,
        #[serde(rename = "client-key-data")]
        client_key_data: String,
    },
    Token {
        token: String,
    },
}

#[derive(Serialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Serialize)]
struct Context {
    cluster: String,
    user: String,
}

/// `value` as base64 data (one line, standard alphabet), or an error naming `field`.
fn base64_field(origin: &str, field: &str, value: String) -> Result<String, K3sError> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if valid {
        Ok(value)
    } else {
        Err(bad(origin, format!("`{field}` is not base64 data")))
    }
}

/// What provision takes from a kubeconfig: the current context's cluster server and CA, and its user's
/// credentials.
struct Taken {
    server: Option<String>,
    certificate_authority_data: Option<String>,
    user: User,
}

/// Reads the allow-listed fields of the current context (or of the only context) of `text`.
fn take_allowed(text: &str, origin: &str) -> Result<Taken, K3sError> {
    if text.len() > KUBECONFIG_MAX_BYTES {
        return Err(bad(
            origin,
            format!(
                "{} bytes is more than the {KUBECONFIG_MAX_BYTES} a kubeconfig may have; refusing it",
                text.len()
            ),
        ));
    }
    let raw: RawConfig =
        serde_yaml_ng::from_str(text).map_err(|e| bad(origin, format!("not a kubeconfig: {e}")))?;
    let context = match &raw.current_context {
        Some(current) => raw.contexts.iter().find(|c| &c.name == current),
        None if raw.contexts.len() == 1 => raw.contexts.first(),
        None => None,
    }
    .ok_or_else(|| bad(origin, "no current context"))?;
    let cluster = raw
        .clusters
        .into_iter()
        .find(|c| c.name == context.context.cluster)
        .ok_or_else(|| {
            bad(
                origin,
                format!("no cluster named {:?}", context.context.cluster),
            )
        })?
        .cluster;
    let user = raw
        .users
        .into_iter()
        .find(|u| u.name == context.context.user)
        .ok_or_else(|| bad(origin, format!("no user named {:?}", context.context.user)))?
        .user;
    let user = match (
        user.client_certificate_data,
        user.client_key_data,
        user.token,
    ) {
        (Some(certificate), Some(key), _) => User::ClientCertificate {
            client_certificate_data: base64_field(origin, "client-certificate-data", certificate)?,
            client_key_data: base64_field(origin, "client-key-data", key)?,
        },
        (None, None, Some(token)) => {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    origin,
                    "`token` holds blanks or non-printable characters",
                ));
            }
            User::Token { token }
        }
        _ => {
            return Err(bad(
                origin,
                "the user has neither client-certificate-data with client-key-data nor a token",
            ));
        }
    };
    let certificate_authority_data = cluster
        .certificate_authority_data
        .map(|ca| base64_field(origin, "certificate-authority-data", ca))
        .transpose()?;
    Ok(Taken {
        server: cluster.server,
        certificate_authority_data,
        user,
    })
}

/// The kubeconfig provision writes from what [`take_allowed`] read.
fn build(taken: Taken, server_url: String, name: &str, origin: &str) -> Result<String, K3sError> {
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [NamedCluster {
            name: name.to_owned(),
            cluster: Cluster {
                server: server_url,
                certificate_authority_data: taken.certificate_authority_data,
            },
        }],
        users: [NamedUser {
            name: name.to_owned(),
            user: taken.user,
        }],
        contexts: [NamedContext {
            name: name.to_owned(),
            context: Context {
                cluster: name.to_owned(),
                user: name.to_owned(),
            },
        }],
        current_context: name.to_owned(),
        preferences: Mapping::new(),
    };
    serde_yaml_ng::to_string(&config).map_err(|e| bad(origin, e.to_string()))
}

/// The workspace kubeconfig from k3s's `k3s.yaml`: server `server_url`, cluster, user and context all
/// named `name`, and only the allow-listed fields (see the module header).
pub fn rewrite_kubeconfig(
    k3s_yaml: &str,
    server_url: &str,
    name: &str,
) -> Result<String, K3sError> {
    let origin = "k3s.yaml";
    let taken = take_allowed(k3s_yaml, origin)?;
    build(taken, server_url.to_owned(), name, origin)
}

/// A kubeconfig about to be merged elsewhere, reduced to the allow-list again (it may come from an
/// older provision that copied `k3s.yaml` whole); its server must be an `https://` URL.
pub fn sanitize_kubeconfig(text: &str, name: &str, origin: &str) -> Result<String, K3sError> {
    let taken = take_allowed(text, origin)?;
    let server = taken
        .server
        .clone()
        .filter(|server| {
            server.starts_with("https://")
                && server.len() > "https://".len()
                && server.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| bad(origin, "the cluster's server is not an https:// URL"))?;
    build(taken, server, name, origin)
}

/// Merge `source` (a kubeconfig with one cluster/user/context) into `target` (may be empty): entries of the
/// same name are replaced, all others kept; `current-context` is set only when the target has none.
pub fn merge_kubeconfig_text(target: &str, source: &str) -> Result<String, K3sError> {
    let mut merged: Value = if target.trim().is_empty() {
        let mut map = Mapping::new();
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Config".into());
        map.insert("preferences".into(), Value::Mapping(Mapping::new()));
        Value::Mapping(map)
    } else {
        serde_yaml_ng::from_str(target).map_err(|e| bad("target", e.to_string()))?
    };
    let source: Value =
        serde_yaml_ng::from_str(source).map_err(|e| bad("source", e.to_string()))?;
    let merged_map = merged
        .as_mapping_mut()
        .ok_or_else(|| bad("target", "not a mapping"))?;
    for key in ["clusters", "users", "contexts"] {
        let incoming = source
            .get(key)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let list = merged_map
            .entry(key.into())
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if list.is_null() {
            *list = Value::Sequence(Vec::new());
        }
        let list = list
            .as_sequence_mut()
            .ok_or_else(|| bad("target", format!("`{key}` is not a list")))?;
        for entry in incoming {
            let name = entry.get("name").cloned();
            match list
                .iter_mut()
                .find(|existing| existing.get("name") == name.as_ref())
            {
                Some(existing) => *existing = entry,
                None => list.push(entry),
            }
        }
    }
    let has_current = merged_map
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if !has_current && let Some(current) = source.get("current-context") {
        merged_map.insert("current-context".into(), current.clone());
    }
    serde_yaml_ng::to_string(&merged).map_err(|e| bad("merged", e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const K3S_YAML: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\npreferences: {}\nusers:\n- name: default\n  user:\n    token: abc\n";

    #[test]
    fn rewrite_sets_server_and_names() {
        let out = rewrite_kubeconfig(K3S_YAML, "https://10.0.0.5:6443", "lab").unwrap();
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://10.0.0.5:6443"
        );
        assert_eq!(doc["clusters"][0]["name"], "lab");
        assert_eq!(doc["contexts"][0]["context"]["user"], "lab");
        assert_eq!(doc["current-context"], "lab");
        assert_eq!(doc["users"][0]["user"]["token"], "abc");
    }

    /// What a compromised server could write into k3s.yaml.
    const HOSTILE_K3S_YAML: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: default
  cluster:
    certificate-authority-data: Q0E=
    server: https://127.0.0.1:6443
    proxy-url: http://attacker.example:3128
    insecure-skip-tls-verify: true
    tls-server-name: attacker.example
    extensions: [{name: x, extension: {}}]
- name: elsewhere
  cluster: {server: "https://attacker.example:6443"}
contexts:
- name: default
  context: {cluster: default, user: default, namespace: kube-system}
- name: other
  context: {cluster: elsewhere, user: thief}
current-context: default
preferences: {colors: true}
users:
- name: default
  user:
    client-certificate-data: Q0VSVA==
    client-key-data: S0VZ
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: sh
      args: ["-c", "touch /tmp/pwned"]
    auth-provider: {name: oidc, config: {cmd-path: /bin/sh}}
    username: admin
    password: secret
- name: thief
  user: {token: stolen}
"#;

    #[test]
    fn hostile_k3s_yaml_keeps_only_the_allow_list() {
        let out = rewrite_kubeconfig(HOSTILE_K3S_YAML, "https://10.0.0.5:6443", "lab").unwrap();
        for forbidden in [
            "exec",
            "auth-provider",
            "proxy-url",
            "insecure-skip-tls-verify",
            "tls-server-name",
            "extensions",
            "attacker",
            "elsewhere",
            "thief",
            "stolen",
            "touch",
            "username",
            "password",
            "namespace",
            "colors",
            "127.0.0.1",
        ] {
            assert!(!out.contains(forbidden), "{forbidden} survived:\n{out}");
        }
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(doc["clusters"].as_sequence().unwrap().len(), 1);
        assert_eq!(doc["users"].as_sequence().unwrap().len(), 1);
        assert_eq!(doc["contexts"].as_sequence().unwrap().len(), 1);
        assert_eq!(
            doc["clusters"][0]["cluster"],
            serde_yaml_ng::from_str::<Value>(
                "{server: 'https://10.0.0.5:6443', certificate-authority-data: Q0E=}"
            )
            .unwrap()
        );
        assert_eq!(
            doc["users"][0]["user"],
            serde_yaml_ng::from_str::<Value>(
                "{client-certificate-data: Q0VSVA==, client-key-data: S0VZ}"
            )
            .unwrap()
        );
        // Merging sanitises again, so an older, whole-copied workspace kubeconfig loses them too.
        let old_style = HOSTILE_K3S_YAML.replace("https://127.0.0.1:6443", "https://10.0.0.5:6443");
        let sanitized = sanitize_kubeconfig(&old_style, "lab", "kubeconfig").unwrap();
        assert_eq!(sanitized, out);
    }

    #[test]
    fn malformed_or_oversized_kubeconfigs_are_refused() {
        let refused = |text: &str| {
            rewrite_kubeconfig(text, "https://10.0.0.5:6443", "lab")
                .unwrap_err()
                .to_string()
        };
        assert!(refused("{{{").contains("not a kubeconfig"));
        assert!(refused("clusters: 3").contains("not a kubeconfig"));
        assert!(
            refused(&format!(
                "{K3S_YAML}# {}\n",
                "x".repeat(KUBECONFIG_MAX_BYTES)
            ))
            .contains("more than")
        );
        assert!(
            refused(&K3S_YAML.replace("current-context: default", "current-context: gone"))
                .contains("no current context")
        );
        assert!(
            refused(&K3S_YAML.replace("token: abc", "exec: {command: sh}")).contains("neither")
        );
        assert!(refused(&K3S_YAML.replace("token: abc", "token: \"a b\"")).contains("token"));
        assert!(
            refused(&K3S_YAML.replace("Q0E=", "\"Q0E=\\nserver: x\""))
                .contains("certificate-authority-data")
        );
        assert!(
            sanitize_kubeconfig(
                &K3S_YAML.replace("https://127.0.0.1:6443", "http://x"),
                "lab",
                "k"
            )
            .unwrap_err()
            .to_string()
            .contains("https://")
        );
    }

    #[test]
    fn merge_keeps_other_entries_and_replaces_same_name() {
        let lab = rewrite_kubeconfig(K3S_YAML, "https://10.0.0.5:6443", "lab").unwrap();
        let other = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster: {server: https://prod:6443}\n- name: lab\n  cluster: {server: https://old:6443}\nusers:\n- name: prod\n  user: {token: p}\ncontexts:\n- name: prod\n  context: {cluster: prod, user: prod}\ncurrent-context: prod\n";
        let merged = merge_kubeconfig_text(other, &lab).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&merged).unwrap();
        assert_eq!(doc["clusters"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            doc["clusters"][1]["cluster"]["server"],
            "https://10.0.0.5:6443"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "p");
        assert_eq!(doc["current-context"], "prod");
        let into_empty = merge_kubeconfig_text("", &lab).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&into_empty).unwrap();
        assert_eq!(doc["current-context"], "lab");
        // Merging twice changes nothing.
        assert_eq!(merge_kubeconfig_text(&merged, &lab).unwrap(), merged);
    }
}
