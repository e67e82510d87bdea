//! Hypercalls, following Xen's public ABI (docs/hypercalls.md): VMCALL with
//! the operation in RAX and arguments in RDI, RSI, RDX, R10, R8 (64-bit) or
//! EBX, ECX, EDX, ESI, EDI (32-bit); negative errno results; -EPERM from
//! guest user mode; -ENOSYS for what Basalt does not implement.

mod reservation;
pub mod xen;
mod xenver;

use super::domain::{Domain, EndReason, Running};
use crate::time;
use crate::vcpu::{StartState, gpr};
use alloc::sync::Arc;
use basalt_guest::hypercall as hc;
use basalt_sched::VcpuId;

/// What the exit handlers and hypercalls ask of the scheduler, which runs
/// them: a parameter (the scheduler passes its own), so that neither names
/// the scheduler and nothing here calls back into it.
pub trait SchedOps: super::domctl::ControlOps {
    /// Ends `domain` for `reason` (its vCPUs leave the CPUs).
    fn end_domain(&self, domain: &Arc<Domain>, reason: EndReason);
    /// `VCPUOP_initialise`: gives down vCPU `id` the state it starts from.
    fn vcpu_initialise(&self, id: VcpuId, entry: StartState) -> Result<(), VcpuOpError>;
    /// `VCPUOP_up`: starts an initialised vCPU (a no-op if it is up).
    fn vcpu_up(&self, id: VcpuId) -> Result<(), VcpuOpError>;
    /// Whether vCPU `id` is up (`None`: the scheduler does not know it).
    fn vcpu_is_up(&self, id: VcpuId) -> Option<bool>;
    /// A foreign mapping of one of `owner`'s frames was removed from a
    /// stage-2 table: its pin is dropped once every CPU has flushed its
    /// stage-2 translations (so none can still reach the frame).
    fn unpin_after_flush(&self, owner: Arc<Domain>);
    /// Runs `then` once every CPU has flushed its stage-2 translations
    /// (a grant unmap: the granter's flags are cleared and its pin dropped
    /// only when no CPU can still reach the frame).
    fn after_flush(&self, then: alloc::boxed::Box<dyn FnOnce() + Send>);
    /// Vcpu `vcpu` of `domain`, if halted, looks at its timers again
    /// (another vCPU changed them).
    fn retime_vcpu(&self, domain: &Domain, vcpu: u32);
}

/// Errors of `VCPUOP_initialise` / `VCPUOP_up`, as Xen returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuOpError {
    /// No such vCPU (-EINVAL; an id out of range is refused before, with
    /// -ENOENT as Xen does).
    NoSuchVcpu,
    /// Already initialised (-EEXIST).
    Exists,
    /// Not initialised yet (-EINVAL).
    NotInitialised,
}

/// What the scheduler does after a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Resume the guest.
    Continue,
    /// Give up the CPU (yield).
    Yield,
    /// Block until the vCPU's timer or another event.
    Block,
    /// The vCPU goes down (`VCPUOP_down` on itself) until `VCPUOP_up`.
    Down,
    /// The domain ends for this reason (`SCHEDOP_shutdown`).
    Ended(EndReason),
    /// A continuation: the hypercall's arguments were advanced in the
    /// guest's registers and the VMCALL runs again (RAX and RIP untouched)
    /// when the vCPU next runs; `true`: it waits for the console, so it
    /// gives up the CPU first.
    Again(bool),
}

fn errno(e: i64) -> u64 {
    hc::errno_result(e)
}

/// Most bytes a `console_io` write copies per VM exit; the rest is a
/// continuation. Small, so that one exit stays far below a time slice even
/// on a slow CPU (Bochs at 4 M instructions per second: a few hundred µs).
const CONSOLE_MAX: u64 = 256;

