//! The cloud image: exactly one source, a checksummed download, a name Proxmox imports, a
//! template outside the cluster's VMIDs.

use super::formats::{has_import_extension, is_sha256, is_volume_id};
use super::{Checker, path};
use crate::profile::model::{Image, Profile};

/// SHA-256 digests the built-in profiles carry that no publisher signs: Debian publishes
/// `SHA512SUMS` only, so the Debian images' digests were computed, not published. `validate`
/// says so loudly until the profile carries a digest its user checked.
const UNPUBLISHED_SHA256: &[&str] =
    &["5da221d8f7434ee86145e78a2c60ca45eb4ef8296535e04f6f333193225792aa"];

impl Checker {
    pub(super) fn image(&mut self, profile: &Profile) {
        let image = &profile.image;
        let sources = [
            image.url.is_some(),
            image.volume.is_some(),
            image.template_vmid.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        let hint = "set exactly one of url (+ sha256), volume or template_vmid";
        if sources == 0 {
            self.error(path(&["image"]), "the image has no source", hint);
        } else if sources > 1 {
            self.error(path(&["image"]), "the image has more than one source", hint);
        }
        if let Some(url) = &image.url {
            self.image_url(image, url);
        } else if image.file_name.is_some() {
            self.error(
                path(&["image", "file_name"]),
                "image.file_name is only used with image.url",
                "remove file_name or add url",
            );
        }
        if let Some(sha) = &image.sha256 {
            if !is_sha256(sha) {
                self.error(
                    path(&["image", "sha256"]),
                    format!("sha256 `{sha}` is not 64 hexadecimal characters"),
                    "run `sha256sum` on the image and paste the 64-character digest",
                );
            }
            if UNPUBLISHED_SHA256.contains(&sha.to_ascii_lowercase().as_str()) {
                self.warning(
                    path(&["image", "sha256"]),
                    "image.sha256 is the built-in profile's placeholder, not a checksum the \
                     image's publisher signed (Debian publishes SHA512SUMS only)",
                    "before a real run: download the image, check it against Debian's signed \
                     SHA512SUMS, run `sha256sum` on it and put that digest here",
                );
            }
            if image.url.is_none() {
                self.error(
                    path(&["image", "sha256"]),
                    "image.sha256 without image.url",
                    "the checksum verifies a download; remove it or add url",
                );
            }
        }
        if let Some(volume) = &image.volume
            && !is_volume_id(volume)
        {
            self.error(
                path(&["image", "volume"]),
                format!("`{volume}` is not a Proxmox volume id"),
                "write STORAGE:PATH, e.g. local:import/debian-12-genericcloud-amd64.qcow2",
            );
        }
        if let (Some(written), Some(inferred)) = (image.os, image.inferred_os())
            && written != inferred
        {
            self.warning(
                path(&["image", "os"]),
                format!("image.os is {written} but the image's name says {inferred}"),
                "node preparation follows image.os: check which image this really is",
            );
        }
        if !image.strategy.is_import() && image.template_vmid.is_some() {
            self.error(
                path(&["image", "strategy"]),
                format!(
                    "image.strategy = \"{}\" builds provision's own template from image.url or image.volume, but the image is template_vmid",
                    image.strategy.as_str()
                ),
                "remove strategy (VMs are full clones of template_vmid) or use url/volume instead of template_vmid",
            );
        }
        if let Some(template) = image.template_vmid {
            let range = profile.proxmox.vmid_range;
            if template < 100 {
                self.error(
                    path(&["image", "template_vmid"]),
                    format!("template VMID {template} is below 100"),
                    "Proxmox VMIDs start at 100",
                );
            } else if (range.start..=range.end).contains(&template) {
                self.error(
                    path(&["image", "template_vmid"]),
                    format!("template VMID {template} lies inside proxmox.vmid_range"),
                    "the range is allocated to cluster VMs; keep the template outside it",
                );
            }
        }
    }

    /// A download: an http(s) URL, its checksum, and a file name Proxmox imports.
    fn image_url(&mut self, image: &Image, url: &str) {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            self.error(
                path(&["image", "url"]),
                format!("image url `{url}` is not an http(s) URL"),
                "Proxmox's download-url accepts only http:// and https:// URLs",
            );
        }
        if image.sha256.is_none() {
            self.error(
                path(&["image"]),
                "image.url without image.sha256",
                "add sha256 = \"<64 hex>\" (run `sha256sum` on the downloaded image); Proxmox verifies it",
            );
        }
        let file_name = image
            .file_name
            .clone()
            .unwrap_or_else(|| url.rsplit('/').next().unwrap_or_default().to_owned());
        let key = if image.file_name.is_some() {
            "file_name"
        } else {
            "url"
        };
        if !has_import_extension(&file_name) {
            self.error(
                path(&["image", key]),
                format!(
                    "image file name `{file_name}` does not end in .qcow2, .img, .raw or .vmdk"
                ),
                "Proxmox stores imports only with a disk image extension; set image.file_name",
            );
        }
    }
}
