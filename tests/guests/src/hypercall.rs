//! Hypercalls, in Xen's public 64-bit HVM convention: `vmcall` with the
//! hypercall number in RAX and the arguments in RDI, RSI, RDX, R10, R8; the
//! result in RAX (a negative errno on error). The argument registers are
//! treated as clobbered, as Xen may clobber them.
//!
//! When `vmcall` raises `#UD` (no hypervisor answers: bare metal, or QEMU
//! booting the guest directly) the wrappers return [`ENOSYS`] and
//! [`hypervisor_missing`] turns true.

use crate::cpu;
use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// `-ENOSYS`: no such hypercall (also returned when `vmcall` faulted).
pub const ENOSYS: i64 = -38;

/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
/// `__HYPERVISOR_console_io`.
pub const HYPERVISOR_CONSOLE_IO: u64 = 18;
/// `__HYPERVISOR_sched_op`.
pub const HYPERVISOR_SCHED_OP: u64 = 29;

/// `XENVER_version`: `(major << 16) | minor`.
pub const XENVER_VERSION: u64 = 0;
/// `CONSOLEIO_write`.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_shutdown`, argument: a pointer to `struct sched_shutdown`.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// Basalt's own `sched_op` sub-op: record the domain's exit code
/// (argument: the code itself). Not in Xen.
pub const SCHEDOP_BASALT_EXIT_CODE: u64 = 0x4241;

/// `SHUTDOWN_poweroff`.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;

/// QEMU's `isa-debug-exit` port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`),
/// used only when no hypervisor answers `vmcall`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Value written to [`DEBUG_EXIT_PORT`] for a crash (QEMU exits with 255).
pub const DEBUG_EXIT_CRASH: u32 = 0x7f;

static MISSING: AtomicBool = AtomicBool::new(false);
static EXIT_CODE: AtomicU32 = AtomicU32::new(0);

/// Whether a `vmcall` raised `#UD` (no hypervisor handles hypercalls).
pub fn hypervisor_missing() -> bool {
    MISSING.load(Ordering::Relaxed)
}

/// `vmcall` with up to five arguments; `Err(vector)` when it faulted.
///
/// # Safety
/// The hypercall must be harmless for the guest: pointer arguments point at
/// memory the hypervisor may read or write as the hypercall defines.
pub unsafe fn vmcall(op: u64, args: [u64; 5]) -> Result<i64, u8> {
    let f = || {
        let ret: i64;
        // SAFETY: the caller vouches for the hypercall and its arguments.
        unsafe {
            asm!(
                "vmcall",
                inlateout("rax") op as i64 => ret,
                inlateout("rdi") args[0] => _,
                inlateout("rsi") args[1] => _,
                inlateout("rdx") args[2] => _,
                inlateout("r10") args[3] => _,
                inlateout("r8") args[4] => _,
                options(nostack),
            )
        };
        ret
    };
    // SAFETY: `f` is VMCALL, 3 bytes (0F 01 C1), and nothing else that
    // faults.
    let result = unsafe { cpu::checked(3, f) };
    if result.is_err() {
        MISSING.store(true, Ordering::Relaxed);
    }
    result
}

/// A hypercall with two arguments; [`ENOSYS`] when `vmcall` faulted.
///
/// # Safety
/// As [`vmcall`].
pub unsafe fn hypercall2(op: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: as the caller promised.
    unsafe { vmcall(op, [a1, a2, 0, 0, 0]) }.unwrap_or(ENOSYS)
}

/// A hypercall with three arguments; [`ENOSYS`] when `vmcall` faulted.
///
/// # Safety
/// As [`vmcall`].
pub unsafe fn hypercall3(op: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: as the caller promised.
    unsafe { vmcall(op, [a1, a2, a3, 0, 0]) }.unwrap_or(ENOSYS)
}

/// A hypercall with five arguments; [`ENOSYS`] when `vmcall` faulted.
///
/// # Safety
/// As [`vmcall`].
pub unsafe fn hypercall5(op: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    // SAFETY: as the caller promised.
    unsafe { vmcall(op, [a1, a2, a3, a4, a5]) }.unwrap_or(ENOSYS)
}

/// `xen_version(cmd, arg)` (hypercall 17). `xen_version(0, 0)` returns
/// `(major << 16) | minor`.
pub fn xen_version(cmd: u64, arg: u64) -> i64 {
    // SAFETY: XENVER_version takes no buffer; other sub-ops write at most
    // their documented structure at `arg`, which the callers of this test
    // runtime pass as 0 or a suitable buffer.
    unsafe { hypercall2(HYPERVISOR_XEN_VERSION, cmd, arg) }
}

