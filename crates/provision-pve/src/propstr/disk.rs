//! Disks: `scsiN`/`virtioN` and `efidisk0`.

use super::{PropStrError, PropertyFormat, PropertyString};

/// A disk (`scsiN`, `virtioN`): `local-lvm:0,import-from=local:import/x.qcow2,iothread=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `storage:size-in-GiB` to allocate, or an existing volume id.
    pub file: String,
    pub import_from: Option<String>,
    pub format: Option<String>,
    pub size: Option<String>,
    pub cache: Option<String>,
    /// `on` | `ignore`.
    pub discard: Option<String>,
    pub iothread: Option<bool>,
    pub ssd: Option<bool>,
    pub extra: Vec<(String, String)>,
}

impl Disk {
    pub fn new(file: impl Into<String>) -> Self {
        Disk {
            file: file.into(),
            import_from: None,
            format: None,
            size: None,
            cache: None,
            discard: None,
            iothread: None,
            ssd: None,
            extra: Vec::new(),
        }
    }
}

impl PropertyFormat for Disk {
    const DEFAULT_KEY: Option<&'static str> = Some("file");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let file = match p.take("volume") {
            Some(volume) => volume,
            None => p.required("file")?,
        };
        Ok(Disk {
            file,
            import_from: p.take("import-from"),
            format: p.take("format"),
            size: p.take("size"),
            cache: p.take("cache"),
            discard: p.take("discard"),
            iothread: p.take_bool("iothread")?,
            ssd: p.take_bool("ssd")?,
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("file", self.file.clone());
        p.push_opt("import-from", self.import_from.as_ref());
        p.push_opt("format", self.format.as_ref());
        p.push_opt("size", self.size.as_ref());
        p.push_opt("cache", self.cache.as_ref());
        p.push_opt("discard", self.discard.as_ref());
        p.push_bool("iothread", self.iothread);
        p.push_bool("ssd", self.ssd);
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}

/// `efidisk0: local-lvm:1,efitype=4m,pre-enrolled-keys=0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfiDisk {
    pub file: String,
    /// `2m` | `4m`.
    pub efitype: Option<String>,
    pub pre_enrolled_keys: Option<bool>,
    pub format: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl PropertyFormat for EfiDisk {
    const DEFAULT_KEY: Option<&'static str> = Some("file");

    fn from_property_string(mut p: PropertyString) -> Result<Self, PropStrError> {
        let file = match p.take("volume") {
            Some(volume) => volume,
            None => p.required("file")?,
        };
        let efitype = p.take("efitype");
        if let Some(kind) = &efitype
            && kind != "2m"
            && kind != "4m"
        {
            return Err(PropStrError::BadValue {
                key: "efitype".to_owned(),
                value: kind.clone(),
                expected: "2m or 4m".to_owned(),
            });
        }
        Ok(EfiDisk {
            file,
            efitype,
            pre_enrolled_keys: p.take_bool("pre-enrolled-keys")?,
            format: p.take("format"),
            extra: p.entries,
        })
    }

    fn to_property_string(&self) -> PropertyString {
        let mut p = PropertyString::default();
        p.push("file", self.file.clone());
        p.push_opt("efitype", self.efitype.as_ref());
        p.push_bool("pre-enrolled-keys", self.pre_enrolled_keys);
        p.push_opt("format", self.format.as_ref());
        p.entries.extend(self.extra.iter().cloned());
        p
    }
}
