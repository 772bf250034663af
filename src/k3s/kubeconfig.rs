//! Kubeconfig handling: rewrite the one k3s writes (server URL → VIP or first server, names → cluster
//! name) and merge it into another kubeconfig without touching unrelated entries.

use serde_yaml_ng::{Mapping, Value};

use super::K3sError;

fn bad(path: &str, message: impl Into<String>) -> K3sError {
    K3sError::Kubeconfig {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn named_list<'a>(doc: &'a mut Value, key: &str) -> Option<&'a mut Vec<Value>> {
    doc.get_mut(key)?.as_sequence_mut()
}

/// Rewrite k3s's `k3s.yaml`: every cluster's server becomes `server_url`, and the cluster, user and
/// context are all named `name` (k3s calls them `default`).
pub fn rewrite_kubeconfig(
    k3s_yaml: &str,
    server_url: &str,
    name: &str,
) -> Result<String, K3sError> {
    let origin = "k3s.yaml";
    let mut doc: Value =
        serde_yaml_ng::from_str(k3s_yaml).map_err(|e| bad(origin, e.to_string()))?;
    for key in ["clusters", "users", "contexts"] {
        let list =
            named_list(&mut doc, key).ok_or_else(|| bad(origin, format!("no `{key}` list")))?;
        for entry in list.iter_mut() {
            if let Some(map) = entry.as_mapping_mut() {
                map.insert("name".into(), name.into());
            }
            if key == "clusters"
                && let Some(cluster) = entry.get_mut("cluster").and_then(Value::as_mapping_mut)
            {
                cluster.insert("server".into(), server_url.into());
            }
            if key == "contexts"
                && let Some(context) = entry.get_mut("context").and_then(Value::as_mapping_mut)
            {
                context.insert("cluster".into(), name.into());
                context.insert("user".into(), name.into());
            }
        }
    }
    if let Some(map) = doc.as_mapping_mut() {
        map.insert("current-context".into(), name.into());
    }
    serde_yaml_ng::to_string(&doc).map_err(|e| bad(origin, e.to_string()))
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
