//! Xen's public hypercall ABI, as data: numbers, register conventions, error values.
//!
//! A PVH guest issues hypercalls with `VMCALL` (through the hypercall page it asks the
//! hypervisor to fill). The hypervisor traps the exit, [`decode`]s the registers into a
//! [`Call`], dispatches on [`Call::op`], and puts the result in RAX: a non-negative value on
//! success, or a negated Xen error number ([`errno_result`]) on failure.
//!
//! Numbers follow Xen's public headers: `xen.h` (operations, console), `sched.h`, `version.h`,
//! `vcpu.h` and `errno.h`. Operations Basalt adds use numbers Xen does not define, and are
//! marked *Basalt-only*.

use core::fmt;

// ---------------------------------------------------------------------------------------------
// Operations (`__HYPERVISOR_*` in xen.h).

/// `__HYPERVISOR_set_trap_table` (PV only).
pub const HYPERVISOR_SET_TRAP_TABLE: u64 = 0;
/// `__HYPERVISOR_mmu_update` (PV only).
pub const HYPERVISOR_MMU_UPDATE: u64 = 1;
/// `__HYPERVISOR_set_gdt` (PV only).
pub const HYPERVISOR_SET_GDT: u64 = 2;
/// `__HYPERVISOR_stack_switch` (PV only).
pub const HYPERVISOR_STACK_SWITCH: u64 = 3;
/// `__HYPERVISOR_set_callbacks` (PV only).
pub const HYPERVISOR_SET_CALLBACKS: u64 = 4;
/// `__HYPERVISOR_fpu_taskswitch` (PV only).
pub const HYPERVISOR_FPU_TASKSWITCH: u64 = 5;
/// `__HYPERVISOR_sched_op_compat`: the old `sched_op` (compat since interface 0x00030101).
pub const HYPERVISOR_SCHED_OP_COMPAT: u64 = 6;
/// `__HYPERVISOR_platform_op` (formerly `dom0_op`).
pub const HYPERVISOR_PLATFORM_OP: u64 = 7;
/// `__HYPERVISOR_set_debugreg` (PV only).
pub const HYPERVISOR_SET_DEBUGREG: u64 = 8;
/// `__HYPERVISOR_get_debugreg` (PV only).
pub const HYPERVISOR_GET_DEBUGREG: u64 = 9;
/// `__HYPERVISOR_update_descriptor` (PV only).
pub const HYPERVISOR_UPDATE_DESCRIPTOR: u64 = 10;
// 11 is unused in Xen.
/// `__HYPERVISOR_memory_op`.
pub const HYPERVISOR_MEMORY_OP: u64 = 12;
/// `__HYPERVISOR_multicall`.
pub const HYPERVISOR_MULTICALL: u64 = 13;
/// `__HYPERVISOR_update_va_mapping` (PV only).
pub const HYPERVISOR_UPDATE_VA_MAPPING: u64 = 14;
/// `__HYPERVISOR_set_timer_op`.
pub const HYPERVISOR_SET_TIMER_OP: u64 = 15;
/// `__HYPERVISOR_event_channel_op_compat` (compat since interface 0x00030202).
pub const HYPERVISOR_EVENT_CHANNEL_OP_COMPAT: u64 = 16;
/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
/// `__HYPERVISOR_console_io`.
pub const HYPERVISOR_CONSOLE_IO: u64 = 18;
/// `__HYPERVISOR_physdev_op_compat` (compat since interface 0x00030202).
pub const HYPERVISOR_PHYSDEV_OP_COMPAT: u64 = 19;
/// `__HYPERVISOR_grant_table_op`.
pub const HYPERVISOR_GRANT_TABLE_OP: u64 = 20;
/// `__HYPERVISOR_vm_assist`.
pub const HYPERVISOR_VM_ASSIST: u64 = 21;
/// `__HYPERVISOR_update_va_mapping_otherdomain` (PV only).
pub const HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
/// `__HYPERVISOR_iret` (x86 PV only).
pub const HYPERVISOR_IRET: u64 = 23;
/// `__HYPERVISOR_vcpu_op`.
pub const HYPERVISOR_VCPU_OP: u64 = 24;
/// `__HYPERVISOR_set_segment_base` (x86-64 PV only).
pub const HYPERVISOR_SET_SEGMENT_BASE: u64 = 25;
/// `__HYPERVISOR_mmuext_op` (PV only).
pub const HYPERVISOR_MMUEXT_OP: u64 = 26;
/// `__HYPERVISOR_xsm_op` (formerly `acm_op`).
pub const HYPERVISOR_XSM_OP: u64 = 27;
/// `__HYPERVISOR_nmi_op`.
pub const HYPERVISOR_NMI_OP: u64 = 28;
/// `__HYPERVISOR_sched_op`.
pub const HYPERVISOR_SCHED_OP: u64 = 29;
/// `__HYPERVISOR_callback_op`.
pub const HYPERVISOR_CALLBACK_OP: u64 = 30;
/// `__HYPERVISOR_xenoprof_op`.
pub const HYPERVISOR_XENOPROF_OP: u64 = 31;
/// `__HYPERVISOR_event_channel_op`.
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
/// `__HYPERVISOR_physdev_op`.
pub const HYPERVISOR_PHYSDEV_OP: u64 = 33;
/// `__HYPERVISOR_hvm_op`.
pub const HYPERVISOR_HVM_OP: u64 = 34;
/// `__HYPERVISOR_sysctl`.
pub const HYPERVISOR_SYSCTL: u64 = 35;
/// `__HYPERVISOR_domctl`.
pub const HYPERVISOR_DOMCTL: u64 = 36;
/// `__HYPERVISOR_kexec_op`.
pub const HYPERVISOR_KEXEC_OP: u64 = 37;
/// `__HYPERVISOR_tmem_op` (removed from Xen 4.13; the number stays reserved).
pub const HYPERVISOR_TMEM_OP: u64 = 38;
/// `__HYPERVISOR_argo_op`.
pub const HYPERVISOR_ARGO_OP: u64 = 39;
/// `__HYPERVISOR_xenpmu_op`.
pub const HYPERVISOR_XENPMU_OP: u64 = 40;
/// `__HYPERVISOR_dm_op`.
pub const HYPERVISOR_DM_OP: u64 = 41;
/// `__HYPERVISOR_hypfs_op`.
pub const HYPERVISOR_HYPFS_OP: u64 = 42;
/// `__HYPERVISOR_arch_0`; on x86 `__HYPERVISOR_mca` (machine-check, `arch-x86/xen-mca.h`).
pub const HYPERVISOR_ARCH_0: u64 = 48;
/// `__HYPERVISOR_arch_1` (x86 Xen uses it internally for `paging_domctl_cont`).
pub const HYPERVISOR_ARCH_1: u64 = 49;
/// `__HYPERVISOR_arch_2`.
pub const HYPERVISOR_ARCH_2: u64 = 50;
/// `__HYPERVISOR_arch_3`.
pub const HYPERVISOR_ARCH_3: u64 = 51;
/// `__HYPERVISOR_arch_4`.
pub const HYPERVISOR_ARCH_4: u64 = 52;
/// `__HYPERVISOR_arch_5`.
pub const HYPERVISOR_ARCH_5: u64 = 53;
/// `__HYPERVISOR_arch_6`.
pub const HYPERVISOR_ARCH_6: u64 = 54;
/// `__HYPERVISOR_arch_7`.
pub const HYPERVISOR_ARCH_7: u64 = 55;

