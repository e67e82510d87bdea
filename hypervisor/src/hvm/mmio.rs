//! Emulating a guest's access to an emulated device page (docs/x86emul.md):
//! fetch the instruction at the guest's RIP through its own page tables,
//! decode it with `basalt-x86emul`, perform it against the vCPU's registers
//! and the device, and step RIP past it. An instruction that cannot be
//! fetched or decoded stops the domain with the bytes in the diagnostic.

use super::memory::GuestRam;
use super::platform::Platform;
use crate::vcpu::Loaded;
use basalt_x86emul::{
    Cpu, DecodeError, GuestPhys, Instruction, Mmio, Mode, Operation, PagingMode, WalkError, decode,
    emulate as execute, fetch,
};
use core::fmt;

/// Why an access could not be emulated.
#[derive(Debug)]
pub enum MmioError {
    /// The instruction bytes could not be read through the guest's page
    /// tables.
    Fetch {
        /// The guest-physical address accessed.
        gpa: u64,
        /// The walk's complaint.
        error: WalkError,
    },
    /// The bytes at RIP are not an instruction Basalt emulates.
    Decode {
        /// The guest-physical address accessed.
        gpa: u64,
        /// The decoder's complaint.
        error: DecodeError,
        /// The bytes fetched.
        bytes: [u8; 15],
        /// How many.
        len: usize,
    },
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetch { gpa, error } => write!(
                f,
                "access to device memory at guest-physical {gpa:#x}: the instruction cannot be \
                 fetched ({error})"
            ),
            Self::Decode {
                gpa,
                error,
                bytes,
                len,
            } => {
                write!(
                    f,
                    "access to device memory at guest-physical {gpa:#x} by an instruction that \
                     is not emulated ({error}); bytes:"
                )?;
                for b in &bytes[..*len] {
                    write!(f, " {b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// The domain's memory as the page walk reads it (and, for string I/O,
/// writes it: [`crate::hvm::strio`]).
pub(crate) struct Phys<'a>(pub(crate) &'a GuestRam);

impl GuestPhys for Phys<'_> {
    fn read_phys(&self, gpa: u64, out: &mut [u8]) -> bool {
        self.0.read(gpa, out).is_ok()
    }
}

/// The vCPU's registers as the executor sees them.
pub(crate) struct Regs<'a, 'b>(pub(crate) &'a mut Loaded<'b>);

impl Cpu for Regs<'_, '_> {
    fn reg(&self, n: u8) -> u64 {
        self.0.reg(n)
    }
    fn set_reg(&mut self, n: u8, value: u64) {
        self.0.set_reg(n, value);
    }
    fn rflags(&self) -> u64 {
        self.0.rflags()
    }
    fn set_rflags(&mut self, value: u64) {
        self.0.set_rflags(value);
    }
}

/// The APIC pages, for one vCPU.
struct Apics<'a> {
    platform: &'a Platform,
    vcpu: u32,
}

impl Mmio for Apics<'_> {
    fn read(&mut self, gpa: u64, size: u8) -> u64 {
        super::vapic::mmio_read(self.platform, self.vcpu, gpa, size)
    }
    fn write(&mut self, gpa: u64, _size: u8, value: u64) {
        super::vapic::mmio_write(self.platform, self.vcpu, gpa, value);
    }
}

/// No device: what a bus with nothing at an address answers (reads all
/// ones, writes go nowhere).
struct Absent;

impl Mmio for Absent {
    fn read(&mut self, _gpa: u64, _size: u8) -> u64 {
        u64::MAX
    }
    fn write(&mut self, _gpa: u64, _size: u8, _value: u64) {}
}

/// Emulates the access of vCPU `arch` to guest-physical `gpa`, where its
/// domain has neither RAM nor a device, as an access to no device: a read
/// gives all ones, a write is dropped (the answer of a PC bus with nothing
/// there, and Xen's for its PVH dom0 outside the p2m, e.g. at the HPET it
/// keeps), or to the pages of a trapped MSI-X table (`pci_pass::Table`).
/// For the control domain only (common/exit.rs); an instruction
/// that cannot be decoded stops the domain as on a device page.
pub fn emulate_absent(arch: &mut Loaded<'_>, ram: &GuestRam, gpa: u64) -> Result<(), MmioError> {
    if super::pci_pass::with(|p, _| p.msix_traps(gpa)) {
        return emulate_on(arch, ram, gpa, &mut super::pci_pass::Table);
    }
    emulate_on(arch, ram, gpa, &mut Absent)
}

