//! The Linux x86 boot protocol (`Documentation/arch/x86/boot.rst`), 64-bit entry.
//!
//! A `bzImage` starts with the real-mode setup code (`setup_sects + 1` sectors of 512 bytes,
//! 4 when `setup_sects` is 0), whose *setup header* at file offset `0x1f1` describes the
//! kernel; the protected-mode kernel (a decompressor with the compressed kernel as payload)
//! follows. Basalt does not run the real-mode code: as QEMU's, Firecracker's and Xen's direct
//! boot do, it loads the protected-mode kernel, writes a `boot_params` (the "zero page") and
//! starts the vCPU at the 64-bit entry `startup_64`, [`STARTUP_64_OFFSET`] bytes into the
//! loaded kernel. That entry exists when the header's `xloadflags` has `XLF_KERNEL_64`
//! (protocol 2.12 or later).
//!
//! 1. [`parse_bzimage`] validates the header ([`LinuxError`] says what is wrong and what to
//!    do) and returns a [`BzImage`].
//! 2. [`BzImage::load_address`] picks where the protected-mode kernel goes: its
//!    `pref_address`, which must be aligned to `kernel_alignment` when the kernel is
//!    relocatable, at or above 1 MiB, and leave `init_size` bytes inside the domain's memory.
//! 3. The hypervisor copies [`BzImage::protected_mode`] there (or [`load_kernel`] does).
//! 4. [`write_boot_params`] writes the zero page: the header copied from the image, then
//!    `type_of_loader`, `loadflags`, the command line, the initrd, the e820 map and the ACPI
//!    RSDP; [`write_identity_page_tables`] and [`write_boot_gdt`] build the paging and segment
//!    state; [`entry_state`] gives every register for the vCPU.
//!
//! # CPU state at `startup_64`
//!
//! - 64-bit mode: `CR0.PE`, `CR0.PG`, `CR4.PAE`, `EFER.LME` and `EFER.LMA` set (and
//!   `CR0.NE`: [`ENTRY_CR0`] says why);
//! - paging with an identity map covering the loaded kernel (through `init_size`), the
//!   `boot_params`, the command line and the initrd ([`write_identity_page_tables`]: 2 MiB
//!   pages from 0);
//! - a GDT in which selector [`BOOT_CS`] (0x10) is a 64-bit code segment and [`BOOT_DS`]
//!   (0x18) a flat read/write data segment; CS = 0x10, DS = ES = SS = 0x18 (FS, GS too);
//! - interrupts disabled (`RFLAGS` = 0x2); no IDT is needed;
//! - `RIP` = load address + [`STARTUP_64_OFFSET`], `RSI` = the `boot_params` address; other
//!   general registers 0.
//!
//! # boot_params offsets
//!
//! | offset | field | size |
//! |---|---|---|
//! | 0x070 | `acpi_rsdp_addr` (protocol 2.14) | 8 |
//! | 0x0c0 | `ext_ramdisk_image` | 4 |
//! | 0x0c4 | `ext_ramdisk_size` | 4 |
//! | 0x0c8 | `ext_cmd_line_ptr` | 4 |
//! | 0x1e8 | `e820_entries` | 1 |
//! | 0x1f1 | `hdr`: the setup header | up to 0x7b |
//! | 0x2d0 | `e820_table[128]`: `addr` u64, `size` u64, `type` u32 (packed, 20 bytes) | 2560 |
//!
//! Setup header fields (offsets in the file and in `boot_params`): `setup_sects` 0x1f1,
//! `boot_flag` 0x1fe, `header` 0x202, `version` 0x206, `type_of_loader` 0x210, `loadflags`
//! 0x211, `ramdisk_image` 0x218, `ramdisk_size` 0x21c, `heap_end_ptr` 0x224, `cmd_line_ptr`
//! 0x228, `initrd_addr_max` 0x22c, `kernel_alignment` 0x230, `relocatable_kernel` 0x234,
//! `xloadflags` 0x236, `cmdline_size` 0x238, `hardware_subarch` 0x23c, `payload_offset`
//! 0x248, `payload_length` 0x24c, `pref_address` 0x258, `init_size` 0x260.

use crate::mem::{GuestMemory, MemoryError, check_range};
use crate::start_info::MemmapEntry;
use core::fmt;