/// Operation numbers and their names (without `__HYPERVISOR_`).
const OPERATIONS: [(u64, &str); 50] = [
    (HYPERVISOR_SET_TRAP_TABLE, "set_trap_table"),
    (HYPERVISOR_MMU_UPDATE, "mmu_update"),
    (HYPERVISOR_SET_GDT, "set_gdt"),
    (HYPERVISOR_STACK_SWITCH, "stack_switch"),
    (HYPERVISOR_SET_CALLBACKS, "set_callbacks"),
    (HYPERVISOR_FPU_TASKSWITCH, "fpu_taskswitch"),
    (HYPERVISOR_SCHED_OP_COMPAT, "sched_op_compat"),
    (HYPERVISOR_PLATFORM_OP, "platform_op"),
    (HYPERVISOR_SET_DEBUGREG, "set_debugreg"),
    (HYPERVISOR_GET_DEBUGREG, "get_debugreg"),
    (HYPERVISOR_UPDATE_DESCRIPTOR, "update_descriptor"),
    (HYPERVISOR_MEMORY_OP, "memory_op"),
    (HYPERVISOR_MULTICALL, "multicall"),
    (HYPERVISOR_UPDATE_VA_MAPPING, "update_va_mapping"),
    (HYPERVISOR_SET_TIMER_OP, "set_timer_op"),
    (
        HYPERVISOR_EVENT_CHANNEL_OP_COMPAT,
        "event_channel_op_compat",
    ),
    (HYPERVISOR_XEN_VERSION, "xen_version"),
    (HYPERVISOR_CONSOLE_IO, "console_io"),
    (HYPERVISOR_PHYSDEV_OP_COMPAT, "physdev_op_compat"),
    (HYPERVISOR_GRANT_TABLE_OP, "grant_table_op"),
    (HYPERVISOR_VM_ASSIST, "vm_assist"),
    (
        HYPERVISOR_UPDATE_VA_MAPPING_OTHERDOMAIN,
        "update_va_mapping_otherdomain",
    ),
    (HYPERVISOR_IRET, "iret"),
    (HYPERVISOR_VCPU_OP, "vcpu_op"),
    (HYPERVISOR_SET_SEGMENT_BASE, "set_segment_base"),
    (HYPERVISOR_MMUEXT_OP, "mmuext_op"),
    (HYPERVISOR_XSM_OP, "xsm_op"),
    (HYPERVISOR_NMI_OP, "nmi_op"),
    (HYPERVISOR_SCHED_OP, "sched_op"),
    (HYPERVISOR_CALLBACK_OP, "callback_op"),
    (HYPERVISOR_XENOPROF_OP, "xenoprof_op"),
    (HYPERVISOR_EVENT_CHANNEL_OP, "event_channel_op"),
    (HYPERVISOR_PHYSDEV_OP, "physdev_op"),
    (HYPERVISOR_HVM_OP, "hvm_op"),
    (HYPERVISOR_SYSCTL, "sysctl"),
    (HYPERVISOR_DOMCTL, "domctl"),
    (HYPERVISOR_KEXEC_OP, "kexec_op"),
    (HYPERVISOR_TMEM_OP, "tmem_op"),
    (HYPERVISOR_ARGO_OP, "argo_op"),
    (HYPERVISOR_XENPMU_OP, "xenpmu_op"),
    (HYPERVISOR_DM_OP, "dm_op"),
    (HYPERVISOR_HYPFS_OP, "hypfs_op"),
    (HYPERVISOR_ARCH_0, "mca"),
    (HYPERVISOR_ARCH_1, "arch_1"),
    (HYPERVISOR_ARCH_2, "arch_2"),
    (HYPERVISOR_ARCH_3, "arch_3"),
    (HYPERVISOR_ARCH_4, "arch_4"),
    (HYPERVISOR_ARCH_5, "arch_5"),
    (HYPERVISOR_ARCH_6, "arch_6"),
    (HYPERVISOR_ARCH_7, "arch_7"),
];

