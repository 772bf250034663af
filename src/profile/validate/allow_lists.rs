//! Allow-lists for every string that reaches a shell, a path, a YAML document or the Proxmox API
//! and that no other rule fully constrains. The rules are listed in `profiles/README.md`
//! ("Validation rules"); keep the two in step.

use super::bounds::{MAX_NODE_GROUPS, MAX_STRING};
use super::input::{
    check_apt_source, check_git_url, check_local_path, check_mount_path, check_safe_path,
    check_text, check_url, is_file_name, is_git_ref, is_jump_host, is_relative_path,
};
use super::{Checker, path};
use crate::profile::model::Profile;

impl Checker {
    /// Allow-lists for the string fields no other rule fully constrains.
    pub(super) fn allow_lists(&mut self, profile: &Profile) {
        if let Err(reason) = check_text(&profile.description, 512) {
            self.error(
                path(&["description"]),
                format!("description {reason}"),
                "write one line of plain text",
            );
        }
        for (index, group) in profile.node_groups.iter().take(MAX_NODE_GROUPS).enumerate() {
            if let Some(mount) = &group.disks.scratch_mount
                && mount.starts_with('/')
                && let Err(reason) = check_mount_path(mount)
            {
                self.error(
                    path(&["node_groups"]).index(index).key("disks").key("scratch_mount"),
                    format!("scratch_mount `{mount}` {reason}"),
                    "write an absolute path of letters, digits, `.`, `_`, `-` and `/` outside system directories, e.g. /mnt/scratch",
                );
            }
        }
        self.image_allow_lists(profile);
        self.storage_allow_lists(profile);
        self.gitops_allow_lists(profile);
        self.ssh_allow_lists(profile);
        self.airgap_allow_lists(profile);
    }

    fn image_allow_lists(&mut self, profile: &Profile) {
        let image = &profile.image;
        if let Some(url) = &image.url
            && (url.starts_with("http://") || url.starts_with("https://"))
            && let Err(reason) = check_url(url, &["http", "https"])
        {
            self.error(
                path(&["image", "url"]),
                format!("image url {reason}"),
                "write a plain http(s) URL; percent-encode spaces and quotes",
            );
        }
        if let Some(name) = &image.file_name
            && !is_file_name(name)
        {
            self.error(
                path(&["image", "file_name"]),
                format!("image file name `{name}` is not a plain file name"),
                "letters, digits, `.`, `_` and `-`, not starting with `.`, e.g. debian-12.qcow2",
            );
        } else if image.file_name.is_none()
            && let Some(url) = &image.url
        {
            let derived = url.rsplit('/').next().unwrap_or_default();
            if !derived.is_empty() && !is_file_name(derived) {
                self.error(
                    path(&["image", "url"]),
                    format!("the URL's last segment `{derived}` is not a plain file name"),
                    "set image.file_name, e.g. file_name = \"debian-12.qcow2\"",
                );
            }
        }
        if let Some(volume) = &image.volume
            && let Some((_, volume_path)) = volume.split_once(':')
            && !is_relative_path(volume_path)
        {
            self.error(
                path(&["image", "volume"]),
                format!("volume path `{volume_path}` is not a plain relative path"),
                "write STORAGE:import/FILE with letters, digits, `.`, `_`, `-` and `/`, no `..`",
            );
        }
    }

    fn storage_allow_lists(&mut self, profile: &Profile) {
        if let Some(nfs) = &profile.storage.nfs
            && nfs.path.starts_with('/')
            && let Err(reason) = check_safe_path(&nfs.path)
        {
            self.error(
                path(&["storage", "nfs", "path"]),
                format!("NFS export path `{}` {reason}", nfs.path),
                "write the export as the server lists it, e.g. /export/k3s (letters, digits, `.`, `_`, `-`, `/`)",
            );
        }
        if let Some(scratch) = &profile.storage.fast_scratch
            && scratch.path.starts_with('/')
            && let Err(reason) = check_mount_path(&scratch.path)
        {
            self.error(
                path(&["storage", "fast_scratch", "path"]),
                format!("fast_scratch path `{}` {reason}", scratch.path),
                "write an absolute path of letters, digits, `.`, `_`, `-` and `/` outside system directories, e.g. /mnt/scratch",
            );
        }
    }

