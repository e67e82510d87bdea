//! Guest kernel images: ELF files with a PVH entry point.
//!
//! A PVH kernel is an ordinary ELF executable (Linux: `vmlinux`, not `bzImage`) that carries an
//! ELF note of name `"Xen"` and type `XEN_ELFNOTE_PHYS32_ENTRY` (18, Xen's
//! `xen/include/public/elfnote.h`) holding the guest-physical address of its 32-bit entry point.
//! As Xen's and QEMU's PVH loaders do, each `PT_LOAD` segment is loaded at its **physical**
//! address `p_paddr` (the virtual addresses of a Linux `vmlinux` are in the top 2 GiB).
//!
//! [`parse`] accepts:
//!
//! - ELF64 and ELF32, little-endian, machine `EM_X86_64` (62) or `EM_386` (3), type `ET_EXEC`
//!   (position-independent `ET_DYN` images are refused: they carry no load address Basalt could
//!   trust);
//! - 1 to [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments, each with its file bytes inside the file,
//!   `p_filesz <= p_memsz`, the whole `[p_paddr, p_paddr + p_memsz)` inside the domain's memory
//!   `[0, memory)`, and no two overlapping (empty segments are ignored);
//! - the entry note found in a `PT_NOTE` segment or, when no segment has it, in an `SHT_NOTE`
//!   section. Notes are laid out as in the ELF specification: a 12-byte header (`namesz`,
//!   `descsz`, `type`), the name and the descriptor each padded to 4 bytes (8 in a note area
//!   aligned to 8, as the GNU tools read them). The name is `"Xen"` (`namesz` 4 with the NUL);
//!   the descriptor is a 32-bit address or, as older Linux kernels emit it, a 64-bit one whose
//!   low 32 bits count;
//! - an entry point inside the file bytes of a loaded segment.
//!
//! [`load`] then copies the segments into guest memory and zero-fills their `.bss` parts.

use crate::mem::{GuestMemory, MemoryError};
use core::fmt;

/// The most `PT_LOAD` segments an image may have.
pub const MAX_SEGMENTS: usize = 16;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the note type of the PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `EM_386`.
pub const EM_386: u16 = 3;
/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `ET_EXEC`: an executable file.
pub const ET_EXEC: u16 = 2;
/// `ET_DYN`: a shared object or position-independent executable.
pub const ET_DYN: u16 = 3;
/// `PT_LOAD`: a loadable segment.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`: a segment of notes.
pub const PT_NOTE: u32 = 4;
/// `SHT_NOTE`: a section of notes.
pub const SHT_NOTE: u32 = 7;

/// The name of the notes Xen defines (without its NUL).
const XEN_NOTE_NAME: &[u8] = b"Xen";

/// ELF file class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// `ELFCLASS32`: 32-bit header fields.
    Elf32,
    /// `ELFCLASS64`: 64-bit header fields.
    Elf64,
}

impl ElfClass {
    fn ehdr_size(self) -> usize {
        match self {
            Self::Elf32 => 52,
            Self::Elf64 => 64,
        }
    }

    fn phdr_size(self) -> u64 {
        match self {
            Self::Elf32 => 32,
            Self::Elf64 => 56,
        }
    }

    fn shdr_size(self) -> u64 {
        match self {
            Self::Elf32 => 40,
            Self::Elf64 => 64,
        }
    }
}

/// One `PT_LOAD` segment, as it will be loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical load address (`p_paddr`).
    pub paddr: u64,
    /// Offset of the segment's bytes in the file (`p_offset`).
    pub offset: u64,
    /// Bytes copied from the file (`p_filesz`).
    pub filesz: u64,
    /// Bytes in memory (`p_memsz`); the `memsz - filesz` after the file bytes are zeroed.
    pub memsz: u64,
    /// `PF_X` (1), `PF_W` (2), `PF_R` (4) (`p_flags`).
    pub flags: u32,
}

impl Segment {
    /// Guest-physical address one past the segment (checked against overflow by [`parse`]).
    pub fn end(&self) -> u64 {
        self.paddr.saturating_add(self.memsz)
    }
}

