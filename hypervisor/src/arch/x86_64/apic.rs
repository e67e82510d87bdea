//! The local APIC (Intel SDM Vol. 3A ch. 11), the legacy PICs and the I/O
//! APICs: discovery, masking, IPIs, the timer.
//!
//! x2APIC mode (registers as MSRs 0x800 + offset/16) when CPUID offers it,
//! xAPIC (MMIO) otherwise. Every CPU runs in the mode the boot CPU chose.

use super::cpu;
use super::io;
use super::msr::{self, Msr};
use basalt_platform::ioapic::{self, RedirectionEntry};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Register offsets in the xAPIC page (SDM Vol. 3A Table 11-1).
#[allow(missing_docs)]
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const LVT_MASKED: u32 = 1 << 16;
const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
const ICR_PENDING: u32 = 1 << 12;

static X2APIC: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// Virtual address of the xAPIC page (0 in x2APIC mode).
static XAPIC_VIRT: AtomicU64 = AtomicU64::new(0);
/// Local APIC timer ticks per second at divide-by-1 (one-shot mode).
static TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// What the CPU offers.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// A local APIC at all (CPUID.1:EDX.9).
    pub apic: bool,
    /// x2APIC mode (CPUID.1:ECX.21).
    pub x2apic: bool,
    /// TSC-deadline timer mode (CPUID.1:ECX.24).
    pub tsc_deadline: bool,
}

/// Reads the APIC features from CPUID.
pub fn features() -> Features {
    let r = cpu::cpuid(1);
    Features {
        apic: r.edx & (1 << 9) != 0,
        x2apic: r.ecx & (1 << 21) != 0,
        tsc_deadline: r.ecx & (1 << 24) != 0,
    }
}

/// Whether the APIC runs in x2APIC mode.
pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Whether the timer uses TSC-deadline mode.
pub fn uses_tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// The APIC's physical base from IA32_APIC_BASE.
pub fn physical_base() -> u64 {
    msr::read(Msr::ApicBase) & 0x000f_ffff_ffff_f000
}

/// Chooses the mode on the boot CPU: x2APIC when offered, else xAPIC at
/// `xapic_virt` (the MMIO mapping of [`physical_base`]).
pub fn choose_mode(features: Features, xapic_virt: u64) {
    X2APIC.store(features.x2apic, Ordering::Relaxed);
    TSC_DEADLINE.store(features.tsc_deadline, Ordering::Relaxed);
    XAPIC_VIRT.store(xapic_virt, Ordering::Relaxed);
}

fn read(offset: u32) -> u32 {
    if is_x2apic() {
        msr::read_raw(0x800 + (offset >> 4)) as u32
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        // SAFETY: `base` maps the local APIC's 4 KiB register page uncached
        // (mm::map_mmio) and `offset` is a register offset below 0x400.
        unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const u32) }
    }
}

fn write(offset: u32, value: u32) {
    if is_x2apic() {
        // SAFETY: x2APIC registers are MSRs 0x800 + offset/16 while x2APIC
        // mode is enabled on this CPU (`enable_on_this_cpu`).
        unsafe { msr::write_raw(0x800 + (offset >> 4), u64::from(value)) };
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + u64::from(offset)) as *mut u32, value) };
    }
}

/// Enables this CPU's local APIC in the chosen mode: software-enabled with
/// the spurious vector, error interrupts on, LINT0/LINT1 and the timer
/// masked, TPR 0.
pub fn enable_on_this_cpu(spurious: u8, error: u8) {
    let base = msr::read(Msr::ApicBase);
    let mut wanted = base | APIC_BASE_ENABLE;
    if is_x2apic() {
        wanted |= APIC_BASE_X2APIC;
    }
    if wanted != base {
        // SAFETY: enabling the APIC (and x2APIC mode, which CPUID offers) keeps
        // its base address; the transition xAPIC → x2APIC is architectural.
        unsafe { msr::write(Msr::ApicBase, wanted) };
    }
    write(reg::TPR, 0);
    write(reg::LVT_TIMER, LVT_MASKED);
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_LINT1, LVT_MASKED);
    write(reg::LVT_ERROR, u32::from(error));
    write(reg::SVR, (1 << 8) | u32::from(spurious));
    // Writing ESR re-arms it; the read clears stale errors.
    write(reg::ESR, 0);
    let _ = read(reg::ESR);
    eoi();
}

/// This CPU's APIC id as the APIC reports it.
pub fn id() -> u32 {
    if is_x2apic() {
        read(reg::ID)
    } else {
        read(reg::ID) >> 24
    }
}

/// The APIC version register.
pub fn version() -> u32 {
    read(reg::VERSION)
}

/// Signals the end of an interrupt.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// Reads and clears the error status.
pub fn take_errors() -> u32 {
    write(reg::ESR, 0);
    read(reg::ESR)
}

/// How an IPI is delivered (ICR bits 10:8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A vector.
    Fixed(u8),
    /// NMI.
    Nmi,
    /// INIT (assert, level).
    Init,
    /// Start-up with the trampoline page number.
    Startup(u8),
}

/// Who gets an IPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// One APIC id.
    Apic(u32),
}

