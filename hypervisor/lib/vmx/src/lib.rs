#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Pure VMX logic for Basalt: everything about Intel VT-x that is data, not instructions.
//!
//! Basalt runs its guests with Intel VMX (Intel SDM Vol. 3C). Executing the VMX instructions
//! (`VMXON`, `VMPTRLD`, `VMREAD`, `VMWRITE`, `VMLAUNCH`, `INVEPT`, ...) and reading MSRs needs
//! ring 0 and inline assembly; that lives in the hypervisor's `arch/x86_64/vmx`. Everything
//! else — which number names which VMCS field, which control bit means what, which controls
//! this CPU allows, how to decode an exit — is plain arithmetic, and sits here, in a crate with
//! no `unsafe`, no `alloc`, no inline assembly and no panics, tested on the host with
//! `cargo test -p basalt-vmx`.
//!
//! The kernel plugs into the crate through two traits:
//!
//! - [`fields::VmcsAccess`]: `VMREAD`/`VMWRITE` of the current VMCS by raw field encoding.
//!   The blanket extension trait [`fields::VmcsExt`] adds width-typed accessors over the typed
//!   field constants of [`fields`], so a 32-bit field cannot be written with a 64-bit value.
//! - [`caps::MsrSource`]: `RDMSR` of the VMX capability MSRs, from which [`caps::VmxCaps`]
//!   is decoded.
//!
//! # Modules
//!
//! | module | SDM source |
//! | --- | --- |
//! | [`fields`] | Appendix B, "Field Encoding in VMCS" |
//! | [`error`] | "VMX Instruction Reference": "VM Instruction Error Numbers" |
//! | [`controls`] | "Virtual Machine Control Structures": "VM-Execution Control Fields", "VM-Exit Control Fields", "VM-Entry Control Fields" |
//! | [`caps`] | Appendix A, "VMX Capability Reporting Facility" |
//! | [`negotiate`] | Appendix A ("Basic VMX Information", "VM-Execution Controls") and "VMX Non-Root Operation"; the algorithm follows Xen's `adjust_vmx_controls` |
//! | [`exit`] | Appendix C, "VMX Basic Exit Reasons"; "VM Exits": "Exit Qualification" tables; "VM-Exit Information Fields" |
//! | [`state`] | "Virtual Machine Control Structures": "Guest Non-Register State" |
//! | [`bitmaps`] | "VM-Execution Control Fields": "MSR-Bitmap Address" |
//! | [`segment`] | "Virtual Machine Control Structures": "Guest Register State" (access-rights format) |
//! | [`dump`] | a human-readable VMCS dump, after Xen's `vmcs_dump_vcpu` |
//! | [`spec`] | Intel's speculative-execution guidance: RSB fill, IBPB, L1D flush, `VERW` around VM entries |
//! | [`vpid`] | "Virtual Processor Identifiers (VPIDs)": the VPID allocator |
//!
//! # Typical boot sequence (in the kernel)
//!
//! 1. `caps::VmxCaps::read(&msrs)?` — decode the capability MSRs (after checking
//!    `IA32_FEATURE_CONTROL` with [`caps::FeatureControl`]).
//! 2. `negotiate::negotiate(&caps, &negotiate::Wanted::basalt_default())?` — pick the control
//!    values, or fail with the list of missing features; log the [`negotiate::Negotiated`]
//!    summary.
//! 3. `negotiate::fix_cr0`/`fix_cr4` for the CR0/CR4 values to run VMXON with and to put in the
//!    guest and host state.
//! 4. Build the MSR and I/O bitmaps with [`bitmaps`], write the VMCS with [`fields::VmcsExt`],
//!    and on every exit decode [`exit::ExitReasonField`] and the exit qualification.
//! 5. On a failed VM entry, [`dump::dump`] the VMCS.

pub mod bitmaps;
pub mod caps;
pub mod controls;
pub mod dump;
pub mod error;
pub mod exit;
pub mod fields;
pub mod negotiate;
pub mod segment;
pub mod spec;
pub mod state;
pub mod vpid;