/// The name of hypercall `op` as in Xen's `__HYPERVISOR_<name>` (48, x86's `arch_0`, is `mca`),
/// or `None` for a number Xen does not define.
pub fn name(op: u64) -> Option<&'static str> {
    OPERATIONS
        .iter()
        .find(|(number, _)| *number == op)
        .map(|(_, name)| *name)
}

// ---------------------------------------------------------------------------------------------
// Sub-operations.

/// `CONSOLEIO_write`: write `count` bytes from the guest buffer to the console.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `CONSOLEIO_read`: read up to `count` bytes of console input.
pub const CONSOLEIO_READ: u64 = 1;

/// `SCHEDOP_yield`: give up the CPU, stay runnable.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_block`: sleep until an event is pending.
pub const SCHEDOP_BLOCK: u64 = 1;
/// `SCHEDOP_shutdown`: stop the domain; the argument points at a `sched_shutdown`
/// (`{ uint32_t reason; }`, a `SHUTDOWN_*` value).
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// `SCHEDOP_poll`: block until one of the given event channels is pending.
pub const SCHEDOP_POLL: u64 = 3;
/// `SCHEDOP_remote_shutdown`: shut another domain down (privileged).
pub const SCHEDOP_REMOTE_SHUTDOWN: u64 = 4;
/// `SCHEDOP_shutdown_code`: latch the reason reported when the domain later shuts down.
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
/// `SCHEDOP_watchdog`: set up, poke or destroy a domain watchdog.
pub const SCHEDOP_WATCHDOG: u64 = 6;
/// `SCHEDOP_pin_override`: pin the vCPU to one physical CPU (hardware domain only).
pub const SCHEDOP_PIN_OVERRIDE: u64 = 7;
/// *Basalt-only* (`0x4241`, "BA"; Xen defines no such `sched_op` command): set the exit code
/// Basalt reports when this domain shuts down. The second argument is the code itself (not a
/// pointer); only its low 32 bits count. Xen returns `-ENOSYS` for this number, so a guest
/// can tell whether it runs on Basalt.
pub const SCHEDOP_BASALT_EXIT_CODE: u64 = 0x4241;

