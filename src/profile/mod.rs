//! Cluster profiles: TOML → validated [`Profile`], with located diagnostics.
//!
//! [`load`] is the one entry point: it finds the profile (path, workspace `profiles/NAME.toml`,
//! or built-in), parses it with `deny_unknown_fields`, runs every semantic rule and returns
//! either a [`LoadedProfile`] (possibly with warnings) or a [`ProfileError`] whose
//! diagnostics name `file:line:column`.

pub mod builtin;
pub mod credentials;
pub mod diagnostic;
mod locate;
pub mod model;
pub mod nodes;
pub mod overrides;
pub mod validate;

use std::path::{Path, PathBuf};

pub use builtin::{BUILTIN_PROFILES, BuiltinProfile};
pub use diagnostic::{Diagnostic, Finding, KeyPath, Severity, Target};
pub use locate::Locator;
pub use model::{Profile, Role};
pub use nodes::PlannedNode;
pub use overrides::Override;

/// A profile that parsed and passed validation.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    /// The file path it was read from, or `builtin:NAME`.
    pub source_name: String,
    /// The TOML text as read.
    pub text: String,
    /// Findings that do not stop anything (shown, exit code 0).
    pub warnings: Vec<Diagnostic>,
}

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no profile named `{name}`")]
    NotFound {
        name: String,
        /// Where it was looked for, in order.
        searched: Vec<String>,
    },
    #[error("cannot read profile {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("profile {source_name} is invalid ({} error(s))", errors(.diagnostics))]
    Invalid {
        source_name: String,
        text: String,
        /// Errors and warnings, located.
        diagnostics: Vec<Diagnostic>,
    },
}

fn errors(diagnostics: &[Diagnostic]) -> usize {
    diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count()
}

impl ProfileError {
    /// Every problem as a located diagnostic (a missing file becomes one without line and column).
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            ProfileError::NotFound { name, searched } => {
                let builtins: Vec<&str> = BUILTIN_PROFILES.iter().map(|p| p.name).collect();
                vec![Diagnostic::at(
                    Severity::Error,
                    name,
                    "",
                    None,
                    String::new(),
                    format!(
                        "no profile named `{name}` (looked in {})",
                        searched.join(", ")
                    ),
                    Some(format!(
                        "built-in profiles: {}; a path must contain `/` or end in .toml",
                        builtins.join(", ")
                    )),
                )]
            }
            ProfileError::Read { path, source } => vec![Diagnostic::at(
                Severity::Error,
                &path.display().to_string(),
                "",
                None,
                String::new(),
                format!("cannot read the profile: {source}"),
                Some("check the path and its permissions".to_owned()),
            )],
            ProfileError::Invalid { diagnostics, .. } => diagnostics.clone(),
        }
    }

    /// The source text, when there is one to draw snippets from.
    pub fn text(&self) -> Option<&str> {
        match self {
            ProfileError::Invalid { text, .. } => Some(text),
            ProfileError::NotFound { .. } | ProfileError::Read { .. } => None,
        }
    }
}

/// Every profile error is the user's to fix; its hints are in its [`ProfileError::diagnostics`],
/// which the top level prints instead of an `error:` line.
impl crate::error::UserFacing for ProfileError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::UserError
    }

    fn hint(&self) -> Option<String> {
        None
    }
}

/// Where a `--profile` value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileSource {
    File(PathBuf),
    Builtin(&'static BuiltinProfile),
}

