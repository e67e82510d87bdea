//! The guest's ACPI firmware tables: RSDP, XSDT, FADT, FACS, MADT and a minimal DSDT.
//!
//! An unmodified Linux guest finds its interrupt controllers, its power-off register and its
//! reset register in ACPI tables; [`write_acpi_tables`] builds them in guest memory (through
//! [`GuestMemory`]) from a 64-byte aligned address, all below 4 GiB:
//!
//! ```text
//! at + 0x000  RSDP   36 bytes, ACPI 2.0+ (revision 2), RSDT address 0, XSDT address
//! at + 0x040  XSDT   36 + 8 * 2: the FADT and the MADT
//! at + 0x080  FADT   276 bytes, revision 6 (ACPI 6.0), full (not hardware-reduced) ACPI;
//!                    FACS by its 32-bit FIRMWARE_CTRL, DSDT by both DSDT and X_DSDT
//! at + 0x1c0  FACS   64 bytes, 64-byte aligned, version 2
//! at + 0x200  MADT   44 + 8 per vCPU + 12 + 2 * 10 + 6 bytes
//! next 16     DSDT   36-byte header + AML (\_S5, \_SB.PCI0)
//! ```
//!
//! Every table is checksummed (the RSDP twice: its first 20 bytes and all 36). The range used,
//! [`AcpiLayout::start`] to [`AcpiLayout::end`], must appear in the guest's e820 map as
//! [`ACPI_MEMMAP_TYPE`] (ACPI NVS, because it holds the FACS, which the specification places
//! in NVS memory), and the RSDP address goes to the guest in `boot_params.acpi_rsdp_addr`
//! ([`crate::linux`]) or `hvm_start_info.rsdp_paddr` ([`crate::start_info`]), so the guest
//! never has to scan the BIOS area for it.
//!
//! # The virtual platform the tables describe
//!
//! - MADT: local APICs at [`LOCAL_APIC_ADDRESS`] with `PCAT_COMPAT` (dual 8259s present, to be
//!   masked); vCPU `i` is ACPI processor UID `i` with APIC ID `i`, enabled; one I/O APIC at
//!   [`IO_APIC_ADDRESS`] with GSI base 0; interrupt source overrides IRQ 0 → GSI 2 (edge,
//!   active high: the PIT on the I/O APIC's pin 2) and IRQ 9 → GSI 9 (level, active low: the
//!   SCI); NMI on LINT1 of every processor.
//! - FADT: the PM registers are I/O ports: PM1a event block [`PM1A_EVT_PORT`] (status at
//!   0x600, enable at 0x602), PM1a control block [`PM1A_CNT_PORT`], the 24-bit ACPI PM timer at
//!   [`PM_TMR_PORT`]; no PM1b, PM2 or GPE blocks; SCI on IRQ 9; no SMI command port (the
//!   platform is always in ACPI mode, `SCI_EN` reads as 1); reset by writing
//!   [`RESET_VALUE`] to I/O port [`RESET_PORT`] (`RESET_REG_SUP`); sleep button a control
//!   method (there is none), power button fixed; C2/C3 not supported.
//! - DSDT: `\_S5` = `Package { 5, 5, 0, 0 }`: Linux powers off by writing `SLP_TYP` =
//!   [`S5_SLP_TYP`] (bits 10-12) with `SLP_EN` (bit 13), i.e. `0x3400`, to PM1a_CNT (keeping
//!   the other bits it read); and `\_SB.PCI0`, a PCI root
//!   bridge (`_HID` PNP0A03, `_UID` 0, `_BBN` 0) without `_CRS` (Linux then uses its default
//!   windows).
//!
//! The hypervisor must emulate those ports for the tables to be truthful.

use crate::mem::{GuestMemory, MemoryError, check_range};
use crate::start_info::MEMMAP_TYPE_NVS;
use core::fmt;

