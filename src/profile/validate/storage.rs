//! Cluster storage: the NFS export and the fast-scratch local-path class.

use super::formats::{is_absolute_path, is_dns_subdomain};
use super::{Checker, path};
use crate::profile::model::Profile;

impl Checker {
    pub(super) fn storage(&mut self, profile: &Profile) {
        if let Some(nfs) = &profile.storage.nfs {
            if !is_absolute_path(&nfs.path) {
                self.error(
                    path(&["storage", "nfs", "path"]),
                    format!("NFS export path `{}` is not absolute", nfs.path),
                    "write the export as the server lists it (`showmount -e`), e.g. /export/k3s",
                );
            }
            if !is_dns_subdomain(&nfs.class_name) {
                self.error(
                    path(&["storage", "nfs", "class_name"]),
                    format!("`{}` is not a valid StorageClass name", nfs.class_name),
                    "lowercase DNS name, e.g. nfs-client",
                );
            }
        }
        if let Some(scratch) = &profile.storage.fast_scratch {
            let scratch_path = path(&["storage", "fast_scratch"]);
            if !is_absolute_path(&scratch.path) {
                self.error(
                    scratch_path.key("path"),
                    format!("fast_scratch path `{}` is not absolute", scratch.path),
                    "write an absolute path, normally a scratch_mount such as /mnt/scratch",
                );
            } else {
                let on_scratch_disk = profile.node_groups.iter().any(|group| {
                    group.disks.scratch_mount.as_deref().is_some_and(|mount| {
                        scratch.path == mount
                            || scratch
                                .path
                                .starts_with(&format!("{}/", mount.trim_end_matches('/')))
                    })
                });
                if !on_scratch_disk {
                    self.warning(
                        scratch_path.key("path"),
                        format!("fast_scratch path `{}` is not on any group's scratch_mount: it will live on the OS disk", scratch.path),
                        "set disks.scratch_gb and disks.scratch_mount on the groups that need fast scratch",
                    );
                }
            }
            if !is_dns_subdomain(&scratch.class_name) {
                self.error(
                    scratch_path.key("class_name"),
                    format!("`{}` is not a valid StorageClass name", scratch.class_name),
                    "lowercase DNS name, e.g. fast-scratch",
                );
            }
            if let Some(nfs) = &profile.storage.nfs
                && nfs.class_name == scratch.class_name
            {
                self.error(
                    scratch_path.key("class_name"),
                    format!(
                        "StorageClass `{}` is also the NFS class",
                        scratch.class_name
                    ),
                    "give the two classes different names",
                );
            }
        }
    }
}
