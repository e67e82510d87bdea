#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! AMD SVM (AMD64 Architecture Programmer's Manual Vol. 2, ch. 15 "Secure Virtual Machine"),
//! the pure half: typed VMCB fields (appendix B), exit codes (appendix C) and the information
//! that comes with them, event injection, the I/O and MSR permission maps, ASID allocation and
//! the capabilities CPUID reports. Nothing here executes an SVM instruction; the AMD-V backend
//! of the hypervisor will do that with these types (docs/amd-v.md).

pub mod asid;
pub mod caps;
pub mod event;
pub mod exit;
pub mod insn;
pub mod maps;
pub mod vmcb;
