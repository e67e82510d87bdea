//! Hypercalls, following Xen's public ABI (docs/hypercalls.md): VMCALL with
//! the operation in RAX and arguments in RDI, RSI, RDX, R10, R8 (64-bit) or
//! EBX, ECX, EDX, ESI, EDI (32-bit); negative errno results; -EPERM from
//! guest user mode; -ENOSYS for what Basalt does not implement.

use crate::domain::{EndReason, Vcpu};
use crate::time;
use basalt_guest::hypercall as hc;

/// What the scheduler does after a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Resume the guest.
    Continue,
    /// Give up the CPU (yield).
    Yield,
    /// Block until the vCPU's timer (or forever without one).
    Block,
    /// The domain ended.
    Ended,
}

fn errno(e: i64) -> u64 {
    hc::errno_result(e)
}

/// Most bytes a single console_io write copies.
const CONSOLE_MAX: u64 = 4096;

/// Handles the VMCALL of `v`; sets RAX and skips the instruction.
pub fn dispatch(v: &mut Vcpu) -> After {
    let regs = hc::GuestRegs {
        rax: v.arch.regs.rax,
        rbx: v.arch.regs.rbx,
        rcx: v.arch.regs.rcx,
        rdx: v.arch.regs.rdx,
        rsi: v.arch.regs.rsi,
        rdi: v.arch.regs.rdi,
        r8: v.arch.regs.r8,
        r10: v.arch.regs.r10,
    };
    let call = hc::decode(&regs, v.arch.long_mode());
    let (result, after) = if v.arch.cpl() != 0 {
        (errno(hc::EPERM), After::Continue)
    } else {
        handle(v, &call)
    };
    if after != After::Ended {
        v.arch.regs.rax = result;
        v.arch.skip_instruction();
    }
    after
}

fn handle(v: &mut Vcpu, call: &hc::Call) -> (u64, After) {
    let [a1, a2, a3, _, _] = call.args;
    match call.op {
        hc::HYPERVISOR_XEN_VERSION => match a1 {
            hc::XENVER_VERSION => (hc::xen_version_result(), After::Continue),
            hc::XENVER_EXTRAVERSION => {
                // xen_extraversion_t: char[16].
                let mut text = [0u8; 16];
                text[..8].copy_from_slice(b".basalt\0");
                match crate::guestmem::write_virt(v, a2, &text) {
                    Ok(()) => (0, After::Continue),
                    Err(()) => (errno(hc::EFAULT), After::Continue),
                }
            }
            hc::XENVER_PAGESIZE => (4096, After::Continue),
            _ => (errno(hc::ENOSYS), After::Continue),
        },
        hc::HYPERVISOR_CONSOLE_IO => match a1 {
            hc::CONSOLEIO_WRITE => {
                let count = a2.min(CONSOLE_MAX) as usize;
                let mut buf = alloc::vec![0u8; count];
                match crate::guestmem::read_virt(v, a3, &mut buf) {
                    Ok(()) => {
                        v.domain.console_write(&buf);
                        (0, After::Continue)
                    }
                    Err(()) => (errno(hc::EFAULT), After::Continue),
                }
            }
            // No console input yet (the multiplexer comes with the console work).
            hc::CONSOLEIO_READ => (0, After::Continue),
            _ => (errno(hc::ENOSYS), After::Continue),
        },
        hc::HYPERVISOR_SCHED_OP => match a1 {
            hc::SCHEDOP_YIELD => (0, After::Yield),
            hc::SCHEDOP_BLOCK | hc::SCHEDOP_POLL => (0, After::Block),
            hc::SCHEDOP_SHUTDOWN => {
                let mut reason = [0u8; 4];
                if crate::guestmem::read_virt(v, a2, &mut reason).is_err() {
                    return (errno(hc::EFAULT), After::Continue);
                }
                let reason = match u32::from_le_bytes(reason) {
                    hc::SHUTDOWN_POWEROFF => EndReason::Poweroff,
                    hc::SHUTDOWN_REBOOT => EndReason::Reboot,
                    hc::SHUTDOWN_CRASH | hc::SHUTDOWN_WATCHDOG => EndReason::Crash,
                    _ => return (errno(hc::EINVAL), After::Continue),
                };
                v.domain.end(reason);
                (0, After::Ended)
            }
            hc::SCHEDOP_BASALT_EXIT_CODE => {
                v.domain
                    .exit_code
                    .store(a2 as u32, core::sync::atomic::Ordering::SeqCst);
                (0, After::Continue)
            }
            _ => (errno(hc::ENOSYS), After::Continue),
        },
        hc::HYPERVISOR_VCPU_OP => vcpu_op(v, a1, a2, a3),
        _ => (errno(hc::ENOSYS), After::Continue),
    }
}

fn vcpu_op(v: &mut Vcpu, cmd: u64, vcpu_id: u64, arg: u64) -> (u64, After) {
    if vcpu_id != u64::from(v.index) {
        return (errno(hc::EINVAL), After::Continue);
    }
    match cmd {
        hc::VCPUOP_GET_RUNSTATE_INFO => {
            // struct vcpu_runstate_info { int state; uint64_t state_entry_time; uint64_t time[4]; }
            // (state 0 = running; times in ns of system time since boot).
            let now = time::now_ns();
            let mut info = [0u8; 48];
            info[8..16].copy_from_slice(&now.to_le_bytes());
            info[16..24].copy_from_slice(&now.to_le_bytes());
            match crate::guestmem::write_virt(v, arg, &info) {
                Ok(()) => (0, After::Continue),
                Err(()) => (errno(hc::EFAULT), After::Continue),
            }
        }
        hc::VCPUOP_SET_SINGLESHOT_TIMER => {
            // struct vcpu_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; }
            let mut t = [0u8; 16];
            if crate::guestmem::read_virt(v, arg, &mut t).is_err() {
                return (errno(hc::EFAULT), After::Continue);
            }
            let abs = u64::from_le_bytes(t[..8].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(t[8..12].try_into().unwrap_or_default());
            let now = time::now_ns();
            // VCPU_SSHOTTMR_future (1): refuse a deadline in the past.
            if flags & 1 != 0 && abs < now {
                return (errno(62), After::Continue); // -ETIME
            }
            v.timer_deadline = time::deadline_tsc(abs.saturating_sub(now));
            (0, After::Continue)
        }
        hc::VCPUOP_STOP_SINGLESHOT_TIMER => {
            v.timer_deadline = 0;
            (0, After::Continue)
        }
        hc::VCPUOP_IS_UP => (1, After::Continue),
        _ => (errno(hc::ENOSYS), After::Continue),
    }
}
