//! qemu-server's permission checks of a create or config request
//! (`check_vm_modify_config_perm` and the value-dependent checks), by config key category.

use std::collections::BTreeMap;

use crate::propstring;
use crate::state::{ApiError, ApiResult, is_disk_key};

use crate::router::Request;

impl Request<'_> {
    /// Permission checks of a create or config request, the way qemu-server does them
    /// (src/PVE/API2/Qemu.pm: `check_vm_modify_config_perm` for every key, then the
    /// value-dependent `check_vm_create_serial_perm`, `check_usb_perm`, `check_hostpci_perm`,
    /// `check_rng_perm`, and `check_storage_access` / `check_drive_perms` for drives).
    /// `values` holds the value of each key (the current one for a deleted key). `root@pam`
    /// (a ticket, never a token) skips every check.
    pub(super) fn check_config_permissions(
        &self,
        vmid: u32,
        keys: &[String],
        values: &BTreeMap<String, String>,
        creating: bool,
    ) -> ApiResult<()> {
        if self.identity.root {
            return Ok(());
        }
        let path = format!("/vms/{vmid}");
        let mut sorted: Vec<&String> = keys.iter().collect();
        sorted.sort();
        for key in &sorted {
            match config_category(key) {
                ConfigCategory::Privilege(privilege) => self.identity.check(&path, privilege)?,
                ConfigCategory::Startup => {
                    self.identity.check(&path, "VM.Config.Options")?;
                    self.identity.check("/", "Sys.Modify")?;
                }
                ConfigCategory::CloudinitOrNetwork => self
                    .identity
                    .check_any(&path, &["VM.Config.Cloudinit", "VM.Config.Network"])?,
                ConfigCategory::Vmstate => {
                    self.identity.check(&path, "VM.Config.Disk")?;
                    self.identity.check(&path, "VM.PowerMgmt")?;
                }
                ConfigCategory::ValueDependent => {}
                ConfigCategory::RootOnly => {
                    return Err(ApiError::internal(format!(
                        "only root can set '{key}' config"
                    )));
                }
            }
        }
        for key in &sorted {
            let value = values.get(key.as_str()).map_or("", String::as_str);
            self.check_value_permission(vmid, key, value, creating)?;
        }
        Ok(())
    }

    /// The checks qemu-server makes on a key's value rather than its name.
    fn check_value_permission(
        &self,
        vmid: u32,
        key: &str,
        value: &str,
        creating: bool,
    ) -> ApiResult<()> {
        let path = format!("/vms/{vmid}");
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        let entries = propstring::parse(value).unwrap_or_default();
        match base {
            // `check_vm_create_serial_perm`: a socket is hardware config, a host device is root's.
            "serial" if key != base => {
                if value == "socket" {
                    self.identity.check(&path, "VM.Config.HWType")
                } else {
                    Err(ApiError::internal(format!(
                        "only root can set '{key}' config for real devices"
                    )))
                }
            }
            // `check_usb_perm`
            "usb" if key != base => {
                self.identity.check(&path, "VM.Config.HWType")?;
                if let Some(host) = propstring::get(&entries, "host", Some("host")) {
                    if !host.eq_ignore_ascii_case("spice") {
                        return Err(ApiError::internal(format!(
                            "only root can set '{key}' config for real devices"
                        )));
                    }
                    Ok(())
                } else if let Some(mapping) = propstring::get(&entries, "mapping", None) {
                    self.identity
                        .check(&format!("/mapping/usb/{mapping}"), "Mapping.Use")
                } else {
                    Err(ApiError::internal(
                        "either 'host' or 'mapping' must be set.",
                    ))
                }
            }
            // `check_hostpci_perm`
            "hostpci" if key != base => {
                if propstring::get(&entries, "host", Some("host")).is_some() {
                    return Err(ApiError::internal(format!(
                        "only root can set '{key}' config for non-mapped devices"
                    )));
                }
                let Some(mapping) = propstring::get(&entries, "mapping", None) else {
                    return Err(ApiError::internal(
                        "either 'host' or 'mapping' must be set.",
                    ));
                };
                self.identity
                    .check(&format!("/mapping/pci/{mapping}"), "Mapping.Use")?;
                self.identity.check(&path, "VM.Config.HWType")?;
                if propstring::get(&entries, "romfile", None).is_some() {
                    return Err(ApiError::param(
                        key,
                        "only root@pam can set 'romfile' option",
                    ));
                }
                Ok(())
            }
            // `check_rng_perm`
            "rng" if key != base => {
                if propstring::get(&entries, "source", Some("source")) == Some("/dev/hwrng") {
                    self.identity.check("/mapping/hwrng", "Mapping.Use")?;
                }
                Ok(())
            }
            // `check_dir_perm`
            "virtiofs" if key != base => {
                self.identity.check(&path, "VM.Config.Disk")?;
                let dirid = propstring::get(&entries, "dirid", Some("dirid")).unwrap_or("");
                self.identity
                    .check(&format!("/mapping/dir/{dirid}"), "Mapping.Use")
            }
            // PVE::GuestHelpers `assert_tag_permissions` with the default `user-tag-access`
            // (free): VM.Config.Options.
            "tags" => self.identity.check(&path, "VM.Config.Options"),
            _ if is_disk_key(key) || key == "cdrom" => {
                self.check_drive_permission(key, &entries, creating)
            }
            _ => Ok(()),
        }
    }

    /// Drives: `check_storage_access` on create (Datastore.AllocateSpace for a new disk),
    /// `check_drive_perms` on a config change (cloud-init / CD-ROM / disk privileges).
    fn check_drive_permission(
        &self,
        key: &str,
        entries: &[propstring::Entry],
        creating: bool,
    ) -> ApiResult<()> {
        let path = format!("/vms/{}", self.vmid_or_param());
        let file = propstring::get(entries, "file", Some("file")).unwrap_or("");
        let cdrom = key == "cdrom" || propstring::get(entries, "media", None) == Some("cdrom");
        let cloudinit = file.ends_with(":cloudinit") || file.ends_with("-cloudinit");
        let new_disk = file
            .split_once(':')
            .is_some_and(|(_, size)| size.parse::<f64>().is_ok());
        if new_disk && !cdrom {
            let storage = file.split(':').next().unwrap_or("");
            self.identity
                .check(&format!("/storage/{storage}"), "Datastore.AllocateSpace")?;
        }
        if creating {
            return Ok(());
        }
        if cloudinit {
            self.identity.check(&path, "VM.Config.Cloudinit")?;
            self.identity.check(&path, "VM.Config.CDROM")
        } else if cdrom {
            self.identity.check(&path, "VM.Config.CDROM")
        } else {
            self.identity.check(&path, "VM.Config.Disk")
        }
    }

    fn vmid_or_param(&self) -> u32 {
        match self.vmid() {
            0 => self.text("vmid").and_then(|v| v.parse().ok()).unwrap_or(0),
            vmid => vmid,
        }
    }
}

