//! A small ISO 9660 reader, enough to read a NoCloud seed (`user-data`, `meta-data`,
//! `network-config` in the root directory): primary volume descriptor, Joliet supplementary
//! descriptor (UCS-2 names) preferred when present, Rock Ridge `NM` names honoured on the
//! primary tree.

/// A file in the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// Why an image could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    #[error("not an ISO 9660 image (no CD001 primary volume descriptor)")]
    NotIso,
    #[error("ISO image is truncated at byte {0}")]
    Truncated(usize),
}

const SECTOR: usize = 2048;

/// The volume label of the primary descriptor (`cidata` for a NoCloud seed).
pub fn volume_label(image: &[u8]) -> Result<String, IsoError> {
    let (primary, _) = descriptors(image)?;
    let descriptor = slice(image, primary * SECTOR, SECTOR)?;
    Ok(String::from_utf8_lossy(&descriptor[40..72])
        .trim()
        .to_owned())
}

/// The files of the root directory, with their names as the richest tree gives them
/// (Joliet, else Rock Ridge, else plain ISO 9660 without `;1` and a trailing dot).
pub fn root_files(image: &[u8]) -> Result<Vec<IsoFile>, IsoError> {
    let (primary, joliet) = descriptors(image)?;
    match joliet {
        Some(sector) => read_root(image, sector, true),
        None => read_root(image, primary, false),
    }
}

/// A file of the root directory by name (case-insensitive, as ISO names may be upper-cased).
pub fn read_file(image: &[u8], name: &str) -> Result<Option<Vec<u8>>, IsoError> {
    Ok(root_files(image)?
        .into_iter()
        .find(|file| file.name.eq_ignore_ascii_case(name))
        .map(|file| file.data))
}

fn slice(image: &[u8], start: usize, len: usize) -> Result<&[u8], IsoError> {
    image
        .get(start..start.saturating_add(len))
        .ok_or(IsoError::Truncated(start.saturating_add(len)))
}

fn le_u32(bytes: &[u8]) -> usize {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

/// (primary descriptor sector, Joliet descriptor sector).
fn descriptors(image: &[u8]) -> Result<(usize, Option<usize>), IsoError> {
    let mut primary = None;
    let mut joliet = None;
    for sector in 16..64 {
        let Ok(descriptor) = slice(image, sector * SECTOR, SECTOR) else {
            break;
        };
        if &descriptor[1..6] != b"CD001" {
            break;
        }
        match descriptor[0] {
            1 => primary = primary.or(Some(sector)),
            // Joliet: escape sequences %/@, %/C or %/E in the supplementary descriptor.
            2 if descriptor[88] == 0x25
                && descriptor[89] == 0x2f
                && matches!(descriptor[90], 0x40 | 0x43 | 0x45) =>
            {
                joliet = joliet.or(Some(sector));
            }
            255 => break,
            _ => {}
        }
    }
    primary.map(|p| (p, joliet)).ok_or(IsoError::NotIso)
}

fn read_root(
    image: &[u8],
    descriptor_sector: usize,
    joliet: bool,
) -> Result<Vec<IsoFile>, IsoError> {
    let descriptor = slice(image, descriptor_sector * SECTOR, SECTOR)?;
    let root_record = &descriptor[156..190];
    let extent = le_u32(&root_record[2..6]);
    let size = le_u32(&root_record[10..14]);
    let directory = slice(image, extent * SECTOR, size)?;
    let mut files = Vec::new();
    let mut offset = 0;
    while offset < directory.len() {
        let length = directory[offset] as usize;
        if length == 0 {
            // Records do not cross sector boundaries: skip to the next sector.
            offset = (offset / SECTOR + 1) * SECTOR;
            continue;
        }
        let record = slice(directory, offset, length)?;
        offset += length;
        if record.len() < 34 {
            continue;
        }
        let flags = record[25];
        let name_len = record[32] as usize;
        let Some(raw_name) = record.get(33..33 + name_len) else {
            continue;
        };
        if flags & 0x02 != 0 || raw_name == [0] || raw_name == [1] {
            continue; // directories, `.` and `..`
        }
        let name = if joliet {
            decode_ucs2(raw_name)
        } else {
            let system_use_start = 33 + name_len + usize::from(name_len.is_multiple_of(2));
            rock_ridge_name(record.get(system_use_start..).unwrap_or(&[]))
                .unwrap_or_else(|| plain_name(raw_name))
        };
        let file_extent = le_u32(&record[2..6]);
        let file_size = le_u32(&record[10..14]);
        let data = slice(image, file_extent * SECTOR, file_size)?.to_vec();
        files.push(IsoFile { name, data });
    }
    Ok(files)
}

fn decode_ucs2(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    let name = String::from_utf16_lossy(&units);
    name.split(';').next().unwrap_or(&name).to_owned()
}

fn plain_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let name = name.split(';').next().unwrap_or(&name);
    name.strip_suffix('.').unwrap_or(name).to_owned()
}

