//! Multiboot2 boot information (Multiboot2 specification 1.0, §3.6).
//!
//! A hand-written parser over a byte slice. Basalt does not use the
//! `multiboot2` crate here: as of 0.28 its accessors assert on malformed
//! input (a memory-map tag whose entry size is not 24, or whose size is not a
//! multiple of it; a module whose end precedes its start), and its loader
//! takes a raw pointer instead of a slice. Boot information is the first
//! thing Basalt reads from outside and a panic there is exactly the failure
//! the boot path must never have, so this parser bounds-checks every read,
//! returns a typed [`Error`] naming the bad tag, and is randomly tested on
//! arbitrary bytes.

use crate::FixedVec;
use crate::memmap::{MemoryMap, RawEntry, RegionKind};
use core::fmt;

/// The value a Multiboot2 loader leaves in EAX (§3.3).
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// The value a Multiboot (version 1) loader leaves in EAX.
pub const MULTIBOOT1_BOOTLOADER_MAGIC: u32 = 0x2bad_b002;
/// How many boot modules Basalt takes; more are counted and reported.
pub const MAX_MODULES: usize = 64;
/// The largest boot information Basalt accepts. GRUB's is a few KiB; a
/// larger size means the pointer or the header is wrong.
pub const MAX_TOTAL_SIZE: u32 = 16 << 20;

/// Tag types (§3.6.x).
mod tag {
    pub const END: u32 = 0;
    pub const CMDLINE: u32 = 1;
    pub const LOADER_NAME: u32 = 2;
    pub const MODULE: u32 = 3;
    pub const BASIC_MEMINFO: u32 = 4;
    pub const MMAP: u32 = 6;
    pub const ELF_SECTIONS: u32 = 9;
    pub const EFI32_SYSTEM_TABLE: u32 = 11;
    pub const EFI64_SYSTEM_TABLE: u32 = 12;
    pub const ACPI_OLD: u32 = 14;
    pub const ACPI_NEW: u32 = 15;
    pub const EFI_MMAP: u32 = 17;
    pub const EFI_BS_NOT_TERMINATED: u32 = 18;
    pub const LOAD_BASE_ADDR: u32 = 21;
}

/// What is wrong with the boot information. Each message names the cause and
/// what to do about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The loader passed a null pointer.
    Null,
    /// Fewer bytes than the fixed header.
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The header's total size is impossible.
    TotalSize {
        /// `total_size` from the header.
        total_size: u32,
        /// Bytes available.
        available: usize,
    },
    /// A tag's size is smaller than its type requires.
    TagTooSmall {
        /// Offset of the tag in the boot information.
        offset: usize,
        /// Tag type.
        typ: u32,
        /// Tag size from its header.
        size: u32,
    },
    /// A tag extends past the end of the boot information.
    TagOverrun {
        /// Offset of the tag.
        offset: usize,
        /// Tag type.
        typ: u32,
        /// Tag size from its header.
        size: u32,
    },
    /// The tags ran out before the end tag.
    NoEndTag,
    /// A string tag is not UTF-8.
    BadString {
        /// Tag type.
        typ: u32,
        /// Offset of the tag.
        offset: usize,
    },
    /// The memory-map tag's entry size cannot hold an entry.
    BadMemoryMapEntrySize {
        /// `entry_size` from the tag.
        entry_size: u32,
    },
    /// The EFI memory-map tag's descriptor size cannot hold a descriptor.
    BadEfiDescriptorSize {
        /// `descr_size` from the tag.
        descr_size: u32,
    },
    /// No memory-map tag.
    NoMemoryMap,
    /// A module ends before it starts.
    BadModule {
        /// Position of the module among the module tags.
        index: usize,
        /// Start address.
        start: u32,
        /// End address.
        end: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str = "the boot loader is broken or passed a damaged structure; \
                           boot Basalt with GRUB 2's `multiboot2` command";
        match *self {
            Self::Null => write!(
                f,
                "the boot loader passed no boot information (null pointer); {FIX}"
            ),
            Self::TooShort { len } => {
                write!(
                    f,
                    "the boot information is {len} bytes, shorter than its 8-byte header; {FIX}"
                )
            }
            Self::TotalSize {
                total_size,
                available,
            } => write!(
                f,
                "the boot information header gives a total size of {total_size} bytes, \
                 which is impossible (at least 16, at most {available}); {FIX}"
            ),
            Self::TagTooSmall { offset, typ, size } => write!(
                f,
                "boot information tag type {typ} at offset {offset} is {size} bytes, \
                 too small for its type; {FIX}"
            ),
            Self::TagOverrun { offset, typ, size } => write!(
                f,
                "boot information tag type {typ} at offset {offset} ({size} bytes) runs past \
                 the end of the boot information; {FIX}"
            ),
            Self::NoEndTag => write!(f, "the boot information has no end tag; {FIX}"),
            Self::BadString { typ, offset } => write!(
                f,
                "boot information tag type {typ} at offset {offset} holds a string that is not \
                 UTF-8; check the command lines in the boot loader's configuration"
            ),
            Self::BadMemoryMapEntrySize { entry_size } => write!(
                f,
                "the memory map's entries are {entry_size} bytes, but an entry needs 24 and a \
                 multiple of 8; {FIX}"
            ),
            Self::BadEfiDescriptorSize { descr_size } => write!(
                f,
                "the EFI memory map's descriptors are {descr_size} bytes, but a descriptor needs \
                 40 and a multiple of 8; {FIX}"
            ),
            Self::NoMemoryMap => write!(
                f,
                "the boot loader passed no memory map (Multiboot2 tag 6 or 17), so Basalt cannot \
                 tell free RAM from reserved ranges; boot it with GRUB 2's `multiboot2` command, \
                 which always passes one"
            ),
            Self::BadModule { index, start, end } => write!(
                f,
                "boot module {index} ends (0x{end:x}) before it starts (0x{start:x}); {FIX}"
            ),
        }
    }
}

