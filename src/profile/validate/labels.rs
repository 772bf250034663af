//! Kubernetes label keys and values and node taints, as k3s accepts them.

use super::formats::is_dns_subdomain;

pub(super) fn is_label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Kubernetes label key rules plus k3s's refusal of `kubernetes.io` / `k8s.io` prefixes.
pub fn check_label_key(key: &str) -> Result<(), (String, &'static str)> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns_subdomain(prefix) {
            return Err((
                format!("label key prefix `{prefix}` is not a DNS subdomain"),
                "a prefix is a lowercase DNS name of at most 253 characters, e.g. node-role.example",
            ));
        }
        let reserved = ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|domain| prefix == *domain || prefix.ends_with(&format!(".{domain}")));
        if reserved {
            return Err((
                format!(
                    "label key `{key}` uses the reserved prefix `{prefix}`: k3s refuses to start with it"
                ),
                "use your own prefix, e.g. node-role.example/gpu",
            ));
        }
    }
    if !is_label_name(name) {
        return Err((
            format!("label key `{key}` is not a valid Kubernetes label name"),
            "names are at most 63 characters of letters, digits, `-`, `_` and `.`, starting and ending alphanumeric",
        ));
    }
    Ok(())
}

pub(super) fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label value `{value}` is not a valid Kubernetes label value"
        ))
    }
}

/// Splits a taint `key[=value]:Effect` into key and effect, checking every part.
pub fn parse_taint(taint: &str) -> Result<(&str, &str), (String, &'static str)> {
    let hint = "write key[=value]:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute, e.g. nvidia.com/gpu=present:NoSchedule";
    let Some((key_value, effect)) = taint.rsplit_once(':') else {
        return Err((format!("taint `{taint}` has no effect"), hint));
    };
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err((
            format!("taint effect `{effect}` is not NoSchedule, PreferNoSchedule or NoExecute"),
            hint,
        ));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((key, value)) => (key, value),
        None => (key_value, ""),
    };
    if let Err((message, hint)) = check_label_key(key) {
        return Err((format!("taint `{taint}`: {message}"), hint));
    }
    if let Err(message) = check_label_value(value) {
        return Err((format!("taint `{taint}`: {message}"), hint));
    }
    Ok((key, effect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(check_label_key("special.gpu").is_ok());
        assert!(check_label_key("node-role.example/gpu").is_ok());
        assert!(check_label_key("node-role.kubernetes.io/gpu").is_err());
        assert!(check_label_key("k8s.io/x").is_err());
        assert!(check_label_key("-bad").is_err());
        assert!(check_label_key(&"a".repeat(64)).is_err());
        assert!(check_label_key("Upper/x").is_err());
    }

    #[test]
    fn taints_need_a_known_effect() {
        assert_eq!(
            parse_taint("nvidia.com/gpu=present:NoSchedule"),
            Ok(("nvidia.com/gpu", "NoSchedule"))
        );
        assert!(parse_taint("dedicated:NoExecute").is_ok());
        assert!(parse_taint("dedicated=gpu").is_err());
        assert!(parse_taint("dedicated=gpu:Never").is_err());
    }
}