/// A validated guest kernel image: where it goes and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestImage {
    /// Guest-physical address of the PVH entry point (32-bit protected mode, paging off).
    pub entry: u32,
    /// The non-empty `PT_LOAD` segments, in file order; only the first
    /// [`segment_count`](Self::segment_count) are meaningful.
    pub segments: [Segment; MAX_SEGMENTS],
    /// How many entries of [`segments`](Self::segments) are used (at least 1).
    pub segment_count: usize,
    /// The file's class.
    pub class: ElfClass,
    /// The lowest guest-physical address loaded.
    pub lowest: u64,
    /// The guest-physical address one past the highest byte loaded (exclusive end).
    pub highest: u64,
}

impl GuestImage {
    /// The used segments.
    pub fn segments(&self) -> &[Segment] {
        self.segments.get(..self.segment_count).unwrap_or(&[])
    }
}

/// Why a guest kernel image was refused or could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// A structure the headers point at runs past the end of the file.
    Truncated {
        /// What was being read, e.g. `"program header table"`.
        what: &'static str,
        /// Its offset in the file.
        offset: u64,
        /// Its size in bytes.
        size: u64,
        /// The file's size in bytes.
        file_size: u64,
    },
    /// `EI_CLASS` is neither `ELFCLASS32` (1) nor `ELFCLASS64` (2).
    UnsupportedClass(u8),
    /// `EI_DATA` is not `ELFDATA2LSB` (1).
    UnsupportedByteOrder(u8),
    /// `e_machine` is neither `EM_386` nor `EM_X86_64`.
    UnsupportedMachine(u16),
    /// `e_type` is not `ET_EXEC`.
    NotExecutable(u16),
    /// A header field makes no sense (the reason says which).
    Malformed(&'static str),
    /// No non-empty `PT_LOAD` segment.
    NoLoadableSegments,
    /// More than [`MAX_SEGMENTS`] non-empty `PT_LOAD` segments.
    TooManySegments {
        /// How many there are.
        count: usize,
    },
    /// A `PT_LOAD` segment with more file bytes than memory bytes.
    FileSizeAboveMemSize {
        /// Index of its program header.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A `PT_LOAD` segment not inside `[0, memory)` (or whose end overflows).
    SegmentOutsideMemory {
        /// `p_paddr`.
        paddr: u64,
        /// `p_memsz`.
        size: u64,
        /// The domain's memory size.
        memory: u64,
    },
    /// Two `PT_LOAD` segments share guest-physical addresses.
    OverlappingSegments {
        /// The first segment's start.
        first_start: u64,
        /// The first segment's end (exclusive).
        first_end: u64,
        /// The second segment's start.
        second_start: u64,
        /// The second segment's end (exclusive).
        second_end: u64,
    },
    /// No `XEN_ELFNOTE_PHYS32_ENTRY` note.
    NoPvhEntry,
    /// A `XEN_ELFNOTE_PHYS32_ENTRY` note whose descriptor is neither 4 nor 8 bytes.
    BadPvhNote {
        /// The descriptor's size.
        descsz: u32,
    },
    /// The entry point is not inside the file bytes of a loaded segment.
    EntryOutsideImage {
        /// The entry point.
        entry: u32,
    },
    /// Writing the image into guest memory failed.
    GuestMemory(MemoryError),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotElf => f.write_str(
                "not an ELF file (no \\x7fELF magic): a guest kernel is an ELF image with a PVH \
                 entry note (e.g. Linux's vmlinux; boot=pvh) or a Linux bzImage (boot=linux)",
            ),
            Self::Truncated {
                what,
                offset,
                size,
                file_size,
            } => write!(
                f,
                "the {what} (file offset 0x{offset:x}, {size} bytes) runs past the end of the \
                 file ({file_size} bytes): the image is truncated or corrupt; check the file \
                 given to the boot loader"
            ),
            Self::UnsupportedClass(class) => write!(
                f,
                "ELF class {class} is neither ELFCLASS32 (1) nor ELFCLASS64 (2): the image is \
                 corrupt"
            ),
            Self::UnsupportedByteOrder(data) => write!(
                f,
                "ELF data encoding {data} is not little-endian (1): not an x86 image"
            ),
            Self::UnsupportedMachine(machine) => write!(
                f,
                "ELF machine {machine} is not x86 (EM_386 = 3 or EM_X86_64 = 62): build the \
                 guest kernel for x86"
            ),
            Self::NotExecutable(ET_DYN) => f.write_str(
                "the image is ET_DYN (position-independent): Basalt loads only ET_EXEC images at \
                 their physical addresses; link the guest kernel as a static executable",
            ),
            Self::NotExecutable(kind) => write!(
                f,
                "ELF type {kind} is not an executable (ET_EXEC = 2; 1 is an object file): give \
                 the linked guest kernel"
            ),
            Self::Malformed(reason) => write!(f, "malformed ELF image: {reason}"),
            Self::NoLoadableSegments => {
                f.write_str("the image has no non-empty PT_LOAD segment: nothing to load")
            }
            Self::TooManySegments { count } => write!(
                f,
                "the image has {count} PT_LOAD segments; Basalt loads at most {MAX_SEGMENTS} \
                 (merge sections in the linker script)"
            ),
            Self::FileSizeAboveMemSize {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "PT_LOAD program header {index} has more file bytes ({filesz}) than memory bytes \
                 ({memsz}): the image is corrupt"
            ),
            Self::SegmentOutsideMemory {
                paddr,
                size,
                memory,
            } => write!(
                f,
                "a PT_LOAD segment of {size} bytes at guest-physical 0x{paddr:x} does not fit in \
                 the domain's 0x{memory:x} bytes of memory: raise memory= on the kernel's module \
                 (or link the kernel lower)"
            ),
            Self::OverlappingSegments {
                first_start,
                first_end,
                second_start,
                second_end,
            } => {
                write!(
                    f,
                    "PT_LOAD segments [0x{first_start:x}, 0x{first_end:x}) and \
                     [0x{second_start:x}, 0x{second_end:x}) overlap: the image is corrupt"
                )
            }
            Self::NoPvhEntry => f.write_str(
                "no XEN_ELFNOTE_PHYS32_ENTRY note: the kernel was not built with PVH support \
                 (CONFIG_PVH=y for Linux)",
            ),
            Self::BadPvhNote { descsz } => write!(
                f,
                "the XEN_ELFNOTE_PHYS32_ENTRY note holds {descsz} bytes, not a 4- or 8-byte \
                 address: the image is corrupt"
            ),
            Self::EntryOutsideImage { entry } => write!(
                f,
                "the PVH entry point 0x{entry:x} is not inside the file bytes of any PT_LOAD \
                 segment: the image is corrupt"
            ),
            Self::GuestMemory(error) => {
                write!(
                    f,
                    "copying the image into the domain's memory failed: {error}"
                )
            }
        }
    }
}

