//! How template values are escaped, shared by every template family: a value printed into a YAML
//! template becomes a quoted flow node, one printed into a systemd unit must be a plain word, so
//! user-controlled strings can never change a document's structure, not even from a comment line.

use minijinja::{AutoEscape, Output, State, Value};

/// Auto-escape of cloud-init templates: every value printed is a double-quoted YAML flow node
/// ([`yaml_scalar`]).
pub(crate) const YAML_ESCAPE: AutoEscape = AutoEscape::Custom("yaml");

/// Auto-escape of the cluster's YAML templates (k3s config, manifests): every value printed is a
/// JSON literal that YAML reads back unchanged ([`json_scalar`]).
pub(crate) const JSON_YAML_ESCAPE: AutoEscape = AutoEscape::Custom("yaml-json");

/// Auto-escape of systemd unit templates: values must be single plain words.
pub(crate) const SYSTEMD_ESCAPE: AutoEscape = AutoEscape::Custom("systemd");

/// Output formatter of every template environment. A systemd value must be one word of
/// `[A-Za-z0-9/._@:+=-]` (systemd has no quoting that survives every directive); under
/// [`YAML_ESCAPE`] / [`JSON_YAML_ESCAPE`] a value not marked safe (by the `yaml`/`tojson` filters) is
/// emitted as a flow node, so a raw `{{ value }}` cannot add lines, keys or documents; in any other
/// mode minijinja's own escaping applies.
pub(crate) fn format_value(
    out: &mut Output,
    state: &State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let mode = state.auto_escape();
    if mode == SYSTEMD_ESCAPE {
        let text = value.to_string();
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._@:+=-".contains(&b));
        if !plain {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!(
                    "{text:?} cannot go into a systemd unit (only [A-Za-z0-9/._@:+=-] are allowed)"
                ),
            ));
        }
        return out.write_str(&text).map_err(minijinja::Error::from);
    }
    if !value.is_safe() {
        let rendered = if mode == YAML_ESCAPE {
            Some(yaml_scalar(value.clone())?)
        } else if mode == JSON_YAML_ESCAPE {
            Some(json_scalar(value.clone())?)
        } else {
            None
        };
        if let Some(rendered) = rendered {
            return out.write_str(&rendered).map_err(minijinja::Error::from);
        }
    }
    minijinja::escape_formatter(out, state, value)
}

/// Cloud-init's `{{ value | yaml }}`: [`yaml_scalar`], marked safe so auto-escape leaves it alone.
pub(crate) fn yaml_filter(value: Value) -> Result<Value, minijinja::Error> {
    yaml_scalar(value).map(Value::from_safe_string)
}

/// The cluster templates' `value | tojson` (also `yaml`): a JSON literal that is also a YAML flow
/// node read back unchanged; controls and line separators are `\uXXXX` (plain JSON leaves U+2028
/// raw, which YAML 1.1 parsers such as k3s's take as a line break). Marked safe, so auto-escape
/// leaves it alone.
pub(crate) fn json_filter(value: Value) -> Result<Value, minijinja::Error> {
    json_scalar(value).map(Value::from_safe_string)
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
        let mut environment = crate::templates::environment(crate::templates::Dialect::CloudInit);
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

    #[test]
    fn json_filter_quotes_yaml_specials() {
        assert_eq!(
            json_filter(Value::from("a: b")).unwrap().as_str(),
            Some("\"a: b\"")
        );
        assert_eq!(json_filter(Value::from(3)).unwrap().to_string(), "3");
        assert_eq!(
            json_filter(Value::from("a\u{2028}b")).unwrap().as_str(),
            Some("\"a\\u2028b\"")
        );
    }
}
