#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! The CPU model a guest sees, vendor-neutral and testable on the host (docs/platform.md,
//! "CPUID", and docs/vmx.md, "Guest-visible checks"):
//!
//! - [`cpuid`]: CPUID as an allow-list built once from the host's answers, and the per-vCPU
//!   parts (APIC ID, OSXSAVE, XSAVE sizes for the guest's XCR0, TSC frequency).
//! - [`xstate`]: which XCR0 values `XSETBV` may load and how large a vCPU's XSAVE area is.
//! - [`cr`]: the architectural checks of control-register and EFER writes.
//!
//! The VT-x layer (and the AMD-V layer after it) asks these modules before it loads anything a
//! guest chose into a real register: a value they refuse becomes an exception injected into the
//! guest, never a fault in the hypervisor.

pub mod cpuid;
pub mod cr;
pub mod xstate;