/// Physical address of every local APIC (MADT header).
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;
/// Physical address of the I/O APIC.
pub const IO_APIC_ADDRESS: u32 = 0xfec0_0000;
/// The SCI's interrupt (ISA IRQ 9, GSI 9).
pub const SCI_IRQ: u8 = 9;
/// PM1a event block: PM1 status (2 bytes) then PM1 enable (2 bytes).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// Length of the PM1a event block.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control block (2 bytes): `SCI_EN` bit 0, `SLP_TYP` bits 10-12, `SLP_EN` bit 13.
pub const PM1A_CNT_PORT: u16 = 0x604;
/// Length of the PM1a control block.
pub const PM1_CNT_LEN: u8 = 2;
/// The ACPI PM timer (4 bytes, 24 bits counting at 3.579545 MHz).
pub const PM_TMR_PORT: u16 = 0x608;
/// Length of the PM timer block.
pub const PM_TMR_LEN: u8 = 4;
/// The reset register: the PCI reset control port.
pub const RESET_PORT: u16 = 0xcf9;
/// What the guest writes to [`RESET_PORT`] to reset (full reset, `SYS_RST | RST_CPU`).
pub const RESET_VALUE: u8 = 0x06;
/// `SLP_TYP` of the S5 (soft off) state, as `\_S5` gives it.
pub const S5_SLP_TYP: u8 = 5;
/// The e820 / `hvm_memmap` type for [`AcpiLayout::start`] .. [`AcpiLayout::end`].
pub const ACPI_MEMMAP_TYPE: u32 = MEMMAP_TYPE_NVS;
/// The most vCPUs the MADT describes (xAPIC IDs 0 to 254; 255 is the broadcast ID).
pub const MAX_VCPUS: u32 = 255;
/// The first 6 bytes of every table's OEM fields.
pub const OEM_ID: &[u8; 6] = b"BASALT";
/// The OEM table ID of every table.
pub const OEM_TABLE_ID: &[u8; 8] = b"BASALTVM";

/// FADT flag `WBINVD`: the processor's WBINVD works.
pub const FADT_WBINVD: u32 = 1 << 0;
/// FADT flag `PROC_C1`: C1 (HLT) works on every processor.
pub const FADT_PROC_C1: u32 = 1 << 2;
/// FADT flag `SLP_BUTTON`: the sleep button, if any, is a control method device.
pub const FADT_SLP_BUTTON: u32 = 1 << 5;
/// FADT flag `TMR_VAL_EXT`: the PM timer has 32 bits (Basalt's has 24: clear).
pub const FADT_TMR_VAL_EXT: u32 = 1 << 8;
/// FADT flag `RESET_REG_SUP`: the reset register works.
pub const FADT_RESET_REG_SUP: u32 = 1 << 10;
/// FADT flag `HW_REDUCED_ACPI` (clear: the fixed hardware above exists).
pub const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// The FADT flags Basalt sets.
pub const FADT_FLAGS: u32 = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_RESET_REG_SUP;

/// MADT flag `PCAT_COMPAT`: the system also has dual 8259 PICs.
pub const MADT_PCAT_COMPAT: u32 = 1;
/// MPS INTI flags: active high, edge triggered.
pub const MPS_INTI_EDGE_HIGH: u16 = 0b0101;
/// MPS INTI flags: active low, level triggered.
pub const MPS_INTI_LEVEL_LOW: u16 = 0b1111;

/// `IAPC_BOOT_ARCH` bit `VGA Not Present`.
pub const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// Where a guest's tables go: the BIOS area, where the RSDP scan finds them too (reserved in
/// [`crate::start_info::guest_memmap`]). Ring 0 and the toolstack both put them here.
pub const GUEST_TABLES_GPA: u64 = 0xe0000;

/// Size of the common table header.
pub const SDT_HEADER_SIZE: u64 = 36;
/// Size of the ACPI 2.0+ RSDP.
pub const RSDP_SIZE: u64 = 36;
/// Revision of the FADT.
pub const FADT_REVISION: u8 = 6;
/// Size of the FACS.
pub const FACS_SIZE: u64 = 64;

const RSDP_OFFSET: u64 = 0;
const XSDT_OFFSET: u64 = 0x40;
const FADT_OFFSET: u64 = 0x80;
const FACS_OFFSET: u64 = 0x1c0;
const MADT_OFFSET: u64 = 0x200;
/// MADT bytes besides the Processor Local APIC and Interrupt Source Override entries.
const MADT_FIXED: u64 = SDT_HEADER_SIZE + 8 + 12 + 6;

/// An Interrupt Source Override (MADT entry type 2) on bus 0 (ISA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceOverride {
    /// The ISA IRQ.
    pub irq: u8,
    /// The global system interrupt it is wired to.
    pub gsi: u32,
    /// MPS INTI flags (polarity bits 1:0, trigger mode bits 3:2).
    pub flags: u16,
}

