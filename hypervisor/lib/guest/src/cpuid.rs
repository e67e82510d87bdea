//! The hypervisor CPUID signatures (the leaf itself is answered by `basalt-cpu`).
//!
//! A guest finds out which hypervisor it runs on through CPUID leaves from
//! 0x4000_0000 up (with CPUID.1:ECX bit 31, "hypervisor present",
//! set): the base leaf returns the highest hypervisor leaf in EAX and a 12-byte signature in
//! EBX, ECX, EDX. Xen answers `"XenVMMXenVMM"` ([`XEN_SIGNATURE`]); KVM `"KVMKVMKVM\0\0\0"`.
//! Guests look for Xen's signature at 0x4000_0000 and, in steps of 0x100, up to 0x4001_0000,
//! because Xen moves its leaves to 0x4000_0100 when it also offers another hypervisor's
//! interface.

/// Xen's signature, `"XenVMMXenVMM"`: EBX = `"XenV"`, ECX = `"MMXe"`, EDX = `"nVMM"`.
pub const XEN_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";

/// Basalt's own signature, `"BasaltBasalt"`.
pub const BASALT_SIGNATURE: [u8; 12] = *b"BasaltBasalt";