/// How qemu-server checks a config key (src/PVE/API2/Qemu.pm: `$cpuoptions`,
/// `$memoryoptions`, `$hwtypeoptions`, `$generaloptions`, `$vmpoweroptions`, `$diskoptions`,
/// `$cloudinitoptions` and `check_vm_modify_config_perm`).
enum ConfigCategory {
    Privilege(&'static str),
    /// VM.Config.Options and Sys.Modify on `/` ("it changes host behaviour").
    Startup,
    /// VM.Config.Cloudinit or VM.Config.Network (any).
    CloudinitOrNetwork,
    /// VM.Config.Disk and VM.PowerMgmt.
    Vmstate,
    /// Drives, `cdrom`, `unusedN`, `serialN`, `usbN`, `hostpciN`, `virtiofsN`, `tags`: checked
    /// on their value elsewhere.
    ValueDependent,
    /// "only root can set 'KEY' config" (args, hugepages, keephugepages, affinity, lock, …).
    RootOnly,
}

fn config_category(key: &str) -> ConfigCategory {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let numbered = base.len() < key.len();
    if is_disk_key(key)
        || key == "cdrom"
        || key == "tags"
        || (numbered && matches!(base, "unused" | "serial" | "usb" | "hostpci" | "virtiofs"))
    {
        return ConfigCategory::ValueDependent;
    }
    match key {
        "cores" | "cpu" | "runningcpu" | "cpulimit" | "cpuunits" | "numa" | "smp" | "sockets"
        | "vcpus" => ConfigCategory::Privilege("VM.Config.CPU"),
        _ if numbered && base == "numa" => ConfigCategory::Privilege("VM.Config.CPU"),
        "memory" | "balloon" | "shares" | "allow-ksm" => {
            ConfigCategory::Privilege("VM.Config.Memory")
        }
        "acpi" | "hotplug" | "kvm" | "machine" | "runningmachine" | "scsihw" | "smbios1"
        | "tablet" | "vga" | "watchdog" | "audio0" | "rng0" => {
            ConfigCategory::Privilege("VM.Config.HWType")
        }
        "startup" => ConfigCategory::Startup,
        "agent" | "autostart" | "bios" | "description" | "keyboard" | "localtime"
        | "migrate_downtime" | "migrate_speed" | "name" | "onboot" | "ostype" | "protection"
        | "reboot" | "startdate" | "tdf" | "template" => {
            ConfigCategory::Privilege("VM.Config.Options")
        }
        "freeze" => ConfigCategory::Privilege("VM.PowerMgmt"),
        "boot" | "bootdisk" | "vmstatestorage" => ConfigCategory::Privilege("VM.Config.Disk"),
        "running-nets-host-mtu" => ConfigCategory::Privilege("VM.Config.Network"),
        _ if numbered && base == "net" => ConfigCategory::Privilege("VM.Config.Network"),
        "cicustom" | "cipassword" | "citype" | "ciuser" | "ciupgrade" | "nameserver"
        | "searchdomain" | "sshkeys" => ConfigCategory::CloudinitOrNetwork,
        _ if numbered && base == "ipconfig" => ConfigCategory::CloudinitOrNetwork,
        "vmstate" => ConfigCategory::Vmstate,
        _ => ConfigCategory::RootOnly,
    }
}
