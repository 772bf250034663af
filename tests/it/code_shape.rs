//! The size rules of the architecture, as a test: no source file over 800 lines and no function
//! over 120 lines in `src/` or `crates/*/src`, unless a comment right above says why with the words
//! `Long by design:` (for a file: a `//! Long by design:` line in its header).
//!
//! The scanner relies on rustfmt's layout (a function's closing brace sits alone at the
//! indentation of its `fn` line), which `cargo fmt --check` in CI guarantees.

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;
const REASON: &str = "Long by design:";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn source_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut crates: Vec<_> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("src"))
        .collect();
    crates.sort();
    for dir in crates {
        rust_files(&dir, &mut files);
    }
    files
}

/// The name of the function a line declares, if it is a `fn` item (not a `fn` type or a call).
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    for prefix in ["const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

/// Whether the comment or attribute lines right above `index` give a reason.
fn reason_above(lines: &[&str], index: usize) -> bool {
    lines[..index]
        .iter()
        .rev()
        .take_while(|line| {
            let line = line.trim_start();
            line.starts_with("//") || line.starts_with("#[")
        })
        .any(|line| line.contains(REASON))
}

/// `(length, name, first line)` of every function in `text` longer than the limit, without a reason.
fn long_functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(name) = declared_fn(line) else {
            continue;
        };
        if line.trim_end().ends_with('}') {
            continue; // a one-line function
        }
        let indent = &line[..line.len() - line.trim_start().len()];
        let closing = format!("{indent}}}");
        // The signature ends at the first line ending with `{` (a body) or `;` (a declaration).
        let Some(signature_end) = lines[index..]
            .iter()
            .position(|candidate| candidate.trim_end().ends_with(['{', ';']))
        else {
            continue;
        };
        if lines[index + signature_end].trim_end().ends_with(';') {
            continue;
        }
        let Some(length) = lines[index..]
            .iter()
            .position(|candidate| *candidate == closing)
        else {
            continue;
        };
        let length = length + 1;
        if length > MAX_FN_LINES && !reason_above(&lines, index) {
            found.push((length, name.to_owned(), index + 1));
        }
    }
    found
}

#[test]
fn no_file_or_function_is_too_long_without_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    let files = source_files();
    assert!(
        files.len() > 50,
        "the scan found only {} files",
        files.len()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read source");
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let count = text.lines().count();
        let header_reason = text
            .lines()
            .take_while(|line| line.starts_with("//!") || line.starts_with("#!"))
            .any(|line| line.contains(REASON));
        if count > MAX_FILE_LINES && !header_reason {
            problems.push(format!("{shown}: {count} lines (limit {MAX_FILE_LINES})"));
        }
        for (length, name, line) in long_functions(&text) {
            problems.push(format!(
                "{shown}:{line}: fn {name} is {length} lines (limit {MAX_FN_LINES})"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "split these, or write `{REASON} …` above them:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_finds_long_functions_and_honours_reasons() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let long = format!("pub async fn long() {{\n{body}}}\n");
    assert_eq!(
        long_functions(&long),
        vec![(MAX_FN_LINES + 2, "long".into(), 1)]
    );
    let reasoned = format!("// {REASON} one table.\n{long}");
    assert!(long_functions(&reasoned).is_empty());
    let short = "fn short() {\n    call();\n}\n";
    assert!(long_functions(short).is_empty());
    let nested = format!("impl X {{\n    fn inner(&self) {{\n{body}    }}\n}}\n");
    assert_eq!(long_functions(&nested).len(), 1);
    assert_eq!(declared_fn("    pub(crate) const fn f() {"), Some("f"));
    assert_eq!(declared_fn("    let f: fn() = g;"), None);
    assert_eq!(declared_fn("    fn declared(&self);"), Some("declared"));
    let declaration =
        format!("trait T {{\n    fn declared(&self);\n    fn other(&self) {{\n{body}    }}\n}}\n");
    assert_eq!(
        long_functions(&declaration),
        vec![(MAX_FN_LINES + 2, "other".into(), 3)]
    );
    let one_liner = format!("    fn one() -> u32 {{ 1 }}\n    fn two() {{\n{body}    }}\n");
    assert_eq!(
        long_functions(&one_liner),
        vec![(MAX_FN_LINES + 2, "two".into(), 2)]
    );
}
