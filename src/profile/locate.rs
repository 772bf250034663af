//! Maps key paths to byte spans of the source text (via `toml_edit`, which keeps spans), and back.

use std::ops::Range;

use toml_edit::{Item, Value};

use super::diagnostic::{KeyPath, Segment, Target};

/// A parsed document that can answer "where is `node_groups[1].taints[0]`?".
pub struct Locator {
    root: Option<Item>,
}

impl Locator {
    /// Parses `text`; a document that does not parse locates nothing (callers fall back to no span).
    pub fn new(text: &str) -> Self {
        let root = toml_edit::Document::parse(text)
            .ok()
            .map(toml_edit::Document::into_item);
        Self { root }
    }

    /// The span of the value (or key) at `path`; when the path does not exist (a missing key),
    /// the span of its deepest existing ancestor.
    pub fn span(&self, path: &KeyPath, target: Target) -> Option<Range<usize>> {
        let mut item = self.root.as_ref()?.clone();
        let mut best: Option<Range<usize>> = None;
        let last = path.0.len().saturating_sub(1);
        for (position, segment) in path.0.iter().enumerate() {
            let next = match segment {
                Segment::Key(key) => {
                    let Some(table) = item.as_table_like() else {
                        break;
                    };
                    let Some((key_repr, child)) = table.get_key_value(key) else {
                        break;
                    };
                    if position == last && target == Target::Key {
                        return key_repr.span().or(best);
                    }
                    // For a missing or span-less child, point at the key.
                    if let Some(span) = key_repr.span() {
                        best = Some(span);
                    }
                    child.clone()
                }
                Segment::Index(index) => {
                    if let Some(tables) = item.as_array_of_tables() {
                        match tables.get(*index) {
                            Some(table) => Item::Table(table.clone()),
                            None => break,
                        }
                    } else if let Some(array) = item.as_array() {
                        match array.get(*index) {
                            Some(value) => Item::Value(value.clone()),
                            None => break,
                        }
                    } else {
                        break;
                    }
                }
            };
            if let Some(span) = item_span(&next) {
                best = Some(span);
            }
            item = next;
        }
        best
    }

    /// The deepest key path whose value contains `offset` (used to name the field of a parse error).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let mut found = KeyPath::root();
        if let Some(root) = &self.root {
            deepest(root, &KeyPath::root(), offset, &mut found);
        }
        found
    }
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::None => None,
        Item::Value(value) => value_span(value),
        Item::Table(table) => table.span(),
        Item::ArrayOfTables(tables) => tables.span(),
    }
}

fn value_span(value: &Value) -> Option<Range<usize>> {
    value.span()
}

fn deepest(item: &Item, path: &KeyPath, offset: usize, found: &mut KeyPath) {
    if let Some(table) = item.as_table_like() {
        for (key, child) in table.iter() {
            let child_path = path.key(key);
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let inside = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
            if inside(key_span) || inside(item_span(child)) {
                *found = child_path.clone();
            }
            deepest(child, &child_path, offset, found);
        }
    } else if let Some(tables) = item.as_array_of_tables() {
        for (index, table) in tables.iter().enumerate() {
            let child_path = path.index(index);
            let child = Item::Table(table.clone());
            deepest(&child, &child_path, offset, found);
        }
    } else if let Some(array) = item.as_array() {
        for (index, value) in array.iter().enumerate() {
            let child_path = path.index(index);
            if value_span(value).is_some_and(|s| s.contains(&offset)) {
                *found = child_path.clone();
            }
            deepest(&Item::Value(value.clone()), &child_path, offset, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"[cluster]
name = "x"

[[node_groups]]
name = "a"
taints = ["t1"]

[[node_groups]]
name = "b"
taints = ["t2", "bad"]
labels = { "special.gpu" = "nvidia" }
"#;

    fn text_at(path: KeyPath, target: Target) -> String {
        let span = Locator::new(TEXT).span(&path, target).unwrap_or(0..0);
        TEXT[span].to_owned()
    }

    #[test]
    fn finds_array_elements_inside_arrays_of_tables() {
        let path = KeyPath::root()
            .key("node_groups")
            .index(1)
            .key("taints")
            .index(1);
        assert_eq!(text_at(path, Target::Value), "\"bad\"");
    }

    #[test]
    fn finds_keys_of_inline_tables() {
        let path = KeyPath::root()
            .key("node_groups")
            .index(1)
            .key("labels")
            .key("special.gpu");
        assert_eq!(text_at(path.clone(), Target::Key), "\"special.gpu\"");
        assert_eq!(text_at(path, Target::Value), "\"nvidia\"");
    }

    #[test]
    fn missing_keys_fall_back_to_the_nearest_ancestor() {
        let path = KeyPath::root().key("node_groups").index(0).key("count");
        assert_eq!(text_at(path, Target::Value), "[[node_groups]]");
    }

    #[test]
    fn path_at_names_the_field_under_an_offset() {
        let offset = TEXT.find("\"bad\"").unwrap_or(0);
        let path = Locator::new(TEXT).path_at(offset);
        assert_eq!(path.to_string(), "node_groups[1].taints[1]");
    }
}