/// Little-endian field access that cannot panic.
fn bytes_at<const N: usize>(bytes: &[u8], offset: u64) -> Option<[u8; N]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(N)?;
    bytes.get(start..end)?.try_into().ok()
}

fn u16_at(bytes: &[u8], offset: u64) -> Option<u16> {
    bytes_at(bytes, offset).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], offset: u64) -> Option<u32> {
    bytes_at(bytes, offset).map(u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], offset: u64) -> Option<u64> {
    bytes_at(bytes, offset).map(u64::from_le_bytes)
}

/// The slice `[offset, offset + size)` of `bytes`, or a [`ImageError::Truncated`] naming `what`.
fn range<'a>(
    bytes: &'a [u8],
    offset: u64,
    size: u64,
    what: &'static str,
) -> Result<&'a [u8], ImageError> {
    let truncated = ImageError::Truncated {
        what,
        offset,
        size,
        file_size: bytes.len() as u64,
    };
    let start = usize::try_from(offset).map_err(|_| truncated)?;
    let len = usize::try_from(size).map_err(|_| truncated)?;
    let end = start.checked_add(len).ok_or(truncated)?;
    bytes.get(start..end).ok_or(truncated)
}

/// The ELF file, with its class known and its header inside the file.
#[derive(Clone, Copy)]
struct Elf<'a> {
    bytes: &'a [u8],
    class: ElfClass,
}