/// A boot module: a file the loader put in memory, with its command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module<'a> {
    /// Physical address of the first byte.
    pub start: u64,
    /// Physical address one past the last byte.
    pub end: u64,
    /// The module's command line (everything after the path in GRUB's `module2`).
    pub cmdline: &'a str,
}

impl Module<'_> {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the module is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// A copy of the ACPI Root System Description Pointer (ACPI 6.5 §5.2.5.3),
/// as Multiboot2 tags 14 and 15 carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rsdp {
    /// ACPI revision: 0 for ACPI 1.0 (RSDT only), 2 and later with an XSDT.
    pub revision: u8,
    /// OEM identification.
    pub oem_id: [u8; 6],
    /// Physical address of the RSDT.
    pub rsdt_address: u32,
    /// Physical address of the XSDT (revision 2 and later).
    pub xsdt_address: Option<u64>,
    /// Whether the signature is `RSD PTR ` and the checksums add up.
    pub valid: bool,
}

impl Rsdp {
    /// Reads an RSDP from its bytes (20 for ACPI 1.0, 36 from revision 2).
    pub fn parse(body: &[u8]) -> Option<Self> {
        let v1 = body.get(..20)?;
        let mut oem_id = [0; 6];
        oem_id.copy_from_slice(&v1[9..15]);
        let sum = |bytes: &[u8]| bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut rsdp = Self {
            revision: v1[15],
            oem_id,
            rsdt_address: le32(v1, 16)?,
            xsdt_address: None,
            valid: &v1[..8] == b"RSD PTR " && sum(v1) == 0,
        };
        if rsdp.revision >= 2
            && let Some(v2) = body.get(..36)
        {
            rsdp.xsdt_address = Some(le64(v2, 24)?);
            rsdp.valid &= sum(v2) == 0;
        }
        Some(rsdp)
    }

    /// The OEM id as text, when it is printable.
    pub fn oem(&self) -> &str {
        core::str::from_utf8(&self.oem_id).unwrap_or("?").trim_end()
    }
}

/// The hypervisor's own ELF section headers (tag 9), through which Basalt
/// finds its symbol table (see [`crate::elf`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElfSections<'a> {
    /// Number of section headers.
    pub num: u32,
    /// Size of one header.
    pub entsize: u32,
    /// Index of the section-name string table.
    pub shndx: u32,
    /// The headers.
    pub headers: &'a [u8],
}

/// Everything Basalt takes from the Multiboot2 boot information.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo<'a> {
    /// Size of the boot information in bytes.
    pub total_size: u32,
    /// The hypervisor's command line.
    pub cmdline: Option<&'a str>,
    /// The boot loader's name.
    pub loader_name: Option<&'a str>,
    /// The normalised memory map: from the EFI memory map (tag 17) when
    /// the loader passed one, else from the e820-style map (tag 6).
    pub memory_map: MemoryMap,
    /// Whether [`Self::memory_map`] comes from the EFI memory map.
    pub efi_memory_map: bool,
    /// Physical address of the EFI system table (tag 12, or 11 on 32-bit
    /// firmware): Basalt was started through UEFI.
    pub efi_system_table: Option<u64>,
    /// The boot modules, in the loader's order.
    pub modules: FixedVec<Module<'a>, MAX_MODULES>,
    /// The ACPI 1.0 RSDP copy (tag 14).
    pub rsdp_v1: Option<Rsdp>,
    /// The ACPI 2.0+ RSDP copy (tag 15).
    pub rsdp_v2: Option<Rsdp>,
    /// `mem_lower` and `mem_upper` in KiB (tag 4), informational.
    pub basic_meminfo: Option<(u32, u32)>,
    /// Physical load address of the image, when the loader reports it (tag 21).
    pub load_base: Option<u32>,
    /// The loader left UEFI boot services running (tag 18).
    pub efi_boot_services_active: bool,
    /// The hypervisor's ELF section headers (tag 9).
    pub elf_sections: Option<ElfSections<'a>>,
    /// Tags Basalt does not use (framebuffer, APM, …).
    pub other_tags: usize,
}

