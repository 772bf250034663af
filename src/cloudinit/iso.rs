//! A deterministic NoCloud seed ISO writer (ISO 9660 + Joliet + Rock Ridge), so provision needs no
//! external `genisoimage`/`xorriso` and the same seed always yields the same bytes (and sha256).
//!
//! Layout (2048-byte logical blocks):
//!
//! | block | content                                                        |
//! |-------|----------------------------------------------------------------|
//! | 0-15  | system area (zeros)                                            |
//! | 16    | primary volume descriptor (volume id `cidata`)                 |
//! | 17    | Joliet supplementary volume descriptor (UCS-2 level 3, `%/E`)  |
//! | 18    | volume descriptor set terminator                               |
//! | 19-22 | path tables: primary L, primary M, Joliet L, Joliet M          |
//! | 23    | primary root directory, with Rock Ridge (SUSP) entries         |
//! | 24    | Joliet root directory                                          |
//! | 25    | SUSP continuation area holding the Rock Ridge `ER` entry       |
//! | 26-   | file data, each file starting on a block boundary              |
//!
//! Both directory trees point at the same file extents. The primary tree uses ISO 9660 level-1
//! names (`USER_DAT.;1` …) and carries Rock Ridge `NM` entries with the real names, so Linux (which
//! prefers Rock Ridge) and Joliet-only readers both see `user-data`, `meta-data`, `network-config`.

use super::Seed;

const BLOCK: usize = 2048;
const PVD_BLOCK: u32 = 16;
const SVD_BLOCK: u32 = 17;
const TERMINATOR_BLOCK: u32 = 18;
const PRIMARY_L_PATH_BLOCK: u32 = 19;
const PRIMARY_M_PATH_BLOCK: u32 = 20;
const JOLIET_L_PATH_BLOCK: u32 = 21;
const JOLIET_M_PATH_BLOCK: u32 = 22;
const PRIMARY_ROOT_BLOCK: u32 = 23;
const JOLIET_ROOT_BLOCK: u32 = 24;
const CONTINUATION_BLOCK: u32 = 25;
const FIRST_FILE_BLOCK: u32 = 26;

/// The volume label cloud-init's NoCloud datasource looks for.
pub const VOLUME_ID: &str = "cidata";

/// Recording time written everywhere a timestamp is required: fixed, so the output is
/// reproducible. 2020-01-01T00:00:00Z.
const FIXED_TIME: Timestamp = Timestamp {
    year: 2020,
    month: 1,
    day: 1,
    hour: 0,
    minute: 0,
    second: 0,
};

/// Bumped whenever the byte layout changes, so ISO file names (which hash the seed) change too.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Rock Ridge 1.09 extension reference, as mkisofs/genisoimage write it.
const ER_ID: &str = "RRIP_1991A";
const ER_DESCRIPTOR: &str =
    "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// `RR` entry flags (Rock Ridge 1.09): which entries follow.
const RR_FLAG_PX: u8 = 0x01;
const RR_FLAG_NM: u8 = 0x08;

const MODE_DIRECTORY: u32 = 0o040_555;
const MODE_FILE: u32 = 0o100_444;

#[derive(Clone, Copy)]
struct Timestamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Timestamp {
    /// 7-byte directory record form (years since 1900, GMT offset 0).
    fn directory_form(self) -> [u8; 7] {
        [
            u8::try_from(self.year - 1900).unwrap_or(u8::MAX),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            0,
        ]
    }

    /// 17-byte volume descriptor form (`YYYYMMDDHHMMSScc` + GMT offset).
    fn descriptor_form(self) -> [u8; 17] {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        let mut out = [0u8; 17];
        out[..16].copy_from_slice(text.as_bytes());
        out
    }
}

/// "Not specified" volume descriptor date: sixteen `'0'` digits and a zero offset.
fn unspecified_descriptor_date() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

/// One file of the seed.
struct SeedFile<'a> {
    /// Real name (Rock Ridge `NM`, Joliet).
    name: &'static str,
    /// ISO 9660 level-1 identifier, including `;1`.
    primary_identifier: &'static str,
    data: &'a [u8],
    block: u32,
}