/// `SHUTDOWN_poweroff`: the domain exited normally.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`: restart the domain.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_crash`: the domain crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// `SHUTDOWN_watchdog`: the domain's watchdog expired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;

/// `XENVER_version`: the result is `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;
/// `XENVER_extraversion`: a 16-byte string such as `".0"`.
pub const XENVER_EXTRAVERSION: u64 = 1;
/// `XENVER_compile_info`.
pub const XENVER_COMPILE_INFO: u64 = 2;
/// `XENVER_capabilities`: a 1024-byte string such as `"hvm-3.0-x86_64"`.
pub const XENVER_CAPABILITIES: u64 = 3;
/// `XENVER_changeset`.
pub const XENVER_CHANGESET: u64 = 4;
/// `XENVER_platform_parameters`: the hypervisor's virtual start address.
pub const XENVER_PLATFORM_PARAMETERS: u64 = 5;
/// `XENVER_get_features`: one 32-bit word of `XENFEAT_*` bits.
pub const XENVER_GET_FEATURES: u64 = 6;
/// `XENVER_pagesize`: the result is the page size.
pub const XENVER_PAGESIZE: u64 = 7;
/// `XENVER_guest_handle`: the domain's 16-byte handle.
pub const XENVER_GUEST_HANDLE: u64 = 8;
/// `XENVER_commandline`: the hypervisor's command line (privileged).
pub const XENVER_COMMANDLINE: u64 = 9;
/// `XENVER_build_id`.
pub const XENVER_BUILD_ID: u64 = 10;

/// `VCPUOP_initialise`: set a vCPU's initial state.
pub const VCPUOP_INITIALISE: u64 = 0;
/// `VCPUOP_up`: start a vCPU.
pub const VCPUOP_UP: u64 = 1;
/// `VCPUOP_down`: stop a vCPU.
pub const VCPUOP_DOWN: u64 = 2;
/// `VCPUOP_is_up`: whether a vCPU runs.
pub const VCPUOP_IS_UP: u64 = 3;
/// `VCPUOP_get_runstate_info`.
pub const VCPUOP_GET_RUNSTATE_INFO: u64 = 4;
/// `VCPUOP_register_runstate_memory_area`.
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
/// `VCPUOP_set_periodic_timer`.
pub const VCPUOP_SET_PERIODIC_TIMER: u64 = 6;
/// `VCPUOP_stop_periodic_timer`.
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// `VCPUOP_stop_singleshot_timer`.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// `VCPUOP_register_vcpu_info`.
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
/// `VCPUOP_send_nmi`.
pub const VCPUOP_SEND_NMI: u64 = 11;
/// `VCPUOP_get_physid`.
pub const VCPUOP_GET_PHYSID: u64 = 12;
/// `VCPUOP_register_vcpu_time_memory_area`.
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;

/// `vcpu_hvm_context.mode` (public/hvm/hvm_vcpu.h): start in 32-bit
/// protected mode.
pub const VCPU_HVM_MODE_32B: u32 = 0;
/// `vcpu_hvm_context.mode`: start in 64-bit mode.
pub const VCPU_HVM_MODE_64B: u32 = 1;