/// A program header.
#[derive(Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

impl<'a> Elf<'a> {
    /// A header field that is 32-bit in ELF32 and 64-bit in ELF64, at offsets `off32`/`off64`.
    fn word(&self, base: u64, off32: u64, off64: u64) -> Option<u64> {
        match self.class {
            ElfClass::Elf32 => u32_at(self.bytes, base.checked_add(off32)?).map(u64::from),
            ElfClass::Elf64 => u64_at(self.bytes, base.checked_add(off64)?),
        }
    }

    /// Header fields; the header is known to be inside the file, so these cannot fail.
    fn header_u16(&self, off32: u64, off64: u64) -> u16 {
        let off = match self.class {
            ElfClass::Elf32 => off32,
            ElfClass::Elf64 => off64,
        };
        u16_at(self.bytes, off).unwrap_or(0)
    }

    fn header_word(&self, off32: u64, off64: u64) -> u64 {
        self.word(0, off32, off64).unwrap_or(0)
    }

    /// The program header table: (offset, entry size, count), checked to be inside the file.
    fn program_headers(&self) -> Result<(u64, u64, u64), ImageError> {
        let phoff = self.header_word(28, 32);
        let phentsize = u64::from(self.header_u16(42, 54));
        let phnum = u64::from(self.header_u16(44, 56));
        if phnum == 0 {
            return Err(ImageError::NoLoadableSegments);
        }
        if phnum == 0xffff {
            return Err(ImageError::Malformed(
                "e_phnum is PN_XNUM (65535 or more program headers)",
            ));
        }
        if phentsize < self.class.phdr_size() {
            return Err(ImageError::Malformed(
                "e_phentsize is smaller than a program header",
            ));
        }
        // Both factors fit in 16 bits: no overflow.
        range(self.bytes, phoff, phentsize * phnum, "program header table")?;
        Ok((phoff, phentsize, phnum))
    }

    /// Program header `index` of the table at `phoff` (inside the file, checked before).
    fn phdr(&self, phoff: u64, phentsize: u64, index: u64) -> Result<Phdr, ImageError> {
        let base = phoff.saturating_add(index.saturating_mul(phentsize));
        let read = || -> Option<Phdr> {
            Some(match self.class {
                ElfClass::Elf32 => Phdr {
                    kind: u32_at(self.bytes, base)?,
                    offset: self.word(base, 4, 0)?,
                    paddr: self.word(base, 12, 0)?,
                    filesz: self.word(base, 16, 0)?,
                    memsz: self.word(base, 20, 0)?,
                    flags: u32_at(self.bytes, base.checked_add(24)?)?,
                    align: self.word(base, 28, 0)?,
                },
                ElfClass::Elf64 => Phdr {
                    kind: u32_at(self.bytes, base)?,
                    flags: u32_at(self.bytes, base.checked_add(4)?)?,
                    offset: self.word(base, 0, 8)?,
                    paddr: self.word(base, 0, 24)?,
                    filesz: self.word(base, 0, 32)?,
                    memsz: self.word(base, 0, 40)?,
                    align: self.word(base, 0, 48)?,
                },
            })
        };
        read().ok_or(ImageError::Truncated {
            what: "program header",
            offset: base,
            size: self.class.phdr_size(),
            file_size: self.bytes.len() as u64,
        })
    }
}

/// The note alignment for a note area whose `p_align`/`sh_addralign` is `align`.
fn note_alignment(align: u64) -> u64 {
    if align == 8 { 8 } else { 4 }
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}