/// Size of `boot_params`.
pub const BOOT_PARAMS_SIZE: u64 = 4096;
/// `boot_flag`'s value.
pub const BOOT_FLAG: u16 = 0xaa55;
/// `header`'s value: `"HdrS"`.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// The oldest protocol with `xloadflags` (and so `XLF_KERNEL_64`): 2.12.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// `loadflags` bit: the protected-mode kernel is loaded at 0x100000 or above (bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags` bit: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags` bit: the kernel has the 64-bit entry at [`STARTUP_64_OFFSET`].
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags` bit: kernel, boot_params, command line and initrd may be above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `type_of_loader` for a loader without an assigned ID.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Offset of `startup_64` in the loaded protected-mode kernel.
pub const STARTUP_64_OFFSET: u64 = 0x200;
/// Code segment selector the kernel expects (`__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Data segment selector the kernel expects (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Size of [`write_boot_gdt`]'s GDT.
pub const BOOT_GDT_SIZE: u64 = 32;
/// The most e820 entries `boot_params` holds.
pub const E820_MAX: usize = 128;
/// 1 MiB: the lowest load address of a bzImage's protected-mode kernel.
pub const ONE_MIB: u64 = 0x10_0000;
/// 2 MiB: the page size of [`write_identity_page_tables`].
pub const TWO_MIB: u64 = 0x20_0000;
/// The most memory [`write_identity_page_tables`] maps: 512 GiB (one PDPT).
pub const IDENTITY_MAP_LIMIT: u64 = 512 << 30;
/// `heap_end_ptr` Basalt sets: the end of a 0xfe00-byte real-mode area minus 0x200 for the
/// stack, as boot.rst recommends (unused with the 64-bit entry).
pub const HEAP_END_PTR: u16 = 0xfe00 - 0x200;

/// Offset of the setup header in the image and in `boot_params`.
pub const HDR_OFFSET: usize = 0x1f1;
/// End of the setup header as Basalt knows it (protocol 2.15).
pub const HDR_END: usize = 0x26c;
const HDR_LEN: usize = HDR_END - HDR_OFFSET;

/// Offsets in `boot_params` (and, from 0x1f1 on, in the bzImage).
pub mod offset {
    /// `acpi_rsdp_addr`.
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `ext_ramdisk_image`.
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    /// `ext_ramdisk_size`.
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    /// `ext_cmd_line_ptr`.
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    /// `e820_entries`.
    pub const E820_ENTRIES: usize = 0x1e8;
    /// `sentinel`: 0 from a loader that zeroed boot_params.
    pub const SENTINEL: usize = 0x1ef;
    /// `setup_sects`.
    pub const SETUP_SECTS: usize = 0x1f1;
    /// `vid_mode`.
    pub const VID_MODE: usize = 0x1fa;
    /// `boot_flag`.
    pub const BOOT_FLAG: usize = 0x1fe;
    /// `jump`: its second byte + 0x202 is the end of the header.
    pub const JUMP: usize = 0x200;
    /// `header`.
    pub const HEADER: usize = 0x202;
    /// `version`.
    pub const VERSION: usize = 0x206;
    /// `type_of_loader`.
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `loadflags`.
    pub const LOADFLAGS: usize = 0x211;
    /// `code32_start`.
    pub const CODE32_START: usize = 0x214;
    /// `ramdisk_image`.
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `ramdisk_size`.
    pub const RAMDISK_SIZE: usize = 0x21c;
    /// `heap_end_ptr`.
    pub const HEAP_END_PTR: usize = 0x224;
    /// `cmd_line_ptr`.
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `initrd_addr_max`.
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    /// `kernel_alignment`.
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `relocatable_kernel`.
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    /// `xloadflags`.
    pub const XLOADFLAGS: usize = 0x236;
    /// `cmdline_size`.
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `hardware_subarch`.
    pub const HARDWARE_SUBARCH: usize = 0x23c;
    /// `payload_offset`.
    pub const PAYLOAD_OFFSET: usize = 0x248;
    /// `payload_length`.
    pub const PAYLOAD_LENGTH: usize = 0x24c;
    /// `pref_address`.
    pub const PREF_ADDRESS: usize = 0x258;
    /// `init_size`.
    pub const INIT_SIZE: usize = 0x260;
    /// `e820_table`.
    pub const E820_TABLE: usize = 0x2d0;
}

fn get<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

fn get_u8(b: &[u8], at: usize) -> u8 {
    u8::from_le_bytes(get(b, at))
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(get(b, at))
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(get(b, at))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(get(b, at))
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = at
        .checked_add(bytes.len())
        .and_then(|end| out.get_mut(at..end))
    {
        dst.copy_from_slice(bytes);
    }
}

/// Why a bzImage cannot be booted, or its boot information cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxError {
    /// No `boot_flag` 0xAA55 and `"HdrS"` header (or the file is too short for one).
    NotBzImage,
    /// Boot protocol older than 2.12: no `xloadflags`, so no known 64-bit entry.
    ProtocolTooOld {
        /// The header's `version`.
        version: u16,
    },
    /// `XLF_KERNEL_64` is clear: the kernel is 32-bit only (or built without the entry).
    No64BitEntry,
    /// `LOADED_HIGH` is clear: a zImage, loaded at 0x10000.
    NotLoadedHigh,
    /// The setup code (`setup_sects`) leaves no protected-mode kernel in the file.
    Truncated {
        /// Where the protected-mode kernel would start.
        kernel_offset: u64,
        /// The file's size.
        file_size: u64,
    },
    /// `pref_address` is unusable: below 1 MiB or, for a relocatable kernel, not aligned to
    /// `kernel_alignment` (or `kernel_alignment` not a power of two).
    BadLoadAddress {
        /// `pref_address`.
        pref_address: u64,
        /// `kernel_alignment`.
        alignment: u32,
    },
    /// The kernel needs memory up to `needed` during its start, more than the domain has.
    DoesNotFit {
        /// One past the last byte the kernel needs.
        needed: u64,
        /// The domain's memory.
        memory: u64,
    },
    /// The command line is longer than the kernel's `cmdline_size`.
    CmdlineTooLong {
        /// Its length in bytes.
        len: u64,
        /// The kernel's `cmdline_size`.
        max: u32,
    },
    /// The initrd ends above `initrd_addr_max` and the kernel cannot take it above 4 GiB.
    InitrdTooHigh {
        /// One past the initrd's last byte.
        end: u64,
        /// `initrd_addr_max` (the highest address its last byte may have).
        max: u32,
    },
    /// The command line or `boot_params` ends above 4 GiB, and the kernel lacks
    /// `XLF_CAN_BE_LOADED_ABOVE_4G`.
    Above4G {
        /// What: `"command line"` or `"boot_params"`.
        what: &'static str,
        /// One past its last byte.
        end: u64,
    },
    /// The initrd does not fit between the end of the kernel's start-up area and the lower of
    /// the domain's memory and `initrd_addr_max + 1`.
    InitrdDoesNotFit {
        /// The initrd's size in bytes.
        size: u64,
        /// One past the kernel's start-up area (load address + `init_size`).
        kernel_end: u64,
        /// Where the initrd would have to end at the latest.
        limit: u64,
        /// `limit` is the domain's memory (more memory helps); otherwise it is
        /// `initrd_addr_max + 1` (only a smaller initrd helps).
        by_memory: bool,
    },
    /// More e820 entries than `boot_params` holds.
    TooManyE820Entries {
        /// The count given.
        count: usize,
    },
    /// Boot information, page tables or GDT outside guest memory.
    Memory(MemoryError),
}

