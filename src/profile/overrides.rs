//! Per-run overrides of a profile without editing it: `--set KEY=VALUE`, `--name NAME` and the
//! environment's `PROVISION_SET_<KEY>` variables (README, "Per-run overrides").
//!
//! An override is merged into the profile's TOML document (the value parsed as a TOML value, else
//! taken as a string) and the result is parsed and validated exactly like a file: an override is
//! the same as editing the file. A finding at an overridden key is reported at the override
//! itself (`--set cluster.ttl=4x: ttl `4x` is not a duration`), with the hint.

use toml_edit::{DocumentMut, Item, Table, Value};

use super::diagnostic::{Diagnostic, Severity};
use super::{LoadedProfile, ProfileError};

/// At most this many overrides per run; a key path has at most [`MAX_DEPTH`] segments.
pub const MAX_OVERRIDES: usize = 64;
const MAX_DEPTH: usize = 8;
/// Prefix of the environment variables that set a profile key (`PROVISION_SET_CLUSTER__TTL=2h`).
pub const ENV_PREFIX: &str = "PROVISION_SET_";

/// One segment of an override's key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// One override: where it came from (as the user wrote it), the key path and the value.
#[derive(Debug, Clone)]
pub struct Override {
    /// As written: `--set cluster.ttl=4x`, `--name ci-7`, `PROVISION_SET_CLUSTER__TTL=4x`.
    pub origin: String,
    steps: Vec<Step>,
    /// The key path as diagnostics print it (`node_groups[1].count`).
    pub path: String,
    value: Value,
}

impl Override {
    /// `KEY=VALUE` from `--set`: KEY is a dotted path (`cluster.name`, `node_groups[1].count` or
    /// `node_groups.1.count`); VALUE is a TOML value (`4`, `true`, `["a"]`, `"quoted"`) or else a
    /// plain string.
    pub fn parse_set(text: &str) -> Result<Self, String> {
        Self::parse(&format!("--set {text}"), text)
    }

    /// `--name NAME`: the cluster name, always a string.
    pub fn name(name: &str) -> Self {
        Self {
            origin: format!("--name {name}"),
            steps: vec![Step::Key("cluster".into()), Step::Key("name".into())],
            path: "cluster.name".to_owned(),
            value: Value::from(name),
        }
    }

    /// `PROVISION_SET_CLUSTER__TTL=2h` → `cluster.ttl = "2h"`: `__` separates keys, the rest is
    /// lower-cased (`PROVISION_SET_CLUSTER__K3S_VERSION` → `cluster.k3s_version`).
    pub fn from_env(variable: &str, value: &str) -> Option<Result<Self, String>> {
        let key = variable.strip_prefix(ENV_PREFIX)?;
        let dotted = key.to_ascii_lowercase().replace("__", ".");
        Some(Self::parse(
            &format!("{variable}={value}"),
            &format!("{dotted}={value}"),
        ))
    }

    fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let (key, raw) = text
            .split_once('=')
            .ok_or_else(|| format!("{origin}: expected KEY=VALUE, e.g. cluster.name=ci-42"))?;
        let steps = parse_path(key.trim()).map_err(|problem| format!("{origin}: {problem}"))?;
        let value = typed_value(raw.trim()).unwrap_or_else(|| Value::from(raw));
        Ok(Self {
            origin: origin.to_owned(),
            path: display_path(&steps),
            steps,
            value,
        })
    }
}

/// A number, boolean, quoted string, array or inline table; `None` for anything else, which
/// is then a string (also words TOML would read as a date or as `inf`/`nan`).
fn typed_value(text: &str) -> Option<Value> {
    match text.parse::<Value>().ok()? {
        Value::Datetime(_) => None,
        Value::Float(_)
            if text
                .chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        value => Some(value),
    }
}

/// `a.b[1].c` / `a.b.1.c` → steps; keys are bare TOML keys (letters, digits, `_`, `-`).
fn parse_path(key: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, indices) = match part.split_once('[') {
            Some((name, rest)) => (name, Some(rest)),
            None => (part, None),
        };
        if let Ok(index) = name.parse::<usize>()
            && !steps.is_empty()
        {
            steps.push(Step::Index(index));
        } else if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            steps.push(Step::Key(name.to_owned()));
        } else {
            return Err(format!(
                "`{key}` is not a key path like cluster.name or node_groups[1].count"
            ));
        }
        if let Some(rest) = indices {
            for index in rest.split('[') {
                let index = index
                    .strip_suffix(']')
                    .and_then(|digits| digits.parse::<usize>().ok())
                    .ok_or_else(|| format!("`{key}` has a bad index (write node_groups[1])"))?;
                steps.push(Step::Index(index));
            }
        }
    }
    if steps.len() > MAX_DEPTH {
        return Err(format!("`{key}` is deeper than {MAX_DEPTH} keys"));
    }
    Ok(steps)
}