/// ISA IRQ 0 → GSI 2, edge, active high: the PIT on the emulated I/O APIC's pin 2.
pub const PIT_OVERRIDE: SourceOverride = SourceOverride {
    irq: 0,
    gsi: 2,
    flags: MPS_INTI_EDGE_HIGH,
};

/// The guests' overrides: [`PIT_OVERRIDE`] and the SCI (IRQ 9 → GSI 9, level, active low).
const GUEST_OVERRIDES: [SourceOverride; 2] = [
    PIT_OVERRIDE,
    SourceOverride {
        irq: SCI_IRQ,
        gsi: SCI_IRQ as u32,
        flags: MPS_INTI_LEVEL_LOW,
    },
];

/// What the tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs: 1 to [`MAX_VCPUS`]. vCPU `i` has APIC ID `i`.
    pub vcpus: u32,
    /// The I/O APIC's ID.
    pub ioapic_id: u8,
    /// The FADT's `IAPC_BOOT_ARCH` flags (no legacy devices and no i8042 when clear).
    pub iapc_boot_arch: u16,
}

impl AcpiConfig {
    /// `vcpus` vCPUs, I/O APIC ID 0 (as QEMU), no VGA, no i8042, no LPC legacy devices.
    pub const fn new(vcpus: u32) -> Self {
        Self {
            vcpus,
            ioapic_id: 0,
            iapc_boot_arch: IAPC_VGA_NOT_PRESENT,
        }
    }
}

/// Where [`write_acpi_tables`] put each table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcpiLayout {
    /// The RSDP: what the guest gets as `acpi_rsdp_addr` / `rsdp_paddr`.
    pub rsdp: u64,
    /// The XSDT.
    pub xsdt: u64,
    /// The FADT (signature `FACP`).
    pub fadt: u64,
    /// The FACS.
    pub facs: u64,
    /// The MADT (signature `APIC`).
    pub madt: u64,
    /// The DSDT.
    pub dsdt: u64,
    /// First byte used (= `rsdp`).
    pub start: u64,
    /// One past the last byte used.
    pub end: u64,
}

/// Why the tables could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// `vcpus` is 0 or above [`MAX_VCPUS`].
    BadVcpuCount {
        /// The count given.
        vcpus: u32,
    },
    /// The tables would not end below 4 GiB (the FADT's 32-bit fields could not hold their
    /// addresses).
    Above4G {
        /// Where they would end.
        end: u64,
    },
    /// The tables do not fit in the guest's memory.
    Memory(MemoryError),
}

impl From<MemoryError> for AcpiError {
    fn from(e: MemoryError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BadVcpuCount { vcpus } => write!(
                f,
                "the ACPI tables can describe 1 to {MAX_VCPUS} vCPUs, not {vcpus}: lower vcpus="
            ),
            Self::Above4G { end } => write!(
                f,
                "the ACPI tables would end at 0x{end:x}, above 4 GiB: place them lower"
            ),
            Self::Memory(e) => write!(
                f,
                "the ACPI tables do not fit in the domain's memory ({e}): place them lower or \
                 give the domain more memory"
            ),
        }
    }
}

/// Bytes of the MADT for `vcpus` vCPUs.
pub fn madt_size(vcpus: u32) -> u64 {
    madt_bytes(vcpus, GUEST_OVERRIDES.len())
}

/// Bytes of a MADT for `vcpus` vCPUs and `overrides` interrupt source overrides.
fn madt_bytes(vcpus: u32, overrides: usize) -> u64 {
    MADT_FIXED + 8 * u64::from(vcpus) + 10 * overrides as u64
}

/// Bytes of the DSDT (header and AML).
pub fn dsdt_size() -> u64 {
    SDT_HEADER_SIZE + dsdt_aml().1 as u64
}

/// Bytes [`write_acpi_tables`] uses from a 64-byte aligned `at`.
pub fn acpi_tables_size(vcpus: u32) -> u64 {
    align16(MADT_OFFSET + madt_size(vcpus)) + dsdt_size()
}

fn align16(v: u64) -> u64 {
    (v + 15) & !15
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// A table being written to guest memory, its checksum kept as it goes.
struct Table<'m, M: GuestMemory> {
    mem: &'m mut M,
    start: u64,
    pos: u64,
    sum: u8,
}

