//! Located diagnostics: a finding (key path + message + hint) turned into `file:line:column` with a snippet.
//!
//! Shared by profiles and `provision.toml`; rendering to text happens here, printing in the reporter.

use std::ops::Range;

use serde::Serialize;

/// How bad a finding is: errors stop every command, warnings are shown and the command goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One segment of a key path such as `node_groups[1].taints[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A key path into a TOML document; [`KeyPath::to_string`] gives `node_groups[1].labels."a.b/c"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path with a key appended.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path with an array index appended.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for segment in &self.0 {
            match segment {
                Segment::Key(key) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Whether a finding points at a table key itself (a bad label key) or at its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Key,
    Value,
}

/// A semantic finding before it is located in the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: KeyPath,
    pub target: Target,
    pub message: String,
    pub hint: Option<String>,
}

/// A finding placed in a file: what `--output json` prints and what the text renderer draws.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File path, or `builtin:NAME` for profiles embedded in the binary.
    pub file: String,
    /// 1-based; `None` when the problem has no place in the file (e.g. the file is missing).
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// Key path such as `node_groups[1].taints[0]`; empty for syntax errors outside any key.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// Byte range in the source text.
    #[serde(skip)]
    pub span: Option<Range<usize>>,
}

impl Diagnostic {
    /// A diagnostic at a byte span of `text` (line and column computed here).
    pub fn at(
        severity: Severity,
        file: &str,
        text: &str,
        span: Option<Range<usize>>,
        path: String,
        message: String,
        hint: Option<String>,
    ) -> Self {
        let (line, column) = match &span {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Self {
            severity,
            file: file.to_owned(),
            line,
            column,
            path,
            message,
            hint,
            span,
        }
    }

    /// `file:line:column` (or just the file when there is no location).
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(line), Some(column)) => format!("{}:{line}:{column}", self.file),
            _ => self.file.clone(),
        }
    }
}

/// 1-based line and character column of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

fn clamp_to_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Longest message or source line [`render`] prints; the rest is cut with `…`.
const MAX_RENDERED: usize = 1000;

