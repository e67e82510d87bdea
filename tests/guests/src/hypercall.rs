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
/// `-ENOENT`: e.g. a `vcpu_op` on a vCPU the domain does not have (Xen).
pub const ENOENT: i64 = -2;
/// `-EEXIST`: e.g. `VCPUOP_initialise` of a vCPU already initialised.
pub const EEXIST: i64 = -17;
/// `-EINVAL`: an invalid argument or state (e.g. `VCPUOP_up` before
/// `VCPUOP_initialise`).
pub const EINVAL: i64 = -22;
/// `-ETIME`: a single-shot timer deadline in the past, with
/// `VCPU_SSHOTTMR_future`.
pub const ETIME: i64 = -62;

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
/// `CONSOLEIO_read`.
pub const CONSOLEIO_READ: u64 = 1;
/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_block`: sleep until an event (for Basalt: the single-shot timer).
pub const SCHEDOP_BLOCK: u64 = 1;
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

/// `console_io(CONSOLEIO_read, buf.len(), buf)` (hypercall 18): copies
/// console input that arrived for this domain into `buf`; returns the number
/// of bytes read (0 when nothing is waiting) or a negative errno.
pub fn console_read(buf: &mut [u8]) -> i64 {
    // SAFETY: the hypervisor writes at most `buf.len()` bytes at `buf`.
    unsafe {
        hypercall3(
            HYPERVISOR_CONSOLE_IO,
            CONSOLEIO_READ,
            buf.len() as u64,
            buf.as_mut_ptr() as u64,
        )
    }
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

/// `sched_op(SCHEDOP_block)` (hypercall 29): the vCPU sleeps until an
/// event; for Basalt, its single-shot timer ([`set_singleshot_timer`]).
pub fn sched_block() -> i64 {
    // SAFETY: no memory argument.
    unsafe { hypercall2(HYPERVISOR_SCHED_OP, SCHEDOP_BLOCK, 0) }
}

/// `sti` then [`sched_block`] in its interrupt shadow: an interrupt that is
/// waiting, or comes now, ends the block instead of being taken before it
/// (`sti` and a call to `sched_block` would let it in between, and the
/// block would then wait for a second one). Returns with interrupts on.
pub fn sti_sched_block() -> i64 {
    let f = || {
        let ret: i64;
        // SAFETY: SCHEDOP_block takes no memory argument; interrupts are
        // enabled, which the caller's handlers are ready for.
        unsafe {
            asm!(
                "sti",
                "vmcall",
                inlateout("rax") HYPERVISOR_SCHED_OP as i64 => ret,
                inlateout("rdi") SCHEDOP_BLOCK => _,
                inlateout("rsi") 0u64 => _,
                options(nostack),
            )
        };
        ret
    };
    // SAFETY: the instruction that may fault is VMCALL, 3 bytes.
    unsafe { cpu::checked(3, f) }.unwrap_or(ENOSYS)
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

/// `vcpu_op` (hypercall 24): `vcpu_op(cmd, vcpuid, arg)`.
pub const HYPERVISOR_VCPU_OP: u64 = 24;
/// `VCPUOP_initialise`: `arg` points at a [`VcpuHvmContext`] (HVM guests).
pub const VCPUOP_INITIALISE: u64 = 0;
/// `VCPUOP_up`: start an initialised vCPU.
pub const VCPUOP_UP: u64 = 1;
/// `VCPUOP_down`: stop a vCPU.
pub const VCPUOP_DOWN: u64 = 2;
/// `VCPUOP_is_up`: 1 when the vCPU is up, 0 when down.
pub const VCPUOP_IS_UP: u64 = 3;
/// `VCPUOP_get_runstate_info`.
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// `VCPUOP_stop_singleshot_timer`.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;

/// `VCPU_HVM_MODE_32B`: the 32-bit member of [`VcpuHvmContext`]'s union.
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `VCPU_HVM_MODE_64B`: the 64-bit member (flat 64-bit segments chosen by
/// the hypervisor).
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// Xen's `struct vcpu_hvm_x86_64` (public/hvm/hvm_vcpu.h): the state a
/// vCPU starts with in [`VCPU_HVM_MODE_64B`]. CR0 must have PG, CR4 PAE,
/// EFER LME and LMA. The fields are the registers of the same names.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuHvmX86_64 {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Xen's `struct vcpu_hvm_context`, the argument of [`VCPUOP_INITIALISE`]
/// for HVM guests: `mode`, padding, then the union `cpu_regs` (filled here
/// through its 64-bit member).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuHvmContext {
    /// [`VCPU_HVM_MODE_32B`] or [`VCPU_HVM_MODE_64B`].
    pub mode: u32,
    /// Padding (0).
    pub pad: u32,
    /// `cpu_regs.x86_64`.
    pub regs: VcpuHvmX86_64,
    /// The rest of the union: `struct vcpu_hvm_x86_32` (120 bytes) is 8
    /// bytes larger than `struct vcpu_hvm_x86_64` (112).
    pub union_tail: u64,
}

const _: () = assert!(core::mem::size_of::<VcpuHvmX86_64>() == 112);
const _: () = assert!(core::mem::size_of::<VcpuHvmContext>() == 128);

/// `vcpu_op(VCPUOP_initialise, vcpu, ctx)`: gives vCPU `vcpu` (down, never
/// initialised) the state it starts with. `-EEXIST` when already
/// initialised, `-ENOENT` (Xen) when the domain has no such vCPU.
pub fn vcpu_initialise(vcpu: u32, ctx: &VcpuHvmContext) -> i64 {
    // SAFETY: the hypervisor reads the 128-byte context, live across the
    // call. What the new vCPU then runs is the caller's business.
    unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_INITIALISE,
            u64::from(vcpu),
            ctx as *const VcpuHvmContext as u64,
        )
    }
}

/// `vcpu_op(VCPUOP_up, vcpu, NULL)`: starts an initialised vCPU (`-EINVAL`
/// when it was never initialised).
pub fn vcpu_up(vcpu: u32) -> i64 {
    // SAFETY: no memory argument.
    unsafe { hypercall3(HYPERVISOR_VCPU_OP, VCPUOP_UP, u64::from(vcpu), 0) }
}

/// `vcpu_op(VCPUOP_down, vcpu, NULL)`: stops a vCPU (this one included).
pub fn vcpu_down(vcpu: u32) -> i64 {
    // SAFETY: no memory argument.
    unsafe { hypercall3(HYPERVISOR_VCPU_OP, VCPUOP_DOWN, u64::from(vcpu), 0) }
}

/// `vcpu_op(VCPUOP_is_up, vcpu, NULL)`: 1 when vCPU `vcpu` is up, 0 when
/// down, or a negative errno.
pub fn vcpu_is_up(vcpu: u32) -> i64 {
    // SAFETY: no memory argument.
    unsafe { hypercall3(HYPERVISOR_VCPU_OP, VCPUOP_IS_UP, u64::from(vcpu), 0) }
}

/// The hypervisor's system time in nanoseconds, from
/// `VCPUOP_get_runstate_info(this vCPU, &info)` (`state_entry_time`).
pub fn system_time_ns() -> i64 {
    let mut info = [0u64; 6];
    // SAFETY: the hypervisor writes the 48-byte `vcpu_runstate_info` at
    // `info`, which is that large.
    let r = unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_GET_RUNSTATE_INFO,
            u64::from(crate::smp::cpu_id()),
            info.as_mut_ptr() as u64,
        )
    };
    if r < 0 { r } else { info[1] as i64 }
}

/// `VCPUOP_set_singleshot_timer(this vCPU, {timeout_abs_ns, flags: 0})`:
/// wakes this vCPU from HLT or SCHEDOP_block at system time `deadline_ns`.
pub fn set_singleshot_timer(deadline_ns: u64) -> i64 {
    let arg = [deadline_ns, 0u64];
    // SAFETY: the hypervisor reads the 16-byte structure at `arg`.
    unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_SET_SINGLESHOT_TIMER,
            u64::from(crate::smp::cpu_id()),
            arg.as_ptr() as u64,
        )
    }
}

/// `VCPUOP_stop_singleshot_timer(this vCPU, NULL)`: disarms the timer.
pub fn stop_singleshot_timer() -> i64 {
    // SAFETY: no memory argument.
    unsafe {
        hypercall3(
            HYPERVISOR_VCPU_OP,
            VCPUOP_STOP_SINGLESHOT_TIMER,
            u64::from(crate::smp::cpu_id()),
            0,
        )
    }
}

/// How a vCPU waits for its single-shot timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `hlt` with interrupts off (the hypervisor resumes the vCPU).
    Hlt,
    /// [`sched_block`].
    Block,
}

impl Wait {
    /// Option `mode=hlt` (the default) or `mode=block` of `cmdline`;
    /// `Err(value)` for anything else.
    pub fn from_cmdline(cmdline: &str) -> Result<Wait, &str> {
        match crate::arg(cmdline, "mode") {
            None | Some("hlt") => Ok(Wait::Hlt),
            Some("block") => Ok(Wait::Block),
            Some(other) => Err(other),
        }
    }

    /// The option's value: `hlt` or `block`.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Hlt => "hlt",
            Wait::Block => "block",
        }
    }
}

/// Sleeps until system time `deadline_ns`: arms the single-shot timer,
/// then waits as `wait` says. 0, or the negative errno of the hypercall
/// that failed. (Resuming early is not checked here.)
pub fn sleep_until(deadline_ns: u64, wait: Wait) -> i64 {
    let r = set_singleshot_timer(deadline_ns);
    if r < 0 {
        return r;
    }
    match wait {
        Wait::Hlt => {
            cpu::halt();
            0
        }
        Wait::Block => sched_block().min(0),
    }
}

/// Xen's interface for `xen=1` and `role=control` test guests
/// (docs/control-domain.md): the hypercalls an event-channel user needs.
pub mod xen {
    use super::hypercall2;

    /// `__HYPERVISOR_memory_op`.
    pub const MEMORY_OP: u64 = 12;
    /// `__HYPERVISOR_event_channel_op`.
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// `__HYPERVISOR_hvm_op`.
    pub const HVM_OP: u64 = 34;
    /// `XENMEM_add_to_physmap`.
    pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
    /// `XENMEM_acquire_resource`.
    pub const XENMEM_ACQUIRE_RESOURCE: u64 = 28;
    /// `XENMAPSPACE_shared_info`.
    pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
    /// `HVMOP_set_evtchn_upcall_vector`.
    pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u64 = 23;
    /// `SCHEDOP_poll`.
    pub const SCHEDOP_POLL: u64 = 3;
    /// The caller, where a domain id is asked for.
    pub const DOMID_SELF: u16 = 0x7ff0;
    /// `EVTCHNSTAT_interdomain`.
    pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
    const EVTCHNOP_BIND_INTERDOMAIN: u64 = 0;
    const EVTCHNOP_BIND_VIRQ: u64 = 1;
    const EVTCHNOP_SEND: u64 = 4;
    const EVTCHNOP_STATUS: u64 = 5;
    const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

    /// shared_info: `vcpu_info[32]` (64 bytes each), then the pending and
    /// mask bitmaps (64 words each on x86-64; public/xen.h).
    pub const SHARED_INFO_PENDING: usize = 2048;
    /// Offset of `evtchn_mask` in shared_info.
    pub const SHARED_INFO_MASK: usize = 2048 + 512;

    fn event_channel_op(cmd: u64, arg: &mut [u32]) -> i64 {
        // SAFETY: `arg` is this guest's memory, the size of the structure
        // of `cmd` (the callers' arrays); Basalt reads and writes only it.
        unsafe { hypercall2(EVENT_CHANNEL_OP, cmd, arg.as_mut_ptr() as u64) }
    }

    /// `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`: the page at
    /// guest frame `gpfn` becomes this domain's shared_info.
    pub fn place_shared_info(gpfn: u64) -> i64 {
        // struct xen_add_to_physmap { domid_t domid; uint16_t size; unsigned int space; xen_ulong_t idx; xen_pfn_t gpfn; }
        let arg: [u64; 3] = [
            u64::from(DOMID_SELF) | (u64::from(XENMAPSPACE_SHARED_INFO) << 32),
            0,
            gpfn,
        ];
        // SAFETY: a 24-byte structure in this guest's memory, only read.
        unsafe { hypercall2(MEMORY_OP, XENMEM_ADD_TO_PHYSMAP, arg.as_ptr() as u64) }
    }

    /// `HVMOP_set_evtchn_upcall_vector`: events for `vcpu` raise `vector`
    /// in its local APIC (the handler EOIs it).
    pub fn set_upcall_vector(vcpu: u32, vector: u8) -> i64 {
        let arg: [u32; 2] = [vcpu, u32::from(vector)];
        // SAFETY: an 8-byte structure in this guest's memory, only read.
        unsafe { hypercall2(HVM_OP, HVMOP_SET_EVTCHN_UPCALL_VECTOR, arg.as_ptr() as u64) }
    }

    /// `EVTCHNOP_alloc_unbound`: a port of this domain that `remote` may
    /// bind; the port or a negative errno.
    pub fn alloc_unbound(remote: u16) -> Result<u32, i64> {
        let mut arg = [u32::from(DOMID_SELF) | (u32::from(remote) << 16), 0];
        match event_channel_op(EVTCHNOP_ALLOC_UNBOUND, &mut arg) {
            0 => Ok(arg[1]),
            e => Err(e),
        }
    }

    /// `EVTCHNOP_bind_interdomain`: binds `remote`'s unbound port
    /// `remote_port`; the local port or a negative errno.
    pub fn bind_interdomain(remote: u16, remote_port: u32) -> Result<u32, i64> {
        let mut arg = [u32::from(remote), remote_port, 0];
        match event_channel_op(EVTCHNOP_BIND_INTERDOMAIN, &mut arg) {
            0 => Ok(arg[2]),
            e => Err(e),
        }
    }

    /// `EVTCHNOP_bind_virq`: `virq` of `vcpu` on a new port; the port or
    /// a negative errno.
    pub fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, i64> {
        let mut arg = [virq, vcpu, 0];
        match event_channel_op(EVTCHNOP_BIND_VIRQ, &mut arg) {
            0 => Ok(arg[2]),
            e => Err(e),
        }
    }

    /// `EVTCHNOP_send` on `port`.
    pub fn send(port: u32) -> i64 {
        event_channel_op(EVTCHNOP_SEND, &mut [port])
    }

    /// `EVTCHNOP_status` of this domain's `port`: its `EVTCHNSTAT_*` code
    /// or a negative errno.
    pub fn status(port: u32) -> Result<u32, i64> {
        let mut arg = [u32::from(DOMID_SELF), port, 0, 0, 0, 0];
        match event_channel_op(EVTCHNOP_STATUS, &mut arg) {
            0 => Ok(arg[2]),
            e => Err(e),
        }
    }

    /// `XENMEM_acquire_resource` of domain `dom`'s resource (`kind`, `id`), frames from
    /// `frame` at this domain's frames `gpfns` (a null list when empty), with `pad`; the
    /// result and the `nr_frames` written back.
    pub fn acquire_resource(
        dom: u16,
        kind: u16,
        id: u32,
        frame: u64,
        gpfns: &[u64],
        pad: u32,
    ) -> (i64, u32) {
        // struct xen_mem_acquire_resource { domid_t domid; uint16_t type; uint32_t id;
        //   uint32_t nr_frames; uint32_t pad; uint64_t frame; XEN_GUEST_HANDLE(xen_pfn_t) frame_list; }
        let mut a = [0u8; 32];
        a[0..2].copy_from_slice(&dom.to_le_bytes());
        a[2..4].copy_from_slice(&kind.to_le_bytes());
        a[4..8].copy_from_slice(&id.to_le_bytes());
        a[8..12].copy_from_slice(&(gpfns.len() as u32).to_le_bytes());
        a[12..16].copy_from_slice(&pad.to_le_bytes());
        a[16..24].copy_from_slice(&frame.to_le_bytes());
        let list = if gpfns.is_empty() {
            0
        } else {
            gpfns.as_ptr() as u64
        };
        a[24..32].copy_from_slice(&list.to_le_bytes());
        // SAFETY: the structure and the list are this guest's memory; Basalt writes only
        // `nr_frames`.
        let r = unsafe { hypercall2(MEMORY_OP, XENMEM_ACQUIRE_RESOURCE, a.as_mut_ptr() as u64) };
        (r, u32::from_le_bytes([a[8], a[9], a[10], a[11]]))
    }

    /// `SCHEDOP_poll` on `ports` without a timeout: returns when one is
    /// pending (Basalt may also return early, after a yield).
    pub fn poll(ports: &[u32]) -> i64 {
        let arg: [u64; 3] = [ports.as_ptr() as u64, ports.len() as u64, 0];
        // SAFETY: a 24-byte structure and the port array in this guest's
        // memory, only read.
        unsafe {
            hypercall2(
                super::HYPERVISOR_SCHED_OP,
                SCHEDOP_POLL,
                arg.as_ptr() as u64,
            )
        }
    }
}