impl<'m, M: GuestMemory> Table<'m, M> {
    /// Starts a table with its header (length and checksum filled in by [`Self::finish`]).
    fn new(
        mem: &'m mut M,
        start: u64,
        signature: &[u8; 4],
        revision: u8,
    ) -> Result<Self, MemoryError> {
        let mut t = Self {
            mem,
            start,
            pos: start,
            sum: 0,
        };
        t.bytes(signature)?;
        t.u32(0)?; // length
        t.u8(revision)?;
        t.u8(0)?; // checksum
        t.bytes(OEM_ID)?;
        t.bytes(OEM_TABLE_ID)?;
        t.u32(1)?; // OEM revision
        t.bytes(b"BSLT")?; // creator ID
        t.u32(1)?; // creator revision
        Ok(t)
    }

    fn bytes(&mut self, b: &[u8]) -> Result<(), MemoryError> {
        self.mem.write(self.pos, b)?;
        self.pos += b.len() as u64;
        self.sum = b.iter().fold(self.sum, |s, x| s.wrapping_add(*x));
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), MemoryError> {
        self.bytes(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), MemoryError> {
        self.bytes(&v.to_le_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), MemoryError> {
        self.bytes(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), MemoryError> {
        self.bytes(&v.to_le_bytes())
    }

    /// A Generic Address Structure.
    fn gas(&mut self, space: u8, bits: u8, access: u8, address: u64) -> Result<(), MemoryError> {
        self.bytes(&[space, bits, 0, access])?;
        self.u64(address)
    }

    /// An I/O port GAS, or the null GAS for port 0.
    fn io_gas(&mut self, port: u16, len: u8, access: u8) -> Result<(), MemoryError> {
        if port == 0 {
            self.gas(0, 0, 0, 0)
        } else {
            self.gas(GAS_SYSTEM_IO, len * 8, access, u64::from(port))
        }
    }

    /// Fills in length and checksum; returns the end.
    fn finish(self) -> Result<u64, MemoryError> {
        let len = (self.pos - self.start) as u32;
        let len_bytes = len.to_le_bytes();
        self.mem.write(self.start + 4, &len_bytes)?;
        let sum = len_bytes.iter().fold(self.sum, |s, x| s.wrapping_add(*x));
        self.mem.write(self.start + 9, &[0u8.wrapping_sub(sum)])?;
        Ok(self.pos)
    }
}

const GAS_SYSTEM_IO: u8 = 1;
const ACCESS_BYTE: u8 = 1;
const ACCESS_WORD: u8 = 2;
const ACCESS_DWORD: u8 = 3;

/// Checks `config.vcpus`, then places `size` bytes at `at` rounded up to 64 bytes, inside `mem`
/// and ending at or below `limit`; returns the start.
fn place(
    mem: &impl GuestMemory,
    at: u64,
    size: u64,
    config: &AcpiConfig,
    limit: u64,
) -> Result<u64, AcpiError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(AcpiError::BadVcpuCount {
            vcpus: config.vcpus,
        });
    }
    let too_big = MemoryError::OutOfRange {
        gpa: at,
        len: size,
        size: mem.size(),
    };
    let start = at.checked_add(63).ok_or(too_big)? & !63;
    let end = start.checked_add(size).ok_or(too_big)?;
    if end > limit {
        return Err(AcpiError::Above4G { end });
    }
    check_range(mem.size(), start, size)?;
    Ok(start)
}

/// Writes the guest's ACPI tables from `at` rounded up to 64 bytes (see the module
/// documentation for the layout). Nothing is written unless the whole range fits in `mem` and
/// ends at or below 4 GiB.
pub fn write_acpi_tables(
    mem: &mut impl GuestMemory,
    at: u64,
    config: &AcpiConfig,
) -> Result<AcpiLayout, AcpiError> {
    let size = acpi_tables_size(config.vcpus);
    let start = place(mem, at, size, config, 1 << 32)?;
    let end = start + size;

    let rsdp = start + RSDP_OFFSET;
    let xsdt = start + XSDT_OFFSET;
    let fadt = start + FADT_OFFSET;
    let facs = start + FACS_OFFSET;
    let madt = start + MADT_OFFSET;
    let dsdt = align16(madt + madt_size(config.vcpus));

    // Zero the whole range, padding included.
    mem.fill(start, size, 0)?;

    write_rsdp(mem, rsdp, OEM_ID, xsdt)?;

    // XSDT.
    let mut t = Table::new(mem, xsdt, b"XSDT", 1)?;
    t.u64(fadt)?;
    t.u64(madt)?;
    t.finish()?;

    // FACS (no checksum).
    let mut f = [0u8; FACS_SIZE as usize];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&(FACS_SIZE as u32).to_le_bytes());
    f[32] = 2; // version
    mem.write(facs, &f)?;