impl From<MemoryError> for LinuxError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotBzImage => f.write_str(
                "not a Linux bzImage (no boot flag 0xAA55 and \"HdrS\" setup header at 0x1f1): \
                 give arch/x86/boot/bzImage, or boot an ELF vmlinux with boot=pvh",
            ),
            Self::ProtocolTooOld { version } => write!(
                f,
                "the bzImage uses boot protocol {}.{:02}; its 64-bit entry needs 2.12 or later \
                 (Linux 3.8+): use a newer kernel",
                version >> 8,
                version & 0xff
            ),
            Self::No64BitEntry => f.write_str(
                "the bzImage has no 64-bit entry point (XLF_KERNEL_64 clear): build an x86_64 \
                 kernel (CONFIG_X86_64=y)",
            ),
            Self::NotLoadedHigh => f.write_str(
                "the image is a zImage (LOADED_HIGH clear), loaded below 1 MiB: build a bzImage",
            ),
            Self::Truncated {
                kernel_offset,
                file_size,
            } => write!(
                f,
                "the bzImage is truncated: its protected-mode kernel would start at byte \
                 {kernel_offset} of a {file_size}-byte file; copy the whole file"
            ),
            Self::BadLoadAddress {
                pref_address,
                alignment,
            } => write!(
                f,
                "the bzImage asks to be loaded at 0x{pref_address:x} (kernel_alignment \
                 0x{alignment:x}), below 1 MiB or misaligned: rebuild the kernel with a sane \
                 CONFIG_PHYSICAL_START/CONFIG_PHYSICAL_ALIGN"
            ),
            Self::DoesNotFit { needed, memory } => write!(
                f,
                "the kernel needs guest memory up to 0x{needed:x} while it starts, but the \
                 domain has 0x{memory:x} bytes: set memory={}M or more",
                needed.div_ceil(ONE_MIB)
            ),
            Self::CmdlineTooLong { len, max } => write!(
                f,
                "the kernel command line is {len} bytes; this kernel takes at most {max}: \
                 shorten it"
            ),
            Self::InitrdTooHigh { end, max } => write!(
                f,
                "the initrd ends at 0x{end:x}, above this kernel's initrd_addr_max 0x{max:x}: \
                 place it lower (or give the domain less memory)"
            ),
            Self::Above4G { what, end } => write!(
                f,
                "the {what} would end at 0x{end:x}, above 4 GiB, and this kernel cannot take it \
                 there (XLF_CAN_BE_LOADED_ABOVE_4G clear): place it below 4 GiB"
            ),
            Self::InitrdDoesNotFit {
                size,
                kernel_end,
                limit,
                by_memory: true,
            } => write!(
                f,
                "the initrd ({size} bytes) does not fit in guest memory after the kernel, which \
                 needs up to 0x{kernel_end:x} while it starts (memory ends at 0x{limit:x}): set \
                 memory={}M or more",
                kernel_end
                    .saturating_add(size)
                    .saturating_add(INITRD_ALIGN - 1)
                    .div_ceil(ONE_MIB)
            ),
            Self::InitrdDoesNotFit {
                size,
                kernel_end,
                limit,
                by_memory: false,
            } => write!(
                f,
                "the initrd ({size} bytes) does not fit between the kernel's start-up area \
                 (ends at 0x{kernel_end:x}) and this kernel's initrd_addr_max 0x{:x}: use a \
                 smaller initrd",
                limit.saturating_sub(1)
            ),
            Self::TooManyE820Entries { count } => write!(
                f,
                "{count} e820 entries; boot_params holds at most {E820_MAX}"
            ),
            Self::Memory(e) => write!(f, "Linux boot information does not fit: {e}"),
        }
    }
}

