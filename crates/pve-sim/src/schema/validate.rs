//! The validator: a request's parameters, each value (type, enum, bounds, pattern, named
//! format) and each key of a property string, checked against a [`ParamSpec`] with
//! PVE::JSONSchema's messages.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::propstring;

use super::{FormatSpec, Kind, ParamSpec};

pub(super) fn check_params(
    params: &Map<String, Value>,
    specs: &BTreeMap<String, ParamSpec>,
    lookup: &dyn Fn(&str) -> Option<ParamSpec>,
    format_of: &dyn Fn(&ParamSpec) -> Option<FormatSpec>,
) -> Result<(), BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    for (name, value) in params {
        let Some(spec) = lookup(name) else {
            errors.insert(
                name.clone(),
                "property is not defined in schema and the schema does not allow additional properties"
                    .to_owned(),
            );
            continue;
        };
        if let Err(message) = check_value(&spec, value, format_of) {
            errors.insert(name.clone(), message);
        }
    }
    for (name, spec) in specs {
        if spec.required && !name.ends_with("[n]") && !params.contains_key(name) {
            errors.insert(
                name.clone(),
                "property is missing and it is not optional".to_owned(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_value(
    spec: &ParamSpec,
    value: &Value,
    format_of: &dyn Fn(&ParamSpec) -> Option<FormatSpec>,
) -> Result<(), String> {
    if spec.kind == Kind::Array {
        let items: Vec<&Value> = match value {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        if let Some(item_spec) = &spec.items {
            for item in items {
                check_value(item_spec, item, format_of)?;
            }
        }
        return Ok(());
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(_) => {
            return Err(format!(
                "type check ('{}') failed - got ARRAY",
                kind_name(spec.kind)
            ));
        }
        other => other.to_string(),
    };
    check_text(spec, &text, format_of)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Integer => "integer",
        Kind::Number => "number",
        Kind::Boolean => "boolean",
        Kind::Array => "array",
        Kind::Object => "object",
        Kind::Null => "null",
    }
}

/// Checks one scalar value (as sent: a string) against a parameter description.
pub fn check_text(
    spec: &ParamSpec,
    text: &str,
    format_of: &dyn Fn(&ParamSpec) -> Option<FormatSpec>,
) -> Result<(), String> {
    match spec.kind {
        Kind::Integer | Kind::Number => {
            let number: f64 = if spec.kind == Kind::Integer {
                text.parse::<i64>()
                    .map(|n| n as f64)
                    .map_err(|_| format!("type check ('integer') failed - got '{text}'"))?
            } else {
                text.parse::<f64>()
                    .map_err(|_| format!("type check ('number') failed - got '{text}'"))?
            };
            if let Some(minimum) = spec.minimum
                && number < minimum
            {
                return Err(format!("value must have a minimum value of {minimum}"));
            }
            if let Some(maximum) = spec.maximum
                && number > maximum
            {
                return Err(format!("value must have a maximum value of {maximum}"));
            }
        }
        Kind::Boolean => {
            if !matches!(
                text.to_ascii_lowercase().as_str(),
                "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
            ) {
                return Err(format!("type check ('boolean') failed - got '{text}'"));
            }
        }
        Kind::String | Kind::Array | Kind::Object | Kind::Null => {}
    }
    if let Some(max_length) = spec.max_length
        && text.chars().count() > max_length
    {
        return Err(format!("value may only be {max_length} characters long"));
    }
    if let Some(values) = &spec.enumeration
        && !values.iter().any(|v| v == text)
    {
        return Err(format!(
            "value '{text}' does not have a value in the enumeration '{}'",
            values.join(", ")
        ));
    }
    if let Some(pattern) = &spec.pattern
        && let Some(regex) = compile(pattern)
        && !regex.is_match(text)
    {
        return Err("value does not match the regex pattern".to_owned());
    }
    if spec.format.is_some() {
        match format_of(spec) {
            Some(format) => check_property_string(&format, text, format_of)?,
            None => {
                if let Some(name) = &spec.format {
                    check_named_format(name, text)?;
                }
            }
        }
    }
    Ok(())
}

/// Validates a property string against its format.
pub fn check_property_string(
    format: &FormatSpec,
    text: &str,
    format_of: &dyn Fn(&ParamSpec) -> Option<FormatSpec>,
) -> Result<(), String> {
    let entries = propstring::parse(text).map_err(|error| format!("invalid format - {error}"))?;
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in &entries {
        let (key, value) = match key {
            None => match &format.default_key {
                Some(default) => (default.clone(), value.clone()),
                None => {
                    errors.insert(
                        value.clone(),
                        "value without key, but schema does not define a default key".to_owned(),
                    );
                    continue;
                }
            },
            Some(key) => {
                if let Some(target) = format.key_alias.get(key) {
                    // `virtio=MAC`: the key names `target`'s value, the value is the alias value.
                    seen.push(target.clone());
                    if let Some(value_key) = &format.key_alias_value
                        && let Some(spec) = format.keys.get(value_key)
                        && let Err(message) = check_text(spec, value, format_of)
                    {
                        errors.insert(value_key.clone(), message);
                    }
                    seen.push(format.key_alias_value.clone().unwrap_or_default());
                    continue;
                }
                let key = format
                    .alias
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| key.clone());
                (key, value.clone())
            }
        };
        let Some(spec) = format.keys.get(&key) else {
            errors.insert(
                key,
                "property is not defined in schema and the schema does not allow additional properties"
                    .to_owned(),
            );
            continue;
        };
        if let Err(message) = check_text(spec, &value, format_of) {
            errors.insert(key.clone(), message);
        }
        seen.push(key);
    }
    for (key, spec) in &format.keys {
        if spec.required && !seen.contains(key) {
            errors.insert(
                key.clone(),
                "property is missing and it is not optional".to_owned(),
            );
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let details: String = errors
        .iter()
        .map(|(key, message)| format!("{key}: {message}\n"))
        .collect();
    Err(format!("invalid format - format error\n{details}"))
}

/// Compiles a Proxmox (Perl) pattern anchored like PVE::JSONSchema does (`^(?:…)$`).
fn compile(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<std::sync::Mutex<BTreeMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = match cache.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    cache
        .entry(pattern.to_owned())
        .or_insert_with(|| {
            let rust = pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:");
            Regex::new(&format!("^(?:{rust})$")).ok()
        })
        .clone()
}

/// Checks of PVE's named string formats that provision's parameters use.
fn check_named_format(name: &str, text: &str) -> Result<(), String> {
    let pattern = match name {
        "pve-node" => r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?",
        "pve-storage-id" => r"[a-z][a-z0-9\-_.]*[a-z0-9]",
        "pve-configid" => r"[a-z][a-z0-9_-]+",
        "pve-poolid" => r"[A-Za-z0-9_\-]+(?:/[A-Za-z0-9_\-]+){0,2}",
        "pve-realm" => r"[A-Za-z][A-Za-z0-9\.\-_]+",
        "dns-name" => {
            r"(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)"
        }
        "mac-addr" => r"(?i)[0-9a-f]{2}(?::[0-9a-f]{2}){5}",
        "pve-bridge-id" => r"[-_.\w\d]+",
        // pve-common PVE/JSONSchema.pm: `$PVE_TAG_RE = qr/[a-z0-9_][a-z0-9_\-\+\.]*/i`, the
        // list split by PVE::ParseUtils split_list (`[;,\s]` and NUL).
        "pve-tag-list" => {
            r"(?i)[;,\s]*[a-z0-9_][a-z0-9_\-+.]*(?:[;,\s]+[a-z0-9_][a-z0-9_\-+.]*)*[;,\s]*"
        }
        "pve-cpuset" => r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*",
        "disk-size" => r"\d+(?:\.\d+)?[KMGT]?",
        "pve-volume-id-or-qm-path" | "pve-volume-id-or-absolute-path" => {
            r"(?:[a-z][a-z0-9\-_.]*[a-z0-9]:.+|/.+|none|cdrom)"
        }
        "pve-storage-content" => r"(?:images|rootdir|iso|vztmpl|backup|snippets|import)",
        "pve-storage-content-list" => {
            r"(?:images|rootdir|iso|vztmpl|backup|snippets|import)(?:,(?:images|rootdir|iso|vztmpl|backup|snippets|import))*"
        }
        "urlencoded" => r"(?:[A-Za-z0-9\-_.!~*'()]|%[0-9A-Fa-f]{2})*",
        "address-list" => r"[0-9A-Fa-f:.]+(?:[ ,;]+[0-9A-Fa-f:.]+)*",
        _ => return Ok(()),
    };
    match compile(pattern) {
        Some(regex) if !regex.is_match(text) => {
            Err(format!("value does not match the format '{name}'"))
        }
        Some(_) | None => Ok(()),
    }
}
