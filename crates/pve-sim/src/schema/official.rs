//! The official schema (`schema-9.1.json`): finding an endpoint, converting its parameters and
//! property-string formats to [`ParamSpec`] / [`FormatSpec`], and validating any request
//! against it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::validate::check_params;
use super::{FormatSpec, Kind, ParamSpec, lookup_param};

/// Finds the official schema node for `path` (a template like `/nodes/{node}/qemu` or a concrete
/// path) in the schema's tree.
pub fn official_endpoint<'a>(schema: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    fn walk<'a>(nodes: &'a Value, path: &str, found: &mut Option<&'a Value>) {
        let Some(list) = nodes.as_array() else { return };
        for node in list {
            if let Some(template) = node.get("path").and_then(Value::as_str)
                && (template == path || concrete_matches(template, path))
            {
                // Prefer an exact template match over a variable match.
                if found.is_none() || template == path {
                    *found = Some(node);
                }
            }
            if let Some(children) = node.get("children") {
                walk(children, path, found);
            }
        }
    }
    let mut found = None;
    walk(schema, path, &mut found);
    found?.get("info")?.get(method)
}

fn concrete_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

pub(super) fn official_properties(endpoint: &Value) -> Map<String, Value> {
    endpoint
        .get("parameters")
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

pub(super) fn number(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Converts an official parameter description into a [`ParamSpec`] (its property-string
/// format, if any, is returned by [`official_format`]).
pub fn official_param(property: &Value) -> ParamSpec {
    let kind = match property.get("type").and_then(Value::as_str) {
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("array") => Kind::Array,
        Some("object") => Kind::Object,
        Some("null") => Kind::Null,
        Some(_) | None => Kind::String,
    };
    let optional = property.get("optional").is_some_and(|o| match o {
        Value::Number(n) => n.as_i64() == Some(1),
        Value::Bool(b) => *b,
        Value::String(s) => s == "1",
        _ => false,
    });
    ParamSpec {
        kind,
        required: !optional,
        enumeration: property.get("enum").and_then(Value::as_array).map(|list| {
            list.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        }),
        minimum: number(property.get("minimum")),
        maximum: number(property.get("maximum")),
        pattern: property
            .get("pattern")
            .and_then(Value::as_str)
            .map(str::to_owned),
        max_length: property
            .get("maxLength")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        format: property
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_owned),
        count: None,
        items: property
            .get("items")
            .map(|items| Box::new(official_param(items))),
    }
}

/// The property-string format of an official parameter: from its `format` object, or parsed
/// from `typetext` for a named format. `None` for plain values.
pub fn official_format(property: &Value) -> Option<FormatSpec> {
    match property.get("format") {
        Some(Value::Object(keys)) => {
            let mut format = FormatSpec::default();
            for (key, spec) in keys {
                if let Some(target) = spec.get("alias").and_then(Value::as_str) {
                    match spec.get("keyAlias").and_then(Value::as_str) {
                        Some(key_alias) => {
                            format.key_alias.insert(key.clone(), key_alias.to_owned());
                            format.key_alias_value = Some(target.to_owned());
                        }
                        None => {
                            format.alias.insert(key.clone(), target.to_owned());
                        }
                    }
                    continue;
                }
                if spec
                    .get("default_key")
                    .is_some_and(|d| d.as_i64() == Some(1) || d == true)
                {
                    format.default_key = Some(key.clone());
                }
                format.keys.insert(key.clone(), official_param(spec));
            }
            Some(format)
        }
        Some(Value::String(name)) => {
            let typetext = property.get("typetext").and_then(Value::as_str)?;
            let mut format = typetext_format(typetext)?;
            format.official = Some(name.clone());
            Some(format)
        }
        Some(_) | None => None,
    }
}

/// Parses `[[host=]<…>] [,pcie=<1|0>] [,driver=<vfio|keep>] …` into keys (types inferred:
/// `<1|0>` boolean, `<a|b>` enum, `<integer>` integer, else string).
pub fn typetext_format(typetext: &str) -> Option<FormatSpec> {
    if !typetext.contains('=') {
        return None;
    }
    let mut format = FormatSpec::default();
    let bytes = typetext.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        // A key is a run of [A-Za-z0-9_-] followed by '='.
        if bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_' || bytes[index] == b'-' {
            let start = index;
            while index < bytes.len()
                && (bytes[index].is_ascii_alphanumeric()
                    || bytes[index] == b'_'
                    || bytes[index] == b'-')
            {
                index += 1;
            }
            if index < bytes.len() && bytes[index] == b'=' {
                let key = &typetext[start..index];
                // `[key=]<…>`: the key may be omitted, it is the default key.
                let is_default_key = typetext[index + 1..].starts_with(']');
                // Value text: <...> following '=' or ']'.
                let rest = &typetext[index + 1..];
                let rest = rest.trim_start_matches(']');
                let value = rest
                    .strip_prefix('<')
                    .and_then(|r| r.split_once('>'))
                    .map(|(v, _)| v)
                    .unwrap_or("");
                let kind = if value == "1|0" {
                    Kind::Boolean
                } else if value == "integer"
                    || value.contains(" - ")
                        && value.chars().next().is_some_and(|c| c.is_ascii_digit())
                {
                    Kind::Integer
                } else if value == "number" {
                    Kind::Number
                } else {
                    Kind::String
                };
                let enumeration = (kind == Kind::String
                    && value.contains('|')
                    && value.split('|').all(|v| {
                        !v.is_empty()
                            && v.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    }))
                .then(|| value.split('|').map(str::to_owned).collect());
                if is_default_key {
                    format.default_key = Some(key.to_owned());
                }
                format.keys.insert(
                    key.to_owned(),
                    ParamSpec {
                        kind,
                        required: false,
                        enumeration,
                        minimum: None,
                        maximum: None,
                        pattern: None,
                        max_length: None,
                        format: None,
                        count: None,
                        items: None,
                    },
                );
            }
        } else {
            index += 1;
        }
    }
    Some(format)
}