    write_fadt(mem, fadt, facs, dsdt, config)?;
    write_madt(mem, madt, config, GUEST_OVERRIDES)?;

    let mut t = Table::new(mem, dsdt, b"DSDT", 2)?;
    let (aml, len) = dsdt_aml();
    t.bytes(aml.get(..len).unwrap_or(&[]))?;
    let dsdt_end = t.finish()?;
    debug_assert_eq!(dsdt_end, end);

    Ok(AcpiLayout {
        rsdp,
        xsdt,
        fadt,
        facs,
        madt,
        dsdt,
        start,
        end: dsdt_end,
    })
}

fn write_fadt(
    mem: &mut impl GuestMemory,
    fadt: u64,
    facs: u64,
    dsdt: u64,
    config: &AcpiConfig,
) -> Result<(), MemoryError> {
    let mut t = Table::new(mem, fadt, b"FACP", FADT_REVISION)?;
    t.u32(facs as u32)?; // 36 FIRMWARE_CTRL: the FACS (below 4 GiB: checked)
    t.u32(dsdt as u32)?; // 40 DSDT
    t.u8(0)?; // 44 reserved
    t.u8(0)?; // 45 Preferred_PM_Profile: unspecified
    t.u16(u16::from(SCI_IRQ))?; // 46 SCI_INT
    t.u32(0)?; // 48 SMI_CMD: none, always in ACPI mode
    t.bytes(&[0, 0, 0, 0])?; // 52 ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    t.u32(u32::from(PM1A_EVT_PORT))?; // 56 PM1a_EVT_BLK
    t.u32(0)?; // 60 PM1b_EVT_BLK
    t.u32(u32::from(PM1A_CNT_PORT))?; // 64 PM1a_CNT_BLK
    t.u32(0)?; // 68 PM1b_CNT_BLK
    t.u32(0)?; // 72 PM2_CNT_BLK
    t.u32(u32::from(PM_TMR_PORT))?; // 76 PM_TMR_BLK
    t.u32(0)?; // 80 GPE0_BLK
    t.u32(0)?; // 84 GPE1_BLK
    // 88 PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN, GPE0_BLK_LEN, GPE1_BLK_LEN,
    // GPE1_BASE, CST_CNT
    t.bytes(&[PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0])?;
    t.u16(101)?; // 96 P_LVL2_LAT > 100: no C2
    t.u16(1001)?; // 98 P_LVL3_LAT > 1000: no C3
    t.u16(0)?; // 100 FLUSH_SIZE
    t.u16(0)?; // 102 FLUSH_STRIDE
    t.bytes(&[0, 0, 0, 0, 0])?; // 104 DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY
    t.u16(config.iapc_boot_arch)?; // 109 IAPC_BOOT_ARCH
    t.u8(0)?; // 111 reserved
    t.u32(FADT_FLAGS)?; // 112 Flags
    t.io_gas(RESET_PORT, 1, ACCESS_BYTE)?; // 116 RESET_REG
    t.u8(RESET_VALUE)?; // 128 RESET_VALUE
    t.u16(0)?; // 129 ARM_BOOT_ARCH
    t.u8(0)?; // 131 FADT minor version: 6.0
    // 132 X_FIRMWARE_CTRL: must be 0 when FIRMWARE_CTRL is set (ACPI 6.0, 5.2.9).
    t.u64(0)?;
    t.u64(dsdt)?; // 140 X_DSDT
    t.io_gas(PM1A_EVT_PORT, PM1_EVT_LEN, ACCESS_WORD)?; // 148 X_PM1a_EVT_BLK
    t.io_gas(0, 0, 0)?; // 160 X_PM1b_EVT_BLK
    t.io_gas(PM1A_CNT_PORT, PM1_CNT_LEN, ACCESS_WORD)?; // 172 X_PM1a_CNT_BLK
    t.io_gas(0, 0, 0)?; // 184 X_PM1b_CNT_BLK
    t.io_gas(0, 0, 0)?; // 196 X_PM2_CNT_BLK
    t.io_gas(PM_TMR_PORT, PM_TMR_LEN, ACCESS_DWORD)?; // 208 X_PM_TMR_BLK
    t.io_gas(0, 0, 0)?; // 220 X_GPE0_BLK
    t.io_gas(0, 0, 0)?; // 232 X_GPE1_BLK
    t.io_gas(0, 0, 0)?; // 244 SLEEP_CONTROL_REG
    t.io_gas(0, 0, 0)?; // 256 SLEEP_STATUS_REG
    t.bytes(b"BASALTHV")?; // 268 Hypervisor Vendor Identity
    t.finish()?;
    Ok(())
}

