//! The minijinja templates behind the seed documents: built in from `cloud-init/` at compile time,
//! each replaceable by a file of the same name in a user's override directory.

use std::path::Path;

use minijinja::{AutoEscape, Environment, Output, State, UndefinedBehavior, Value};

use super::CloudInitError;

pub(crate) const USER_DATA: &str = "user-data.yaml.j2";
pub(crate) const NETWORK_CONFIG: &str = "network-config.yaml.j2";
pub(crate) const META_DATA: &str = "meta-data.yaml.j2";

const BUILTIN: [(&str, &str); 3] = [
    (
        USER_DATA,
        include_str!("../../cloud-init/user-data.yaml.j2"),
    ),
    (
        NETWORK_CONFIG,
        include_str!("../../cloud-init/network-config.yaml.j2"),
    ),
    (
        META_DATA,
        include_str!("../../cloud-init/meta-data.yaml.j2"),
    ),
];

/// The set of seed templates. Every `{{ value }}` is rendered as a quoted YAML flow node (auto-escape,
/// see [`yaml_formatter`]), and the `yaml` filter does the same explicitly, so user-controlled strings can
/// never break the document structure, not even inside a comment.
#[derive(Debug)]
pub struct Templates {
    environment: Environment<'static>,
}

impl Templates {
    /// The templates shipped in `cloud-init/`.
    pub fn builtin() -> Templates {
        let mut environment = base_environment();
        for (name, source) in BUILTIN {
            // The built-in templates are compiled into the binary and covered by tests.
            if let Err(error) = environment.add_template(name, source) {
                unreachable!("built-in template {name} does not parse: {error}");
            }
        }
        Templates { environment }
    }

    /// The built-in templates, with each of `user-data.yaml.j2`, `network-config.yaml.j2` and
    /// `meta-data.yaml.j2` found in `dir` taking precedence.
    pub fn with_overrides(dir: &Path) -> Result<Templates, CloudInitError> {
        let mut environment = base_environment();
        for (name, builtin_source) in BUILTIN {
            let path = dir.join(name);
            let source = match std::fs::read_to_string(&path) {
                Ok(source) => source,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    builtin_source.to_owned()
                }
                Err(source) => return Err(CloudInitError::Io { path, source }),
            };
            environment
                .add_template_owned(name.to_owned(), source)
                .map_err(|source| CloudInitError::Template {
                    name: path.display().to_string(),
                    source,
                })?;
        }
        Ok(Templates { environment })
    }

    /// Render `name` and check that the result is a YAML mapping.
    pub(crate) fn render_yaml(&self, name: &str, context: Value) -> Result<String, CloudInitError> {
        let template_error = |source| CloudInitError::Template {
            name: name.to_owned(),
            source,
        };
        let rendered = self
            .environment
            .get_template(name)
            .and_then(|template| template.render(context))
            .map_err(template_error)?;
        let document: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&rendered).map_err(|source| CloudInitError::InvalidYaml {
                name: name.to_owned(),
                source,
            })?;
        if !document.is_mapping() {
            return Err(CloudInitError::UnexpectedDocument {
                name: name.to_owned(),
                message: "a document that is not a YAML mapping".to_owned(),
            });
        }
        Ok(rendered)
    }
}

fn base_environment() -> Environment<'static> {
    let mut environment = Environment::new();
    environment.set_trim_blocks(true);
    environment.set_lstrip_blocks(true);
    environment.set_keep_trailing_newline(true);
    environment.set_undefined_behavior(UndefinedBehavior::Strict);
    environment.set_auto_escape_callback(|_| YAML_ESCAPE);
    environment.set_formatter(yaml_formatter);
    environment.add_filter("yaml", yaml_filter);
    environment
}

/// The auto-escape mode of YAML templates: every value printed is a quoted YAML flow node.
pub(crate) const YAML_ESCAPE: AutoEscape = AutoEscape::Custom("yaml");