fn lookup(table: &[(u64, &'static str)], value: u64) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

/// The name of `console_io` command `cmd` (`"write"`, `"read"`).
pub fn console_io_name(cmd: u64) -> Option<&'static str> {
    lookup(&[(CONSOLEIO_WRITE, "write"), (CONSOLEIO_READ, "read")], cmd)
}

/// The name of `sched_op` command `cmd` (`"yield"`, ..., `"basalt_exit_code"`).
pub fn sched_op_name(cmd: u64) -> Option<&'static str> {
    lookup(
        &[
            (SCHEDOP_YIELD, "yield"),
            (SCHEDOP_BLOCK, "block"),
            (SCHEDOP_SHUTDOWN, "shutdown"),
            (SCHEDOP_POLL, "poll"),
            (SCHEDOP_REMOTE_SHUTDOWN, "remote_shutdown"),
            (SCHEDOP_SHUTDOWN_CODE, "shutdown_code"),
            (SCHEDOP_WATCHDOG, "watchdog"),
            (SCHEDOP_PIN_OVERRIDE, "pin_override"),
            (SCHEDOP_BASALT_EXIT_CODE, "basalt_exit_code"),
        ],
        cmd,
    )
}

/// The name of `xen_version` command `cmd` (`"version"`, ..., `"build_id"`).
pub fn xen_version_name(cmd: u64) -> Option<&'static str> {
    lookup(
        &[
            (XENVER_VERSION, "version"),
            (XENVER_EXTRAVERSION, "extraversion"),
            (XENVER_COMPILE_INFO, "compile_info"),
            (XENVER_CAPABILITIES, "capabilities"),
            (XENVER_CHANGESET, "changeset"),
            (XENVER_PLATFORM_PARAMETERS, "platform_parameters"),
            (XENVER_GET_FEATURES, "get_features"),
            (XENVER_PAGESIZE, "pagesize"),
            (XENVER_GUEST_HANDLE, "guest_handle"),
            (XENVER_COMMANDLINE, "commandline"),
            (XENVER_BUILD_ID, "build_id"),
        ],
        cmd,
    )
}

/// The name of `vcpu_op` command `cmd` (`"initialise"`, `"up"`, ...).
pub fn vcpu_op_name(cmd: u64) -> Option<&'static str> {
    lookup(
        &[
            (VCPUOP_INITIALISE, "initialise"),
            (VCPUOP_UP, "up"),
            (VCPUOP_DOWN, "down"),
            (VCPUOP_IS_UP, "is_up"),
            (VCPUOP_GET_RUNSTATE_INFO, "get_runstate_info"),
            (
                VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
                "register_runstate_memory_area",
            ),
            (VCPUOP_SET_PERIODIC_TIMER, "set_periodic_timer"),
            (VCPUOP_STOP_PERIODIC_TIMER, "stop_periodic_timer"),
            (VCPUOP_SET_SINGLESHOT_TIMER, "set_singleshot_timer"),
            (VCPUOP_STOP_SINGLESHOT_TIMER, "stop_singleshot_timer"),
            (VCPUOP_REGISTER_VCPU_INFO, "register_vcpu_info"),
            (VCPUOP_SEND_NMI, "send_nmi"),
            (VCPUOP_GET_PHYSID, "get_physid"),
            (
                VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA,
                "register_vcpu_time_memory_area",
            ),
        ],
        cmd,
    )
}

// ---------------------------------------------------------------------------------------------
// Version.

/// The major version of the Xen public ABI Basalt follows (what `xen_version(version)`
/// reports).
pub const XEN_INTERFACE_MAJOR: u64 = 4;
/// The minor version of the Xen public ABI Basalt follows.
pub const XEN_INTERFACE_MINOR: u64 = 17;

/// The result of `xen_version(XENVER_version)`: `major << 16 | minor`.
pub const fn xen_version_result() -> u64 {
    (XEN_INTERFACE_MAJOR << 16) | XEN_INTERFACE_MINOR
}

// ---------------------------------------------------------------------------------------------
// Errors (Xen's errno.h; hypercalls return them negated).

