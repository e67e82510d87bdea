//! The runtime of Basalt's test guests: small `no_std` kernels that Basalt
//! boots through the PVH boot ABI (docs/testing.md).
//!
//! Each binary in `src/bin/` is one guest. It declares its
//! `fn main(cmdline: &str) -> u32` with [`entry!`]; the runtime's PVH entry
//! (`entry.S`) enters long mode with the first [`MAPPED_GIB`] GiB
//! identity-mapped, the runtime installs an exception table, reads the
//! command line from the `hvm_start_info`, calls `main` and ends the domain
//! with [`exit`]`(code)`.
//!
//! - Console: [`print!`] and [`println!`] write to I/O port `0xE9`.
//! - Hypercalls: [`hypercall`] (Xen's public ABI, `vmcall`).
//! - Several vCPUs: [`smp`] starts secondary vCPUs (`VCPUOP_initialise`,
//!   `VCPUOP_up`), each with its own stack and per-CPU state.
//! - Checked instructions: [`cpu`] runs instructions that may raise `#GP` or
//!   `#UD` and reports the vector instead of crashing.
//! - Test verdicts: every guest ends with `TEST PASS <name>` or
//!   `TEST FAIL <name>: <what>` ([`pass`], [`fail!`], [`Checks`]).
//!
//! Outside Basalt (e.g. QEMU's own PVH loader, for checking the guests
//! themselves), `vmcall` raises `#UD`: hypercalls then return
//! [`hypercall::ENOSYS`] and [`exit`] falls back to QEMU's `isa-debug-exit`
//! device at port `0xf4` (see [`hypercall::sched_shutdown`]).

#![no_std]

pub mod console;
pub mod cpu;
pub mod fuzz;
pub mod hypercall;
pub mod smp;
mod test;

pub use hypercall::{exit, sched_shutdown};
pub use test::{Checks, arg, arg_u64, fail, pass};

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// GiB of address space the entry stub identity-maps with 2 MiB pages: the
/// 4 GiB below 4 GiB plus one more, so that a guest can touch guest-physical
/// 4 GiB (beyond any test guest's RAM) without a page fault of its own: the
/// access reaches the hypervisor's second-level translation.
pub const MAPPED_GIB: u64 = 5;

/// Size of the boot stack (in .bss), used by `main` and the exception
/// handlers alike (on vCPU 0; other vCPUs: [`smp::VCPU_STACK_SIZE`]).
pub const STACK_SIZE: usize = 16 * 1024;

core::arch::global_asm!(
    include_str!("entry.S"),
    MAPPED_GIB = const MAPPED_GIB,
    STACK_SIZE = const STACK_SIZE,
    options(att_syntax)
);

/// `hvm_start_info.magic`: `XEN_HVM_START_MAGIC_VALUE`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// The fields of Xen's `struct hvm_start_info` (start_info.h), copied out of
/// guest memory.
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    /// Guest-physical address of the structure itself.
    pub paddr: u64,
    /// [`START_INFO_MAGIC`].
    pub magic: u32,
    /// Version of the structure (0 or 1).
    pub version: u32,
    /// `SIF_xxx` flags.
    pub flags: u32,
    /// Number of modules in `modlist_paddr`.
    pub nr_modules: u32,
    /// Guest-physical address of the module list.
    pub modlist_paddr: u64,
    /// Guest-physical address of the command line (a C string), or 0.
    pub cmdline_paddr: u64,
    /// Guest-physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// Guest-physical address of the memory map (version 1), or 0.
    pub memmap_paddr: u64,
    /// Entries in the memory map (version 1).
    pub memmap_entries: u32,
}

/// One `struct hvm_memmap_table_entry` of the start info's memory map.
#[derive(Debug, Clone, Copy)]
pub struct MemmapEntry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 = RAM, 2 = reserved, ...).
    pub kind: u32,
}

static START_INFO: AtomicU64 = AtomicU64::new(0);
static NAME_PTR: AtomicUsize = AtomicUsize::new(0);
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

/// Reads a `T` from a guest-physical address.
///
/// # Safety
/// `paddr..paddr + size_of::<T>()` must be guest RAM inside the identity map.
unsafe fn read_phys<T: Copy>(paddr: u64) -> T {
    // SAFETY: the caller promises the range is mapped RAM; the identity map
    // makes the physical address the pointer.
    unsafe { core::ptr::read_unaligned(paddr as *const T) }
}

/// `struct hvm_start_info` up to `rsdp_paddr`: version 0.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawStartInfoV0 {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
}

/// The fields version 1 adds (at offset 40).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawStartInfoV1 {
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