/// Writes an ACPI 2.0+ RSDP at `at` (revision 2, no RSDT, both checksums).
fn write_rsdp(
    mem: &mut impl GuestMemory,
    at: u64,
    oem_id: &[u8; 6],
    xsdt: u64,
) -> Result<(), MemoryError> {
    let mut r = [0u8; RSDP_SIZE as usize];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(oem_id);
    r[15] = 2; // revision: ACPI 2.0+
    // 16..20: RsdtAddress 0 (no RSDT).
    r[20..24].copy_from_slice(&(RSDP_SIZE as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..20]);
    r[32] = checksum(&r);
    mem.write(at, &r)
}

/// Writes the MADT of the module documentation with `overrides`; returns its end.
fn write_madt(
    mem: &mut impl GuestMemory,
    madt: u64,
    config: &AcpiConfig,
    overrides: impl IntoIterator<Item = SourceOverride>,
) -> Result<u64, MemoryError> {
    let mut t = Table::new(mem, madt, b"APIC", 5)?;
    t.u32(LOCAL_APIC_ADDRESS)?;
    t.u32(MADT_PCAT_COMPAT)?;
    for id in 0..config.vcpus {
        // Processor Local APIC: type 0, length 8, UID, APIC ID, flags (Enabled).
        t.bytes(&[0, 8, id as u8, id as u8])?;
        t.u32(1)?;
    }
    // I/O APIC: type 1, length 12, ID, reserved, address, GSI base.
    t.bytes(&[1, 12, config.ioapic_id, 0])?;
    t.u32(IO_APIC_ADDRESS)?;
    t.u32(0)?;
    for o in overrides {
        // Interrupt Source Override: type 2, length 10, bus 0 (ISA), source IRQ, GSI, flags.
        t.bytes(&[2, 10, 0, o.irq])?;
        t.u32(o.gsi)?;
        t.u16(o.flags)?;
    }
    // Local APIC NMI: type 4, length 6, UID 0xFF (all processors), flags (bus default), LINT1.
    t.bytes(&[4, 6, 0xff])?;
    t.u16(0)?;
    t.u8(1)?;
    t.finish()
}

/// Capacity of the DSDT's AML buffer.
const AML_CAPACITY: usize = 96;

/// AML opcodes and prefixes used here (ACPI 6.x, chapter 20).
mod op {
    pub const ZERO: u8 = 0x00;
    pub const ONE: u8 = 0x01;
    pub const NAME: u8 = 0x08;
    pub const BYTE_PREFIX: u8 = 0x0a;
    pub const WORD_PREFIX: u8 = 0x0b;
    pub const DWORD_PREFIX: u8 = 0x0c;
    pub const QWORD_PREFIX: u8 = 0x0e;
    pub const SCOPE: u8 = 0x10;
    pub const PACKAGE: u8 = 0x12;
    pub const EXT_PREFIX: u8 = 0x5b;
    pub const DEVICE: u8 = 0x82;
    pub const ROOT: u8 = 0x5c;
}

/// Encodes an AML `PkgLength` for a package whose contents after the `PkgLength` are `body`
/// bytes: the encoded length counts its own bytes. Returns the bytes and how many are used;
/// `None` above the 28-bit limit.
pub fn aml_pkg_length(body: usize) -> Option<([u8; 4], usize)> {
    if body + 1 < 0x40 {
        return Some(([(body + 1) as u8, 0, 0, 0], 1));
    }
    for extra in 1..=3usize {
        let total = body + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut out = [0u8; 4];
            out[0] = ((extra as u8) << 6) | (total & 0xf) as u8;
            for (i, slot) in out.iter_mut().enumerate().skip(1).take(extra) {
                *slot = (total >> (4 + 8 * (i - 1))) as u8;
            }
            return Some((out, extra + 1));
        }
    }
    None
}