/// Operation not permitted.
pub const EPERM: i64 = 1;
/// No such file or directory (no such object).
pub const ENOENT: i64 = 2;
/// No such process (no such domain).
pub const ESRCH: i64 = 3;
/// I/O error.
pub const EIO: i64 = 5;
/// No such device or address.
pub const ENXIO: i64 = 6;
/// Argument list too long.
pub const E2BIG: i64 = 7;
/// Out of memory.
pub const ENOMEM: i64 = 12;
/// Permission denied.
pub const EACCES: i64 = 13;
/// Bad address: a guest buffer that cannot be read or written.
pub const EFAULT: i64 = 14;
/// Device or resource busy.
pub const EBUSY: i64 = 16;
/// Already exists.
pub const EEXIST: i64 = 17;
/// No such device.
pub const ENODEV: i64 = 19;
/// Invalid argument.
pub const EINVAL: i64 = 22;
/// No space left.
pub const ENOSPC: i64 = 28;
/// Function not implemented: the answer to an unknown hypercall or sub-operation.
pub const ENOSYS: i64 = 38;
/// No data available.
pub const ENODATA: i64 = 61;
/// Timer expired.
pub const ETIME: i64 = 62;
/// Operation not supported.
pub const EOPNOTSUPP: i64 = 95;
/// No buffer space available.
pub const ENOBUFS: i64 = 105;
/// Timed out.
pub const ETIMEDOUT: i64 = 110;

/// The RAX value for a hypercall failing with error `e` (a positive `E*` value): `-e` in two's
/// complement, e.g. `errno_result(ENOSYS) == 0xffff_ffff_ffff_ffda`. A 32-bit guest reads the
/// low half (`0xffff_ffda`), which is the same negative number.
pub const fn errno_result(e: i64) -> u64 {
    e.wrapping_neg() as u64
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// The guest registers a hypercall uses, as the hypervisor saved them at the `VMCALL` exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    /// RAX: the operation; the result goes back here.
    pub rax: u64,
    /// RBX: argument 1 of a 32-bit guest.
    pub rbx: u64,
    /// RCX: argument 2 of a 32-bit guest.
    pub rcx: u64,
    /// RDX: argument 3 of either.
    pub rdx: u64,
    /// RSI: argument 2 of a 64-bit guest, 4 of a 32-bit one.
    pub rsi: u64,
    /// RDI: argument 1 of a 64-bit guest, 5 of a 32-bit one.
    pub rdi: u64,
    /// R8: argument 5 of a 64-bit guest.
    pub r8: u64,
    /// R10: argument 4 of a 64-bit guest.
    pub r10: u64,
}

/// A decoded hypercall: operation and its five arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Call {
    /// The operation (`HYPERVISOR_*`).
    pub op: u64,
    /// Arguments 1 to 5 (those an operation does not take are whatever the registers held).
    pub args: [u64; 5],
}

/// Decodes a hypercall from the registers, with Xen's conventions (xen.h):
///
/// - 64-bit guests (`long_mode`): operation in RAX, arguments in RDI, RSI, RDX, R10, R8;
/// - 32-bit guests: operation in EAX, arguments in EBX, ECX, EDX, ESI, EDI, each zero-extended
///   from its low 32 bits.
///
/// `long_mode` means the vCPU runs 64-bit code (EFER.LMA and CS.L both set), as Xen decides
/// with `hvm_guest_x86_mode() == 8`; a long-mode guest in a 32-bit compatibility-mode segment
/// uses the 32-bit convention. The result goes to RAX either way.
pub fn decode(regs: &GuestRegs, long_mode: bool) -> Call {
    if long_mode {
        Call {
            op: regs.rax,
            args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8],
        }
    } else {
        let low = |value: u64| value & 0xffff_ffff;
        Call {
            op: low(regs.rax),
            args: [
                low(regs.rbx),
                low(regs.rcx),
                low(regs.rdx),
                low(regs.rsi),
                low(regs.rdi),
            ],
        }
    }
}

/// A one-line description of a hypercall for traces, e.g. `console_io(write, 12, 0x1000)` or
/// `sched_op(shutdown, 0x7ff8)`.
///
/// The operation is named ([`name`]) or shown as `hypercall_<n>`; the command of `console_io`,
/// `sched_op`, `xen_version` and `vcpu_op` is named too, followed by the arguments it takes
/// (counts, vCPU numbers and exit codes in decimal, guest addresses in hex). Other operations
/// show all five arguments in hex.
pub fn describe(call: &Call) -> impl fmt::Display {
    Describe(*call)
}

