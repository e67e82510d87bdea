//! The VMX instructions (Intel SDM Vol. 3C, "VMX Instruction Reference"),
//! each turning the VMfail conventions (CF: VMfailInvalid, ZF: VMfailValid
//! with the error in the VMCS) into a typed [`VmFail`].

use basalt_vmx::error::{VmFail, VmInstructionError};
use basalt_vmx::fields;

/// Decodes RFLAGS after a VMX instruction.
fn check(rflags: u64) -> Result<(), VmFail> {
    const CF: u64 = 1 << 0;
    const ZF: u64 = 1 << 6;
    if rflags & CF != 0 {
        Err(VmFail::Invalid)
    } else if rflags & ZF != 0 {
        let raw = vmread(fields::exit::VM_INSTRUCTION_ERROR.encoding()).unwrap_or(0);
        Err(VmFail::Valid(VmInstructionError::from_raw(raw as u32)))
    } else {
        Ok(())
    }
}

/// VMXON with the region at physical address `region`.
///
/// # Safety
///
/// `region` must be a 4 KiB-aligned physical page, reserved for this CPU's
/// VMXON region, holding the VMCS revision id; CR0/CR4 must satisfy the
/// VMX fixed bits with CR4.VMXE set.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller's contract; VMXON reads the 64-bit operand.
    unsafe {
        core::arch::asm!("vmxon [{0}]", "pushfq", "pop {1}", in(reg) &region, out(reg) rflags, options(nostack));
    }
    check(rflags)
}

/// VMCLEAR of the VMCS at `vmcs`.
///
/// # Safety
///
/// `vmcs` must be a VMCS region of Basalt's (4 KiB, revision id set).
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("vmclear [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags, options(nostack));
    }
    check(rflags)
}

/// VMPTRLD: makes `vmcs` current on this CPU.
///
/// # Safety
///
/// As for [`vmclear`]; the VMCS must not be current on another CPU.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("vmptrld [{0}]", "pushfq", "pop {1}", in(reg) &vmcs, out(reg) rflags, options(nostack));
    }
    check(rflags)
}

/// VMREAD of `encoding` from the current VMCS.
pub fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let rflags: u64;
    // SAFETY: VMREAD only reads the current VMCS (or fails with flags set,
    // which `check` turns into an error); it has no memory operand here.
    unsafe {
        core::arch::asm!(
            "vmread {0}, {1}",
            "pushfq",
            "pop {2}",
            out(reg) value,
            in(reg) u64::from(encoding),
            out(reg) rflags,
            options(nostack)
        );
    }
    if rflags & 0x41 != 0 {
        // Avoid recursion: report without reading the error field.
        return Err(if rflags & 1 != 0 {
            VmFail::Invalid
        } else {
            VmFail::Valid(VmInstructionError::from_raw(12))
        });
    }
    Ok(value)
}

/// VMREAD without the failure check, for the exit hot path: reading a
/// field that exists from the current VMCS cannot fail (SDM, VMREAD
/// "Operation": VMfail only without a current VMCS or for an unsupported
/// field). Returns 0 if it did fail anyway.
#[inline(always)]
pub fn vmread_fast(encoding: u32) -> u64 {
    let mut value: u64 = 0;
    // SAFETY: as for `vmread`; the destination register keeps 0 on failure.
    unsafe {
        core::arch::asm!("vmread {0}, {1}", inout(reg) value, in(reg) u64::from(encoding), options(nostack));
    }
    value
}

/// VMWRITE without the failure check, for the exit hot path (guest RIP and
/// general fields that exist; see [`vmread_fast`]).
///
/// # Safety
///
/// As for [`vmwrite`].
#[inline(always)]
pub unsafe fn vmwrite_fast(encoding: u32, value: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!("vmwrite {0}, {1}", in(reg) u64::from(encoding), in(reg) value, options(nostack));
    }
}

/// VMWRITE of `value` to `encoding` in the current VMCS.
///
/// # Safety
///
/// The write must keep Basalt's invariants: host-state fields describe
/// Basalt's own state, guest-state fields only what the domain may have.
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    let rflags: u64;
    // SAFETY: the caller's contract; VMWRITE touches only the current VMCS.
    unsafe {
        core::arch::asm!(
            "vmwrite {0}, {1}",
            "pushfq",
            "pop {2}",
            in(reg) u64::from(encoding),
            in(reg) value,
            out(reg) rflags,
            options(nostack)
        );
    }
    check(rflags)
}

/// INVEPT all-context (type 2): drops every EPT-derived translation.
pub fn invept_all() -> Result<(), VmFail> {
    let descriptor = [0u64; 2];
    let rflags: u64;
    // SAFETY: INVEPT only invalidates cached translations; the descriptor is
    // a valid 16-byte operand.
    unsafe {
        core::arch::asm!("invept {0}, [{1}]", "pushfq", "pop {2}", in(reg) 2u64, in(reg) &descriptor, out(reg) rflags, options(nostack));
    }
    check(rflags)
}

/// INVVPID (SDM Vol. 3C 31.3, "INVVPID"): type 1 (single-context) drops
/// every linear and combined translation tagged with `vpid`; type 2
/// (all-context) those of every VPID but 0. `single` picks the type.
pub fn invvpid(vpid: u16, single: bool) -> Result<(), VmFail> {
    // Descriptor: VPID in bits 15:0, bits 63:16 reserved (0), then a linear
    // address used only by the individual-address type.
    let descriptor = [u64::from(vpid), 0u64];
    let kind: u64 = if single { 1 } else { 2 };
    let rflags: u64;
    // SAFETY: INVVPID only invalidates cached translations; the descriptor
    // is a valid 16-byte operand with its reserved bits clear.
    unsafe {
        core::arch::asm!("invvpid {0}, [{1}]", "pushfq", "pop {2}", in(reg) kind, in(reg) &descriptor, out(reg) rflags, options(nostack));
    }
    check(rflags)
}

/// The current VMCS, through VMREAD/VMWRITE, for `basalt_vmx`'s typed
/// accessors and the VMCS dump.
#[derive(Debug)]
pub struct CurrentVmcs;

impl basalt_vmx::fields::VmcsAccess for CurrentVmcs {
    fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
        vmread(encoding)
    }

    fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        // SAFETY: `CurrentVmcs` is only handed to code that programs a
        // VMCS Basalt owns (vcpu.rs), which keeps the invariants.
        unsafe { vmwrite(encoding, value) }
    }
}