/// A validated bzImage header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// The setup header bytes from 0x1f1 (the first [`Self::header_len`] are the image's).
    header: [u8; HDR_LEN],
    /// How many bytes of [`Self::header`] come from the image: to 0x202 + `jump >> 8`,
    /// clamped to what Basalt knows.
    pub header_len: usize,
    /// `setup_sects` (0 read as 4).
    pub setup_sects: u8,
    /// Boot protocol version (`0x020f` is 2.15).
    pub version: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// `initrd_addr_max`.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel` is non-zero.
    pub relocatable: bool,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// `cmdline_size`: the longest command line, without its NUL.
    pub cmdline_size: u32,
    /// `payload_offset` (from the start of the protected-mode kernel).
    pub payload_offset: u32,
    /// `payload_length`.
    pub payload_length: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`: bytes from the load address the kernel needs while it starts.
    pub init_size: u32,
    /// File offset of the protected-mode kernel: `(setup_sects + 1) * 512`.
    pub kernel_offset: u64,
    /// Bytes of protected-mode kernel in the file.
    pub kernel_size: u64,
}

/// Validates a bzImage's setup header (see the module documentation).
pub fn parse_bzimage(image: &[u8]) -> Result<BzImage, LinuxError> {
    if image.len() < offset::VERSION + 2
        || get_u16(image, offset::BOOT_FLAG) != BOOT_FLAG
        || get_u32(image, offset::HEADER) != HDRS_MAGIC
    {
        return Err(LinuxError::NotBzImage);
    }
    let version = get_u16(image, offset::VERSION);
    if version < MIN_PROTOCOL {
        return Err(LinuxError::ProtocolTooOld { version });
    }
    let loadflags = get_u8(image, offset::LOADFLAGS);
    if loadflags & LOADED_HIGH == 0 {
        return Err(LinuxError::NotLoadedHigh);
    }
    let xloadflags = get_u16(image, offset::XLOADFLAGS);
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxError::No64BitEntry);
    }
    let setup_sects = match get_u8(image, offset::SETUP_SECTS) {
        0 => 4,
        n => n,
    };
    let kernel_offset = (u64::from(setup_sects) + 1) * 512;
    let file_size = image.len() as u64;
    if kernel_offset >= file_size {
        return Err(LinuxError::Truncated {
            kernel_offset,
            file_size,
        });
    }
    let declared_end = offset::HEADER + usize::from(get_u8(image, offset::JUMP + 1));
    let header_len = declared_end.min(HDR_END).min(image.len()) - HDR_OFFSET;
    let mut header = [0u8; HDR_LEN];
    put(
        &mut header,
        0,
        image
            .get(HDR_OFFSET..HDR_OFFSET + header_len)
            .unwrap_or(&[]),
    );
    let field = |at: usize| at - HDR_OFFSET;
    Ok(BzImage {
        header,
        header_len,
        setup_sects,
        version,
        loadflags,
        initrd_addr_max: get_u32(&header, field(offset::INITRD_ADDR_MAX)),
        kernel_alignment: get_u32(&header, field(offset::KERNEL_ALIGNMENT)),
        relocatable: get_u8(&header, field(offset::RELOCATABLE_KERNEL)) != 0,
        xloadflags,
        cmdline_size: get_u32(&header, field(offset::CMDLINE_SIZE)),
        payload_offset: get_u32(&header, field(offset::PAYLOAD_OFFSET)),
        payload_length: get_u32(&header, field(offset::PAYLOAD_LENGTH)),
        pref_address: get_u64(&header, field(offset::PREF_ADDRESS)),
        init_size: get_u32(&header, field(offset::INIT_SIZE)),
        kernel_offset,
        kernel_size: file_size - kernel_offset,
    })
}

impl BzImage {
    /// The setup header as read from the image (from 0x1f1).
    pub fn header(&self) -> &[u8] {
        self.header.get(..self.header_len).unwrap_or(&[])
    }

    /// The protected-mode kernel: the bytes of `image` (the file [`parse_bzimage`] read) that
    /// go to [`Self::load_address`].
    pub fn protected_mode<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        image.get(self.kernel_offset as usize..).unwrap_or(&[])
    }

    /// Where the protected-mode kernel goes in a domain of `memory` bytes: `pref_address`.
    ///
    /// `pref_address` must be at or above 1 MiB and, for a relocatable kernel, aligned to a
    /// power-of-two `kernel_alignment`; `[pref_address, pref_address + max(init_size, kernel
    /// size))` must be inside `[0, memory)`. (A relocatable 64-bit kernel decompresses itself
    /// at or above its `LOAD_PHYSICAL_ADDR` = `pref_address` anyway, so loading it lower saves
    /// nothing.)
    pub fn load_address(&self, memory: u64) -> Result<u64, LinuxError> {
        let pref = self.pref_address;
        let align = self.kernel_alignment;
        let aligned =
            !self.relocatable || (align.is_power_of_two() && pref & (u64::from(align) - 1) == 0);
        if pref < ONE_MIB || !aligned {
            return Err(LinuxError::BadLoadAddress {
                pref_address: pref,
                alignment: align,
            });
        }
        let span = u64::from(self.init_size).max(self.kernel_size);
        let needed = pref.saturating_add(span);
        if needed > memory {
            return Err(LinuxError::DoesNotFit { needed, memory });
        }
        Ok(pref)
    }

    /// The 64-bit entry for a kernel loaded at `load_address`.
    pub fn entry_64(load_address: u64) -> u64 {
        load_address.saturating_add(STARTUP_64_OFFSET)
    }
}

/// Whether `image` looks like a bzImage: `boot_flag` 0xAA55 at 0x1fe and `"HdrS"` at 0x202.
/// (Whether Basalt can boot it is [`parse_bzimage`]'s business.) An ELF file never does: its
/// bytes there are program or section data, not this pair.
pub fn is_bzimage(image: &[u8]) -> bool {
    image.len() >= offset::HEADER + 4
        && get_u16(image, offset::BOOT_FLAG) == BOOT_FLAG
        && get_u32(image, offset::HEADER) == HDRS_MAGIC
}

/// Several initrds are concatenated, each but the last padded with zeros to a multiple of
/// [`INITRD_PIECE_ALIGN`] bytes, as GRUB's `initrd` does (the kernel unpacks concatenated cpio
/// archives, compressed or not, and skips the zeros). The offset of each piece is the sum of
/// the padded sizes before it; returns the total size for the sizes given.
pub fn concatenated_initrd_size(sizes: impl IntoIterator<Item = u64>) -> u64 {
    let mut total = 0u64;
    let mut last = 0u64;
    for size in sizes {
        let padded = last
            .checked_next_multiple_of(INITRD_PIECE_ALIGN)
            .unwrap_or(u64::MAX);
        total = total.saturating_add(padded);
        last = size;
    }
    total.saturating_add(last)
}

/// See [`concatenated_initrd_size`].
pub const INITRD_PIECE_ALIGN: u64 = 4;

/// Where Basalt puts the identity page tables (`[0, 4 GiB)`: 6 pages).
pub const PAGE_TABLES_GPA: u64 = 0x1000;
/// Where Basalt puts `boot_params`.
pub const BOOT_PARAMS_GPA: u64 = 0x7000;
/// Where Basalt puts [`BOOT_GDT`].
pub const BOOT_GDT_GPA: u64 = 0x8000;
/// Where Basalt puts the command line.
pub const CMDLINE_GPA: u64 = 0x2_0000;
/// End of low RAM: the e820 map reserves `[0x9F000, 1 MiB)`.
pub const LOW_RAM_END: u64 = 0x9_f000;
/// How much [`plan_layout`]'s page tables map at most: 4 GiB (everything Basalt places is
/// below it; the kernel builds its own page tables for the rest).
pub const IDENTITY_MAP_SIZE: u64 = 4 << 30;
/// The initrd's alignment.
pub const INITRD_ALIGN: u64 = 4096;

/// Where everything goes for a bzImage in a domain of `memory` bytes ([`plan_layout`]).
///
/// ```text
/// 0x1000 .. 0x7000     identity page tables (up to 4 GiB of 2 MiB pages)
/// 0x7000 .. 0x8000     boot_params
/// 0x8000 .. 0x8020     boot GDT
/// 0x20000 ..           command line (NUL-terminated, below 0x9F000)
/// 0xE0000 ..           ACPI tables (the hypervisor's; reserved in the e820 map)
/// load_address ..      protected-mode kernel, init_size bytes reserved
/// .. top               initrd: page-aligned, as high as memory and initrd_addr_max allow
/// ```
///
/// The low pages stay clear of what the decompressor takes for itself: its 32-bit trampoline
/// for switching paging modes goes at the top of low RAM (below 0x9F000, as the zeroed BIOS
/// data area gives no EBDA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    /// Where the protected-mode kernel goes ([`BzImage::load_address`]).
    pub load_address: u64,
    /// One past the kernel's start-up area: `load_address + max(init_size, kernel size)`.
    pub kernel_end: u64,
    /// `boot_params`.
    pub boot_params: u64,
    /// The command line.
    pub cmdline: u64,
    /// The PML4 (CR3).
    pub page_tables: u64,
    /// What the page tables map: `[0, map_up_to)`.
    pub map_up_to: u64,
    /// The boot GDT.
    pub gdt: u64,
    /// The initrd's address (0 without one).
    pub initrd_gpa: u64,
    /// The initrd's size (0: none).
    pub initrd_size: u64,
}