/// Looks for the PVH entry note among the notes in `area`. A malformed note ends the search of
/// that area (later notes cannot be found without its sizes).
fn find_entry_note(area: &[u8], align: u64) -> Result<Option<u32>, ImageError> {
    let align = note_alignment(align);
    let len = area.len() as u64;
    let mut pos = 0u64;
    loop {
        let (Some(namesz), Some(descsz), Some(kind)) = (
            u32_at(area, pos),
            pos.checked_add(4).and_then(|p| u32_at(area, p)),
            pos.checked_add(8).and_then(|p| u32_at(area, p)),
        ) else {
            return Ok(None);
        };
        let Some(name_start) = pos.checked_add(12) else {
            return Ok(None);
        };
        let Some(name_end) = name_start.checked_add(u64::from(namesz)) else {
            return Ok(None);
        };
        let Some(desc_start) = align_up(name_end, align) else {
            return Ok(None);
        };
        let Some(desc_end) = desc_start.checked_add(u64::from(descsz)) else {
            return Ok(None);
        };
        if desc_end > len {
            return Ok(None);
        }
        let name = range(area, name_start, u64::from(namesz), "note").unwrap_or(&[]);
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        if name == XEN_NOTE_NAME && kind == XEN_ELFNOTE_PHYS32_ENTRY {
            return match descsz {
                // An 8-byte value's low half comes first (little-endian).
                4 | 8 => Ok(u32_at(area, desc_start)),
                _ => Err(ImageError::BadPvhNote { descsz }),
            };
        }
        match align_up(desc_end, align) {
            Some(next) if next > pos => pos = next,
            _ => return Ok(None),
        }
    }
}

/// Validates a guest kernel image for a domain of `memory` bytes (see the module
/// documentation for what is checked).
pub fn parse(bytes: &[u8], memory: u64) -> Result<GuestImage, ImageError> {
    const MAGIC: &[u8; 4] = b"\x7fELF";
    let file_size = bytes.len() as u64;
    let magic = bytes.get(..4).unwrap_or(bytes);
    if magic.len() < 4 {
        // A prefix of the magic is a truncated ELF file; anything else is not one.
        return Err(if MAGIC.starts_with(magic) {
            ImageError::Truncated {
                what: "ELF header",
                offset: 0,
                size: 16,
                file_size,
            }
        } else {
            ImageError::NotElf
        });
    }
    if magic != MAGIC {
        return Err(ImageError::NotElf);
    }
    let ident = range(bytes, 0, 16, "ELF identification")?;
    let class = match ident.get(4).copied().unwrap_or(0) {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        other => return Err(ImageError::UnsupportedClass(other)),
    };
    match ident.get(5).copied().unwrap_or(0) {
        1 => {}
        other => return Err(ImageError::UnsupportedByteOrder(other)),
    }
    range(bytes, 0, class.ehdr_size() as u64, "ELF header")?;
    let elf = Elf { bytes, class };
    let machine = elf.header_u16(18, 18);
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(ImageError::UnsupportedMachine(machine));
    }
    let kind = elf.header_u16(16, 16);
    if kind != ET_EXEC {
        return Err(ImageError::NotExecutable(kind));
    }

    let (phoff, phentsize, phnum) = elf.program_headers()?;
    let is_loaded = |ph: &Phdr| ph.kind == PT_LOAD && (ph.memsz != 0 || ph.filesz != 0);
    let mut count = 0usize;
    for index in 0..phnum {
        if is_loaded(&elf.phdr(phoff, phentsize, index)?) {
            count = count.saturating_add(1);
        }
    }
    if count > MAX_SEGMENTS {
        return Err(ImageError::TooManySegments { count });
    }

    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut used = 0usize;
    for index in 0..phnum {
        let ph = elf.phdr(phoff, phentsize, index)?;
        if !is_loaded(&ph) {
            continue;
        }
        if ph.filesz > ph.memsz {
            return Err(ImageError::FileSizeAboveMemSize {
                index: index as usize,
                filesz: ph.filesz,
                memsz: ph.memsz,
            });
        }
        range(bytes, ph.offset, ph.filesz, "PT_LOAD segment")?;
        match ph.paddr.checked_add(ph.memsz) {
            Some(end) if end <= memory => {}
            _ => {
                return Err(ImageError::SegmentOutsideMemory {
                    paddr: ph.paddr,
                    size: ph.memsz,
                    memory,
                });
            }
        }
        let segment = Segment {
            paddr: ph.paddr,
            offset: ph.offset,
            filesz: ph.filesz,
            memsz: ph.memsz,
            flags: ph.flags,
        };
        for other in segments.get(..used).unwrap_or(&[]) {
            if segment.paddr < other.end() && other.paddr < segment.end() {
                return Err(ImageError::OverlappingSegments {
                    first_start: other.paddr,
                    first_end: other.end(),
                    second_start: segment.paddr,
                    second_end: segment.end(),
                });
            }
        }
        let slot = segments
            .get_mut(used)
            .ok_or(ImageError::TooManySegments { count })?;
        *slot = segment;
        used += 1;
    }
    let loaded = segments.get(..used).unwrap_or(&[]);
    if loaded.is_empty() {
        return Err(ImageError::NoLoadableSegments);
    }
    let lowest = loaded.iter().map(|s| s.paddr).min().unwrap_or(0);
    let highest = loaded.iter().map(Segment::end).max().unwrap_or(0);

    let entry = find_entry(&elf, phoff, phentsize, phnum)?.ok_or(ImageError::NoPvhEntry)?;
    let inside = loaded.iter().any(|s| {
        let entry = u64::from(entry);
        entry >= s.paddr && entry - s.paddr < s.filesz
    });
    if !inside {
        return Err(ImageError::EntryOutsideImage { entry });
    }

    Ok(GuestImage {
        entry,
        segments,
        segment_count: used,
        class,
        lowest,
        highest,
    })
}

