#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Building guest domains from boot modules: pure logic, testable on the host.
//!
//! Basalt starts its guests the way Xen starts PVH guests: each guest kernel is an ELF image
//! with a `XEN_ELFNOTE_PHYS32_ENTRY` note, entered in 32-bit protected mode with paging off and
//! `%ebx` pointing at an `hvm_start_info` structure (Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`; the same ABI Linux's
//! `arch/x86/platform/pvh/`, QEMU and Firecracker use).
//!
//! The hypervisor (ring 0) uses this crate while it turns the Multiboot2 boot modules into
//! domains:
//!
//! 1. [`spec::parse_module`] reads each module's command line: a guest kernel
//!    (`name=web memory=256M vcpus=2 -- console=hvc0`) or the initrd of one
//!    (`initrd-for=web`).
//! 2. [`elf::parse`] validates the kernel image against the domain's memory size and finds its
//!    PVH entry point.
//! 3. [`start_info::start_info_size`] and [`start_info::plan_layout`] place the boot information
//!    and the initrds after the image.
//! 4. [`elf::load`] copies the segments into the domain's memory, the hypervisor copies the
//!    initrds to the planned addresses, and [`start_info::write_start_info`] writes the
//!    `hvm_start_info`, its module list, the e820-style memory map
//!    ([`start_info::guest_memmap`]) and the command lines.
//! 5. The vCPU starts at [`elf::GuestImage::entry`] with `%ebx` =
//!    [`start_info::StartInfoPlan::start_info_gpa`].
//!
//! Once the guest runs, [`hypercall`] decodes its `VMCALL`s (Xen's hypercall numbers, register
//! conventions and error numbers) and [`cpuid`] builds the hypervisor CPUID leaves through which
//! the guest discovers it runs on a Xen-compatible hypervisor.
//!
//! # Memory access
//!
//! The crate has no `unsafe` and touches no memory but the byte slices it is given. Guest memory
//! is reached through the [`GuestMemory`] trait (in the hypervisor: the domain's frames through
//! the direct map; in tests: a vector; [`SliceMemory`] for any byte slice). Nothing needs
//! `alloc`, and no input (command line, ELF file, register values) makes any function panic:
//! every problem is an error value whose `Display` names the cause and the fix.

pub mod acpi;
pub mod cpuid;
pub mod elf;
pub mod hypercall;
pub mod linux;
pub mod mem;
pub mod spec;
pub mod start_info;
pub mod xenver;

pub use mem::{GuestMemory, MemoryError, SliceMemory};