/// Validates any request against the official schema (`schema_json` is the parsed
/// schema-9.1.json). `path` may be concrete (`/nodes/pve1/qemu/101/config`); path variables are
/// taken from it. Property strings are checked key by key.
pub fn validate_against_official(
    schema_json: &Value,
    method: &str,
    path: &str,
    params: &Map<String, Value>,
) -> Result<(), BTreeMap<String, String>> {
    let Some(endpoint) = official_endpoint(schema_json, method, path) else {
        return Err(BTreeMap::from([(
            "path".to_owned(),
            format!("{method} {path} is not in the official schema"),
        )]));
    };
    let properties = official_properties(endpoint);
    // Add path variables as parameters (as Proxmox does).
    let mut all = params.clone();
    let template = find_template(schema_json, path).unwrap_or_default();
    for (t, p) in template
        .trim_matches('/')
        .split('/')
        .zip(path.trim_matches('/').split('/'))
    {
        if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            all.entry(name.to_owned())
                .or_insert_with(|| Value::String(p.replace("%2F", "/")));
        }
    }
    let specs: BTreeMap<String, ParamSpec> = properties
        .iter()
        .map(|(name, property)| (name.clone(), official_param(property)))
        .collect();
    // Formats are looked up by parameter: the closure receives the ParamSpec whose `format` is
    // the official named format or an object marker; map back through the property table.
    let formats: BTreeMap<String, FormatSpec> = properties
        .iter()
        .filter_map(|(name, property)| {
            let format = official_format(property)?;
            Some((format_key(name, property), format))
        })
        .collect();
    let specs_with_formats: BTreeMap<String, ParamSpec> = specs
        .into_iter()
        .map(|(name, mut spec)| {
            let property = &properties[&name];
            if official_format(property).is_some() {
                spec.format = Some(format_key(&name, property));
            } else if let Some(items) = property.get("items")
                && official_format(items).is_some()
                && let Some(item_spec) = spec.items.as_mut()
            {
                item_spec.format = Some(format!("{name}[]"));
            }
            (name, spec)
        })
        .collect();
    let mut item_formats = formats;
    for (name, property) in &properties {
        if let Some(items) = property.get("items")
            && let Some(format) = official_format(items)
        {
            item_formats.insert(format!("{name}[]"), format);
        }
    }
    let format_of = |spec: &ParamSpec| -> Option<FormatSpec> {
        spec.format
            .as_ref()
            .and_then(|name| item_formats.get(name).cloned())
    };
    let lookup = |name: &str| lookup_param(&specs_with_formats, name);
    check_params(&all, &specs_with_formats, &lookup, &format_of)
}

fn format_key(name: &str, property: &Value) -> String {
    match property.get("format") {
        Some(Value::String(named)) => format!("{named}@{name}"),
        Some(_) | None => format!("object@{name}"),
    }
}

fn find_template(schema: &Value, path: &str) -> Option<String> {
    fn walk(nodes: &Value, path: &str) -> Option<String> {
        for node in nodes.as_array()? {
            let template = node.get("path").and_then(Value::as_str)?;
            if template == path || concrete_matches(template, path) {
                return Some(template.to_owned());
            }
            if let Some(children) = node.get("children")
                && let Some(found) = walk(children, path)
            {
                return Some(found);
            }
        }
        None
    }
    walk(schema, path)
}