/// Output formatter: under [`YAML_ESCAPE`], a value not marked safe (by the `yaml`/`tojson` filters) is
/// emitted as a YAML flow node, so a raw `{{ value }}` cannot add lines, keys or documents; in any other
/// mode minijinja's own escaping applies.
fn yaml_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), minijinja::Error> {
    if state.auto_escape() == YAML_ESCAPE && !value.is_safe() {
        let rendered = yaml_scalar(value.clone())?;
        return out.write_str(&rendered).map_err(minijinja::Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

/// `{{ value | yaml }}`: [`yaml_scalar`], marked safe so auto-escape leaves it alone.
fn yaml_filter(value: Value) -> Result<Value, minijinja::Error> {
    yaml_scalar(value).map(Value::from_safe_string)
}

/// `{{ value | yaml }}`: the value as a YAML flow node whose strings are double-quoted with every
/// non-printable or non-ASCII character escaped (`\\xXX`, `\\uXXXX`, `\\UXXXXXXXX`). Plain JSON is
/// not enough: YAML folds U+0085/U+2028/U+2029 inside quotes and rejects C1 controls.
pub(crate) fn yaml_scalar(value: Value) -> Result<String, minijinja::Error> {
    flow_node(&value, emit_yaml_string)
}

/// Like [`yaml_scalar`], but also valid JSON (for JSON documents embedded in YAML): strings are
/// double-quoted with controls, DEL, C1 controls, U+2028/U+2029 and non-characters as `\uXXXX`; every
/// other character stays as it is.
pub(crate) fn json_scalar(value: Value) -> Result<String, minijinja::Error> {
    flow_node(&value, emit_json_string)
}

fn flow_node(value: &Value, string: fn(&str, &mut String)) -> Result<String, minijinja::Error> {
    let json = serde_json::to_value(value).map_err(|error| {
        minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, error.to_string())
    })?;
    let mut out = String::new();
    emit_yaml(&json, &mut out, string);
    Ok(out)
}

fn emit_yaml(value: &serde_json::Value, out: &mut String, string: fn(&str, &mut String)) {
    match value {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        serde_json::Value::Number(number) => out.push_str(&number.to_string()),
        serde_json::Value::String(text) => string(text, out),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                emit_yaml(item, out, string);
            }
            out.push(']');
        }
        serde_json::Value::Object(entries) => {
            out.push('{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(", ");
                }
                string(key, out);
                out.push_str(": ");
                emit_yaml(item, out, string);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal that YAML 1.1 and 1.2 parsers read back unchanged (see [`json_scalar`]).
pub(crate) fn emit_json_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{0}'..='\u{1F}'
            | '\u{7F}'..='\u{9F}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{FEFF}'
            | '\u{FFFE}'
            | '\u{FFFF}' => out.push_str(&format!("\\u{:04X}", u32::from(character))),
            _ => out.push(character),
        }
    }
    out.push('"');
}