/// Build the NoCloud seed ISO: volume id `cidata`, `user-data`, `meta-data` and `network-config`
/// at the root, readable through plain ISO 9660, Joliet and Rock Ridge. Deterministic: the same
/// [`Seed`] always gives the same bytes.
///
/// The image contains the VM's private SSH host key (inside `user-data`): treat it as a secret,
/// and delete it from Proxmox storage once the VM has booted.
pub fn build_nocloud_iso(seed: &Seed) -> Vec<u8> {
    // Sorted by identifier, as ISO 9660 requires (and the same order for Joliet names).
    let entries: [(&'static str, &'static str, &[u8]); 3] = [
        ("meta-data", "META_DAT.;1", seed.meta_data.as_bytes()),
        (
            "network-config",
            "NETWORK_.;1",
            seed.network_config.as_bytes(),
        ),
        ("user-data", "USER_DAT.;1", seed.user_data.as_bytes()),
    ];
    let mut files = Vec::with_capacity(entries.len());
    let mut next_block = FIRST_FILE_BLOCK;
    for (name, primary_identifier, data) in entries {
        files.push(SeedFile {
            name,
            primary_identifier,
            data,
            block: next_block,
        });
        next_block += blocks_for(data.len()).max(1);
    }
    let total_blocks = next_block;

    let mut image = vec![0u8; total_blocks as usize * BLOCK];

    let primary_root = primary_root_directory(&files);
    let joliet_root = joliet_root_directory(&files);
    let er = er_entry();

    put_block(
        &mut image,
        PVD_BLOCK,
        &volume_descriptor(Tree::Primary, total_blocks),
    );
    put_block(
        &mut image,
        SVD_BLOCK,
        &volume_descriptor(Tree::Joliet, total_blocks),
    );
    put_block(&mut image, TERMINATOR_BLOCK, &terminator());
    put_block(
        &mut image,
        PRIMARY_L_PATH_BLOCK,
        &path_table(PRIMARY_ROOT_BLOCK, Endian::Little),
    );
    put_block(
        &mut image,
        PRIMARY_M_PATH_BLOCK,
        &path_table(PRIMARY_ROOT_BLOCK, Endian::Big),
    );
    put_block(
        &mut image,
        JOLIET_L_PATH_BLOCK,
        &path_table(JOLIET_ROOT_BLOCK, Endian::Little),
    );
    put_block(
        &mut image,
        JOLIET_M_PATH_BLOCK,
        &path_table(JOLIET_ROOT_BLOCK, Endian::Big),
    );
    put_block(&mut image, PRIMARY_ROOT_BLOCK, &primary_root);
    put_block(&mut image, JOLIET_ROOT_BLOCK, &joliet_root);
    put_block(&mut image, CONTINUATION_BLOCK, &er);
    for file in &files {
        put_block(&mut image, file.block, file.data);
    }
    image
}

fn blocks_for(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(BLOCK)).unwrap_or(u32::MAX)
}