impl<'a> BootInfo<'a> {
    /// Whether the machine booted through UEFI: no BIOS areas to rely on.
    pub fn on_efi(&self) -> bool {
        self.efi_system_table.is_some() || self.efi_memory_map
    }

    /// The best RSDP the loader gave: the 2.0+ one when it is valid.
    pub fn rsdp(&self) -> Option<Rsdp> {
        match (self.rsdp_v2, self.rsdp_v1) {
            (Some(v2), _) if v2.valid => Some(v2),
            (_, Some(v1)) if v1.valid => Some(v1),
            (v2, v1) => v2.or(v1),
        }
    }
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// Reads the total size from the first bytes of a boot information, so that
/// the caller can bound the slice it hands to [`parse`].
pub fn total_size(header: &[u8; 8]) -> Result<u32, Error> {
    let total_size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if !(16..=MAX_TOTAL_SIZE).contains(&total_size) {
        return Err(Error::TotalSize {
            total_size,
            available: MAX_TOTAL_SIZE as usize,
        });
    }
    Ok(total_size)
}

/// Parses a Multiboot2 boot information held in `bytes` (which may be longer
/// than the header's total size).
pub fn parse<'a>(bytes: &'a [u8]) -> Result<BootInfo<'a>, Error> {
    let header: &[u8; 8] = bytes
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::TooShort { len: bytes.len() })?;
    let total_size = total_size(header)?;
    let bytes = bytes.get(..total_size as usize).ok_or(Error::TotalSize {
        total_size,
        available: bytes.len(),
    })?;

    let mut info = BootInfo {
        total_size,
        ..BootInfo::default()
    };
    let mut memory_map = None;
    let mut efi_map = None;
    let mut offset = 8usize;
    loop {
        let (typ, size) = match (le32(bytes, offset), le32(bytes, offset + 4)) {
            (Some(typ), Some(size)) => (typ, size),
            _ => return Err(Error::NoEndTag),
        };
        if size < 8 {
            return Err(Error::TagTooSmall { offset, typ, size });
        }
        let body = offset
            .checked_add(size as usize)
            .and_then(|end| bytes.get(offset + 8..end))
            .ok_or(Error::TagOverrun { offset, typ, size })?;
        let too_small = Error::TagTooSmall { offset, typ, size };
        let string = |body: &'a [u8]| -> Result<&'a str, Error> {
            let text = body.split(|b| *b == 0).next().unwrap_or_default();
            core::str::from_utf8(text).map_err(|_| Error::BadString { typ, offset })
        };
        match typ {
            tag::END => break,
            tag::CMDLINE => {
                let text = string(body)?;
                info.cmdline.get_or_insert(text);
            }
            tag::LOADER_NAME => {
                let text = string(body)?;
                info.loader_name.get_or_insert(text);
            }
            tag::MODULE => {
                let (start, end) = le32(body, 0).zip(le32(body, 4)).ok_or(too_small)?;
                let index = info.modules.len() + info.modules.dropped();
                if end < start {
                    return Err(Error::BadModule { index, start, end });
                }
                let module = Module {
                    start: start.into(),
                    end: end.into(),
                    cmdline: string(body.get(8..).unwrap_or_default())?,
                };
                let _ = info.modules.push(module);
            }
            tag::BASIC_MEMINFO => {
                info.basic_meminfo = Some(le32(body, 0).zip(le32(body, 4)).ok_or(too_small)?);
            }
            tag::MMAP => {
                let (entry_size, entries) = le32(body, 0).zip(body.get(8..)).ok_or(too_small)?;
                if entry_size < 24 || entry_size % 8 != 0 {
                    return Err(Error::BadMemoryMapEntrySize { entry_size });
                }
                // Trailing bytes short of a whole entry are ignored (§3.6.8
                // lets entries grow; only whole ones are meaningful).
                let entries = entries.chunks_exact(entry_size as usize);
                memory_map.get_or_insert_with(|| {
                    MemoryMap::from_raw(entries.filter_map(|e| {
                        Some(RawEntry {
                            base: le64(e, 0)?,
                            len: le64(e, 8)?,
                            typ: le32(e, 16)?,
                        })
                    }))
                });
            }
            tag::EFI_MMAP => {
                let (descr_size, map) = le32(body, 0).zip(body.get(8..)).ok_or(too_small)?;
                if descr_size < 40 || descr_size % 8 != 0 {
                    return Err(Error::BadEfiDescriptorSize { descr_size });
                }
                // EFI_MEMORY_DESCRIPTOR (UEFI 2.10 §7.2.3): type, pad,
                // physical start, virtual start, pages, attributes.
                let entries = map.chunks_exact(descr_size as usize);
                efi_map.get_or_insert_with(|| {
                    MemoryMap::from_raw(entries.filter_map(|e| {
                        let kind = RegionKind::from_efi(le32(e, 0)?, le64(e, 32)?);
                        Some(RawEntry {
                            base: le64(e, 8)?,
                            len: le64(e, 24)?.saturating_mul(4096),
                            typ: kind.e820(),
                        })
                    }))
                });
            }
            tag::EFI32_SYSTEM_TABLE => {
                info.efi_system_table = Some(le32(body, 0).ok_or(too_small)?.into());
            }
            tag::EFI64_SYSTEM_TABLE => {
                info.efi_system_table = Some(le64(body, 0).ok_or(too_small)?)
            }
            tag::ELF_SECTIONS => {
                let fields = le32(body, 0).zip(le32(body, 4)).zip(le32(body, 8));
                let ((num, entsize), shndx) = fields.ok_or(too_small)?;
                info.elf_sections = Some(ElfSections {
                    num,
                    entsize,
                    shndx,
                    headers: body.get(12..).unwrap_or_default(),
                });
            }
            tag::ACPI_OLD => info.rsdp_v1 = Some(Rsdp::parse(body).ok_or(too_small)?),
            tag::ACPI_NEW => info.rsdp_v2 = Some(Rsdp::parse(body).ok_or(too_small)?),
            tag::EFI_BS_NOT_TERMINATED => info.efi_boot_services_active = true,
            tag::LOAD_BASE_ADDR => info.load_base = Some(le32(body, 0).ok_or(too_small)?),
            _ => info.other_tags += 1,
        }
        // Tags start on 8-byte boundaries (§3.6.1).
        offset = (offset + size as usize).next_multiple_of(8);
    }
    info.efi_memory_map = efi_map.is_some();
    info.memory_map = efi_map.or(memory_map).ok_or(Error::NoMemoryMap)?;
    Ok(info)
}