/// Resolves `--profile NAME|PATH`: a value containing `/` or ending in `.toml` is a path
/// (relative to the current directory); otherwise, in a workspace (a directory holding
/// `provision.toml`), `profiles/NAME.toml` wins over the built-in profile of that name.
pub fn resolve(spec: &str, workspace: &Path) -> Result<ProfileSource, ProfileError> {
    if spec.contains('/') || spec.ends_with(".toml") {
        return Ok(ProfileSource::File(PathBuf::from(spec)));
    }
    let file_name = format!("{spec}.toml");
    let in_workspace = if workspace == Path::new(".") {
        Path::new("profiles").join(file_name)
    } else {
        workspace.join("profiles").join(file_name)
    };
    if workspace.join("provision.toml").is_file() && in_workspace.is_file() {
        return Ok(ProfileSource::File(in_workspace));
    }
    match builtin::builtin(spec) {
        Some(profile) => Ok(ProfileSource::Builtin(profile)),
        None => Err(ProfileError::NotFound {
            name: spec.to_owned(),
            searched: vec![
                in_workspace.display().to_string(),
                "the built-in profiles".to_owned(),
            ],
        }),
    }
}

/// At most this many errors (and as many warnings) are reported; the rest are counted.
pub const MAX_DIAGNOSTICS: usize = 50;

/// Finds, parses and validates a profile. Every command calls this first.
pub fn load(spec: &str, workspace: &Path) -> Result<LoadedProfile, ProfileError> {
    load_with(spec, workspace, &[])
}

/// [`load`] with per-run overrides merged in (see [`overrides`]): the result is validated as if
/// the file said so, and a finding at an overridden key names the override.
pub fn load_with(
    spec: &str,
    workspace: &Path,
    overrides: &[Override],
) -> Result<LoadedProfile, ProfileError> {
    let (source_name, text) = match resolve(spec, workspace)? {
        ProfileSource::File(path) => {
            let bytes = read_bounded(&path).map_err(|source| ProfileError::Read {
                path: path.clone(),
                source,
            })?;
            let source_name = path.display().to_string();
            let text = decode(&source_name, bytes)?;
            (source_name, text)
        }
        ProfileSource::Builtin(profile) => {
            (format!("builtin:{}", profile.name), profile.text.to_owned())
        }
    };
    let loaded = overrides::apply(&source_name, text, overrides)?;
    check_credential_files(loaded, workspace)
}

/// The files `[gitops.credentials]` names exist, are small, private and well formed (relative paths
/// start at `workspace`); a problem is a located error at the key that names the file.
fn check_credential_files(
    loaded: LoadedProfile,
    workspace: &Path,
) -> Result<LoadedProfile, ProfileError> {
    let Some(reference) = &loaded.profile.gitops.credentials else {
        return Ok(loaded);
    };
    if loaded.profile.gitops.engine == model::GitOpsEngine::None {
        return Ok(loaded);
    }
    let Err(problem) = credentials::read(reference, workspace) else {
        return Ok(loaded);
    };
    let finding = Finding {
        severity: Severity::Error,
        path: KeyPath::root()
            .key("gitops")
            .key("credentials")
            .key(problem.key),
        target: Target::Value,
        message: problem.message,
        hint: Some(problem.hint),
    };
    let locator = Locator::new(&loaded.text);
    let mut diagnostics =
        locate_findings(&loaded.source_name, &loaded.text, &locator, vec![finding]);
    diagnostics.extend(loaded.warnings);
    Err(ProfileError::Invalid {
        source_name: loaded.source_name,
        text: loaded.text,
        diagnostics,
    })
}

/// Reads at most [`validate::MAX_PROFILE_BYTES`] + 1 bytes: enough to tell a file is too large
/// without reading all of it.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(validate::MAX_PROFILE_BYTES).unwrap_or(u64::MAX) + 1;
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A one-diagnostic [`ProfileError::Invalid`] at byte `offset` of `text`.
fn invalid_at(
    source_name: &str,
    text: String,
    offset: usize,
    message: String,
    hint: &str,
) -> ProfileError {
    let end = (offset + 1).min(text.len()).max(offset);
    let diagnostic = Diagnostic::at(
        Severity::Error,
        source_name,
        &text,
        Some(offset..end),
        String::new(),
        message,
        Some(hint.to_owned()),
    );
    ProfileError::Invalid {
        source_name: source_name.to_owned(),
        text,
        diagnostics: vec![diagnostic],
    }
}