/// `text` safe for a terminal: control characters (escape sequences, carriage returns,
/// newlines, …) are shown escaped (`\u{1b}`), and very long text is cut with `…`.
pub fn neutralise(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_RENDERED));
    for (count, c) in text.chars().enumerate() {
        if count >= MAX_RENDERED {
            out.push('…');
            break;
        }
        if c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Like [`neutralise`] but keeps newlines (multi-line reports such as the plan).
pub fn neutralise_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            let mut out = String::with_capacity(line.len());
            for c in line.chars() {
                if c.is_control() {
                    out.extend(c.escape_unicode());
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// ANSI styles used by [`render`]; empty strings when colour is off.
struct Style {
    error: &'static str,
    warning: &'static str,
    accent: &'static str,
    hint: &'static str,
    bold: &'static str,
    reset: &'static str,
}

impl Style {
    fn new(color: bool) -> Self {
        if color {
            Self {
                error: "\x1b[1;31m",
                warning: "\x1b[1;33m",
                accent: "\x1b[1;34m",
                hint: "\x1b[1;36m",
                bold: "\x1b[1m",
                reset: "\x1b[0m",
            }
        } else {
            Self {
                error: "",
                warning: "",
                accent: "",
                hint: "",
                bold: "",
                reset: "",
            }
        }
    }
}

/// Renders one diagnostic the way compilers do:
///
/// ```text
/// error: two servers cannot tolerate any failure
///   --> profiles/x.toml:12:9 (node_groups[0].count)
///    |
/// 12 | count = 2
///    |         ^
///    = hint: use 1 server, or 3 for high availability
/// ```
pub fn render(diagnostic: &Diagnostic, text: Option<&str>, color: bool) -> String {
    let style = Style::new(color);
    let mut out = String::new();
    let (label, label_style) = match diagnostic.severity {
        Severity::Error => ("error", style.error),
        Severity::Warning => ("warning", style.warning),
    };
    out += &format!(
        "{label_style}{label}{reset}{bold}: {message}{reset}\n",
        reset = style.reset,
        bold = style.bold,
        message = neutralise(&diagnostic.message)
    );
    let path = if diagnostic.path.is_empty() {
        String::new()
    } else {
        format!(" ({})", neutralise(&diagnostic.path))
    };
    let snippet = match (text, &diagnostic.span, diagnostic.line) {
        (Some(text), Some(span), Some(line)) => Some(snippet(text, span, line)),
        _ => None,
    };
    let gutter = snippet
        .as_ref()
        .map_or(1, |(line, _, _, _)| line.to_string().len());
    let pad = " ".repeat(gutter);
    out += &format!(
        "{pad}{accent}-->{reset} {location}{path}\n",
        accent = style.accent,
        reset = style.reset,
        location = neutralise(&diagnostic.location())
    );
    if let Some((line_number, source_line, start_column, width)) = snippet {
        out += &format!("{pad} {}|{}\n", style.accent, style.reset);
        out += &format!(
            "{accent}{line_number} |{reset} {source_line}\n",
            accent = style.accent,
            reset = style.reset
        );
        out += &format!(
            "{pad} {accent}|{reset} {spaces}{label_style}{carets}{reset}\n",
            accent = style.accent,
            reset = style.reset,
            spaces = " ".repeat(start_column),
            carets = "^".repeat(width.max(1)),
        );
    }
    if let Some(hint) = &diagnostic.hint {
        out += &format!(
            "{pad} {accent}={reset} {hint_style}hint{reset}: {hint}\n",
            accent = style.accent,
            reset = style.reset,
            hint_style = style.hint,
            hint = neutralise(hint),
        );
    }
    out
}

/// The source line of a span, the 0-based character column where it starts on that line and the
/// caret width (clipped to the line).
fn snippet(text: &str, span: &Range<usize>, line: usize) -> (usize, String, usize, usize) {
    let start = clamp_to_char_boundary(text, span.start);
    let end = clamp_to_char_boundary(text, span.end.max(span.start));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let source_line = text[line_start..line_end].trim_end_matches('\r');
    let start_column = neutralise(&text[line_start..start]).chars().count();
    let end = end.min(line_start + source_line.len()).max(start);
    let width = neutralise(&text[start..end]).chars().count();
    (
        line,
        neutralise(source_line),
        start_column,
        width.min(MAX_RENDERED),
    )
}

/// For serde's ``unknown field `nmae`, expected one of `name`, …``: the expected name closest
/// to the unknown one, when it is close enough to be a misspelling (as clap suggests
/// subcommands: at most a third of the letters differ).
pub fn closest_expected(message: &str) -> Option<&str> {
    let mut quoted = message.split('`').skip(1).step_by(2);
    let unknown = quoted.next()?;
    let limit = unknown.chars().count().div_ceil(3).max(1);
    quoted
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance between `a` and `b`, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(a_char != *b_char);
            let insert = current[j] + 1;
            let delete = previous[j + 1] + 1;
            current.push(substitute.min(insert).min(delete));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unknown_key_suggests_the_closest_field_only_when_it_is_close() {
        let message = "unknown field `nmae`, expected one of `name`, `k3s_version`, `api_vip`";
        assert_eq!(super::closest_expected(message), Some("name"));
        let message = "unknown field `gpu`, expected one of `name`, `gpus`, `hugepages`";
        assert_eq!(super::closest_expected(message), Some("gpus"));
        let message = "unknown field `colour`, expected one of `name`, `role`";
        assert_eq!(super::closest_expected(message), None);
        assert_eq!(super::closest_expected("unknown field"), None);
    }

    use super::*;

    #[test]
    fn key_paths_quote_dotted_keys() {
        let path = KeyPath::root()
            .key("node_groups")
            .index(1)
            .key("labels")
            .key("special.gpu");
        assert_eq!(path.to_string(), r#"node_groups[1].labels."special.gpu""#);
    }

    #[test]
    fn line_and_column_are_one_based_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        let offset = text.find('"').unwrap_or(0);
        assert_eq!(line_column(text, offset), (2, 6));
    }

    #[test]
    fn render_escapes_terminal_control_sequences() {
        let text = "[cluster]\nname = \"a\u{1b}[2J\u{1b}]0;pwned\u{7}\"\n";
        let start = text.find("\"a").unwrap_or(0);
        let diagnostic = Diagnostic::at(
            Severity::Error,
            "p.toml",
            text,
            Some(start..start + 4),
            "cluster.name".to_owned(),
            "cluster name `a\u{1b}[2J` is bad\r\nforged: line".to_owned(),
            Some("hint \u{1b}[31m".to_owned()),
        );
        let rendered = render(&diagnostic, Some(text), false);
        assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
        assert!(!rendered.contains('\u{7}'), "{rendered:?}");
        assert!(!rendered.contains('\r'), "{rendered:?}");
        assert!(rendered.contains("\\u{1b}[2J"), "{rendered}");
        assert_eq!(rendered.lines().count(), 6, "{rendered}");
    }

    #[test]
    fn render_draws_snippet_and_hint() {
        let text = "[cluster]\nname = \"Bad_Name\"\n";
        let start = text.find("\"Bad").unwrap_or(0);
        let diagnostic = Diagnostic::at(
            Severity::Error,
            "p.toml",
            text,
            Some(start..start + 10),
            "cluster.name".to_owned(),
            "bad name".to_owned(),
            Some("use lowercase".to_owned()),
        );
        let rendered = render(&diagnostic, Some(text), false);
        assert_eq!(
            rendered,
            "error: bad name\n --> p.toml:2:8 (cluster.name)\n  |\n2 | name = \"Bad_Name\"\n  |        ^^^^^^^^^^\n  = hint: use lowercase\n"
        );
    }
}