/// Moves module `index` (in tag order) to `start` in the boot information
/// `info` (already checked by [`parse`]): its tag's start and end are
/// rewritten, its length kept. `false` if there is no such module.
pub fn relocate_module(info: &mut [u8], index: usize, start: u32) -> bool {
    let mut offset = 8;
    let mut seen = 0;
    while let (Some(typ), Some(size)) = (le32(info, offset), le32(info, offset + 4)) {
        if typ == tag::END || size < 8 {
            break;
        }
        if typ == tag::MODULE {
            if seen == index {
                let (Some(s), Some(e)) = (le32(info, offset + 8), le32(info, offset + 12)) else {
                    return false;
                };
                let end = start.wrapping_add(e.wrapping_sub(s));
                info[offset + 8..offset + 12].copy_from_slice(&start.to_le_bytes());
                info[offset + 12..offset + 16].copy_from_slice(&end.to_le_bytes());
                return true;
            }
            seen += 1;
        }
        offset += (size as usize).next_multiple_of(8);
    }
    false
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memmap::RegionKind;

    /// Builds boot information byte by byte, well-formed or not.
    #[derive(Default)]
    pub(crate) struct Builder {
        tags: Vec<u8>,
    }

    impl Builder {
        pub(crate) fn tag(mut self, typ: u32, body: &[u8]) -> Self {
            self.tags.extend_from_slice(&typ.to_le_bytes());
            self.tags
                .extend_from_slice(&(8 + body.len() as u32).to_le_bytes());
            self.tags.extend_from_slice(body);
            while !self.tags.len().is_multiple_of(8) {
                self.tags.push(0);
            }
            self
        }

        pub(crate) fn string(self, typ: u32, text: &str) -> Self {
            let mut body = text.as_bytes().to_vec();
            body.push(0);
            self.tag(typ, &body)
        }

        pub(crate) fn module(self, start: u32, end: u32, cmdline: &str) -> Self {
            let mut body = start.to_le_bytes().to_vec();
            body.extend_from_slice(&end.to_le_bytes());
            body.extend_from_slice(cmdline.as_bytes());
            body.push(0);
            self.tag(tag::MODULE, &body)
        }

        pub(crate) fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
            let mut body = 24u32.to_le_bytes().to_vec();
            body.extend_from_slice(&0u32.to_le_bytes());
            for (base, len, typ) in entries {
                body.extend_from_slice(&base.to_le_bytes());
                body.extend_from_slice(&len.to_le_bytes());
                body.extend_from_slice(&typ.to_le_bytes());
                body.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(tag::MMAP, &body)
        }

        /// An EFI memory map (tag 17) of `(type, base, pages, attributes)`
        /// descriptors, each `size` bytes (padded with 0xee).
        pub(crate) fn efi_mmap(self, size: u32, entries: &[(u32, u64, u64, u64)]) -> Self {
            let mut body = size.to_le_bytes().to_vec();
            body.extend_from_slice(&1u32.to_le_bytes());
            for &(typ, base, pages, attr) in entries {
                let start = body.len();
                body.extend_from_slice(&typ.to_le_bytes());
                body.extend_from_slice(&[0; 4]);
                body.extend_from_slice(&base.to_le_bytes());
                body.extend_from_slice(&0u64.to_le_bytes());
                body.extend_from_slice(&pages.to_le_bytes());
                body.extend_from_slice(&attr.to_le_bytes());
                body.resize(start + size as usize, 0xee);
            }
            self.tag(tag::EFI_MMAP, &body)
        }

        pub(crate) fn build_without_end(self) -> Vec<u8> {
            let mut out = ((8 + self.tags.len()) as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&self.tags);
            out
        }

        pub(crate) fn build(self) -> Vec<u8> {
            self.tag(tag::END, &[]).build_without_end()
        }
    }

    fn rsdp_v2() -> Vec<u8> {
        let mut r = b"RSD PTR ".to_vec();
        r.push(0); // checksum
        r.extend_from_slice(b"BOCHS ");
        r.push(2);
        r.extend_from_slice(&0x7fe1_4b2du32.to_le_bytes());
        r.extend_from_slice(&36u32.to_le_bytes());
        r.extend_from_slice(&0x7fe1_4c00u64.to_le_bytes());
        r.extend_from_slice(&[0; 4]); // extended checksum + reserved
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        r[8] = 0u8.wrapping_sub(sum(&r[..20]));
        r[32] = 0u8.wrapping_sub(sum(&r[..36]));
        r
    }

    pub(crate) fn grub_like() -> Vec<u8> {
        Builder::default()
            .string(tag::CMDLINE, "loglvl=debug com1=115200")
            .string(tag::LOADER_NAME, "GRUB 2.06-13+deb12u1")
            .module(0x0080_0000, 0x0080_1234, "name=t1 memory=16M")
            .module(0x0090_0000, 0x0090_0000, "")
            .tag(tag::BASIC_MEMINFO, &[0x7f, 2, 0, 0, 0x80, 0xfb, 1, 0])
            .mmap(&[
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0xf0000, 0x10000, 2),
                (0x10_0000, 0x1fee_0000, 1),
                (0x1ffe_0000, 0x2_0000, 2),
                (0xfffc_0000, 0x4_0000, 2),
                (0x1_0000_0000, 0x4000_0000, 1),
            ])
            .tag(tag::ACPI_NEW, &rsdp_v2())
            .tag(8, &[0; 24]) // a framebuffer tag Basalt skips
            .build()
    }

    /// What GRUB x86_64-efi passes under OVMF with 4 GiB (abridged): an
    /// e820-style map converted before `ExitBootServices`, the EFI map
    /// taken at it, the EFI64 system table and both RSDP tags.
    pub(crate) fn grub_efi_like() -> Vec<u8> {
        const RUNTIME: u64 = 1 << 63;
        let mut v1 = rsdp_v2()[..20].to_vec();
        v1[15] = 0;
        v1[8] = v1[8].wrapping_add(2); // the checksum without the revision
        Builder::default()
            .string(tag::CMDLINE, "test-exit")
            .string(tag::LOADER_NAME, "GRUB 2.06-13+deb12u2")
            .mmap(&[(0, 0xa0000, 1), (0x10_0000, 0x7f70_0000, 1)])
            .tag(tag::EFI64_SYSTEM_TABLE, &0x7f9e_e018u64.to_le_bytes())
            .tag(tag::ACPI_OLD, &v1)
            .tag(tag::ACPI_NEW, &rsdp_v2())
            .efi_mmap(
                48,
                &[
                    (3, 0, 1, 0xf),                         // boot-services code
                    (7, 0x1000, 0x9f, 0xf),                 // conventional
                    (7, 0x10_0000, 0x700, 0xf),             // conventional
                    (10, 0x80_0000, 8, 0xf),                // ACPI NVS
                    (4, 0x80_8000, 0x7f0e5, 0xf),           // boot-services data
                    (2, 0x1_0000, 0x10, 0xf),               // loader data (unsorted)
                    (6, 0x7f8e_d000, 0x100, 0xf | RUNTIME), // runtime data
                    (5, 0x7f9e_d000, 0x80, 0xf | RUNTIME),  // runtime code
                    (9, 0x7fb6_d000, 0x12, 0xf),            // ACPI reclaim
                    (0, 0x7ff5_0000, 0x20, 0xf),            // reserved
                    (11, 0xffc0_0000, 0x400, RUNTIME),      // MMIO (flash)
                    (7, 0x1_0000_0000, 0x4_0000, 0xf),      // conventional, 4 GiB up
                    (1, 0x7_0000, 0x10, 0xf),               // loader code
                ],
            )
            .build()
    }

    #[test]
    fn parses_what_grub_efi_passes() {
        let bytes = grub_efi_like();
        let info = parse(&bytes).expect("well-formed");
        assert!(info.on_efi() && info.efi_memory_map);
        assert_eq!(info.efi_system_table, Some(0x7f9e_e018));
        let r = |start, end, kind| crate::memmap::Region { start, end, kind };
        use RegionKind::*;
        assert_eq!(
            info.memory_map.regions(),
            &[
                r(0, 0xa0000, Usable),
                r(0x10_0000, 0x80_0000, Usable),
                r(0x80_0000, 0x80_8000, AcpiNvs),
                r(0x80_8000, 0x7f8e_d000, Usable),
                r(0x7f8e_d000, 0x7fa6_d000, Reserved),
                r(0x7fb6_d000, 0x7fb7_f000, AcpiReclaimable),
                r(0x7ff5_0000, 0x7ff7_0000, Reserved),
                r(0xffc0_0000, 0x1_0000_0000, Reserved),
                r(0x1_0000_0000, 0x1_4000_0000, Usable),
            ]
        );
        // Tag 6 (its RAM up to 0x7f80_0000 and none above 4 GiB) is not used.
        assert_eq!(info.memory_map.usable_end(), 0x1_4000_0000);
        let v2 = info.rsdp().expect("rsdp");
        assert_eq!((v2.revision, v2.valid), (2, true));
        let v1 = info.rsdp_v1.expect("tag 14");
        assert_eq!((v1.revision, v1.valid, v1.xsdt_address), (0, true, None));
    }

    #[test]
    fn efi_map_overlaps_and_oversized_descriptors() {
        // Overlapping descriptors: the more restrictive kind wins; 64-byte
        // descriptors are read by their size; a partial trailing one and a
        // page count that overflows are handled.
        let bytes = Builder::default()
            .efi_mmap(
                64,
                &[
                    (7, 0x10_0000, 0x100, 0),
                    (6, 0x18_0000, 0x10, 1 << 63),
                    (7, u64::MAX - 0xfff, u64::MAX, 0),
                ],
            )
            .build();
        let info = parse(&bytes).expect("ok");
        assert_eq!(info.memory_map.usable_bytes(), 0x100_000 - 0x10_000);
        assert_eq!(info.memory_map.clamped_entries, 1);
        assert!(info.on_efi() && info.efi_system_table.is_none());
        // An EFI system table without an EFI map: tag 6 is the map.
        let bytes = Builder::default()
            .mmap(&[(0, 0x9f000, 1)])
            .tag(tag::EFI32_SYSTEM_TABLE, &0x7000_0000u32.to_le_bytes())
            .build();
        let info = parse(&bytes).expect("ok");
        assert!(info.on_efi() && !info.efi_memory_map);
        assert_eq!(info.efi_system_table, Some(0x7000_0000));
        assert_eq!(info.memory_map.usable_bytes(), 0x9f000);
        // Neither map: the error says so.
        let bytes = Builder::default()
            .tag(tag::EFI64_SYSTEM_TABLE, &[0; 8])
            .build();
        assert_eq!(parse(&bytes).err(), Some(Error::NoMemoryMap));
    }

    #[test]
    fn malformed_efi_tags() {
        for bad in [0u32, 24, 36, 44] {
            let bytes = Builder::default().efi_mmap(bad.max(40), &[(7, 0, 1, 0)]);
            let mut bytes = bytes.build();
            bytes[16..20].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(
                parse(&bytes).err(),
                Some(Error::BadEfiDescriptorSize { descr_size: bad })
            );
        }
        for typ in [
            tag::EFI_MMAP,
            tag::EFI64_SYSTEM_TABLE,
            tag::EFI32_SYSTEM_TABLE,
        ] {
            let bytes = Builder::default().tag(typ, &[0; 3]).build();
            assert!(matches!(
                parse(&bytes),
                Err(Error::TagTooSmall { typ: t, .. }) if t == typ
            ));
        }
    }

    #[test]
    fn rsdp_tags_old_new_and_broken() {
        let v2 = rsdp_v2();
        let mut v1 = v2[..20].to_vec();
        v1[15] = 0;
        v1[8] = v1[8].wrapping_add(2);
        let base = || Builder::default().mmap(&[(0, 0x1000, 1)]);
        // Only tag 14 (ACPI 1.0): RSDT only.
        let bytes = base().tag(tag::ACPI_OLD, &v1).build();
        let r = parse(&bytes).expect("ok").rsdp().expect("rsdp");
        assert_eq!(
            (r.revision, r.valid, r.rsdt_address),
            (0, true, 0x7fe1_4b2d)
        );
        // A broken tag 15 gives way to a good tag 14.
        let mut bad = v2.clone();
        bad[32] ^= 1;
        let bytes = base()
            .tag(tag::ACPI_NEW, &bad)
            .tag(tag::ACPI_OLD, &v1)
            .build();
        let info = parse(&bytes).expect("ok");
        assert_eq!(info.rsdp().map(|r| r.revision), Some(0));
        // Only a broken one: it is returned, marked invalid.
        let bytes = base().tag(tag::ACPI_NEW, &bad).build();
        assert!(!parse(&bytes).expect("ok").rsdp().expect("rsdp").valid);
        let mut sig = v1.clone();
        sig[0] = b'X';
        assert!(!Rsdp::parse(&sig).expect("20 bytes").valid);
        // A revision-2 RSDP cut to 20 bytes has no XSDT.
        assert_eq!(Rsdp::parse(&v2[..20]).expect("ok").xsdt_address, None);
    }

    #[test]
    fn parses_what_grub_passes() {
        let bytes = grub_like();
        let info = parse(&bytes).expect("well-formed");
        assert_eq!(info.cmdline, Some("loglvl=debug com1=115200"));
        assert_eq!(info.loader_name, Some("GRUB 2.06-13+deb12u1"));
        assert_eq!(info.modules.len(), 2);
        assert_eq!(info.modules[0].cmdline, "name=t1 memory=16M");
        assert_eq!(info.modules[0].len(), 0x1234);
        assert!(info.modules[1].is_empty());
        assert_eq!(info.memory_map.regions().len(), 7);
        assert_eq!(info.memory_map.regions()[6].kind, RegionKind::Usable);
        assert_eq!(
            info.memory_map.usable_bytes(),
            0x9f000 + 0x1fee_0000 + 0x4000_0000
        );
        let rsdp = info.rsdp().expect("rsdp");
        assert!(rsdp.valid);
        assert_eq!(rsdp.revision, 2);
        assert_eq!(rsdp.oem(), "BOCHS");
        assert_eq!(rsdp.xsdt_address, Some(0x7fe1_4c00));
        assert_eq!(info.basic_meminfo, Some((639, 129_920)));
        assert_eq!(info.other_tags, 1);
    }

    #[test]
    fn a_longer_buffer_than_total_size_is_fine() {
        let mut bytes = grub_like();
        bytes.extend_from_slice(&[0xff; 64]);
        assert!(parse(&bytes).is_ok());
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(parse(&[]).err(), Some(Error::TooShort { len: 0 }));
        assert!(matches!(
            parse(&[8, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::TotalSize { .. })
        ));
        let bytes = grub_like();
        assert!(matches!(
            parse(&bytes[..bytes.len() - 8]),
            Err(Error::TotalSize { .. })
        ));
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge), Err(Error::TotalSize { .. })));
    }

    #[test]
    fn missing_end_tag() {
        let bytes = Builder::default()
            .string(tag::CMDLINE, "x")
            .build_without_end();
        assert_eq!(parse(&bytes).err(), Some(Error::NoEndTag));
    }

    #[test]
    fn missing_memory_map() {
        let bytes = Builder::default().string(tag::CMDLINE, "x").build();
        assert_eq!(parse(&bytes).err(), Some(Error::NoMemoryMap));
        assert!(Error::NoMemoryMap.to_string().contains("no memory map"));
    }

    #[test]
    fn tag_too_small_or_overrunning() {
        let mut bytes = Builder::default().mmap(&[(0, 0x1000, 1)]).build();
        bytes[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(Error::TagTooSmall {
                offset: 8,
                typ: 6,
                size: 4
            })
        ));
        bytes[12..16].copy_from_slice(&4000u32.to_le_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(Error::TagOverrun {
                offset: 8,
                typ: 6,
                ..
            })
        ));
        let short_module = Builder::default().tag(tag::MODULE, &[1, 2, 3]).build();
        assert!(matches!(
            parse(&short_module),
            Err(Error::TagTooSmall { typ: 3, .. })
        ));
        let short_rsdp = Builder::default().tag(tag::ACPI_OLD, &[0; 19]).build();
        assert!(matches!(
            parse(&short_rsdp),
            Err(Error::TagTooSmall { typ: 14, .. })
        ));
    }

    #[test]
    fn bad_memory_map_entry_size() {
        let mut bytes = Builder::default().mmap(&[(0, 0x1000, 1)]).build();
        for bad in [0u32, 8, 20, 25] {
            bytes[16..20].copy_from_slice(&bad.to_le_bytes());
            assert_eq!(
                parse(&bytes).err(),
                Some(Error::BadMemoryMapEntrySize { entry_size: bad })
            );
        }
    }

    #[test]
    fn larger_memory_map_entries_are_read_by_entry_size() {
        let mut body = 32u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        for (base, len) in [(0u64, 0x9f000u64), (0x10_0000, 0x10_0000)] {
            body.extend_from_slice(&base.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&1u32.to_le_bytes());
            body.extend_from_slice(&[0xee; 12]);
        }
        body.extend_from_slice(&[0xaa; 7]); // a partial trailing entry
        let bytes = Builder::default().tag(tag::MMAP, &body).build();
        let info = parse(&bytes).expect("ok");
        assert_eq!(info.memory_map.usable_bytes(), 0x9f000 + 0x10_0000);
    }

    #[test]
    fn module_ending_before_it_starts() {
        let bytes = Builder::default()
            .mmap(&[(0, 0x1000, 1)])
            .module(0x2000, 0x1000, "x")
            .build();
        assert_eq!(
            parse(&bytes).err(),
            Some(Error::BadModule {
                index: 0,
                start: 0x2000,
                end: 0x1000
            })
        );
    }

    #[test]
    fn non_utf8_command_line() {
        let bytes = Builder::default()
            .tag(tag::CMDLINE, &[0xff, 0xfe, 0])
            .build();
        assert!(matches!(
            parse(&bytes),
            Err(Error::BadString { typ: 1, .. })
        ));
        // A string without its NUL is taken whole.
        let bytes = Builder::default()
            .mmap(&[(0, 0x1000, 1)])
            .tag(tag::CMDLINE, b"abc")
            .build();
        assert_eq!(parse(&bytes).expect("ok").cmdline, Some("abc"));
    }

    #[test]
    fn too_many_modules_are_counted() {
        let mut builder = Builder::default().mmap(&[(0, 0x1000, 1)]);
        for i in 0..(MAX_MODULES as u32 + 3) {
            builder = builder.module(i * 0x1000, i * 0x1000 + 1, "m");
        }
        let bytes = builder.build();
        let info = parse(&bytes).expect("ok");
        assert_eq!(info.modules.len(), MAX_MODULES);
        assert_eq!(info.modules.dropped(), 3);
    }

    #[test]
    fn every_error_message_says_what_to_do() {
        let errors = [
            Error::Null,
            Error::TooShort { len: 3 },
            Error::TotalSize {
                total_size: 1,
                available: 2,
            },
            Error::TagTooSmall {
                offset: 8,
                typ: 6,
                size: 4,
            },
            Error::TagOverrun {
                offset: 8,
                typ: 6,
                size: 4,
            },
            Error::NoEndTag,
            Error::BadString { typ: 1, offset: 8 },
            Error::BadMemoryMapEntrySize { entry_size: 3 },
            Error::BadEfiDescriptorSize { descr_size: 3 },
            Error::NoMemoryMap,
            Error::BadModule {
                index: 0,
                start: 2,
                end: 1,
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(
                text.contains("GRUB") || text.contains("boot loader"),
                "{text}"
            );
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_invariants(info: &BootInfo<'_>) {
        for pair in info.memory_map.regions().windows(2) {
            assert!(pair[0].end <= pair[1].start);
        }
        for m in info.modules.iter() {
            assert!(m.start <= m.end);
        }
    }

    /// Arbitrary bytes never make the parser panic, loop or read out of bounds.
    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..50_000 {
            let len = rng.below(256);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if len >= 8 && rng.below(2) == 0 {
                bytes[..4].copy_from_slice(&(len as u32).to_le_bytes());
            }
            if let Ok(info) = parse(&bytes) {
                check_invariants(&info);
            }
        }
    }

    /// Mutations of well-formed boot information (byte changes, size fields
    /// pointed at odd places, truncation) never make the parser panic.
    #[test]
    fn mutated_boot_information_never_panics() {
        let good = [grub_like(), grub_efi_like()];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for i in 0..100_000 {
            let mut bytes = good[i % 2].clone();
            for _ in 0..1 + rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] = rng.next() as u8,
                    1 => bytes[at] ^= 1 << rng.below(8),
                    2 => {
                        let at = at & !3;
                        let value =
                            [0u32, 7, 8, 9, 24, 0xffff_fff8, rng.next() as u32][rng.below(7)];
                        if at + 4 <= bytes.len() {
                            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
                        }
                    }
                    _ => bytes.truncate(at),
                }
            }
            if let Ok(info) = parse(&bytes) {
                accepted += 1;
                check_invariants(&info);
            }
        }
        // The mutations must also leave some inputs valid, or this test
        // would only exercise the header checks.
        assert!(accepted > 1000, "{accepted}");
    }

    #[test]
    fn modules_can_be_moved() {
        let mut bytes = Builder::default()
            .mmap(&[(0, 0x9fc00, 1)])
            .module(0x1000, 0x2000, "a")
            .module(0x3000, 0x3800, "b")
            .build();
        assert!(relocate_module(&mut bytes, 1, 0x100_0000));
        assert!(!relocate_module(&mut bytes, 2, 0));
        let info = parse(&bytes).unwrap();
        assert_eq!(
            (info.modules[0].start, info.modules[0].end),
            (0x1000, 0x2000)
        );
        assert_eq!(
            (info.modules[1].start, info.modules[1].end),
            (0x100_0000, 0x100_0800)
        );
        assert_eq!(info.modules[1].cmdline, "b");
    }
}