/// The PVH entry from the `PT_NOTE` segments, else from the `SHT_NOTE` sections.
fn find_entry(
    elf: &Elf<'_>,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
) -> Result<Option<u32>, ImageError> {
    for index in 0..phnum {
        let ph = elf.phdr(phoff, phentsize, index)?;
        if ph.kind != PT_NOTE {
            continue;
        }
        let area = range(elf.bytes, ph.offset, ph.filesz, "PT_NOTE segment")?;
        if let Some(entry) = find_entry_note(area, ph.align)? {
            return Ok(Some(entry));
        }
    }

    let shoff = elf.header_word(32, 40);
    let shentsize = u64::from(elf.header_u16(46, 58));
    let shnum = u64::from(elf.header_u16(48, 60));
    if shoff == 0 || shnum == 0 {
        return Ok(None);
    }
    if shentsize < elf.class.shdr_size() {
        return Err(ImageError::Malformed(
            "e_shentsize is smaller than a section header",
        ));
    }
    range(elf.bytes, shoff, shentsize * shnum, "section header table")?;
    for index in 0..shnum {
        let base = shoff.saturating_add(index * shentsize);
        let read = || -> Option<(u32, u64, u64, u64)> {
            Some((
                u32_at(elf.bytes, base.checked_add(4)?)?,
                elf.word(base, 16, 24)?,
                elf.word(base, 20, 32)?,
                elf.word(base, 32, 48)?,
            ))
        };
        let (kind, offset, size, align) = read().ok_or(ImageError::Truncated {
            what: "section header",
            offset: base,
            size: elf.class.shdr_size(),
            file_size: elf.bytes.len() as u64,
        })?;
        if kind != SHT_NOTE {
            continue;
        }
        let area = range(elf.bytes, offset, size, "SHT_NOTE section")?;
        if let Some(entry) = find_entry_note(area, align)? {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Copies a parsed image's segments from `bytes` (the file [`parse`] read) into guest memory,
/// zero-filling each segment's `memsz - filesz` tail. Memory outside the segments is untouched.
pub fn load(
    image: &GuestImage,
    bytes: &[u8],
    mem: &mut impl GuestMemory,
) -> Result<(), ImageError> {
    for segment in image.segments() {
        let data = range(bytes, segment.offset, segment.filesz, "PT_LOAD segment")?;
        mem.write(segment.paddr, data)
            .map_err(ImageError::GuestMemory)?;
        let tail = segment.memsz.saturating_sub(segment.filesz);
        if tail != 0 {
            let bss = segment
                .paddr
                .checked_add(segment.filesz)
                .ok_or(ImageError::GuestMemory(MemoryError::OutOfRange {
                    gpa: segment.paddr,
                    len: segment.memsz,
                    size: mem.size(),
                }))?;
            mem.fill(bss, tail, 0).map_err(ImageError::GuestMemory)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
