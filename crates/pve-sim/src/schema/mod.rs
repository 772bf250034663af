//! The project's compact description of the Proxmox API parameters it uses
//! (`params/params.toml`), the validator the simulator runs on every request, and the same
//! validator driven by the official schema file (`validate_against_official`), plus the
//! comparison of the two (`compare_with_official`) that the conformance test runs.
//!
//! Messages follow PVE::JSONSchema's wording.

mod compare;
mod official;
mod validate;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::propstring;

pub use compare::{compare_description, compare_with_official};
pub use official::{
    official_endpoint, official_format, official_param, typetext_format, validate_against_official,
};
use validate::check_params;
pub use validate::{check_property_string, check_text};

const DESCRIPTION: &str = include_str!("../../params/params.toml");

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

pub(super) fn lookup_param(specs: &BTreeMap<String, ParamSpec>, name: &str) -> Option<ParamSpec> {
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