/// Plans the guest-physical layout for `kernel` in a domain of `memory` bytes with a
/// command line of `cmdline_len` bytes (without its NUL) and an initrd of `initrd_size` bytes
/// (0: none); see [`LinuxLayout`].
pub fn plan_layout(
    kernel: &BzImage,
    memory: u64,
    cmdline_len: u64,
    initrd_size: u64,
) -> Result<LinuxLayout, LinuxError> {
    let load_address = kernel.load_address(memory)?;
    let kernel_end = load_address + u64::from(kernel.init_size).max(kernel.kernel_size);
    let cmdline_room = (LOW_RAM_END - CMDLINE_GPA - 1).min(u64::from(kernel.cmdline_size));
    if cmdline_len > cmdline_room {
        return Err(LinuxError::CmdlineTooLong {
            len: cmdline_len,
            max: cmdline_room as u32,
        });
    }
    let map_up_to = memory.min(IDENTITY_MAP_SIZE);
    let (initrd_gpa, initrd_size) = if initrd_size == 0 {
        (0, 0)
    } else {
        let addr_limit = u64::from(kernel.initrd_addr_max) + 1;
        let limit = memory.min(addr_limit);
        let by_memory = memory <= addr_limit;
        let gpa = limit
            .checked_sub(initrd_size)
            .map(|top| top & !(INITRD_ALIGN - 1))
            .filter(|&gpa| gpa >= kernel_end)
            .ok_or(LinuxError::InitrdDoesNotFit {
                size: initrd_size,
                kernel_end,
                limit,
                by_memory,
            })?;
        (gpa, initrd_size)
    };
    Ok(LinuxLayout {
        load_address,
        kernel_end,
        boot_params: BOOT_PARAMS_GPA,
        cmdline: CMDLINE_GPA,
        page_tables: PAGE_TABLES_GPA,
        map_up_to,
        gdt: BOOT_GDT_GPA,
        initrd_gpa,
        initrd_size,
    })
}