/// The instruction at a vCPU's RIP, read through the guest's page tables.
pub(crate) struct AtRip {
    /// Up to 15 bytes from CS.base + RIP.
    pub bytes: [u8; 15],
    /// How many could be read.
    pub len: usize,
    /// The code size of the guest's current mode.
    pub mode: Mode,
    /// The guest's paging registers.
    pub paging: PagingMode,
}

/// The code size of vCPU `arch`'s current mode.
pub(crate) fn code_mode(arch: &Loaded<'_>) -> Mode {
    match arch.code_bits() {
        64 => Mode::Long64,
        32 => Mode::Protected32,
        _ => Mode::Real16,
    }
}

/// Fetches the instruction at the RIP of the vCPU `arch` from its domain's
/// RAM `ram` (for MMIO and string I/O emulation).
pub(crate) fn fetch_at_rip(arch: &Loaded<'_>, ram: &GuestRam) -> Result<AtRip, WalkError> {
    let paging = arch.paging_state();
    let mut bytes = [0u8; 15];
    let len = fetch(&Phys(ram), &paging, arch.rip_linear(), &mut bytes)?;
    Ok(AtRip {
        bytes,
        len,
        mode: code_mode(arch),
        paging,
    })
}

/// Emulates the access of vCPU `vcpu` (loaded: `arch`) of the domain with
/// RAM `ram` and devices `platform` to device page address `gpa` (an EPT
/// violation on a page [`crate::vcpu::is_device_page`] names).
pub fn emulate(
    arch: &mut Loaded<'_>,
    ram: &GuestRam,
    platform: &Platform,
    vcpu: u32,
    gpa: u64,
) -> Result<(), MmioError> {
    emulate_on(arch, ram, gpa, &mut Apics { platform, vcpu })
}

/// Decodes the instruction at RIP of `arch` and runs its access to `gpa`
/// on `dev`.
fn emulate_on(
    arch: &mut Loaded<'_>,
    ram: &GuestRam,
    gpa: u64,
    dev: &mut impl Mmio,
) -> Result<(), MmioError> {
    let insn = decode_at(arch, ram, gpa)?;
    let advance = execute(&insn, &mut Regs(arch), dev, gpa);
    arch.skip_emulated(advance);
    Ok(())
}

/// The instruction at RIP of `arch`, which accessed `gpa`.
fn decode_at(arch: &Loaded<'_>, ram: &GuestRam, gpa: u64) -> Result<Instruction, MmioError> {
    let AtRip {
        bytes, len, mode, ..
    } = fetch_at_rip(arch, ram).map_err(|error| MmioError::Fetch { gpa, error })?;
    decode(&bytes[..len], mode).map_err(|error| MmioError::Decode {
        gpa,
        error,
        bytes,
        len,
    })
}

/// What an access to a device model's memory needs from it (`common::ioreq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// A read of this many bytes: nothing was done; the instruction runs
    /// again with the answer.
    Read(u8),
    /// The instruction completed, writing this many bytes of this value.
    Write(u8, u64),
    /// The instruction completed without a write (`CMP`, `TEST`, a load).
    Done,
}

/// The device-model side of [`Mmio`]: the answer of the read, the write.
struct Forwarded {
    answer: u64,
    write: Option<(u8, u64)>,
}

impl Mmio for Forwarded {
    fn read(&mut self, _gpa: u64, _size: u8) -> u64 {
        self.answer
    }
    fn write(&mut self, _gpa: u64, size: u8, value: u64) {
        self.write = Some((size, value));
    }
}

/// Emulates the access of `arch` to `gpa`, a device model's memory: an
/// instruction that reads is run only once the read's `answer` is there;
/// its registers, flags and RIP change then, and a write (a store, or the
/// write of a read-modify-write) is handed back to be sent.
pub fn emulate_forwarded(
    arch: &mut Loaded<'_>,
    ram: &GuestRam,
    gpa: u64,
    answer: Option<u64>,
) -> Result<Forward, MmioError> {
    let insn = decode_at(arch, ram, gpa)?;
    let Some(answer) = answer.or((insn.operation == Operation::Store).then_some(0)) else {
        return Ok(Forward::Read(insn.size));
    };
    let mut bus = Forwarded {
        answer,
        write: None,
    };
    let advance = execute(&insn, &mut Regs(arch), &mut bus, gpa);
    arch.skip_emulated(advance);
    Ok(bus
        .write
        .map_or(Forward::Done, |(size, v)| Forward::Write(size, v)))
}