pub(crate) fn emit_yaml_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(character),
            _ => {
                let code = u32::from(character);
                let escaped = match code {
                    0..=0xFF => format!("\\x{code:02X}"),
                    0x100..=0xFFFF => format!("\\u{code:04X}"),
                    _ => format!("\\U{code:08X}"),
                };
                out.push_str(&escaped);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn yaml_filter_quotes_hostile_strings() {
        let templates = Templates::builtin();
        let mut environment = templates.environment.clone();
        environment
            .add_template("t", "key: {{ value | yaml }}\n")
            .unwrap();
        let hostile = "a\"\nb: c # d\n- e";
        let rendered = environment
            .get_template("t")
            .unwrap()
            .render(minijinja::context! { value => hostile })
            .unwrap();
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rendered).unwrap();
        assert_eq!(parsed["key"].as_str(), Some(hostile));
    }

    proptest::proptest! {
        #[test]
        fn json_strings_round_trip_through_yaml_and_json(text in "\\PC*|[\\x00-\\x{10FFFF}]{0,40}") {
            let mut quoted = String::new();
            emit_json_string(&text, &mut quoted);
            let rendered = format!("# {quoted}\nkey: {quoted}\n");
            let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rendered).unwrap();
            proptest::prop_assert_eq!(parsed["key"].as_str(), Some(text.as_str()));
            proptest::prop_assert_eq!(parsed.as_mapping().map(|m| m.len()), Some(1));
            let json: String = serde_json::from_str(&quoted).unwrap();
            proptest::prop_assert_eq!(json, text);
        }

        #[test]
        fn yaml_filter_round_trips_any_string(text in "\\PC*|[\\x00-\\x{10FFFF}]{0,40}") {
            let mut rendered = "key: ".to_owned();
            emit_yaml_string(&text, &mut rendered);
            rendered.push('\n');
            let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rendered).unwrap();
            proptest::prop_assert_eq!(parsed["key"].as_str(), Some(text.as_str()));
        }
    }

    #[test]
    fn yaml_filter_escapes_line_separators_and_controls() {
        let mut rendered = String::new();
        emit_yaml_string("a\u{85}b\u{2028}c\u{1}d\u{1F600}\"\\", &mut rendered);
        assert_eq!(rendered, r#""a\x85b\u2028c\x01d\U0001F600\"\\""#);
    }

    /// Every value of every seed template, hostile (also the comment line's hostname): the documents keep
    /// exactly their keys and the values come back unchanged.
    #[test]
    fn seed_templates_keep_hostile_values_as_strings() {
        let templates = Templates::builtin();
        for hostile in [
            "h\nruncmd: [[touch, /pwned]]\n---\nx: y",
            "a: b # c '\"",
            "k\u{2028}bootcmd: [id]\u{85}z",
        ] {
            let user_data = templates
                .render_yaml(
                    USER_DATA,
                    minijinja::context! {
                        hostname => hostile, fqdn => hostile, user => hostile,
                        authorized_keys => [hostile], host_private_key => hostile,
                        host_public_key => hostile, package_update => true, packages => [hostile],
                        write_files => [minijinja::context! {
                            path => hostile, content => hostile, permissions => hostile, owner => hostile,
                        }],
                        runcmd => [[hostile]],
                    },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&user_data).unwrap();
            let keys: Vec<&str> = document
                .as_mapping()
                .unwrap()
                .keys()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert_eq!(
                keys,
                [
                    "hostname",
                    "fqdn",
                    "manage_etc_hosts",
                    "users",
                    "disable_root",
                    "ssh_pwauth",
                    "ssh_deletekeys",
                    "ssh_genkeytypes",
                    "ssh_keys",
                    "package_update",
                    "package_upgrade",
                    "packages",
                    "swap",
                    "write_files",
                    "runcmd",
                ],
                "{user_data}"
            );
            assert_eq!(document["hostname"].as_str(), Some(hostile));
            assert_eq!(
                document["ssh_keys"]["ed25519_private"].as_str(),
                Some(hostile)
            );
            assert_eq!(document["runcmd"][0][0].as_str(), Some(hostile));
            assert_eq!(document["runcmd"].as_sequence().map(Vec::len), Some(1));
            let network = templates
                .render_yaml(
                    NETWORK_CONFIG,
                    minijinja::context! {
                        interface => hostile, mac => hostile, address => hostile,
                        gateway_key => hostile, gateway => hostile, mtu => 1500,
                        dns => [hostile], search => [hostile],
                    },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&network).unwrap();
            assert_eq!(document.as_mapping().unwrap().len(), 2, "{network}");
            let ethernet = &document["ethernets"][hostile];
            assert_eq!(ethernet[hostile].as_str(), Some(hostile), "{network}");
            assert_eq!(ethernet["mtu"].as_u64(), Some(1500));
            let meta = templates
                .render_yaml(
                    META_DATA,
                    minijinja::context! { instance_id => hostile, hostname => hostile },
                )
                .unwrap();
            let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&meta).unwrap();
            assert_eq!(document.as_mapping().unwrap().len(), 2, "{meta}");
        }
    }

    #[test]
    fn override_directory_replaces_only_present_templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(META_DATA),
            "instance-id: {{ instance_id | yaml }}\nlocal-hostname: custom\n",
        )
        .unwrap();
        let templates = Templates::with_overrides(dir.path()).unwrap();
        let rendered = templates
            .render_yaml(
                META_DATA,
                minijinja::context! { instance_id => "i-1", hostname => "h" },
            )
            .unwrap();
        assert!(rendered.contains("local-hostname: custom"));
        assert!(
            templates
                .environment
                .get_template(USER_DATA)
                .unwrap()
                .source()
                .starts_with("#cloud-config")
        );
    }

    #[test]
    fn override_rendering_invalid_yaml_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(META_DATA), "a: [unclosed\n").unwrap();
        let templates = Templates::with_overrides(dir.path()).unwrap();
        let error = templates
            .render_yaml(META_DATA, minijinja::context! {})
            .unwrap_err();
        assert!(
            matches!(error, CloudInitError::InvalidYaml { .. }),
            "{error}"
        );
    }

    #[test]
    fn override_with_syntax_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(USER_DATA), "{% if %}").unwrap();
        let error = Templates::with_overrides(dir.path()).unwrap_err();
        assert!(error.to_string().contains(USER_DATA), "{error}");
    }
}