/// Copies the protected-mode kernel of `image` to `load_address` (from
/// [`BzImage::load_address`]).
pub fn load_kernel(
    mem: &mut impl GuestMemory,
    image: &[u8],
    kernel: &BzImage,
    load_address: u64,
) -> Result<(), LinuxError> {
    mem.write(load_address, kernel.protected_mode(image))?;
    Ok(())
}

/// What [`write_boot_params`] tells the kernel besides its own header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo<'a> {
    /// Guest-physical address where the command line goes (written NUL-terminated).
    pub cmdline_gpa: u64,
    /// The command line.
    pub cmdline: &'a str,
    /// The initrd already in guest memory: address and size (size 0: none).
    pub initrd_gpa: u64,
    /// The initrd's size in bytes.
    pub initrd_size: u64,
    /// The e820 map (at most [`E820_MAX`] entries; `kind` is the e820 type).
    pub e820: &'a [MemmapEntry],
    /// Guest-physical address of the ACPI RSDP (0: none).
    pub acpi_rsdp: u64,
}

/// Builds the 4 KiB `boot_params` for `kernel` (see the module documentation).
pub fn boot_params(kernel: &BzImage, info: &BootInfo<'_>) -> Result<[u8; 4096], LinuxError> {
    let len = info.cmdline.len() as u64;
    if len > u64::from(kernel.cmdline_size) {
        return Err(LinuxError::CmdlineTooLong {
            len,
            max: kernel.cmdline_size,
        });
    }
    if info.e820.len() > E820_MAX {
        return Err(LinuxError::TooManyE820Entries {
            count: info.e820.len(),
        });
    }
    if info.initrd_size > 0 {
        let end = info.initrd_gpa.saturating_add(info.initrd_size);
        let above_4g_ok = kernel.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G != 0;
        if end - 1 > u64::from(kernel.initrd_addr_max) && !above_4g_ok {
            return Err(LinuxError::InitrdTooHigh {
                end,
                max: kernel.initrd_addr_max,
            });
        }
    }
    let mut bp = [0u8; 4096];
    put(&mut bp, HDR_OFFSET, kernel.header());
    put(&mut bp, offset::TYPE_OF_LOADER, &[LOADER_TYPE_UNDEFINED]);
    put(
        &mut bp,
        offset::LOADFLAGS,
        &[kernel.loadflags | CAN_USE_HEAP],
    );
    put(&mut bp, offset::HEAP_END_PTR, &HEAP_END_PTR.to_le_bytes());
    let lo = |v: u64| (v as u32).to_le_bytes();
    let hi = |v: u64| ((v >> 32) as u32).to_le_bytes();
    put(&mut bp, offset::CMD_LINE_PTR, &lo(info.cmdline_gpa));
    put(&mut bp, offset::EXT_CMD_LINE_PTR, &hi(info.cmdline_gpa));
    if info.initrd_size > 0 {
        put(&mut bp, offset::RAMDISK_IMAGE, &lo(info.initrd_gpa));
        put(&mut bp, offset::EXT_RAMDISK_IMAGE, &hi(info.initrd_gpa));
        put(&mut bp, offset::RAMDISK_SIZE, &lo(info.initrd_size));
        put(&mut bp, offset::EXT_RAMDISK_SIZE, &hi(info.initrd_size));
    }
    put(&mut bp, offset::HARDWARE_SUBARCH, &0u32.to_le_bytes());
    put(&mut bp, offset::E820_ENTRIES, &[info.e820.len() as u8]);
    for (i, e) in info.e820.iter().enumerate() {
        let at = offset::E820_TABLE + 20 * i;
        put(&mut bp, at, &e.addr.to_le_bytes());
        put(&mut bp, at + 8, &e.size.to_le_bytes());
        put(&mut bp, at + 16, &e.kind.to_le_bytes());
    }
    put(
        &mut bp,
        offset::ACPI_RSDP_ADDR,
        &info.acpi_rsdp.to_le_bytes(),
    );
    Ok(bp)
}