fn put_block(image: &mut [u8], block: u32, data: &[u8]) {
    let start = block as usize * BLOCK;
    image[start..start + data.len()].copy_from_slice(data);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Primary,
    Joliet,
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

fn both_u16(value: u16) -> [u8; 4] {
    let le = value.to_le_bytes();
    let be = value.to_be_bytes();
    [le[0], le[1], be[0], be[1]]
}

fn both_u32(value: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

/// A text field padded with spaces (a-/d-characters) or UCS-2 big-endian spaces (Joliet).
fn text_field(tree: Tree, text: &str, width: usize) -> Vec<u8> {
    let mut out = match tree {
        Tree::Primary => text.as_bytes().to_vec(),
        Tree::Joliet => ucs2(text),
    };
    out.truncate(width);
    while out.len() < width {
        match tree {
            Tree::Primary => out.push(b' '),
            Tree::Joliet => {
                if width - out.len() >= 2 {
                    out.extend_from_slice(&[0x00, b' ']);
                } else {
                    out.push(0);
                }
            }
        }
    }
    out
}

fn ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn volume_descriptor(tree: Tree, total_blocks: u32) -> Vec<u8> {
    let mut vd = vec![0u8; BLOCK];
    vd[0] = match tree {
        Tree::Primary => 1,
        Tree::Joliet => 2,
    };
    vd[1..6].copy_from_slice(b"CD001");
    vd[6] = 1;
    vd[8..40].copy_from_slice(&text_field(tree, "", 32));
    vd[40..72].copy_from_slice(&text_field(tree, VOLUME_ID, 32));
    vd[80..88].copy_from_slice(&both_u32(total_blocks));
    if tree == Tree::Joliet {
        // UCS-2 level 3.
        vd[88..91].copy_from_slice(b"%/E");
    }
    vd[120..124].copy_from_slice(&both_u16(1));
    vd[124..128].copy_from_slice(&both_u16(1));
    vd[128..132].copy_from_slice(&both_u16(BLOCK as u16));
    vd[132..140].copy_from_slice(&both_u32(PATH_TABLE_SIZE));
    let (l_block, m_block, root_block) = match tree {
        Tree::Primary => (
            PRIMARY_L_PATH_BLOCK,
            PRIMARY_M_PATH_BLOCK,
            PRIMARY_ROOT_BLOCK,
        ),
        Tree::Joliet => (JOLIET_L_PATH_BLOCK, JOLIET_M_PATH_BLOCK, JOLIET_ROOT_BLOCK),
    };
    vd[140..144].copy_from_slice(&l_block.to_le_bytes());
    vd[148..152].copy_from_slice(&m_block.to_be_bytes());
    let root_record = directory_record(&RecordSpec {
        identifier: &[0],
        extent: root_block,
        size: BLOCK as u32,
        directory: true,
        system_use: &[],
    });
    vd[156..190].copy_from_slice(&root_record);
    vd[190..318].copy_from_slice(&text_field(tree, "", 128)); // volume set
    vd[318..446].copy_from_slice(&text_field(tree, "", 128)); // publisher
    vd[446..574].copy_from_slice(&text_field(tree, "", 128)); // data preparer
    vd[574..702].copy_from_slice(&text_field(tree, "PROVISION", 128)); // application
    vd[702..739].copy_from_slice(&text_field(tree, "", 37)); // copyright file
    vd[739..776].copy_from_slice(&text_field(tree, "", 37)); // abstract file
    vd[776..813].copy_from_slice(&text_field(tree, "", 37)); // bibliographic file
    vd[813..830].copy_from_slice(&FIXED_TIME.descriptor_form()); // creation
    vd[830..847].copy_from_slice(&FIXED_TIME.descriptor_form()); // modification
    vd[847..864].copy_from_slice(&unspecified_descriptor_date()); // expiration
    vd[864..881].copy_from_slice(&unspecified_descriptor_date()); // effective
    vd[881] = 1; // file structure version
    vd
}

fn terminator() -> Vec<u8> {
    let mut vd = vec![0u8; BLOCK];
    vd[0] = 255;
    vd[1..6].copy_from_slice(b"CD001");
    vd[6] = 1;
    vd
}

/// One path table record for the root directory (identifier 0x00, parent 1) + padding byte.
const PATH_TABLE_SIZE: u32 = 10;

fn path_table(root_block: u32, endian: Endian) -> Vec<u8> {
    let mut table = vec![1u8, 0];
    match endian {
        Endian::Little => {
            table.extend_from_slice(&root_block.to_le_bytes());
            table.extend_from_slice(&1u16.to_le_bytes());
        }
        Endian::Big => {
            table.extend_from_slice(&root_block.to_be_bytes());
            table.extend_from_slice(&1u16.to_be_bytes());
        }
    }
    table.extend_from_slice(&[0, 0]);
    debug_assert_eq!(table.len(), PATH_TABLE_SIZE as usize);
    table
}

struct RecordSpec<'a> {
    identifier: &'a [u8],
    extent: u32,
    size: u32,
    directory: bool,
    system_use: &'a [u8],
}

fn directory_record(spec: &RecordSpec<'_>) -> Vec<u8> {
    let identifier_len = spec.identifier.len();
    let padding = usize::from(identifier_len.is_multiple_of(2));
    let mut record = Vec::with_capacity(33 + identifier_len + padding + spec.system_use.len() + 1);
    record.push(0); // length, patched below
    record.push(0); // extended attribute record length
    record.extend_from_slice(&both_u32(spec.extent));
    record.extend_from_slice(&both_u32(spec.size));
    record.extend_from_slice(&FIXED_TIME.directory_form());
    record.push(if spec.directory { 0x02 } else { 0x00 });
    record.push(0); // file unit size
    record.push(0); // interleave gap
    record.extend_from_slice(&both_u16(1)); // volume sequence number
    record.push(u8::try_from(identifier_len).unwrap_or(u8::MAX));
    record.extend_from_slice(spec.identifier);
    if padding == 1 {
        record.push(0);
    }
    record.extend_from_slice(spec.system_use);
    if !record.len().is_multiple_of(2) {
        record.push(0);
    }
    record[0] = u8::try_from(record.len()).unwrap_or(u8::MAX);
    record
}

fn susp_entry(signature: &[u8; 2], payload: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(4 + payload.len());
    entry.extend_from_slice(signature);
    entry.push(u8::try_from(4 + payload.len()).unwrap_or(u8::MAX));
    entry.push(1); // entry version
    entry.extend_from_slice(payload);
    entry
}

fn sp_entry() -> Vec<u8> {
    susp_entry(b"SP", &[0xBE, 0xEF, 0])
}

fn rr_entry(flags: u8) -> Vec<u8> {
    susp_entry(b"RR", &[flags])
}

fn px_entry(mode: u32, links: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(32);
    payload.extend_from_slice(&both_u32(mode));
    payload.extend_from_slice(&both_u32(links));
    payload.extend_from_slice(&both_u32(0)); // uid
    payload.extend_from_slice(&both_u32(0)); // gid
    susp_entry(b"PX", &payload)
}

fn nm_entry(name: &str) -> Vec<u8> {
    let mut payload = vec![0u8]; // flags
    payload.extend_from_slice(name.as_bytes());
    susp_entry(b"NM", &payload)
}

fn ce_entry(block: u32, offset: u32, length: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&both_u32(block));
    payload.extend_from_slice(&both_u32(offset));
    payload.extend_from_slice(&both_u32(length));
    susp_entry(b"CE", &payload)
}