/// `console_io(CONSOLEIO_write, count, buffer)`: never loses a byte. What
/// the console takes now is copied (at most [`CONSOLE_MAX`] per exit); the
/// rest is a continuation, as in Xen's `guest_console_write`: count and
/// buffer advance in the guest's registers and the VMCALL runs again, after
/// the vCPU gave up the CPU if the domain's console queue was full (the
/// domain with the console is slowed, not truncated). The result, once all
/// is written, is 0: Linux's `dom0_write_console` ignores any value that is
/// not negative and reports every byte written, so a "bytes taken" result
/// would lose the rest.
fn console_write(v: &mut Running<'_>, count: u64, buffer: u64) -> (u64, After) {
    let room = v.domain.platform.console.room();
    let take = count.min(CONSOLE_MAX).min(room as u64) as usize;
    if take == 0 {
        if count == 0 {
            return (0, After::Continue);
        }
        return (0, After::Again(true));
    }
    let mut buf = [0u8; CONSOLE_MAX as usize];
    let buf = &mut buf[..take];
    if crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, buffer, buf).is_err() {
        return (errno(hc::EFAULT), After::Continue);
    }
    let taken = v.domain.platform.console.write(buf) as u64;
    if taken == count {
        return (0, After::Continue);
    }
    // Continuation: the arguments that remain, in the registers the guest
    // passed them in (RSI, RDX in 64-bit mode; ECX, EDX in 32-bit mode).
    let (rest, next) = (count - taken, buffer.wrapping_add(taken));
    if v.arch.long_mode() {
        v.arch.set_reg(gpr::RSI, rest);
        v.arch.set_reg(gpr::RDX, next);
    } else {
        v.arch.set_reg(gpr::RCX, rest & 0xffff_ffff);
        v.arch.set_reg(gpr::RDX, next & 0xffff_ffff);
    }
    (0, After::Again(taken < take as u64))
}

/// Handles the VMCALL of `v`; sets RAX and skips the instruction.
pub fn dispatch(v: &mut Running<'_>, ops: &impl SchedOps) -> After {
    let regs = hc::GuestRegs {
        rax: v.arch.reg(gpr::RAX),
        rbx: v.arch.reg(gpr::RBX),
        rcx: v.arch.reg(gpr::RCX),
        rdx: v.arch.reg(gpr::RDX),
        rsi: v.arch.reg(gpr::RSI),
        rdi: v.arch.reg(gpr::RDI),
        r8: v.arch.reg(gpr::R8),
        r10: v.arch.reg(gpr::R10),
    };
    let call = hc::decode(&regs, v.arch.long_mode());
    let (result, after) = if v.arch.cpl() != 0 {
        (errno(hc::EPERM), After::Continue)
    } else {
        handle(v, &call, ops)
    };
    if !matches!(after, After::Ended(_) | After::Again(_)) {
        v.arch.set_reg(gpr::RAX, result);
        v.arch.skip_instruction();
    }
    after
}

