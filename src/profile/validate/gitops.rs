//! The GitOps handoff: an engine needs a repository, and the credentials fit its URL.

use super::{Checker, path};
use crate::profile::model::{GitCredentialsKind, GitOpsEngine, Profile};

impl Checker {
    pub(super) fn gitops(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        if gitops.engine == GitOpsEngine::None {
            for (key, set) in [
                ("repo", gitops.repo.is_some()),
                ("branch", gitops.branch.is_some()),
                ("path", gitops.path.is_some()),
                ("credentials", gitops.credentials.is_some()),
            ] {
                if set {
                    self.warning(
                        path(&["gitops", key]),
                        format!("gitops.{key} is ignored because gitops.engine is none"),
                        "set gitops.engine to flux, argocd or fleet, or remove the key",
                    );
                }
            }
            return;
        }
        // The URL itself is checked by the allow-lists (validate/allow_lists.rs).
        if gitops.repo.is_none() {
            self.error(
                path(&["gitops"]),
                "gitops.engine needs gitops.repo",
                "add repo = \"https://git.example.com/org/fleet.git\"",
            );
        }
        if let Some(repo_path) = &gitops.path
            && repo_path.starts_with('/')
        {
            self.error(
                path(&["gitops", "path"]),
                format!("gitops.path `{repo_path}` is absolute"),
                "paths are relative to the repository root, e.g. clusters/a100-8x",
            );
        }
        self.gitops_credentials(profile);
    }

    /// The credentials fit the URL: ssh:// needs an SSH key and a pinned host key, HTTPS takes a
    /// username and password (or none for a public repository). The files are read when the profile is
    /// loaded (`profile::credentials`), not here: these rules see only the profile.
    fn gitops_credentials(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        let scheme = gitops
            .repo
            .as_deref()
            .and_then(|repo| repo.split_once("://"))
            .map(|(scheme, _)| scheme);
        let kind = gitops.credentials.as_ref().map(|c| c.kind);
        match (scheme, kind) {
            (Some("ssh"), None) => self.error(
                path(&["gitops", "repo"]),
                "an ssh:// repository needs SSH credentials and a pinned host key",
                "add [gitops.credentials] with kind = \"ssh\", file = \"secrets/gitops-deploy-key\" and known_hosts_file = \"secrets/gitops-known-hosts\", or use a public https:// URL",
            ),
            (Some("ssh"), Some(GitCredentialsKind::Https)) => self.error(
                path(&["gitops", "credentials", "kind"]),
                "kind = \"https\" cannot authenticate to an ssh:// repository",
                "use kind = \"ssh\" with a deploy key, or the repository's https:// URL",
            ),
            (Some("https"), Some(GitCredentialsKind::Ssh)) => self.error(
                path(&["gitops", "credentials", "kind"]),
                "kind = \"ssh\" cannot authenticate to an https:// repository",
                "use the repository's ssh://git@HOST/ORG/REPO URL, or kind = \"https\" with a username and token",
            ),
            _ => {}
        }
        let Some(credentials) = &gitops.credentials else {
            return;
        };
        match credentials.kind {
            GitCredentialsKind::Ssh => {
                match (&credentials.known_hosts, &credentials.known_hosts_file) {
                    (None, None) => self.error(
                        path(&["gitops", "credentials"]),
                        "kind = \"ssh\" needs known_hosts or known_hosts_file to pin the Git host's key",
                        crate::profile::credentials::KNOWN_HOSTS_HINT,
                    ),
                    (Some(_), Some(_)) => self.error(
                        path(&["gitops", "credentials", "known_hosts"]),
                        "give known_hosts or known_hosts_file, not both",
                        "keep the one that holds the host key",
                    ),
                    (Some(known_hosts), None) => {
                        if let Err(reason) = crate::profile::credentials::check_known_hosts(known_hosts) {
                            self.error(
                                path(&["gitops", "credentials", "known_hosts"]),
                                format!("gitops.credentials.known_hosts {reason}"),
                                crate::profile::credentials::KNOWN_HOSTS_HINT,
                            );
                        }
                    }
                    (None, Some(_)) => {}
                }
            }
            GitCredentialsKind::Https => {
                for (key, set) in [
                    ("known_hosts", credentials.known_hosts.is_some()),
                    ("known_hosts_file", credentials.known_hosts_file.is_some()),
                ] {
                    if set {
                        self.error(
                            path(&["gitops", "credentials", key]),
                            format!("gitops.credentials.{key} is only for kind = \"ssh\""),
                            "remove it: HTTPS repositories are authenticated by their TLS certificate",
                        );
                    }
                }
            }
        }
    }
}