/// Writes [`boot_params`] at `at` and the NUL-terminated command line at
/// `info.cmdline_gpa`. Nothing is written unless both fit in `mem`.
pub fn write_boot_params(
    mem: &mut impl GuestMemory,
    at: u64,
    kernel: &BzImage,
    info: &BootInfo<'_>,
) -> Result<(), LinuxError> {
    let bp = boot_params(kernel, info)?;
    if kernel.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G == 0 {
        let cmdline_end = info
            .cmdline_gpa
            .saturating_add(info.cmdline.len() as u64 + 1);
        for (what, end) in [
            ("command line", cmdline_end),
            ("boot_params", at.saturating_add(BOOT_PARAMS_SIZE)),
        ] {
            if end > 1 << 32 {
                return Err(LinuxError::Above4G { what, end });
            }
        }
    }
    check_range(mem.size(), at, BOOT_PARAMS_SIZE)?;
    check_range(mem.size(), info.cmdline_gpa, info.cmdline.len() as u64 + 1)?;
    mem.write(info.cmdline_gpa, info.cmdline.as_bytes())?;
    mem.write(info.cmdline_gpa + info.cmdline.len() as u64, &[0])?;
    mem.write(at, &bp)?;
    Ok(())
}

/// Bytes of page tables [`write_identity_page_tables`] writes to map `[0, up_to)`.
pub fn identity_page_tables_size(up_to: u64) -> u64 {
    (2 + up_to.div_ceil(1 << 30)) * 4096
}

/// Writes 4-level page tables at `at` (4 KiB-aligned) that identity-map `[0, up_to)`
/// (rounded up to 1 GiB, at most [`IDENTITY_MAP_LIMIT`]) with 2 MiB read/write pages: the
/// PML4 at `at`, the PDPT at `at + 4 KiB`, then one page directory per GiB. Returns the value
/// for CR3 (`at`). Uses [`identity_page_tables_size`] bytes.
pub fn write_identity_page_tables(
    mem: &mut impl GuestMemory,
    at: u64,
    up_to: u64,
) -> Result<u64, LinuxError> {
    let size = identity_page_tables_size(up_to.min(IDENTITY_MAP_LIMIT));
    let bad = MemoryError::OutOfRange {
        gpa: at,
        len: size,
        size: mem.size(),
    };
    if !at.is_multiple_of(4096) || up_to > IDENTITY_MAP_LIMIT {
        return Err(LinuxError::Memory(bad));
    }
    check_range(mem.size(), at, size)?;
    mem.fill(at, size, 0)?;
    const PRESENT_RW: u64 = 0b11;
    const HUGE: u64 = 1 << 7;
    let pdpt = at + 4096;
    mem.write(at, &(pdpt | PRESENT_RW).to_le_bytes())?;
    let gigs = up_to.div_ceil(1 << 30);
    for g in 0..gigs {
        let pd = at + 8192 + g * 4096;
        mem.write(pdpt + 8 * g, &(pd | PRESENT_RW).to_le_bytes())?;
        let mut page = [0u8; 4096];
        for (i, slot) in page.chunks_exact_mut(8).enumerate() {
            let addr = (g << 30) + (i as u64) * TWO_MIB;
            slot.copy_from_slice(&(addr | PRESENT_RW | HUGE).to_le_bytes());
        }
        mem.write(pd, &page)?;
    }
    Ok(at)
}