/// `console_io(CONSOLEIO_write, len, str)` (hypercall 18): the bytes of `s`
/// on the hypervisor console.
pub fn console_write(s: &str) -> i64 {
    // SAFETY: the hypervisor only reads `s.len()` bytes at `s`.
    unsafe {
        hypercall3(
            HYPERVISOR_CONSOLE_IO,
            CONSOLEIO_WRITE,
            s.len() as u64,
            s.as_ptr() as u64,
        )
    }
}

/// `sched_op(SCHEDOP_yield)` (hypercall 29).
pub fn sched_yield() -> i64 {
    // SAFETY: no memory argument.
    unsafe { hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_YIELD, 0) }
}

/// `sched_op(0x4241, code)`: Basalt's "exit code" sub-op; the code is also
/// kept for the `isa-debug-exit` fallback of [`sched_shutdown`].
pub fn set_exit_code(code: u32) -> i64 {
    EXIT_CODE.store(code, Ordering::Relaxed);
    // SAFETY: no memory argument.
    unsafe {
        hypercall2(
            HYPERVISOR_SCHED_OP,
            SCHEDOP_BASALT_EXIT_CODE,
            u64::from(code),
        )
    }
}

/// Xen's `struct sched_shutdown`.
#[repr(C)]
#[derive(Debug)]
struct SchedShutdown {
    reason: u32,
}

/// `sched_op(SCHEDOP_shutdown, &{reason})` (hypercall 29): ends the domain
/// ([`SHUTDOWN_POWEROFF`], [`SHUTDOWN_REBOOT`], [`SHUTDOWN_CRASH`]).
///
/// Should the hypercall return: when `vmcall` faulted (no hypervisor), the
/// exit code ([`set_exit_code`]; [`DEBUG_EXIT_CRASH`] for other reasons) is
/// written to QEMU's `isa-debug-exit` port, making QEMU exit with
/// `(value << 1) | 1`; then, or when a hypervisor refused, the vCPU halts
/// forever with interrupts off.
pub fn sched_shutdown(reason: u32) -> ! {
    let arg = SchedShutdown { reason };
    // SAFETY: the hypervisor reads the 4-byte structure, live across the
    // call.
    let ret = unsafe {
        hypercall2(
            HYPERVISOR_SCHED_OP,
            SCHEDOP_SHUTDOWN,
            &arg as *const SchedShutdown as u64,
        )
    };
    if hypervisor_missing() {
        let value = if reason == SHUTDOWN_POWEROFF {
            EXIT_CODE.load(Ordering::Relaxed)
        } else {
            DEBUG_EXIT_CRASH
        };
        cpu::outl(DEBUG_EXIT_PORT, value);
    } else {
        crate::println!("guest: SCHEDOP_shutdown({reason}) returned {ret}; halting");
    }
    loop {
        // SAFETY: stops the vCPU for good: interrupts off, then HLT.
        unsafe { asm!("cli", "hlt", options(nostack, nomem)) };
    }
}

/// Ends the domain with exit code `code` (0 = success):
/// [`set_exit_code`]`(code)`, then [`sched_shutdown`]`(SHUTDOWN_POWEROFF)`.
pub fn exit(code: u32) -> ! {
    set_exit_code(code);
    sched_shutdown(SHUTDOWN_POWEROFF)
}

/// `vcpu_op` (hypercall 24).
pub const HYPERVISOR_VCPU_OP: u64 = 24;
/// `VCPUOP_get_runstate_info`.
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;

/// The hypervisor's system time in nanoseconds, from
/// `VCPUOP_get_runstate_info(0, &info)` (`state_entry_time`).
pub fn system_time_ns() -> i64 {
    let mut info = [0u64; 6];
    // SAFETY: the hypervisor writes the 48-byte `vcpu_runstate_info` at
    // `info`, which is that large.
    let r = unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_GET_RUNSTATE_INFO,
            0,
            info.as_mut_ptr() as u64,
        )
    };
    if r < 0 { r } else { info[1] as i64 }
}

/// `VCPUOP_set_singleshot_timer(0, {timeout_abs_ns, flags: 0})`: wakes this
/// vCPU from HLT or SCHEDOP_block at system time `deadline_ns`.
pub fn set_singleshot_timer(deadline_ns: u64) -> i64 {
    let arg = [deadline_ns, 0u64];
    // SAFETY: the hypervisor reads the 16-byte structure at `arg`.
    unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_SET_SINGLESHOT_TIMER,
            0,
            arg.as_ptr() as u64,
        )
    }
}