/// Sends an IPI and waits (bounded) until the xAPIC has accepted it.
pub fn send_ipi(delivery: Delivery, dest: Destination) {
    let low = match delivery {
        Delivery::Fixed(v) => u32::from(v),
        Delivery::Nmi => 0b100 << 8,
        Delivery::Init => (0b101 << 8) | (1 << 14),
        Delivery::Startup(page) => (0b110 << 8) | u32::from(page),
    };
    let Destination::Apic(target) = dest;
    if is_x2apic() {
        // SAFETY: MSR 0x830 is the x2APIC ICR; the value is a valid IPI.
        unsafe { msr::write_raw(0x830, (u64::from(target) << 32) | u64::from(low)) };
    } else {
        write(reg::ICR_HIGH, target << 24);
        write(reg::ICR_LOW, low);
        for _ in 0..1_000_000 {
            if read(reg::ICR_LOW) & ICR_PENDING == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }
}

/// Measures the one-shot timer's rate against the TSC over ~10 ms.
pub fn calibrate_timer(tsc_hz: u64) -> u64 {
    write(reg::TIMER_DIVIDE, 0b1011); // divide by 1
    write(reg::LVT_TIMER, LVT_MASKED);
    write(reg::TIMER_INITIAL, u32::MAX);
    let start = cpu::rdtsc();
    let window = tsc_hz / 100;
    while cpu::rdtsc().wrapping_sub(start) < window {
        core::hint::spin_loop();
    }
    let elapsed_tsc = cpu::rdtsc().wrapping_sub(start);
    let counted = u64::from(u32::MAX - read(reg::TIMER_CURRENT));
    write(reg::TIMER_INITIAL, 0);
    let hz = (u128::from(counted) * u128::from(tsc_hz) / u128::from(elapsed_tsc.max(1))) as u64;
    TIMER_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// The calibrated one-shot timer rate (0 when TSC-deadline mode is used).
pub fn timer_hz() -> u64 {
    TIMER_HZ.load(Ordering::Relaxed)
}

/// Arms this CPU's timer to fire `vector` at TSC value `deadline`.
pub fn arm_timer(vector: u8, deadline: u64, tsc_hz: u64) {
    if uses_tsc_deadline() {
        write(reg::LVT_TIMER, TIMER_TSC_DEADLINE | u32::from(vector));
        // SAFETY: TSC-deadline mode is on (CPUID.1:ECX.24 and the LVT above).
        unsafe { msr::write(Msr::TscDeadline, deadline.max(1)) };
    } else {
        let now = cpu::rdtsc();
        let ticks = deadline.saturating_sub(now);
        let hz = timer_hz().max(1);
        let count = (u128::from(ticks) * u128::from(hz) / u128::from(tsc_hz.max(1)))
            .clamp(1, u128::from(u32::MAX));
        write(reg::LVT_TIMER, u32::from(vector));
        write(reg::TIMER_DIVIDE, 0b1011);
        write(reg::TIMER_INITIAL, count as u32);
    }
}

/// Masks both legacy 8259 PICs (every IRQ then goes through the I/O APIC).
pub fn mask_pics() {
    // SAFETY: ports 0x21 and 0xA1 are the 8259 PICs' interrupt mask
    // registers; masking every line has no memory effect.
    unsafe { io::outb(0x21, 0xff) };
    // SAFETY: as above (slave PIC).
    unsafe { io::outb(0xa1, 0xff) };
}

/// An I/O APIC's registers (82093AA datasheet §3): IOREGSEL at +0, IOWIN at +0x10.
#[derive(Debug, Clone, Copy)]
pub struct IoApicRegs {
    virt: u64,
}

impl IoApicRegs {
    /// Registers mapped at `virt` (uncached MMIO, 4 KiB).
    ///
    /// # Safety
    ///
    /// `virt` must map an I/O APIC's register page uncached.
    pub unsafe fn new(virt: u64) -> Self {
        Self { virt }
    }

    fn read(&self, index: u32) -> u32 {
        // SAFETY: `new`'s contract: IOREGSEL is in the mapped page.
        unsafe { core::ptr::write_volatile(self.virt as *mut u32, index) };
        // SAFETY: as above, IOWIN.
        unsafe { core::ptr::read_volatile((self.virt + 0x10) as *const u32) }
    }

    fn write(&self, index: u32, value: u32) {
        // SAFETY: as in `read` (IOREGSEL).
        unsafe { core::ptr::write_volatile(self.virt as *mut u32, index) };
        // SAFETY: as in `read` (IOWIN).
        unsafe { core::ptr::write_volatile((self.virt + 0x10) as *mut u32, value) };
    }

    /// Number of redirection entries.
    pub fn entries(&self) -> u32 {
        ((self.read(1) >> 16) & 0xff) + 1
    }

    /// Writes `pin`'s redirection entry. The entry is masked while its two
    /// halves are written, so the pin never delivers with a half-written
    /// destination. Callers serialise their writes to one I/O APIC
    /// (IOREGSEL/IOWIN is a register pair).
    pub fn write_redirection(&self, pin: u8, entry: RedirectionEntry) {
        let index = ioapic::redirection_register(pin);
        self.write(index, entry.with_mask(true).low());
        self.write(index + 1, entry.high());
        if !entry.masked {
            self.write(index, entry.low());
        }
    }

    /// Reads `pin`'s redirection entry as the hardware holds it (with the
    /// read-only delivery-status and remote-IRR bits).
    pub fn read_redirection(&self, pin: u8) -> u64 {
        let index = ioapic::redirection_register(pin);
        u64::from(self.read(index)) | u64::from(self.read(index + 1)) << 32
    }

    /// Masks every redirection entry.
    pub fn mask_all(&self) {
        for i in 0..self.entries() {
            self.write(0x10 + 2 * i, LVT_MASKED);
            self.write(0x11 + 2 * i, 0);
        }
    }
}
