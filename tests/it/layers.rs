//! No upward imports: every `crate::<module>` path in `src/` must name a module of its own layer
//! or a lower one, as `provision::LAYERS` orders them.
//!
//! `#[cfg(test)]` modules (by convention at the end of a file) are exempt: a unit test may
//! build its input with a higher layer's helpers, and test code does not ship. Comments are
//! skipped (a doc link is not an import).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The layer index of a top-level module of the crate.
fn layer_of(module: &str) -> Option<usize> {
    provision::LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`src/pve/client.rs` → `pve`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap();
    let name = first.as_os_str().to_string_lossy();
    name.strip_suffix(".rs").unwrap_or(&name).to_owned()
}

/// `module -> other` for each `crate::other` on a line (not in comments).
fn crate_paths(line: &str) -> Vec<&str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return Vec::new();
    }
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // `crate::x`, not `pve_sim::crate::x` or `$crate::x`.
            let before = code[..*at].chars().last();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == ':')
        })
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '{'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Every violation in one file's text, as `file:line: module -> other (…)`.
fn violations(relative: &Path, text: &str) -> Vec<String> {
    let module = module_of(relative);
    let Some(own) = layer_of(&module) else {
        return vec![format!(
            "{}: module `{module}` is missing from provision::LAYERS",
            relative.display()
        )];
    };
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        for other in crate_paths(line) {
            let place = format!("src/{}:{}", relative.display(), index + 1);
            match layer_of(other) {
                _ if other.starts_with('{') => found.push(format!(
                    "{place}: `crate::{{…}}` groups several modules; write one path per module"
                )),
                None => found.push(format!(
                    "{place}: `crate::{other}` is missing from provision::LAYERS"
                )),
                Some(layer) if layer > own => found.push(format!(
                    "{place}: `{module}` imports `{other}`, a higher layer: {}",
                    line.trim()
                )),
                Some(_) => {}
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        // The crate root and the binary name every module; they are above every layer.
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue;
        }
        found.extend(violations(
            relative,
            &std::fs::read_to_string(file).unwrap(),
        ));
    }
    assert!(
        found.is_empty(),
        "upward imports (see provision::LAYERS):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_upward_imports_and_skips_comments_and_tests() {
    let text = "use crate::profile::Profile;\n\
                // see crate::commands::run\n\
                let api = crate::exec::session::open;\n\
                #[cfg(test)]\n\
                mod tests { use crate::commands::UserError; }\n";
    let found = violations(Path::new("plan/mod.rs"), text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("src/plan/mod.rs:3: `plan` imports `exec`"),
        "{found:?}"
    );
    assert_eq!(
        violations(Path::new("commands/up.rs"), "use crate::{cli, exec};").len(),
        1
    );
}