/// Bytes → text: refuses files above the size bound, UTF-16 and invalid UTF-8 with a located
/// error; drops a UTF-8 byte order mark.
pub fn decode(source_name: &str, bytes: Vec<u8>) -> Result<String, ProfileError> {
    if bytes.len() > validate::MAX_PROFILE_BYTES {
        return Err(invalid_at(
            source_name,
            String::new(),
            0,
            format!(
                "the profile is larger than {} bytes",
                validate::MAX_PROFILE_BYTES
            ),
            "a profile is a few kilobytes of TOML: check that this is the right file",
        ));
    }
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(invalid_at(
            source_name,
            String::new(),
            0,
            "the profile is UTF-16 encoded; TOML must be UTF-8".to_owned(),
            "save the file as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 in.toml > out.toml`",
        ));
    }
    let bytes = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(error.as_bytes()).into_owned();
            Err(invalid_at(
                source_name,
                text,
                offset,
                format!("invalid UTF-8 at byte {offset}"),
                "TOML must be UTF-8: re-save the file as UTF-8 (e.g. `iconv -f LATIN1 -t UTF-8`)",
            ))
        }
    }
}

/// Parses and validates profile text (`source_name` is used in diagnostics).
pub fn parse(source_name: &str, text: String) -> Result<LoadedProfile, ProfileError> {
    if text.len() > validate::MAX_PROFILE_BYTES {
        return Err(decode(source_name, text.into_bytes())
            .err()
            .unwrap_or_else(|| {
                invalid_at(
                    source_name,
                    String::new(),
                    0,
                    "the profile is too large".to_owned(),
                    "check the file",
                )
            }));
    }
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    let locator = Locator::new(&text);
    let profile: Profile = match toml::from_str(&text) {
        Ok(profile) => profile,
        Err(error) => {
            let diagnostic = parse_diagnostic(source_name, &text, &locator, &error);
            return Err(ProfileError::Invalid {
                source_name: source_name.to_owned(),
                text,
                diagnostics: vec![diagnostic],
            });
        }
    };
    let diagnostics = locate_findings(source_name, &text, &locator, validate::validate(&profile));
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(ProfileError::Invalid {
            source_name: source_name.to_owned(),
            text,
            diagnostics,
        });
    }
    Ok(LoadedProfile {
        profile,
        source_name: source_name.to_owned(),
        text,
        warnings: diagnostics,
    })
}

/// Places semantic findings in the text, errors first, then by position. Identical findings
/// are reported once; beyond [`MAX_DIAGNOSTICS`] errors (or warnings) one more diagnostic
/// says how many were left out.
pub fn locate_findings(
    source_name: &str,
    text: &str,
    locator: &Locator,
    findings: Vec<Finding>,
) -> Vec<Diagnostic> {
    let mut located: Vec<(Option<std::ops::Range<usize>>, Finding)> = findings
        .into_iter()
        .map(|finding| (locator.span(&finding.path, finding.target), finding))
        .collect();
    located.sort_by_key(|(span, finding)| {
        (
            finding.severity != Severity::Error,
            span.as_ref().map(|s| s.start),
        )
    });
    let mut seen = std::collections::HashSet::new();
    located.retain(|(_, finding)| seen.insert((finding.path.to_string(), finding.message.clone())));
    let mut diagnostics = Vec::new();
    for severity in [Severity::Error, Severity::Warning] {
        let mut of_severity = located.iter().filter(|(_, f)| f.severity == severity);
        for (span, finding) in of_severity.by_ref().take(MAX_DIAGNOSTICS) {
            diagnostics.push(Diagnostic::at(
                finding.severity,
                source_name,
                text,
                span.clone(),
                finding.path.to_string(),
                finding.message.clone(),
                finding.hint.clone(),
            ));
        }
        let rest: Vec<_> = of_severity.collect();
        if let Some((span, finding)) = rest.first() {
            let noun = if severity == Severity::Error {
                "error"
            } else {
                "warning"
            };
            diagnostics.push(Diagnostic::at(
                severity,
                source_name,
                text,
                span.clone(),
                finding.path.to_string(),
                format!(
                    "{} more {noun}(s) not shown (the first {MAX_DIAGNOSTICS} are above)",
                    rest.len()
                ),
                Some("fix the ones shown and validate again".to_owned()),
            ));
        }
    }
    diagnostics
}