fn display_path(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Key(key) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Step::Index(index) => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// Every `PROVISION_SET_*` variable of `variables`, sorted by name (a stable order).
pub fn from_environment(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, String> {
    let mut found: Vec<(String, String)> = variables
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    found.sort();
    found
        .iter()
        .filter_map(|(name, value)| Override::from_env(name, value))
        .collect()
}

/// `text` with every override merged in, or an error naming the override that cannot be.
fn merge(text: &str, overrides: &[Override]) -> Result<String, (usize, String)> {
    let mut document: DocumentMut = text
        .parse()
        .map_err(|_| (0, "the profile is not valid TOML".to_owned()))?;
    for (number, entry) in overrides.iter().enumerate() {
        set(document.as_table_mut(), &entry.steps, entry.value.clone())
            .map_err(|problem| (number, problem))?;
    }
    Ok(document.to_string())
}

/// Sets `steps` below `table`, creating missing tables.
fn set(table: &mut Table, steps: &[Step], value: Value) -> Result<(), String> {
    let Some((Step::Key(first), rest)) = steps.split_first() else {
        return Err("a key path starts with a key".to_owned());
    };
    if rest.is_empty() {
        table.insert(first, Item::Value(value));
        return Ok(());
    }
    let item = table
        .entry(first)
        .or_insert_with(|| Item::Table(Table::new()));
    set_item(item, first, rest, value)
}

fn set_item(item: &mut Item, name: &str, steps: &[Step], value: Value) -> Result<(), String> {
    match (&steps[0], item) {
        (Step::Key(_), Item::Table(table)) => set(table, steps, value),
        (Step::Index(index), Item::ArrayOfTables(tables)) => {
            let count = tables.len();
            let table = tables
                .get_mut(*index)
                .ok_or_else(|| format!("`{name}` has {count} entries, no [{index}]"))?;
            if steps.len() == 1 {
                return Err(format!("`{name}[{index}]` is a table: set one of its keys"));
            }
            set(table, &steps[1..], value)
        }
        (Step::Index(index), Item::Value(Value::Array(array))) if steps.len() == 1 => {
            let count = array.len();
            let slot = array
                .get_mut(*index)
                .ok_or_else(|| format!("`{name}` has {count} entries, no [{index}]"))?;
            *slot = value;
            Ok(())
        }
        (Step::Key(key), Item::Value(Value::InlineTable(inline))) if steps.len() == 1 => {
            inline.insert(key, value);
            Ok(())
        }
        _ => Err(format!(
            "`{name}` is not a table or list this key path can go into"
        )),
    }
}

/// Merges `overrides` into `loaded.text` and parses the result like a file. A diagnostic at an
/// overridden key (or below it) names the override instead of a place in the file.
pub fn apply(
    source_name: &str,
    text: String,
    overrides: &[Override],
) -> Result<LoadedProfile, ProfileError> {
    if overrides.is_empty() {
        return super::parse(source_name, text);
    }
    if overrides.len() > MAX_OVERRIDES {
        return Err(refused(
            &overrides[MAX_OVERRIDES],
            format!("more than {MAX_OVERRIDES} overrides"),
            "put the values in a profile file instead",
        ));
    }
    // The file itself must be valid first: its own errors point into the file.
    super::parse(source_name, text.clone())?;
    let merged = match merge(&text, overrides) {
        Ok(merged) => merged,
        Err((number, problem)) => {
            return Err(refused(
                &overrides[number],
                problem,
                "check the key path against profiles/README.md",
            ));
        }
    };
    super::parse(source_name, merged).map_err(|error| relabel(error, overrides))
}

fn refused(entry: &Override, message: String, hint: &str) -> ProfileError {
    ProfileError::Invalid {
        source_name: entry.origin.clone(),
        text: String::new(),
        diagnostics: vec![Diagnostic::at(
            Severity::Error,
            &entry.origin,
            "",
            None,
            entry.path.clone(),
            message,
            Some(hint.to_owned()),
        )],
    }
}

/// Diagnostics at an overridden key point at the override (the last one setting it wins).
fn relabel(error: ProfileError, overrides: &[Override]) -> ProfileError {
    let ProfileError::Invalid {
        source_name,
        text,
        diagnostics,
    } = error
    else {
        return error;
    };
    let diagnostics = diagnostics
        .into_iter()
        .map(|mut diagnostic| {
            let culprit = overrides.iter().rev().find(|entry| {
                diagnostic.path == entry.path
                    || diagnostic.path.starts_with(&format!("{}.", entry.path))
                    || diagnostic.path.starts_with(&format!("{}[", entry.path))
            });
            if let Some(entry) = culprit {
                diagnostic.file = entry.origin.clone();
                diagnostic.line = None;
                diagnostic.column = None;
                diagnostic.span = None;
            }
            diagnostic
        })
        .collect();
    ProfileError::Invalid {
        source_name,
        text,
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn builtin(name: &str) -> String {
        super::super::builtin::builtin(name)
            .unwrap()
            .text
            .to_owned()
    }

    #[test]
    fn values_are_toml_where_they_look_like_it_and_strings_otherwise() {
        let value = |text: &str| Override::parse_set(&format!("k={text}")).unwrap().value;
        assert_eq!(value("3").as_integer(), Some(3));
        assert_eq!(value("true").as_bool(), Some(true));
        assert_eq!(value("\"3\"").as_str(), Some("3"));
        assert!(value("[\"a\"]").is_array());
        for word in ["ci-42", "v1.31.4+k3s1", "inf", "nan", "2024-01-01", "4h"] {
            assert_eq!(value(word).as_str(), Some(word), "{word}");
        }
    }

    #[test]
    fn paths_parse_in_both_spellings() {
        let a = Override::parse_set("node_groups[1].count=3").unwrap();
        let b = Override::parse_set("node_groups.1.count=3").unwrap();
        assert_eq!(a.steps, b.steps);
        assert_eq!(a.path, "node_groups[1].count");
        assert!(Override::parse_set("cluster..name=x").is_err());
        assert!(Override::parse_set("cluster.name").is_err());
        assert!(Override::parse_set("a.b.c.d.e.f.g.h.i=1").is_err());
    }

    #[test]
    fn an_override_equals_editing_the_file() {
        let text = builtin("homelab-ha");
        let by_override = apply(
            "p.toml",
            text.clone(),
            &[
                Override::parse_set("cluster.ttl=2h").unwrap(),
                Override::name("ci-42"),
            ],
        )
        .unwrap();
        assert_eq!(by_override.profile.cluster.name, "ci-42");
        assert_eq!(by_override.profile.cluster.ttl.as_deref(), Some("2h"));
        let edited = text.replacen("name = \"homelab\"", "name = \"ci-42\"", 1);
        let edited = super::super::parse("p.toml", edited).unwrap();
        assert_eq!(edited.profile.cluster.name, "ci-42");
        assert_eq!(
            edited.profile.node_groups, by_override.profile.node_groups,
            "only the overridden keys differ"
        );
    }

    #[test]
    fn a_bad_value_is_reported_at_the_override_with_the_hint() {
        let error = apply(
            "p.toml",
            builtin("homelab-ha"),
            &[Override::parse_set("cluster.ttl=4x").unwrap()],
        )
        .unwrap_err();
        let diagnostics = error.diagnostics();
        assert_eq!(diagnostics[0].file, "--set cluster.ttl=4x");
        assert_eq!(diagnostics[0].line, None);
        assert!(diagnostics[0].message.contains("not a duration"));
        assert!(diagnostics[0].hint.is_some());
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_name_the_override() {
        let text = builtin("homelab-ha");
        let error = apply(
            "p.toml",
            text.clone(),
            &[Override::parse_set("cluster.nmae=x").unwrap()],
        )
        .unwrap_err();
        assert_eq!(error.diagnostics()[0].file, "--set cluster.nmae=x");
        let error = apply(
            "p.toml",
            text,
            &[Override::parse_set("cluster.name.x=1").unwrap()],
        )
        .unwrap_err();
        assert_eq!(error.diagnostics()[0].file, "--set cluster.name.x=1");
    }

    #[test]
    fn environment_variables_map_to_key_paths() {
        let found = from_environment([
            ("PROVISION_SET_CLUSTER__TTL".to_owned(), "2h".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ])
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "cluster.ttl");
        assert_eq!(found[0].origin, "PROVISION_SET_CLUSTER__TTL=2h");
    }
}
