//! What phase 2 needs to reach and feed the nodes: the SSH user, key and jump host, the node
//! labels it detects, and the air-gapped files with their checksums.

use super::formats::is_sha256;
use super::labels::check_label_key;
use super::{Checker, path};
use crate::profile::model::Profile;

impl Checker {
    pub(super) fn ssh(&mut self, profile: &Profile) {
        let ssh = &profile.ssh;
        let user_valid = !ssh.user.is_empty()
            && ssh.user.len() <= 32
            && ssh
                .user
                .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && ssh
                .user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !user_valid {
            self.error(
                path(&["ssh", "user"]),
                format!("`{}` is not a Linux user name", ssh.user),
                "lowercase letters, digits, `_` and `-`, at most 32 characters, e.g. provision",
            );
        }
        if ssh.private_key.trim().is_empty() {
            self.error(
                path(&["ssh", "private_key"]),
                "ssh.private_key is empty",
                "point at a private key file, e.g. ~/.ssh/id_ed25519",
            );
        }
        if let Some(jump) = &ssh.jump_host {
            let valid = jump.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            });
            if !valid {
                self.error(
                    path(&["ssh", "jump_host"]),
                    format!("jump host `{jump}` is not user@host[:port]"),
                    "e.g. root@pve1 or admin@bastion.example.com:2222",
                );
            }
        }
    }

    /// The node labels phase 2 detects GPUs and CPUs under.
    pub(super) fn detect(&mut self, profile: &Profile) {
        for (key, value) in [
            ("gpu_label", &profile.detect.gpu_label),
            ("cpu_label", &profile.detect.cpu_label),
        ] {
            if let Err((message, hint)) = check_label_key(value) {
                self.error(path(&["detect", key]), message, hint);
            }
        }
    }

    /// Air-gapped files come with their checksums.
    pub(super) fn airgap(&mut self, profile: &Profile) {
        let airgap = &profile.airgap;
        for (file_key, sha_key, file, sha) in [
            (
                "k3s_binary",
                "k3s_sha256",
                &airgap.k3s_binary,
                &airgap.k3s_sha256,
            ),
            (
                "images",
                "images_sha256",
                &airgap.images,
                &airgap.images_sha256,
            ),
        ] {
            match (file, sha) {
                (Some(_), None) => self.error(
                    path(&["airgap", file_key]),
                    format!("airgap.{file_key} without airgap.{sha_key}"),
                    "every file that reaches a node is checked against a SHA-256: add it",
                ),
                (None, Some(_)) => self.error(
                    path(&["airgap", sha_key]),
                    format!("airgap.{sha_key} without airgap.{file_key}"),
                    "remove the checksum or add the file",
                ),
                (Some(_), Some(sha)) if !is_sha256(sha) => self.error(
                    path(&["airgap", sha_key]),
                    format!("sha256 `{sha}` is not 64 hexadecimal characters"),
                    "run `sha256sum` on the file",
                ),
                _ => {}
            }
        }
    }
}