fn handle(v: &mut Running<'_>, call: &hc::Call, ops: &impl SchedOps) -> (u64, After) {
    if v.domain.xen.is_some()
        && let Some(answer) = xen::handle(v, call, ops)
    {
        return answer;
    }
    let [a1, a2, a3, _, _] = call.args;
    match call.op {
        hc::HYPERVISOR_XEN_VERSION => match a1 {
            hc::XENVER_VERSION => (hc::xen_version_result(), After::Continue),
            hc::XENVER_EXTRAVERSION => {
                // xen_extraversion_t: char[16].
                let mut text = [0u8; 16];
                text[..8].copy_from_slice(b".basalt\0");
                match crate::hvm::guestmem::write_virt(&v.arch, &v.domain.ram, a2, &text) {
                    Ok(()) => (0, After::Continue),
                    Err(()) => (errno(hc::EFAULT), After::Continue),
                }
            }
            hc::XENVER_PAGESIZE => (4096, After::Continue),
            cmd => match xenver::describe_build(v, cmd, a2) {
                Some(result) => (result, After::Continue),
                None => (errno(hc::ENOSYS), After::Continue),
            },
        },
        hc::HYPERVISOR_CONSOLE_IO => match a1 {
            hc::CONSOLEIO_WRITE => console_write(v, a2, a3),
            hc::CONSOLEIO_READ => {
                // Bytes the operator typed while this domain had the focus.
                // The input ring never holds more than this: no allocation
                // on a path a guest polls.
                let mut buf = [0u8; crate::hvm::guest_console::CONSOLE_INPUT];
                let count = (a2 as usize).min(buf.len());
                let n = v
                    .domain
                    .platform
                    .console
                    .input
                    .lock()
                    .read(&mut buf[..count]);
                if n == 0 {
                    return (0, After::Continue);
                }
                match crate::hvm::guestmem::write_virt(&v.arch, &v.domain.ram, a3, &buf[..n]) {
                    Ok(()) => (n as u64, After::Continue),
                    Err(()) => (errno(hc::EFAULT), After::Continue),
                }
            }
            _ => (errno(hc::ENOSYS), After::Continue),
        },
        hc::HYPERVISOR_SCHED_OP => match a1 {
            hc::SCHEDOP_YIELD => (0, After::Yield),
            hc::SCHEDOP_BLOCK | hc::SCHEDOP_POLL => (0, After::Block),
            hc::SCHEDOP_SHUTDOWN => {
                let mut reason = [0u8; 4];
                if crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, a2, &mut reason).is_err()
                {
                    return (errno(hc::EFAULT), After::Continue);
                }
                let reason = match u32::from_le_bytes(reason) {
                    hc::SHUTDOWN_POWEROFF => EndReason::Poweroff,
                    hc::SHUTDOWN_REBOOT => EndReason::Reboot,
                    hc::SHUTDOWN_CRASH | hc::SHUTDOWN_WATCHDOG => EndReason::Crash,
                    _ => return (errno(hc::EINVAL), After::Continue),
                };
                (0, After::Ended(reason))
            }
            hc::SCHEDOP_BASALT_EXIT_CODE => {
                v.domain
                    .life
                    .exit_code
                    .store(a2 as u32, core::sync::atomic::Ordering::SeqCst);
                (0, After::Continue)
            }
            _ => (errno(hc::ENOSYS), After::Continue),
        },
        hc::HYPERVISOR_VCPU_OP => vcpu_op(v, a1, a2, a3, ops),
        basalt_domctl::HYPERCALL => (super::domctl::dispatch(v, a1, a2, ops), After::Continue),
        _ => (errno(hc::ENOSYS), After::Continue),
    }
}