fn rock_ridge_name(mut system_use: &[u8]) -> Option<String> {
    let mut name = String::new();
    while system_use.len() >= 4 {
        let length = system_use[2] as usize;
        if length < 4 || length > system_use.len() {
            break;
        }
        if &system_use[0..2] == b"NM" && length >= 5 {
            name.push_str(&String::from_utf8_lossy(&system_use[5..length]));
        }
        system_use = &system_use[length..];
    }
    (!name.is_empty()).then_some(name)
}

/// Writes a minimal image (label `cidata`, root directory only): ISO 9660 names with Rock
/// Ridge `NM` entries, plus a Joliet tree when `with_joliet`. For tests (of the reader and of
/// code that needs a NoCloud seed without the product's writer).
pub fn write_image(files: &[(&str, &[u8])], with_joliet: bool) -> Vec<u8> {
    let data_start = 24;
    let mut image = vec![0u8; SECTOR * data_start];
    let mut extents = Vec::new();
    for (_, data) in files {
        extents.push((image.len() / SECTOR, data.len()));
        image.extend_from_slice(data);
        let pad = (SECTOR - image.len() % SECTOR) % SECTOR;
        image.extend(std::iter::repeat_n(0, pad));
    }
    let record = |extent: usize, size: usize, flags: u8, name: &[u8], su: &[u8]| {
        let mut r = vec![0u8; 33];
        r.extend_from_slice(name);
        if name.len().is_multiple_of(2) {
            r.push(0);
        }
        r.extend_from_slice(su);
        r[0] = r.len() as u8;
        r[2..6].copy_from_slice(&(extent as u32).to_le_bytes());
        r[10..14].copy_from_slice(&(size as u32).to_le_bytes());
        r[25] = flags;
        r[32] = name.len() as u8;
        r
    };
    let directory = |joliet: bool, dir_sector: usize| {
        let mut dir = Vec::new();
        dir.extend(record(dir_sector, SECTOR, 2, &[0], &[]));
        dir.extend(record(dir_sector, SECTOR, 2, &[1], &[]));
        for ((name, _), (extent, size)) in files.iter().zip(&extents) {
            if joliet {
                let ucs: Vec<u8> = name.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
                dir.extend(record(*extent, *size, 0, &ucs, &[]));
            } else {
                let iso = format!("{}.;1", name.to_uppercase().replace('-', "_"));
                let mut nm = vec![b'N', b'M', (5 + name.len()) as u8, 1, 0];
                nm.extend_from_slice(name.as_bytes());
                dir.extend(record(*extent, *size, 0, iso.as_bytes(), &nm));
            }
        }
        dir.resize(SECTOR, 0);
        dir
    };
    let primary_dir = 20;
    let joliet_dir = 21;
    image[primary_dir * SECTOR..(primary_dir + 1) * SECTOR]
        .copy_from_slice(&directory(false, primary_dir));
    image[joliet_dir * SECTOR..(joliet_dir + 1) * SECTOR]
        .copy_from_slice(&directory(true, joliet_dir));
    let descriptor = |kind: u8, dir_sector: usize| {
        let mut d = vec![0u8; SECTOR];
        d[0] = kind;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        d[40..72].copy_from_slice(format!("{:<32}", "cidata").as_bytes());
        if kind == 2 {
            d[88..91].copy_from_slice(&[0x25, 0x2f, 0x45]);
        }
        let root = record(dir_sector, SECTOR, 2, &[0], &[]);
        d[156..156 + root.len()].copy_from_slice(&root);
        d
    };
    image[16 * SECTOR..17 * SECTOR].copy_from_slice(&descriptor(1, primary_dir));
    let mut next = 17;
    if with_joliet {
        image[17 * SECTOR..18 * SECTOR].copy_from_slice(&descriptor(2, joliet_dir));
        next = 18;
    }
    image[next * SECTOR] = 255;
    image[next * SECTOR + 1..next * SECTOR + 6].copy_from_slice(b"CD001");
    image
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_joliet_names() {
        let image = write_image(
            &[
                ("user-data", b"#cloud-config\n"),
                ("network-config", b"version: 2\n"),
            ],
            true,
        );
        assert_eq!(volume_label(&image).unwrap(), "cidata");
        let files = root_files(&image).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["user-data", "network-config"]);
        assert_eq!(
            read_file(&image, "network-config").unwrap().unwrap(),
            b"version: 2\n"
        );
    }

    #[test]
    fn reads_rock_ridge_names_without_joliet() {
        let image = write_image(&[("meta-data", b"instance-id: a\n")], false);
        assert_eq!(
            read_file(&image, "meta-data").unwrap().unwrap(),
            b"instance-id: a\n"
        );
    }

    #[test]
    fn rejects_non_iso() {
        assert_eq!(root_files(&[0u8; 100]), Err(IsoError::NotIso));
    }
}