/// Encodes an EISA ID such as `PNP0A03` as AML's 32-bit value (`EisaId()` in ASL).
pub fn eisa_id(id: &[u8; 7]) -> u32 {
    let letter = |c: u8| u32::from(c.wrapping_sub(b'@') & 0x1f);
    let hex = |c: u8| {
        u32::from(match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            b'a'..=b'f' => c - b'a' + 10,
            _ => 0,
        })
    };
    let vendor = (letter(id[0]) << 10) | (letter(id[1]) << 5) | letter(id[2]);
    let product = (hex(id[3]) << 12) | (hex(id[4]) << 8) | (hex(id[5]) << 4) | hex(id[6]);
    // Both 16-bit halves are stored big-endian in the little-endian dword.
    u32::from((vendor as u16).swap_bytes()) | (u32::from((product as u16).swap_bytes()) << 16)
}

/// A fixed-capacity AML byte buffer.
struct Aml {
    buf: [u8; AML_CAPACITY],
    len: usize,
}

impl Aml {
    const fn new() -> Self {
        Self {
            buf: [0; AML_CAPACITY],
            len: 0,
        }
    }

    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + b.len()) {
            dst.copy_from_slice(b);
        }
        self.len += b.len();
    }

    fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    /// `Name(name, integer)` with the shortest integer encoding.
    fn name_integer(&mut self, name: &[u8], value: u64) {
        self.bytes(&[op::NAME]);
        self.bytes(name);
        self.integer(value);
    }

    fn integer(&mut self, value: u64) {
        match value {
            0 => self.bytes(&[op::ZERO]),
            1 => self.bytes(&[op::ONE]),
            2..=0xff => self.bytes(&[op::BYTE_PREFIX, value as u8]),
            0x100..=0xffff => {
                self.bytes(&[op::WORD_PREFIX]);
                self.bytes(&(value as u16).to_le_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.bytes(&[op::DWORD_PREFIX]);
                self.bytes(&(value as u32).to_le_bytes());
            }
            _ => {
                self.bytes(&[op::QWORD_PREFIX]);
                self.bytes(&value.to_le_bytes());
            }
        }
    }

    /// `opcode PkgLength rest body`: a package-length object around `rest` (name, count)
    /// and `body`.
    fn package(&mut self, opcode: &[u8], rest: &[u8], body: &[u8]) {
        self.bytes(opcode);
        let (pl, n) = aml_pkg_length(rest.len() + body.len()).unwrap_or(([0; 4], 1));
        self.bytes(pl.get(..n).unwrap_or(&[]));
        self.bytes(rest);
        self.bytes(body);
    }
}

/// The DSDT's AML (see the module documentation) and its length.
fn dsdt_aml() -> ([u8; AML_CAPACITY], usize) {
    // Name (\_S5, Package (4) { 5, 5, 0, 0 })
    let mut s5 = Aml::new();
    for v in [S5_SLP_TYP, S5_SLP_TYP, 0, 0] {
        s5.integer(u64::from(v));
    }
    let mut aml = Aml::new();
    aml.bytes(&[op::NAME, op::ROOT]);
    aml.bytes(b"_S5_");
    aml.package(&[op::PACKAGE], &[4], s5.as_slice());

    // Device (PCI0) { Name (_HID, EisaId ("PNP0A03")) Name (_UID, 0) Name (_BBN, 0) }
    let mut pci0 = Aml::new();
    pci0.bytes(&[op::NAME]);
    pci0.bytes(b"_HID");
    pci0.bytes(&[op::DWORD_PREFIX]);
    pci0.bytes(&eisa_id(b"PNP0A03").to_le_bytes());
    pci0.name_integer(b"_UID", 0);
    pci0.name_integer(b"_BBN", 0);
    let mut device = Aml::new();
    device.package(&[op::EXT_PREFIX, op::DEVICE], b"PCI0", pci0.as_slice());

    // Scope (\_SB) { ... }
    aml.package(&[op::SCOPE], b"\\_SB_", device.as_slice());
    (aml.buf, aml.len.min(AML_CAPACITY))
}

pub mod dom0;

#[cfg(test)]
mod tests;