    fn gitops_allow_lists(&mut self, profile: &Profile) {
        let gitops = &profile.gitops;
        if let Some(repo) = &gitops.repo
            && let Err((reason, hint)) = check_git_url(repo)
        {
            self.error(
                path(&["gitops", "repo"]),
                format!("gitops.repo {reason}"),
                &hint,
            );
        }
        if let Some(credentials) = &gitops.credentials {
            for (key, value) in [
                ("file", Some(&credentials.file)),
                ("known_hosts_file", credentials.known_hosts_file.as_ref()),
            ] {
                if let Some(value) = value
                    && let Err(reason) = check_local_path(value)
                {
                    self.error(
                        path(&["gitops", "credentials", key]),
                        format!("gitops.credentials.{key} {reason}"),
                        "a path relative to the workspace, absolute or ~/…, of letters, digits and `._/+~-`, e.g. secrets/gitops-deploy-key",
                    );
                }
            }
        }
        if let Some(branch) = &gitops.branch
            && !is_git_ref(branch)
        {
            self.error(
                path(&["gitops", "branch"]),
                format!("`{branch}` is not a plain Git branch name"),
                "letters, digits, `.`, `_`, `-` and `/`, no `..`, e.g. main",
            );
        }
        if let Some(repo_path) = &gitops.path
            && !repo_path.starts_with('/')
            && !is_relative_path(repo_path)
        {
            self.error(
                path(&["gitops", "path"]),
                format!("gitops.path `{repo_path}` is not a plain relative path"),
                "letters, digits, `.`, `_`, `-` and `/`, no `..`, e.g. clusters/a100-8x",
            );
        }
    }

    fn ssh_allow_lists(&mut self, profile: &Profile) {
        let ssh = &profile.ssh;
        if let Err(reason) = check_text(&ssh.private_key, MAX_STRING) {
            self.error(
                path(&["ssh", "private_key"]),
                format!("ssh.private_key {reason}"),
                "point at a private key file, e.g. ~/.ssh/id_ed25519",
            );
        }
        if let Some(jump) = &ssh.jump_host
            && jump.contains('@')
            && !is_jump_host(jump)
        {
            self.error(
                path(&["ssh", "jump_host"]),
                format!("jump host `{jump}` holds characters a user, host or port cannot"),
                "e.g. root@pve1 or admin@bastion.example.com:2222",
            );
        }
    }

    fn airgap_allow_lists(&mut self, profile: &Profile) {
        let airgap = &profile.airgap;
        for (key, value) in [
            ("k3s_binary", &airgap.k3s_binary),
            ("images", &airgap.images),
        ] {
            if let Some(value) = value
                && let Err(reason) = check_local_path(value)
            {
                self.error(
                    path(&["airgap", key]),
                    format!("airgap.{key} {reason}"),
                    "write a local file path of letters, digits, `.`, `_`, `-`, `+`, `~` and `/`",
                );
            }
        }
        if let Some(key) = &profile.nvidia.repo_key
            && let Err(reason) = check_local_path(key)
        {
            self.error(
                path(&["nvidia", "repo_key"]),
                format!("nvidia.repo_key {reason}"),
                "write a local file path of letters, digits, `.`, `_`, `-`, `+`, `~` and `/`",
            );
        }
        if let Some(source) = &airgap.apt_source {
            match check_apt_source(source) {
                Err(reason) => self.error(
                    path(&["airgap", "apt_source"]),
                    format!("airgap.apt_source {reason}"),
                    "write one line `deb [signed-by=/path] http://mirror/debian bookworm main` or one deb822 stanza (Types:, URIs:, Suites:, Components:)",
                ),
                Ok(true) => self.warning(
                    path(&["airgap", "apt_source"]),
                    "airgap.apt_source trusts the repository without signatures (trusted=yes)",
                    "sign the mirror and use signed-by=/path/to/key.gpg instead",
                ),
                Ok(false) => {}
            }
        }
    }
}