/// A TOML syntax or shape error (`toml` reports a span) as a located diagnostic with a hint.
pub fn parse_diagnostic(
    source_name: &str,
    text: &str,
    locator: &Locator,
    error: &toml::de::Error,
) -> Diagnostic {
    let message = error.message().trim().to_owned();
    let span = error.span();
    let path = span
        .as_ref()
        .map(|span| locator.path_at(span.start).to_string())
        .unwrap_or_default();
    let hint = if message.starts_with("unknown field") {
        match diagnostic::closest_expected(&message) {
            Some(near) => {
                format!("did you mean `{near}`? `provision profiles docs` lists every field")
            }
            None => {
                "remove the key or fix its spelling; `provision profiles docs` lists every field"
                    .to_owned()
            }
        }
    } else if message.starts_with("missing field") {
        "add the field; `provision profiles docs` says what it holds".to_owned()
    } else if message.starts_with("unknown variant") {
        "use one of the values listed in the message".to_owned()
    } else if message.starts_with("invalid type") {
        "check the value's type (string in quotes, number, boolean, array or table) in `provision profiles docs`".to_owned()
    } else if message.contains("IP address") || message.contains("invalid IP") {
        "write an address such as 10.0.0.11 (a network such as 10.0.0.0/24 where a CIDR is expected)".to_owned()
    } else {
        "fix the TOML syntax at this place".to_owned()
    };
    Diagnostic::at(
        Severity::Error,
        source_name,
        text,
        span,
        path,
        message,
        Some(hint),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_loads_without_errors() {
        for builtin in BUILTIN_PROFILES {
            let loaded = load(builtin.name, Path::new("/nonexistent"));
            assert!(
                loaded.is_ok(),
                "{}: {:#?}",
                builtin.name,
                loaded.err().map(|e| e.diagnostics())
            );
        }
    }

    #[test]
    fn a100_plans_seven_nodes_with_the_issue_addresses() {
        let loaded = load("a100-8x", Path::new("/nonexistent")).map_err(|e| e.diagnostics());
        let Ok(loaded) = loaded else {
            panic!("a100-8x must load: {loaded:?}");
        };
        let nodes = loaded.profile.nodes();
        let names: Vec<(String, String)> = nodes
            .iter()
            .map(|node| (node.name.clone(), node.address.to_string()))
            .collect();
        assert_eq!(
            names[0],
            ("a100-server-1".to_owned(), "10.0.0.11".to_owned())
        );
        assert_eq!(names[6], ("a100-gpu-4".to_owned(), "10.0.0.24".to_owned()));
        assert_eq!(loaded.profile.servers().len(), 3);
        assert_eq!(loaded.profile.agents().len(), 4);
        assert_eq!(loaded.profile.gpu_count(), 8);
        assert_eq!(loaded.profile.prefix_len(), 24);
    }

    #[test]
    fn two_servers_are_refused_at_their_count() {
        let text = builtin::builtin("mlops")
            .map(|p| p.text.replacen("count = 1", "count = 2", 1))
            .unwrap_or_default();
        let error = parse("two.toml", text).err().map(|e| e.diagnostics());
        let diagnostics = error.unwrap_or_default();
        let first = &diagnostics[0];
        assert!(
            first.message.contains("cannot tolerate any failure"),
            "{first:?}"
        );
        assert_eq!(first.path, "node_groups[0].count");
        assert!(first.line.is_some());
    }
}
