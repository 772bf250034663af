//! Every disagreement between the project's description (`params/params.toml`) and the official
//! schema, for the conformance test.

use serde_json::Value;

use super::official::{official_endpoint, official_format, official_param, official_properties};
use super::{Description, FormatSpec, ParamSpec, description};

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
