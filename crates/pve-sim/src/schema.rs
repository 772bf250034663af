//! The project's compact description of the Proxmox API parameters it uses
//! (`params/params.toml`), the validator the simulator runs on every request, and the same
//! validator driven by the official schema file (`validate_against_official`), plus the
//! comparison of the two (`compare_with_official`) that the conformance test runs.
//!
//! Messages follow PVE::JSONSchema's wording.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::propstring;

const DESCRIPTION: &str = include_str!("../params/params.toml");

/// Type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Null,
}

/// One parameter (or one key of a property string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default)]
    pub required: bool,
    #[serde(default, rename = "enum")]
    pub enumeration: Option<Vec<String>>,
    #[serde(default)]
    pub minimum: Option<f64>,
    #[serde(default)]
    pub maximum: Option<f64>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub max_length: Option<usize>,
    /// A property-string format (a key of `formats`) or a named check (`pve-node`).
    #[serde(default)]
    pub format: Option<String>,
    /// For `name[n]`: how many numbered instances exist.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub items: Option<Box<ParamSpec>>,
}

/// A property-string format.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FormatSpec {
    /// The official schema's name for a format it gives only as `typetext`.
    #[serde(default)]
    pub official: Option<String>,
    #[serde(default)]
    pub default_key: Option<String>,
    #[serde(default)]
    pub keys: BTreeMap<String, ParamSpec>,
    /// `virtio=MAC` means `model=virtio,macaddr=MAC`: alias key → the key it names the value of.
    #[serde(default)]
    pub key_alias: BTreeMap<String, String>,
    /// The key that receives the value of a key alias (`macaddr`).
    #[serde(default)]
    pub key_alias_value: Option<String>,
    /// Plain aliases (`volume` → `file`).
    #[serde(default)]
    pub alias: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointSpec {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDescription {
    formats: BTreeMap<String, FormatSpec>,
    sets: BTreeMap<String, BTreeMap<String, ParamSpec>>,
    endpoints: BTreeMap<String, EndpointSpec>,
}

/// The resolved description: per "METHOD /template", every parameter.
#[derive(Debug, Clone)]
pub struct Description {
    pub formats: BTreeMap<String, FormatSpec>,
    pub endpoints: BTreeMap<String, BTreeMap<String, ParamSpec>>,
}

/// Errors in the description file itself (a bug caught by the unit tests).
#[derive(Debug, thiserror::Error)]
pub enum DescriptionError {
    #[error("params.toml does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("params.toml: endpoint {endpoint} includes unknown set {set}")]
    UnknownSet { endpoint: String, set: String },
}

impl Description {
    pub fn parse(text: &str) -> Result<Description, DescriptionError> {
        let raw: RawDescription = toml::from_str(text)?;
        let mut endpoints = BTreeMap::new();
        for (name, endpoint) in raw.endpoints {
            let mut params = BTreeMap::new();
            for set in &endpoint.include {
                let Some(set_params) = raw.sets.get(set) else {
                    return Err(DescriptionError::UnknownSet {
                        endpoint: name.clone(),
                        set: set.clone(),
                    });
                };
                params.extend(set_params.clone());
            }
            params.extend(endpoint.params);
            endpoints.insert(name, params);
        }
        Ok(Description {
            formats: raw.formats,
            endpoints,
        })
    }
}

/// The embedded description (parsed once).
pub fn description() -> &'static Description {
    static DESCRIBED: OnceLock<Description> = OnceLock::new();
    DESCRIBED.get_or_init(|| match Description::parse(DESCRIPTION) {
        Ok(description) => description,
        Err(error) => {
            // The unit test `description_parses` catches this before any release.
            tracing::error!(%error, "invalid parameter description");
            Description {
                formats: BTreeMap::new(),
                endpoints: BTreeMap::new(),
            }
        }
    })
}