impl StartInfo {
    /// Reads the structure at `paddr` (the `%ebx` of the PVH entry).
    ///
    /// # Safety
    /// `paddr` must be the address the loader passed in `%ebx`.
    unsafe fn read(paddr: u64) -> StartInfo {
        // SAFETY: the loader put at least the version-0 structure there
        // (caller).
        let v0: RawStartInfoV0 = unsafe { read_phys(paddr) };
        let v1 = if v0.version >= 1 {
            // SAFETY: version 1 structures have these fields too.
            unsafe { read_phys::<RawStartInfoV1>(paddr + 40) }
        } else {
            RawStartInfoV1 {
                memmap_paddr: 0,
                memmap_entries: 0,
                reserved: 0,
            }
        };
        StartInfo {
            paddr,
            magic: v0.magic,
            version: v0.version,
            flags: v0.flags,
            nr_modules: v0.nr_modules,
            modlist_paddr: v0.modlist_paddr,
            cmdline_paddr: v0.cmdline_paddr,
            rsdp_paddr: v0.rsdp_paddr,
            memmap_paddr: v1.memmap_paddr,
            memmap_entries: v1.memmap_entries,
        }
    }

    /// Entry `index` of the memory map (version 1 structures only).
    pub fn memmap(&self, index: u32) -> Option<MemmapEntry> {
        if self.memmap_paddr == 0 || index >= self.memmap_entries {
            return None;
        }
        let at = self.memmap_paddr + u64::from(index) * 24;
        // SAFETY: the loader describes `memmap_entries` 24-byte entries at
        // `memmap_paddr`.
        let raw: RawMemmapEntry = unsafe { read_phys(at) };
        Some(MemmapEntry {
            addr: raw.addr,
            size: raw.size,
            kind: raw.kind,
        })
    }
}

/// The start info the guest was booted with.
pub fn start_info() -> StartInfo {
    // SAFETY: `start` stored the address the loader passed, after checking
    // its magic.
    unsafe { StartInfo::read(START_INFO.load(Ordering::Relaxed)) }
}

/// The name of the running guest (its binary's name).
pub fn name() -> &'static str {
    let ptr = NAME_PTR.load(Ordering::Relaxed);
    if ptr == 0 {
        return "guest";
    }
    let len = NAME_LEN.load(Ordering::Relaxed);
    // SAFETY: `start` stored the pointer and length of a `&'static str`.
    let bytes = unsafe { core::slice::from_raw_parts(ptr as *const u8, len) };
    core::str::from_utf8(bytes).unwrap_or("guest")
}

/// Longest command line read (longer ones are cut).
const CMDLINE_MAX: usize = 4096;

/// The command line at `paddr` (a C string), as UTF-8.
fn cmdline(paddr: u64) -> &'static str {
    if paddr == 0 {
        return "";
    }
    let mut len = 0;
    // SAFETY: the loader put a NUL-terminated string at `paddr`; the scan
    // stops at the NUL or after CMDLINE_MAX bytes.
    while len < CMDLINE_MAX && unsafe { read_phys::<u8>(paddr + len as u64) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes just read are guest memory that nothing writes.
    let bytes = unsafe { core::slice::from_raw_parts(paddr as *const u8, len) };
    match core::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            println!(
                "guest: command line is not UTF-8 after {} bytes; cut there",
                e.valid_up_to()
            );
            // SAFETY: `from_utf8` checked these bytes.
            unsafe { core::str::from_utf8_unchecked(&bytes[..e.valid_up_to()]) }
        }
    }
}

/// The runtime's part of `guest_entry` (called by [`entry!`]'s expansion):
/// sets up exceptions, checks the start info, runs `main` and exits with
/// its code.
#[doc(hidden)]
pub fn start(start_info: u64, name: &'static str, main: fn(&str) -> u32) -> ! {
    NAME_PTR.store(name.as_ptr() as usize, Ordering::Relaxed);
    NAME_LEN.store(name.len(), Ordering::Relaxed);
    smp::init_cpu(0);
    cpu::install_idt();
    // SAFETY: reading the magic only: 4 bytes at the address the loader gave.
    let magic: u32 = unsafe { read_phys(start_info) };
    if start_info == 0 || magic != START_INFO_MAGIC {
        println!(
            "TEST FAIL {name}: bad hvm_start_info at {start_info:#x} (magic {magic:#x}, expected {START_INFO_MAGIC:#x})"
        );
        sched_shutdown(hypercall::SHUTDOWN_CRASH);
    }
    START_INFO.store(start_info, Ordering::Relaxed);
    let code = main(cmdline(self::start_info().cmdline_paddr));
    exit(code)
}

/// Declares the guest's `fn main(cmdline: &str) -> u32`: the runtime calls
/// it with the PVH command line and exits with the code it returns
/// (0 = success).
///
/// ```ignore
/// #![no_std]
/// #![no_main]
/// basalt_test_guests::entry!(main);
/// fn main(cmdline: &str) -> u32 { basalt_test_guests::pass() }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The 64-bit entry the PVH stub (`entry.S`) calls with the
        /// guest-physical address of the `hvm_start_info`.
        #[unsafe(no_mangle)]
        pub extern "C" fn guest_entry(start_info: u64) -> ! {
            let main: fn(&str) -> u32 = $main;
            $crate::start(start_info, env!("CARGO_BIN_NAME"), main)
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!(
            "guest panic: {} ({}:{})",
            info.message(),
            at.file(),
            at.line()
        ),
        None => println!("guest panic: {}", info.message()),
    }
    println!("TEST FAIL {}: panic", name());
    sched_shutdown(hypercall::SHUTDOWN_CRASH)
}