/// The boot GDT: null, null, 64-bit code at [`BOOT_CS`], flat data at [`BOOT_DS`].
pub const BOOT_GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// Writes [`BOOT_GDT`] at `at` (8-byte aligned advised); returns (base, limit) for GDTR.
pub fn write_boot_gdt(mem: &mut impl GuestMemory, at: u64) -> Result<(u64, u16), LinuxError> {
    let mut bytes = [0u8; BOOT_GDT_SIZE as usize];
    for (slot, d) in bytes.chunks_exact_mut(8).zip(BOOT_GDT) {
        slot.copy_from_slice(&d.to_le_bytes());
    }
    mem.write(at, &bytes)?;
    Ok((at, BOOT_GDT_SIZE as u16 - 1))
}

/// The vCPU state at `startup_64` (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry64 {
    /// `startup_64`.
    pub rip: u64,
    /// The `boot_params` address.
    pub rsi: u64,
    /// `RFLAGS`: interrupts off.
    pub rflags: u64,
    /// `CR0`: PE, ET, NE, PG ([`ENTRY_CR0`]).
    pub cr0: u64,
    /// `CR3`: the identity map.
    pub cr3: u64,
    /// `CR4`: PAE.
    pub cr4: u64,
    /// `EFER`: LME, LMA.
    pub efer: u64,
    /// GDTR base.
    pub gdt_base: u64,
    /// GDTR limit.
    pub gdt_limit: u16,
    /// CS selector ([`BOOT_CS`]; descriptor `BOOT_GDT[2]`).
    pub cs: u16,
    /// DS, ES, SS, FS, GS selector ([`BOOT_DS`]; descriptor `BOOT_GDT[3]`).
    pub ds: u16,
}

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;

/// `CR0` at `startup_64`: PE, ET, NE, PG. NE is what a 64-bit kernel runs with (and what VMX
/// operation forces): with it already set, the kernel's first full `CR0` write (`CR0_STATE`
/// in `secondary_startup_64`) changes no bit the hypervisor owns, so it takes effect without a
/// VM exit, which clears `CD` and `NW` as the kernel means to (VM entry never loads `CD`/`NW`,
/// so a guest inherits the processor's, e.g. the reset value `CD|NW` under Bochs, and only a
/// `MOV CR0` the guest executes itself changes them).
pub const ENTRY_CR0: u64 = CR0_PG | CR0_NE | CR0_ET | CR0_PE;

/// The vCPU state to enter a kernel loaded at `load_address`.
pub fn entry_state(load_address: u64, boot_params: u64, cr3: u64, gdt: (u64, u16)) -> Entry64 {
    Entry64 {
        rip: BzImage::entry_64(load_address),
        rsi: boot_params,
        rflags: 0x2,
        cr0: ENTRY_CR0,
        cr3,
        cr4: 1 << 5,
        efer: (1 << 8) | (1 << 10),
        gdt_base: gdt.0,
        gdt_limit: gdt.1,
        cs: BOOT_CS,
        ds: BOOT_DS,
    }
}

/// Loads `kernel` (parsed from `image`) into `mem` as `layout` ([`plan_layout`]) says and
/// writes everything it needs but the initrd's bytes (the caller copies them to
/// `layout.initrd_gpa`): the protected-mode kernel, `boot_params` with `cmdline`, the e820
/// map and the ACPI RSDP address (0: none), the identity page tables and the boot GDT.
/// Returns the vCPU state for `startup_64`.
pub fn load(
    mem: &mut impl GuestMemory,
    image: &[u8],
    kernel: &BzImage,
    layout: &LinuxLayout,
    cmdline: &str,
    e820: &[MemmapEntry],
    acpi_rsdp: u64,
) -> Result<Entry64, LinuxError> {
    let info = BootInfo {
        cmdline_gpa: layout.cmdline,
        cmdline,
        initrd_gpa: layout.initrd_gpa,
        initrd_size: layout.initrd_size,
        e820,
        acpi_rsdp,
    };
    // Everything that can be refused is checked before anything is written.
    boot_params(kernel, &info)?;
    check_range(mem.size(), layout.load_address, kernel.kernel_size)?;
    load_kernel(mem, image, kernel, layout.load_address)?;
    write_boot_params(mem, layout.boot_params, kernel, &info)?;
    let cr3 = write_identity_page_tables(mem, layout.page_tables, layout.map_up_to)?;
    let gdt = write_boot_gdt(mem, layout.gdt)?;
    Ok(entry_state(
        layout.load_address,
        layout.boot_params,
        cr3,
        gdt,
    ))
}

#[cfg(test)]
mod tests;
