//! Proxmox property strings (`virtio=BC:24:11:00:00:01,bridge=vmbr0`, `host=0000:41:00,pcie=1`):
//! a comma-separated list of `key=value` pairs where the first item may omit its key (the
//! format's `default_key`). Values containing `,` or `=` may be double-quoted.

use std::fmt::Write as _;

/// One item: `None` key means the value of the format's default key.
pub type Entry = (Option<String>, String);

/// A property string that cannot be split into items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyStringError {
    #[error("unterminated quoted value")]
    UnterminatedQuote,
    #[error("empty key in '{0}'")]
    EmptyKey(String),
    #[error("value without key '{0}' is only allowed as the first item")]
    MisplacedDefault(String),
    #[error("duplicate key in comma-separated list property: {0}")]
    DuplicateKey(String),
}

/// Splits a property string into its items, in order.
pub fn parse(text: &str) -> Result<Vec<Entry>, PropertyStringError> {
    let mut entries: Vec<Entry> = Vec::new();
    for (index, item) in split_items(text)?.into_iter().enumerate() {
        if item.is_empty() {
            continue;
        }
        match split_key(&item) {
            Some((key, value)) => {
                if key.is_empty() {
                    return Err(PropertyStringError::EmptyKey(item));
                }
                if entries
                    .iter()
                    .any(|(k, _)| k.as_deref() == Some(key.as_str()))
                {
                    return Err(PropertyStringError::DuplicateKey(key));
                }
                entries.push((Some(key), unquote(&value)));
            }
            None => {
                if index != 0 {
                    return Err(PropertyStringError::MisplacedDefault(item));
                }
                entries.push((None, unquote(&item)));
            }
        }
    }
    Ok(entries)
}

/// Writes items back; values that need it are quoted.
pub fn serialize(entries: &[Entry]) -> String {
    let mut out = String::new();
    for (index, (key, value)) in entries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        if let Some(key) = key {
            let _ignored = write!(out, "{key}=");
        }
        if needs_quotes(value) {
            out.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(value);
        }
    }
    out
}

/// The value of `key` (or of the default key when the first item has no key).
pub fn get<'a>(entries: &'a [Entry], key: &str, default_key: Option<&str>) -> Option<&'a str> {
    entries.iter().find_map(|(k, v)| match k {
        Some(k) if k == key => Some(v.as_str()),
        None if default_key == Some(key) => Some(v.as_str()),
        Some(_) | None => None,
    })
}

fn needs_quotes(value: &str) -> bool {
    value.contains([',', '"', '='])
        || value.starts_with(char::is_whitespace)
        || value.ends_with(char::is_whitespace)
}

fn split_items(text: &str) -> Result<Vec<String>, PropertyStringError> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            current.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(PropertyStringError::UnterminatedQuote);
    }
    items.push(current);
    Ok(items)
}

fn split_key(item: &str) -> Option<(String, String)> {
    if item.starts_with('"') {
        return None;
    }
    item.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
}

fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let inner = &value[1..value.len() - 1];
        let mut out = String::with_capacity(inner.len());
        let mut escaped = false;
        for c in inner.chars() {
            if escaped {
                out.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else {
                out.push(c);
            }
        }
        out
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_default_key_and_pairs() {
        let entries = parse("virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1").unwrap();
        assert_eq!(get(&entries, "bridge", None), Some("vmbr0"));
        let entries = parse("0000:41:00,pcie=1").unwrap();
        assert_eq!(get(&entries, "host", Some("host")), Some("0000:41:00"));
        assert_eq!(get(&entries, "pcie", Some("host")), Some("1"));
    }

    #[test]
    fn rejects_duplicates_and_late_default() {
        assert!(parse("a=1,a=2").is_err());
        assert!(parse("a=1,bare").is_err());
        assert!(parse("a=\"open").is_err());
    }

    #[test]
    fn quoted_values_keep_commas() {
        let entries = parse("cpus=0-3;8-11,note=\"a,b=c\"").unwrap();
        assert_eq!(get(&entries, "note", None), Some("a,b=c"));
        assert_eq!(serialize(&entries), "cpus=0-3;8-11,note=\"a,b=c\"");
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_-]{0,12}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[ -~]{1,20}".prop_filter("no surrounding quotes", |v| {
            !(v.starts_with('"') || v.is_empty())
        })
    }

    proptest! {
        #[test]
        fn round_trip(
            first in proptest::option::of("[A-Za-z0-9:./;-]{1,16}"),
            pairs in proptest::collection::btree_map(key(), value(), 0..6),
        ) {
            let mut entries: Vec<Entry> = Vec::new();
            if let Some(first) = first {
                entries.push((None, first));
            }
            for (k, v) in pairs {
                entries.push((Some(k), v));
            }
            let text = serialize(&entries);
            let parsed = parse(&text).unwrap();
            let expected: Vec<Entry> = entries.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
