//! Xen's guest interface as Basalt implements it, the parts that need no hardware
//! (docs/control-domain.md): the layout of `shared_info`, `vcpu_info`, `vcpu_time_info` and
//! `vcpu_runstate_info` (Xen's `public/xen.h` and `public/vcpu.h`, x86-64), the 2-level event
//! channel table ([`evtchn`]), the pvclock scale ([`time`]) and the hypercall page
//! ([`hypercall_page`]).
//!
//! Ring 0 supplies the guest memory the bits live in through [`evtchn::EventWords`]; everything
//! here is host-tested.

#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod evtchn;
pub mod grant;
pub mod ioreq;
pub mod layout;
pub mod time;

/// Xen's `DOMID_SELF`: "the calling domain" wherever a domain id is expected.
pub const DOMID_SELF: u16 = 0x7ff0;
/// The hypercall-page MSR Basalt reports in CPUID leaf 0x40000002 (Xen's).
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;
/// Bytes per hypercall stub in the hypercall page.
pub const STUB_SIZE: usize = 32;
/// `__HYPERVISOR_iret`, whose stub is `ud2` on HVM (there is no PV iret).
const HYPERVISOR_IRET: usize = 23;

/// Which instruction the hypercall stubs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallInsn {
    /// Intel's `VMCALL` (0F 01 C1).
    Vmcall,
    /// AMD's `VMMCALL` (0F 01 D9).
    Vmmcall,
}

/// The 4 KiB hypercall page Xen writes for an HVM guest: 128 stubs of 32 bytes, stub `i`
/// being `mov eax, i; vmcall (or vmmcall); ret`, and the `iret` stub (23) `ud2`.
pub fn hypercall_page(insn: CallInsn) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    let call: [u8; 3] = match insn {
        CallInsn::Vmcall => [0x0f, 0x01, 0xc1],
        CallInsn::Vmmcall => [0x0f, 0x01, 0xd9],
    };
    for (i, stub) in page.chunks_exact_mut(STUB_SIZE).enumerate() {
        if i == HYPERVISOR_IRET {
            stub[..2].copy_from_slice(&[0x0f, 0x0b]);
            continue;
        }
        stub[0] = 0xb8;
        stub[1..5].copy_from_slice(&(i as u32).to_le_bytes());
        stub[5..8].copy_from_slice(&call);
        stub[8] = 0xc3;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_stubs() {
        let page = hypercall_page(CallInsn::Vmcall);
        // Stub 17 (xen_version): mov eax, 17; vmcall; ret.
        assert_eq!(
            &page[17 * 32..17 * 32 + 9],
            &[0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xc3]
        );
        assert_eq!(&page[23 * 32..23 * 32 + 2], &[0x0f, 0x0b]);
        let amd = hypercall_page(CallInsn::Vmmcall);
        assert_eq!(&amd[127 * 32 + 5..127 * 32 + 9], &[0x0f, 0x01, 0xd9, 0xc3]);
        assert_eq!(amd[127 * 32 + 1], 127);
    }
}