struct Describe(Call);

/// How to print one argument.
#[derive(Clone, Copy)]
enum Arg {
    Hex,
    Decimal,
}

impl Describe {
    /// The command's name (if the operation has named commands) and the kinds of the arguments
    /// after the command.
    fn layout(&self) -> Option<(Option<&'static str>, &'static [Arg])> {
        let [cmd, ..] = self.0.args;
        Some(match self.0.op {
            HYPERVISOR_CONSOLE_IO => (console_io_name(cmd), &[Arg::Decimal, Arg::Hex]),
            HYPERVISOR_SCHED_OP if cmd == SCHEDOP_BASALT_EXIT_CODE => {
                (sched_op_name(cmd), &[Arg::Decimal])
            }
            HYPERVISOR_SCHED_OP => (sched_op_name(cmd), &[Arg::Hex]),
            HYPERVISOR_XEN_VERSION => (xen_version_name(cmd), &[Arg::Hex]),
            HYPERVISOR_VCPU_OP => (vcpu_op_name(cmd), &[Arg::Decimal, Arg::Hex]),
            _ => return None,
        })
    }
}

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = &self.0;
        match name(call.op) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "hypercall_{}", call.op)?,
        }
        f.write_str("(")?;
        match self.layout() {
            Some((cmd_name, kinds)) => {
                let [cmd, rest @ ..] = call.args;
                match cmd_name {
                    Some(cmd_name) => f.write_str(cmd_name)?,
                    None => write!(f, "{cmd}")?,
                }
                for (kind, value) in kinds.iter().zip(rest) {
                    match kind {
                        Arg::Hex => write!(f, ", 0x{value:x}")?,
                        Arg::Decimal => write!(f, ", {value}")?,
                    }
                }
            }
            None => {
                for (i, value) in call.args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "0x{value:x}")?;
                }
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> GuestRegs {
        GuestRegs {
            rax: 0xdead_beef_0000_0012,
            rbx: 0x1111_1111_0000_0001,
            rcx: 0x2222_2222_0000_0002,
            rdx: 0x3333_3333_0000_0003,
            rsi: 0x4444_4444_0000_0004,
            rdi: 0x5555_5555_0000_0005,
            r8: 0x6666_6666_0000_0006,
            r10: 0x7777_7777_0000_0007,
        }
    }

    #[test]
    fn decode_64_bit() {
        let call = decode(&regs(), true);
        assert_eq!(call.op, 0xdead_beef_0000_0012);
        assert_eq!(
            call.args,
            [
                0x5555_5555_0000_0005, // rdi
                0x4444_4444_0000_0004, // rsi
                0x3333_3333_0000_0003, // rdx
                0x7777_7777_0000_0007, // r10
                0x6666_6666_0000_0006, // r8
            ]
        );
    }

    #[test]
    fn decode_32_bit() {
        let call = decode(&regs(), false);
        assert_eq!(call.op, HYPERVISOR_CONSOLE_IO);
        // ebx, ecx, edx, esi, edi, zero-extended.
        assert_eq!(call.args, [1, 2, 3, 4, 5]);
        let high = GuestRegs {
            rbx: 0xffff_ffff_ffff_ffff,
            ..GuestRegs::default()
        };
        assert_eq!(decode(&high, false).args[0], 0xffff_ffff);
    }

    #[test]
    fn errno_encoding() {
        assert_eq!(errno_result(ENOSYS), 0xffff_ffff_ffff_ffda);
        assert_eq!(errno_result(EINVAL), (-22i64) as u64);
        assert_eq!(errno_result(EPERM), u64::MAX);
        assert_eq!(errno_result(0), 0);
        assert_eq!(errno_result(ENOSYS) as u32, 0xffff_ffda);
    }

    #[test]
    fn errno_values_match_xen() {
        let expected = [
            (EPERM, 1),
            (ENOENT, 2),
            (ESRCH, 3),
            (EFAULT, 14),
            (EBUSY, 16),
            (EEXIST, 17),
            (EINVAL, 22),
            (ENOSPC, 28),
            (ENOSYS, 38),
            (ENODATA, 61),
            (EOPNOTSUPP, 95),
            (ETIMEDOUT, 110),
        ];
        for (value, number) in expected {
            assert_eq!(value, number);
        }
    }

    #[test]
    fn operation_names() {
        assert_eq!(name(0), Some("set_trap_table"));
        assert_eq!(name(12), Some("memory_op"));
        assert_eq!(name(17), Some("xen_version"));
        assert_eq!(name(18), Some("console_io"));
        assert_eq!(name(20), Some("grant_table_op"));
        assert_eq!(name(21), Some("vm_assist"));
        assert_eq!(name(24), Some("vcpu_op"));
        assert_eq!(name(27), Some("xsm_op"));
        assert_eq!(name(29), Some("sched_op"));
        assert_eq!(name(30), Some("callback_op"));
        assert_eq!(name(32), Some("event_channel_op"));
        assert_eq!(name(33), Some("physdev_op"));
        assert_eq!(name(34), Some("hvm_op"));
        assert_eq!(name(35), Some("sysctl"));
        assert_eq!(name(36), Some("domctl"));
        assert_eq!(name(42), Some("hypfs_op"));
        assert_eq!(name(48), Some("mca"));
        assert_eq!(name(55), Some("arch_7"));
        for unused in [11, 43, 47, 56, 0x4241, u64::MAX] {
            assert_eq!(name(unused), None, "{unused}");
        }
        // Every number 0..=42 but 11 is named, and no name is given twice.
        for op in (0..=42).filter(|&op| op != 11) {
            assert!(name(op).is_some(), "{op}");
        }
        let names: Vec<_> = (0..64).filter_map(name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
    }

    #[test]
    fn sub_operation_names() {
        assert_eq!(console_io_name(0), Some("write"));
        assert_eq!(console_io_name(1), Some("read"));
        assert_eq!(sched_op_name(2), Some("shutdown"));
        assert_eq!(sched_op_name(7), Some("pin_override"));
        assert_eq!(sched_op_name(8), None);
        assert_eq!(sched_op_name(0x4241), Some("basalt_exit_code"));
        assert_eq!(xen_version_name(10), Some("build_id"));
        assert_eq!(vcpu_op_name(9), Some("stop_singleshot_timer"));
        assert_eq!(vcpu_op_name(14), None);
        // The Basalt-only command is not a Xen one.
        assert_eq!(sched_op_name(SCHEDOP_BASALT_EXIT_CODE & 0xff), None);
    }

    #[test]
    fn version() {
        assert_eq!(xen_version_result(), 0x0004_0011);
    }

    #[test]
    fn descriptions() {
        let show = |op, args| describe(&Call { op, args }).to_string();
        assert_eq!(
            show(HYPERVISOR_CONSOLE_IO, [CONSOLEIO_WRITE, 12, 0x1000, 0, 0]),
            "console_io(write, 12, 0x1000)"
        );
        assert_eq!(
            show(HYPERVISOR_CONSOLE_IO, [7, 1, 2, 3, 4]),
            "console_io(7, 1, 0x2)"
        );
        assert_eq!(
            show(HYPERVISOR_SCHED_OP, [SCHEDOP_SHUTDOWN, 0x7ff8, 9, 9, 9]),
            "sched_op(shutdown, 0x7ff8)"
        );
        assert_eq!(
            show(HYPERVISOR_SCHED_OP, [SCHEDOP_BASALT_EXIT_CODE, 3, 0, 0, 0]),
            "sched_op(basalt_exit_code, 3)"
        );
        assert_eq!(
            show(HYPERVISOR_XEN_VERSION, [0, 0, 0, 0, 0]),
            "xen_version(version, 0x0)"
        );
        assert_eq!(
            show(HYPERVISOR_VCPU_OP, [1, 2, 0x30, 0, 0]),
            "vcpu_op(up, 2, 0x30)"
        );
        assert_eq!(
            show(HYPERVISOR_MEMORY_OP, [1, 0x20, 0, 0, 0xff]),
            "memory_op(0x1, 0x20, 0x0, 0x0, 0xff)"
        );
        assert_eq!(show(99, [0; 5]), "hypercall_99(0x0, 0x0, 0x0, 0x0, 0x0)");
    }
}