fn er_entry() -> Vec<u8> {
    let mut payload = vec![
        ER_ID.len() as u8,
        ER_DESCRIPTOR.len() as u8,
        ER_SOURCE.len() as u8,
        1, // extension version
    ];
    payload.extend_from_slice(ER_ID.as_bytes());
    payload.extend_from_slice(ER_DESCRIPTOR.as_bytes());
    payload.extend_from_slice(ER_SOURCE.as_bytes());
    susp_entry(b"ER", &payload)
}

fn primary_root_directory(files: &[SeedFile<'_>]) -> Vec<u8> {
    let er_len = u32::try_from(er_entry().len()).unwrap_or(u32::MAX);
    let mut dot_susp = sp_entry();
    dot_susp.extend(rr_entry(RR_FLAG_PX));
    dot_susp.extend(px_entry(MODE_DIRECTORY, 2));
    dot_susp.extend(ce_entry(CONTINUATION_BLOCK, 0, er_len));
    let mut dotdot_susp = rr_entry(RR_FLAG_PX);
    dotdot_susp.extend(px_entry(MODE_DIRECTORY, 2));

    let mut directory = directory_record(&RecordSpec {
        identifier: &[0],
        extent: PRIMARY_ROOT_BLOCK,
        size: BLOCK as u32,
        directory: true,
        system_use: &dot_susp,
    });
    directory.extend(directory_record(&RecordSpec {
        identifier: &[1],
        extent: PRIMARY_ROOT_BLOCK,
        size: BLOCK as u32,
        directory: true,
        system_use: &dotdot_susp,
    }));
    for file in files {
        let mut susp = rr_entry(RR_FLAG_PX | RR_FLAG_NM);
        susp.extend(px_entry(MODE_FILE, 1));
        susp.extend(nm_entry(file.name));
        directory.extend(directory_record(&RecordSpec {
            identifier: file.primary_identifier.as_bytes(),
            extent: file.block,
            size: file_size(file),
            directory: false,
            system_use: &susp,
        }));
    }
    debug_assert!(directory.len() <= BLOCK);
    directory
}

fn joliet_root_directory(files: &[SeedFile<'_>]) -> Vec<u8> {
    let mut directory = directory_record(&RecordSpec {
        identifier: &[0],
        extent: JOLIET_ROOT_BLOCK,
        size: BLOCK as u32,
        directory: true,
        system_use: &[],
    });
    directory.extend(directory_record(&RecordSpec {
        identifier: &[1],
        extent: JOLIET_ROOT_BLOCK,
        size: BLOCK as u32,
        directory: true,
        system_use: &[],
    }));
    for file in files {
        directory.extend(directory_record(&RecordSpec {
            identifier: &ucs2(file.name),
            extent: file.block,
            size: file_size(file),
            directory: false,
            system_use: &[],
        }));
    }
    directory
}

fn file_size(file: &SeedFile<'_>) -> u32 {
    u32::try_from(file.data.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn seed() -> Seed {
        Seed {
            user_data: "#cloud-config\nhostname: a\n".to_owned(),
            meta_data: "instance-id: x\n".to_owned(),
            network_config: "version: 2\n".to_owned(),
        }
    }

    #[test]
    fn volume_descriptors_carry_the_cidata_label() {
        let image = build_nocloud_iso(&seed());
        let pvd = &image[16 * BLOCK..17 * BLOCK];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[40..46], b"cidata");
        let svd = &image[17 * BLOCK..18 * BLOCK];
        assert_eq!(svd[0], 2);
        assert_eq!(&svd[88..91], b"%/E");
        assert_eq!(&svd[40..52], &ucs2("cidata")[..]);
        assert_eq!(image[18 * BLOCK], 255);
    }

    #[test]
    fn volume_space_size_matches_the_image_length() {
        let image = build_nocloud_iso(&seed());
        let blocks =
            u32::from_le_bytes(image[16 * BLOCK + 80..16 * BLOCK + 84].try_into().unwrap());
        assert_eq!(blocks as usize * BLOCK, image.len());
        assert_eq!(image.len() % BLOCK, 0);
    }

    #[test]
    fn file_contents_sit_at_their_extents() {
        let seed = seed();
        let image = build_nocloud_iso(&seed);
        let start = FIRST_FILE_BLOCK as usize * BLOCK;
        assert_eq!(
            &image[start..start + seed.meta_data.len()],
            seed.meta_data.as_bytes()
        );
    }

    #[test]
    fn large_files_span_several_blocks() {
        let mut seed = seed();
        seed.user_data = format!("#cloud-config\n# {}\n", "x".repeat(5000));
        let image = build_nocloud_iso(&seed);
        // meta-data 1 block, network-config 1 block, user-data 3 blocks.
        assert_eq!(image.len(), (FIRST_FILE_BLOCK as usize + 5) * BLOCK);
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(build_nocloud_iso(&seed()), build_nocloud_iso(&seed()));
    }

    #[test]
    fn directory_records_have_even_lengths() {
        let image = build_nocloud_iso(&seed());
        let root = &image[PRIMARY_ROOT_BLOCK as usize * BLOCK..];
        let mut offset = 0;
        let mut count = 0;
        while root[offset] != 0 {
            assert_eq!(root[offset] % 2, 0);
            offset += root[offset] as usize;
            count += 1;
        }
        assert_eq!(count, 5);
    }
}