fn vcpu_op(
    v: &mut Running<'_>,
    cmd: u64,
    vcpu_id: u64,
    arg: u64,
    ops: &impl SchedOps,
) -> (u64, After) {
    let ok = |r: u64| (r, After::Continue);
    let err = |e: i64| (errno(e), After::Continue);
    if vcpu_id >= u64::from(v.domain.vcpu_count) {
        // Xen: no such vCPU in this domain.
        return err(hc::ENOENT);
    }
    let target = VcpuId::new(v.domain.id, vcpu_id as u32);
    match cmd {
        hc::VCPUOP_INITIALISE => {
            // struct vcpu_hvm_context (public/hvm/hvm_vcpu.h): mode, pad,
            // then the registers; Basalt starts vCPUs in 64-bit mode only.
            let mut ctx = [0u8; 8 + 14 * 8];
            if crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, arg, &mut ctx).is_err() {
                return err(hc::EFAULT);
            }
            let mode = u32::from_le_bytes([ctx[0], ctx[1], ctx[2], ctx[3]]);
            if mode != hc::VCPU_HVM_MODE_64B {
                return err(hc::EOPNOTSUPP);
            }
            let r = |i: usize| {
                let at = 8 + i * 8;
                u64::from_le_bytes(ctx[at..at + 8].try_into().unwrap_or_default())
            };
            let state = crate::vcpu::Long64State {
                rax: r(0),
                rcx: r(1),
                rdx: r(2),
                rbx: r(3),
                rsp: r(4),
                rbp: r(5),
                rsi: r(6),
                rdi: r(7),
                rip: r(8),
                rflags: r(9),
                cr0: r(10),
                cr3: r(11),
                cr4: r(12),
                efer: r(13),
                ..Default::default()
            };
            // Xen's checks for VCPU_HVM_MODE_64B: canonical RIP, paging on,
            // PAE, long mode enabled; and the control registers must be a
            // state the guest's CPU model allows (no reserved bit, CR3 below
            // MAXPHYADDR), or VM entry would refuse them.
            let canonical = |a: u64| ((a as i64) << 16 >> 16) as u64 == a;
            let cr = basalt_cpu::cr::CrState {
                cr0: state.cr0,
                cr3: state.cr3,
                cr4: state.cr4,
                efer: state.efer | basalt_cpu::cr::efer::LMA,
                cs_l: true,
            };
            // RFLAGS: only the defined bits (CF, 1, PF, AF, ZF, SF, TF, IF, DF,
            // OF, IOPL, NT, RF, VM, AC, VIF, VIP, ID), or VM entry fails.
            const RFLAGS_DEFINED: u64 = 0x003f_7fd7;
            if !canonical(state.rip)
                || state.rflags & !RFLAGS_DEFINED != 0
                || state.cr0 & (1 << 31) == 0
                || state.cr4 & (1 << 5) == 0
                || state.efer & (1 << 8) == 0
                || crate::vcpu::guest_cpu().cr.check_state(&cr).is_err()
            {
                return err(hc::EINVAL);
            }
            match ops.vcpu_initialise(target, StartState::Long64(state)) {
                Ok(()) => ok(0),
                Err(VcpuOpError::Exists) => err(hc::EEXIST),
                Err(_) => err(hc::EINVAL),
            }
        }
        hc::VCPUOP_UP => match ops.vcpu_up(target) {
            Ok(()) => ok(0),
            Err(_) => err(hc::EINVAL),
        },
        hc::VCPUOP_DOWN if target.vcpu == v.index => (0, After::Down),
        // Taking another vCPU down is not supported.
        hc::VCPUOP_DOWN => err(hc::EINVAL),
        hc::VCPUOP_IS_UP => match ops.vcpu_is_up(target) {
            Some(up) => ok(u64::from(up)),
            // vCPU 0 before the scheduler knows it.
            None => ok(u64::from(target.vcpu == v.index)),
        },
        _ if target.vcpu != v.index => err(hc::EINVAL),
        hc::VCPUOP_GET_RUNSTATE_INFO => {
            // struct vcpu_runstate_info { int state; uint64_t state_entry_time; uint64_t time[4]; }
            // (state 0 = running; times in ns of system time since boot).
            let now = time::now_ns();
            let mut info = [0u8; 48];
            info[8..16].copy_from_slice(&now.to_le_bytes());
            info[16..24].copy_from_slice(&now.to_le_bytes());
            match crate::hvm::guestmem::write_virt(&v.arch, &v.domain.ram, arg, &info) {
                Ok(()) => ok(0),
                Err(()) => err(hc::EFAULT),
            }
        }
        hc::VCPUOP_SET_SINGLESHOT_TIMER => {
            // struct vcpu_set_singleshot_timer { uint64_t timeout_abs_ns; uint32_t flags; }
            let mut t = [0u8; 16];
            if crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, arg, &mut t).is_err() {
                return err(hc::EFAULT);
            }
            let abs = u64::from_le_bytes(t[..8].try_into().unwrap_or_default());
            let flags = u32::from_le_bytes(t[8..12].try_into().unwrap_or_default());
            let now = time::now_ns();
            // VCPU_SSHOTTMR_future (1): refuse a deadline in the past.
            if flags & 1 != 0 && abs < now {
                return err(hc::ETIME);
            }
            v.domain
                .timer(v.index)
                .store(abs.max(1), core::sync::atomic::Ordering::SeqCst);
            ok(0)
        }
        hc::VCPUOP_STOP_SINGLESHOT_TIMER => {
            v.domain
                .timer(v.index)
                .store(0, core::sync::atomic::Ordering::SeqCst);
            ok(0)
        }
        _ => err(hc::ENOSYS),
    }
}