/// Validates a request against the project's description (path variables included in
/// `params`). `Err` is Proxmox's per-parameter error map.
pub fn validate(
    method: &str,
    template: &str,
    params: &Map<String, Value>,
) -> Result<(), BTreeMap<String, String>> {
    let description = description();
    let key = format!("{method} {template}");
    let Some(specs) = description.endpoints.get(&key) else {
        return Err(BTreeMap::from([(
            "method".to_owned(),
            format!("no parameter description for {key}"),
        )]));
    };
    let lookup = |name: &str| -> Option<ParamSpec> { lookup_param(specs, name) };
    let format_of = |spec: &ParamSpec| -> Option<FormatSpec> {
        spec.format
            .as_ref()
            .and_then(|f| description.formats.get(f).cloned())
    };
    check_params(params, specs, &lookup, &format_of)
}

/// The description of a VM config key (as `POST /nodes/{node}/qemu` takes it).
pub fn config_param(key: &str) -> Option<ParamSpec> {
    let specs = description().endpoints.get("POST /nodes/{node}/qemu")?;
    lookup_param(specs, key)
}

fn normalize_boolean(text: &str) -> Option<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some("1"),
        "0" | "false" | "no" | "off" => Some("0"),
        _ => None,
    }
}

/// A config value the way qemu-server writes it: booleans as `1`/`0`, also inside property
/// strings (PVE::JSONSchema parses `true`/`yes`/`on` and print_property_string writes `1`).
pub fn normalize_booleans(key: &str, value: &str) -> String {
    let Some(spec) = config_param(key) else {
        return value.to_owned();
    };
    if spec.kind == Kind::Boolean {
        return normalize_boolean(value).unwrap_or(value).to_owned();
    }
    let Some(format) = spec
        .format
        .as_ref()
        .and_then(|name| description().formats.get(name))
    else {
        return value.to_owned();
    };
    let Ok(mut entries) = propstring::parse(value) else {
        return value.to_owned();
    };
    for (entry_key, entry_value) in &mut entries {
        let name = match entry_key {
            Some(name) => format.alias.get(name).unwrap_or(name).clone(),
            None => match &format.default_key {
                Some(default) => default.clone(),
                None => continue,
            },
        };
        if format
            .keys
            .get(&name)
            .is_some_and(|k| k.kind == Kind::Boolean)
            && let Some(normal) = normalize_boolean(entry_value)
        {
            *entry_value = normal.to_owned();
        }
    }
    propstring::serialize(&entries)
}

