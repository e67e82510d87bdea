//! The hypervisor CPUID leaves.
//!
//! A guest finds out which hypervisor it runs on through CPUID leaves from
//! [`HYPERVISOR_LEAF_BASE`] (0x4000_0000) up (with CPUID.1:ECX bit 31, "hypervisor present",
//! set): the base leaf returns the highest hypervisor leaf in EAX and a 12-byte signature in
//! EBX, ECX, EDX. Xen answers `"XenVMMXenVMM"` ([`XEN_SIGNATURE`]); KVM `"KVMKVMKVM\0\0\0"`.
//! Guests look for Xen's signature at 0x4000_0000 and, in steps of 0x100, up to 0x4001_0000,
//! because Xen moves its leaves to 0x4000_0100 when it also offers another hypervisor's
//! interface.

/// The first hypervisor CPUID leaf.
pub const HYPERVISOR_LEAF_BASE: u32 = 0x4000_0000;

/// Xen's signature, `"XenVMMXenVMM"`: EBX = `"XenV"`, ECX = `"MMXe"`, EDX = `"nVMM"`.
pub const XEN_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";

/// Basalt's own signature, `"BasaltBasalt"`.
pub const BASALT_SIGNATURE: [u8; 12] = *b"BasaltBasalt";

/// The hypervisor base leaf: `[EAX, EBX, ECX, EDX]` with EAX = `max_leaf` (the highest
/// hypervisor leaf) and the signature's bytes 0–3 in EBX, 4–7 in ECX and 8–11 in EDX, each
/// little-endian (the order Xen and KVM use, so that the registers stored in that order spell the
/// signature).
pub fn signature_leaf(signature: &[u8; 12], max_leaf: u32) -> [u32; 4] {
    let [b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3] = *signature;
    [
        max_leaf,
        u32::from_le_bytes([b0, b1, b2, b3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([d0, d1, d2, d3]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_signature_registers() {
        let [eax, ebx, ecx, edx] = signature_leaf(&XEN_SIGNATURE, 0x4000_0005);
        assert_eq!(eax, 0x4000_0005);
        // The values Xen's guests compare against (e.g. Linux's xen_cpuid_base()).
        assert_eq!(ebx, 0x566e_6558); // "XenV"
        assert_eq!(ecx, 0x65584d4d); // "MMXe"
        assert_eq!(edx, 0x4d4d_566e); // "nVMM"
    }

    #[test]
    fn registers_spell_the_signature() {
        let [_, ebx, ecx, edx] = signature_leaf(&BASALT_SIGNATURE, HYPERVISOR_LEAF_BASE);
        let mut spelled = Vec::new();
        for reg in [ebx, ecx, edx] {
            spelled.extend_from_slice(&reg.to_le_bytes());
        }
        assert_eq!(spelled, b"BasaltBasalt");
    }
}
