//! Starting the application processors (docs/smp.md).

use super::apic::{self, Delivery, Destination};
use super::cpu;
use core::sync::atomic::{AtomicBool, Ordering};

core::arch::global_asm!(include_str!("trampoline.S"), options(att_syntax));

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_vars: u8;
    static ap_trampoline_end: u8;
}

/// The variables at the end of the trampoline (trampoline.S).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrampolineVars {
    /// CR3 for the AP: Basalt's PML4, below 4 GiB.
    pub cr3: u32,
    /// EFER bits to set: LME, and NXE when used.
    pub efer: u32,
    /// Initial RSP.
    pub stack: u64,
    /// Argument passed in RDI.
    pub arg: u64,
    /// The 64-bit entry point.
    pub entry: u64,
}

/// The trampoline code and the offset of its variables.
pub fn trampoline() -> (&'static [u8], usize) {
    let start = &raw const ap_trampoline_start as usize;
    let vars = &raw const ap_trampoline_vars as usize;
    let end = &raw const ap_trampoline_end as usize;
    // SAFETY: the three symbols delimit one contiguous block in .rodata.
    let bytes = unsafe { core::slice::from_raw_parts(start as *const u8, end - start) };
    (bytes, vars - start)
}

/// Busy-waits `micros` microseconds on the TSC.
fn delay_us(micros: u64, tsc_hz: u64) {
    let start = cpu::rdtsc();
    let ticks = tsc_hz / 1_000_000 * micros;
    while cpu::rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Sends INIT-SIPI-SIPI to `apic_id` to start it at the trampoline copied to
/// `base` (a page below 1 MiB) and waits up to `timeout_ms` for `online` to
/// become true. Returns whether the CPU answered.
pub fn start_cpu(
    apic_id: u32,
    base: u64,
    online: &AtomicBool,
    tsc_hz: u64,
    timeout_ms: u64,
) -> bool {
    let page = (base >> 12) as u8;
    apic::send_ipi(Delivery::Init, Destination::Apic(apic_id));
    delay_us(10_000, tsc_hz);
    for _ in 0..2 {
        apic::send_ipi(Delivery::Startup(page), Destination::Apic(apic_id));
        delay_us(200, tsc_hz);
        if online.load(Ordering::Acquire) {
            return true;
        }
    }
    let start = cpu::rdtsc();
    let ticks = tsc_hz / 1000 * timeout_ms;
    while cpu::rdtsc().wrapping_sub(start) < ticks {
        if online.load(Ordering::Acquire) {
            return true;
        }
        core::hint::spin_loop();
    }
    online.load(Ordering::Acquire)
}