fn lookup_param(specs: &BTreeMap<String, ParamSpec>, name: &str) -> Option<ParamSpec> {
    if let Some(spec) = specs.get(name) {
        return Some(spec.clone());
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() {
        return None;
    }
    let index: u32 = name[base.len()..].parse().ok()?;
    let spec = specs.get(&format!("{base}[n]"))?;
    match spec.count {
        Some(count) if index >= count => None,
        Some(_) | None => Some(spec.clone()),
    }
}

fn check_params(
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

// ---------------------------------------------------------------------------------------------
// The official schema.

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

fn official_properties(endpoint: &Value) -> Map<String, Value> {
    endpoint
        .get("parameters")
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn number(value: Option<&Value>) -> Option<f64> {
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

/// Every disagreement between the project's description and the official schema:
/// a parameter or property-string key the official schema lacks, a different type, an enum value
/// it does not allow, different bounds, required-ness or pattern.
pub fn compare_with_official(schema_json: &Value) -> Vec<String> {
    compare_description(description(), schema_json)
}

/// [`compare_with_official`] for any description (tests feed it deliberately wrong ones).
pub fn compare_description(description: &Description, schema_json: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (endpoint, params) in &description.endpoints {
        let Some((method, template)) = endpoint.split_once(' ') else {
            problems.push(format!("{endpoint}: not METHOD /path"));
            continue;
        };
        let Some(official) = official_endpoint(schema_json, method, template) else {
            problems.push(format!("{endpoint}: not in the official schema"));
            continue;
        };
        let properties = official_properties(official);
        for (name, ours) in params {
            let Some(property) = properties.get(name) else {
                problems.push(format!(
                    "{endpoint}: parameter '{name}' is not in the official schema"
                ));
                continue;
            };
            let theirs = official_param(property);
            compare_param(&format!("{endpoint} {name}"), ours, &theirs, &mut problems);
            // Property strings.
            let our_format = ours
                .format
                .as_ref()
                .and_then(|f| description.formats.get(f))
                .or_else(|| {
                    ours.items
                        .as_ref()
                        .and_then(|i| i.format.as_ref())
                        .and_then(|f| description.formats.get(f))
                });
            let their_format = official_format(property)
                .or_else(|| property.get("items").and_then(official_format));
            match (our_format, their_format) {
                (Some(ours), Some(theirs)) => {
                    compare_format(&format!("{endpoint} {name}"), ours, &theirs, &mut problems);
                }
                (Some(_), None) => problems.push(format!(
                    "{endpoint} {name}: described as a property string, the official schema has none"
                )),
                (None, Some(_)) => problems.push(format!(
                    "{endpoint} {name}: the official schema has a property-string format, ours has none"
                )),
                (None, None) => {
                    if let (Some(our_name), Some(their_name)) = (&ours.format, &theirs.format)
                        && our_name != their_name
                    {
                        problems.push(format!(
                            "{endpoint} {name}: format '{our_name}' but official '{their_name}'"
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn compare_param(context: &str, ours: &ParamSpec, theirs: &ParamSpec, problems: &mut Vec<String>) {
    if ours.kind != theirs.kind {
        problems.push(format!(
            "{context}: type {:?} but official {:?}",
            ours.kind, theirs.kind
        ));
    }
    if ours.required != theirs.required {
        problems.push(format!(
            "{context}: required={} but official required={}",
            ours.required, theirs.required
        ));
    }
    match (&ours.enumeration, &theirs.enumeration) {
        (Some(our_values), Some(their_values)) => {
            for value in our_values {
                if !their_values.contains(value) {
                    problems.push(format!(
                        "{context}: enum value '{value}' not in the official enum"
                    ));
                }
            }
        }
        (Some(_), None) => problems.push(format!("{context}: enum but the official has none")),
        (None, Some(_)) => problems.push(format!("{context}: the official has an enum, ours none")),
        (None, None) => {}
    }
    if ours.minimum != theirs.minimum {
        problems.push(format!(
            "{context}: minimum {:?} but official {:?}",
            ours.minimum, theirs.minimum
        ));
    }
    if ours.maximum != theirs.maximum {
        problems.push(format!(
            "{context}: maximum {:?} but official {:?}",
            ours.maximum, theirs.maximum
        ));
    }
    if theirs.pattern.is_some() && ours.pattern != theirs.pattern {
        problems.push(format!(
            "{context}: pattern {:?} but official {:?}",
            ours.pattern, theirs.pattern
        ));
    }
    if theirs.max_length.is_some() && ours.max_length != theirs.max_length {
        problems.push(format!(
            "{context}: maxLength {:?} but official {:?}",
            ours.max_length, theirs.max_length
        ));
    }
}

fn compare_format(
    context: &str,
    ours: &FormatSpec,
    theirs: &FormatSpec,
    problems: &mut Vec<String>,
) {
    if ours.default_key != theirs.default_key {
        problems.push(format!(
            "{context}: default key {:?} but official {:?}",
            ours.default_key, theirs.default_key
        ));
    }
    if let (Some(our_name), Some(their_name)) = (&ours.official, &theirs.official)
        && our_name != their_name
    {
        problems.push(format!(
            "{context}: format '{our_name}' but official '{their_name}'"
        ));
    }
    for (key, spec) in &ours.keys {
        let Some(their_spec) = theirs.keys.get(key) else {
            problems.push(format!(
                "{context}: key '{key}' is not in the official format"
            ));
            continue;
        };
        let context = format!("{context}.{key}");
        if spec.kind != their_spec.kind {
            problems.push(format!(
                "{context}: type {:?} but official {:?}",
                spec.kind, their_spec.kind
            ));
        }
        if let (Some(our_values), Some(their_values)) = (&spec.enumeration, &their_spec.enumeration)
        {
            for value in our_values {
                if !their_values.contains(value) {
                    problems.push(format!(
                        "{context}: enum value '{value}' not in the official enum"
                    ));
                }
            }
        }
        if theirs.official.is_none() {
            // Full object formats: bounds and required-ness must agree too.
            if spec.required != their_spec.required {
                problems.push(format!(
                    "{context}: required={} but official required={}",
                    spec.required, their_spec.required
                ));
            }
            if spec.minimum != their_spec.minimum || spec.maximum != their_spec.maximum {
                problems.push(format!(
                    "{context}: bounds {:?}..{:?} but official {:?}..{:?}",
                    spec.minimum, spec.maximum, their_spec.minimum, their_spec.maximum
                ));
            }
            if their_spec.pattern.is_some() && spec.pattern != their_spec.pattern {
                problems.push(format!(
                    "{context}: pattern {:?} but official {:?}",
                    spec.pattern, their_spec.pattern
                ));
            }
            if their_spec.enumeration.is_some() && spec.enumeration.is_none() {
                problems.push(format!("{context}: the official has an enum, ours none"));
            }
        }
    }
    for (alias, target) in &ours.key_alias {
        if theirs.key_alias.get(alias) != Some(target) {
            problems.push(format!(
                "{context}: key alias '{alias}' is not in the official format"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect()
    }

    #[test]
    fn description_parses() {
        Description::parse(DESCRIPTION).unwrap();
        assert!(
            description()
                .endpoints
                .contains_key("POST /nodes/{node}/qemu")
        );
    }

    #[test]
    fn rejects_unknown_and_bad_values() {
        let errors = validate(
            "POST",
            "/nodes/{node}/qemu",
            &params(&[
                ("node", "pve1"),
                ("vmid", "99"),
                ("bogus", "1"),
                ("bios", "uefi"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errors["vmid"], "value must have a minimum value of 100");
        assert_eq!(
            errors["bogus"],
            "property is not defined in schema and the schema does not allow additional properties"
        );
        assert_eq!(
            errors["bios"],
            "value 'uefi' does not have a value in the enumeration 'seabios, ovmf'"
        );
    }

    #[test]
    fn checks_property_strings() {
        let ok = params(&[
            ("node", "pve1"),
            ("vmid", "101"),
            ("net0", "virtio=BC:24:11:00:00:01,bridge=vmbr0"),
            ("hostpci0", "mapping=a100,pcie=1"),
            ("numa0", "cpus=0-15,hostnodes=0,memory=65536,policy=bind"),
            (
                "scsi0",
                "local-lvm:0,import-from=local:import/noble.qcow2,discard=on,ssd=1",
            ),
            ("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=0"),
            ("ipconfig0", "ip=10.0.0.21/24,gw=10.0.0.1"),
            ("agent", "enabled=1"),
            ("machine", "q35"),
            ("cpu", "host"),
        ]);
        validate("POST", "/nodes/{node}/qemu", &ok).unwrap();
        let bad = params(&[
            ("node", "pve1"),
            ("vmid", "101"),
            ("hostpci0", "host=0000:41:00,pcie=maybe"),
            ("net0", "virtio,bridge=vmbr0,speed=10"),
        ]);
        let errors = validate("POST", "/nodes/{node}/qemu", &bad).unwrap_err();
        assert!(
            errors["hostpci0"].contains("pcie: type check ('boolean') failed"),
            "{errors:?}"
        );
        assert!(
            errors["net0"].contains("speed: property is not defined"),
            "{errors:?}"
        );
    }

    #[test]
    fn numbered_params_respect_count() {
        let errors = validate(
            "PUT",
            "/nodes/{node}/qemu/{vmid}/config",
            &params(&[
                ("node", "pve1"),
                ("vmid", "101"),
                ("hostpci16", "mapping=a"),
            ]),
        )
        .unwrap_err();
        assert!(errors.contains_key("hostpci16"));
    }

    #[test]
    fn typetext_keys() {
        let format = typetext_format(
            "[[host=]<HOSTPCIID[;HOSTPCIID2...]>] [,driver=<vfio|keep>] [,pcie=<1|0>]",
        )
        .unwrap();
        assert_eq!(format.default_key.as_deref(), Some("host"));
        assert_eq!(format.keys["pcie"].kind, Kind::Boolean);
        assert_eq!(
            format.keys["driver"].enumeration,
            Some(vec!["vfio".to_owned(), "keep".to_owned()])
        );
        let format = typetext_format("[gw=<GatewayIPv4>] [,ip=<IPv4Format/CIDR>]").unwrap();
        assert_eq!(format.default_key, None);
        assert!(format.keys.contains_key("ip"));
    }
}
