//! Maps key paths to byte spans of the source text (via `toml_edit`, which keeps spans), and back.
//!
//! The document is parsed once; every lookup walks it by reference (no copies), so locating
//! thousands of findings in a large profile stays linear in their number.

use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, Item, Table, Value};

use super::diagnostic::{KeyPath, Segment, Target};

/// A parsed document that can answer "where is `node_groups[1].taints[0]`?".
pub struct Locator {
    root: Option<Item>,
    /// Kept only when `toml_edit` cannot parse what `toml` accepted (e.g. integers above
    /// `i64::MAX`): findings are then placed at the first line setting their key.
    fallback_text: Option<String>,
}

/// A borrowed node of the document: array-of-tables elements are tables, array elements values.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::None) => None,
            Node::Item(Item::Value(value)) | Node::Value(value) => value.span(),
            Node::Item(Item::Table(table)) | Node::Table(table) => table.span(),
            Node::Item(Item::ArrayOfTables(tables)) => tables.span(),
        }
    }

    fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(table),
            Node::Value(value) => value.as_inline_table().map(|t| t as _),
        }
    }

    fn array_of_tables(self) -> Option<&'a ArrayOfTables> {
        match self {
            Node::Item(item) => item.as_array_of_tables(),
            Node::Table(_) | Node::Value(_) => None,
        }
    }

    fn array(self) -> Option<&'a Array> {
        match self {
            Node::Item(item) => item.as_array(),
            Node::Value(value) => value.as_array(),
            Node::Table(_) => None,
        }
    }
}

impl Locator {
    /// Parses `text`; a document that does not parse locates nothing (callers fall back to no span).
    pub fn new(text: &str) -> Self {
        let root = toml_edit::Document::parse(text)
            .ok()
            .map(toml_edit::Document::into_item);
        let fallback_text = root.is_none().then(|| text.to_owned());
        Self {
            root,
            fallback_text,
        }
    }

    /// Where the key of `path` is first set (`key =` at the start of a line, or inside an
    /// inline table), else the start of the file.
    fn fallback_span(text: &str, path: &KeyPath) -> Range<usize> {
        let key = path.0.iter().rev().find_map(|segment| match segment {
            Segment::Key(key) => Some(key.as_str()),
            Segment::Index(_) => None,
        });
        let found = key.and_then(|key| {
            let mut offset = 0;
            for line in text.split_inclusive('\n') {
                let trimmed = line.trim_start();
                let indent = line.len() - trimmed.len();
                if let Some(rest) = trimmed.strip_prefix(key)
                    && rest.trim_start().starts_with('=')
                {
                    return Some(offset + indent..offset + indent + key.len());
                }
                offset += line.len();
            }
            None
        });
        found.unwrap_or(0..0)
    }

    /// The span of the value (or key) at `path`; when the path does not exist (a missing key),
    /// the span of its deepest existing ancestor.
    pub fn span(&self, path: &KeyPath, target: Target) -> Option<Range<usize>> {
        let Some(root) = self.root.as_ref() else {
            return self
                .fallback_text
                .as_deref()
                .map(|text| Self::fallback_span(text, path));
        };
        let mut node = Node::Item(root);
        let mut best: Option<Range<usize>> = None;
        let last = path.0.len().saturating_sub(1);
        for (position, segment) in path.0.iter().enumerate() {
            let next = match segment {
                Segment::Key(key) => {
                    let Some(table) = node.table_like() else {
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
                    Node::Item(child)
                }
                Segment::Index(index) => {
                    if let Some(tables) = node.array_of_tables() {
                        match tables.get(*index) {
                            Some(table) => Node::Table(table),
                            None => break,
                        }
                    } else if let Some(array) = node.array() {
                        match array.get(*index) {
                            Some(value) => Node::Value(value),
                            None => break,
                        }
                    } else {
                        break;
                    }
                }
            };
            if let Some(span) = next.span() {
                best = Some(span);
            }
            node = next;
        }
        best
    }

    /// The deepest key path whose value contains `offset` (used to name the field of a parse error).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let mut found = KeyPath::root();
        if let Some(root) = &self.root {
            deepest(Node::Item(root), &KeyPath::root(), offset, &mut found);
        }
        found
    }
}

fn deepest(node: Node<'_>, path: &KeyPath, offset: usize, found: &mut KeyPath) {
    let inside = |span: Option<Range<usize>>| span.is_some_and(|s| s.contains(&offset));
    if let Some(table) = node.table_like() {
        for (key, child) in table.iter() {
            let child_path = path.key(key);
            let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
            let child = Node::Item(child);
            if inside(key_span) || inside(child.span()) {
                *found = child_path.clone();
            }
            deepest(child, &child_path, offset, found);
        }
    } else if let Some(tables) = node.array_of_tables() {
        for (index, table) in tables.iter().enumerate() {
            deepest(Node::Table(table), &path.index(index), offset, found);
        }
    } else if let Some(array) = node.array() {
        for (index, value) in array.iter().enumerate() {
            let child_path = path.index(index);
            if inside(value.span()) {
                *found = child_path.clone();
            }
            deepest(Node::Value(value), &child_path, offset, found);
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
    fn documents_toml_edit_refuses_are_still_located_by_key() {
        let text = "[[node_groups]]\nname = \"a\"\nmemory_mib = 18446744073709551615\n";
        let path = KeyPath::root()
            .key("node_groups")
            .index(0)
            .key("memory_mib");
        let span = Locator::new(text)
            .span(&path, Target::Value)
            .unwrap_or(0..0);
        assert_eq!(&text[span], "memory_mib");
    }

    #[test]
    fn path_at_names_the_field_under_an_offset() {
        let offset = TEXT.find("\"bad\"").unwrap_or(0);
        let path = Locator::new(TEXT).path_at(offset);
        assert_eq!(path.to_string(), "node_groups[1].taints[1]");
    }
}
