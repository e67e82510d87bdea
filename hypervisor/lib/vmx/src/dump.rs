//! A human-readable dump of the current VMCS, for failed VM entries and unexpected exits
//! (after Xen's `vmcs_dump_vcpu`).
//!
//! [`dump`] prints one compact line per group: guest control registers with their read
//! shadows and guest/host masks, guest registers, every guest segment, the descriptor tables,
//! guest MSRs, guest non-register state, then the host state, the controls, and the exit
//! information with the exit reason and VM-instruction error decoded. Values are hexadecimal; a
//! field whose `VMREAD` fails prints as `?`, so a partial dump is still useful.

use core::fmt::{self, Write};

use crate::error::{VmFail, VmInstructionError};
use crate::exit::{ExitReasonField, InterruptionInfo};
use crate::fields::{
    Field16, Field32, Field64, FieldNatural, VmcsAccess, VmcsExt, ctrl, exit, guest, host,
};
use crate::state::ActivityState;

/// A value that may have failed to read: hexadecimal, or `?`.
struct Hex(Option<u64>);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:#x}"),
            None => f.write_str("?"),
        }
    }
}

fn ok<T: Into<u64>>(r: Result<T, VmFail>) -> Hex {
    Hex(r.ok().map(Into::into))
}

struct Reader<'a, V: ?Sized>(&'a V);

impl<V: VmcsAccess + ?Sized> Reader<'_, V> {
    fn f16(&self, f: Field16) -> Hex {
        ok(self.0.read16(f))
    }
    fn f32(&self, f: Field32) -> Hex {
        ok(self.0.read32(f))
    }
    fn f64(&self, f: Field64) -> Hex {
        ok(self.0.read64(f))
    }
    fn nat(&self, f: FieldNatural) -> Hex {
        ok(self.0.read_nat(f))
    }
}

/// Writes the VMCS dump to `out`.
pub fn dump<V: VmcsAccess + ?Sized, W: Write>(vmcs: &V, out: &mut W) -> fmt::Result {
    let r = Reader(vmcs);

    writeln!(out, "*** Guest State ***")?;
    writeln!(
        out,
        "CR0: actual={} shadow={} gh_mask={}",
        r.nat(guest::CR0),
        r.nat(ctrl::CR0_READ_SHADOW),
        r.nat(ctrl::CR0_GUEST_HOST_MASK)
    )?;
    writeln!(
        out,
        "CR4: actual={} shadow={} gh_mask={}",
        r.nat(guest::CR4),
        r.nat(ctrl::CR4_READ_SHADOW),
        r.nat(ctrl::CR4_GUEST_HOST_MASK)
    )?;
    writeln!(
        out,
        "CR3={} PDPTE0={} PDPTE1={} PDPTE2={} PDPTE3={}",
        r.nat(guest::CR3),
        r.f64(guest::PDPTE0),
        r.f64(guest::PDPTE1),
        r.f64(guest::PDPTE2),
        r.f64(guest::PDPTE3)
    )?;
    writeln!(
        out,
        "RSP={} RIP={} RFLAGS={} DR7={}",
        r.nat(guest::RSP),
        r.nat(guest::RIP),
        r.nat(guest::RFLAGS),
        r.nat(guest::DR7)
    )?;
    for seg in &guest::SEGMENTS {
        writeln!(
            out,
            "{}: sel={} attr={} limit={} base={}",
            seg.name,
            r.f16(seg.selector),
            r.f32(seg.access_rights),
            r.f32(seg.limit),
            r.nat(seg.base)
        )?;
    }
    writeln!(
        out,
        "GDTR: limit={} base={} IDTR: limit={} base={}",
        r.f32(guest::GDTR_LIMIT),
        r.nat(guest::GDTR_BASE),
        r.f32(guest::IDTR_LIMIT),
        r.nat(guest::IDTR_BASE)
    )?;
    writeln!(
        out,
        "EFER={} PAT={} DEBUGCTL={} SYSENTER: CS={} ESP={} EIP={}",
        r.f64(guest::IA32_EFER),
        r.f64(guest::IA32_PAT),
        r.f64(guest::IA32_DEBUGCTL),
        r.f32(guest::IA32_SYSENTER_CS),
        r.nat(guest::IA32_SYSENTER_ESP),
        r.nat(guest::IA32_SYSENTER_EIP)
    )?;
    let activity = vmcs.read32(guest::ACTIVITY_STATE);
    write!(
        out,
        "Interruptibility={} Activity={}",
        r.f32(guest::INTERRUPTIBILITY_STATE),
        ok(activity)
    )?;
    if let Some(state) = activity.ok().and_then(ActivityState::from_raw) {
        write!(out, " ({})", state.name())?;
    }
    writeln!(
        out,
        " PendingDbg={} PreemptionTimer={} LinkPtr={}",
        r.nat(guest::PENDING_DEBUG_EXCEPTIONS),
        r.f32(guest::PREEMPTION_TIMER_VALUE),
        r.f64(guest::VMCS_LINK_POINTER)
    )?;

    writeln!(out, "*** Host State ***")?;
    writeln!(out, "RIP={} RSP={}", r.nat(host::RIP), r.nat(host::RSP))?;
    writeln!(
        out,
        "CS={} SS={} DS={} ES={} FS={} GS={} TR={}",
        r.f16(host::CS_SELECTOR),
        r.f16(host::SS_SELECTOR),
        r.f16(host::DS_SELECTOR),
        r.f16(host::ES_SELECTOR),
        r.f16(host::FS_SELECTOR),
        r.f16(host::GS_SELECTOR),
        r.f16(host::TR_SELECTOR)
    )?;
    writeln!(
        out,
        "FSBase={} GSBase={} TRBase={} GDTRBase={} IDTRBase={}",
        r.nat(host::FS_BASE),
        r.nat(host::GS_BASE),
        r.nat(host::TR_BASE),
        r.nat(host::GDTR_BASE),
        r.nat(host::IDTR_BASE)
    )?;
    writeln!(
        out,
        "CR0={} CR3={} CR4={}",
        r.nat(host::CR0),
        r.nat(host::CR3),
        r.nat(host::CR4)
    )?;
    writeln!(
        out,
        "EFER={} PAT={} SYSENTER: CS={} ESP={} EIP={}",
        r.f64(host::IA32_EFER),
        r.f64(host::IA32_PAT),
        r.f32(host::IA32_SYSENTER_CS),
        r.nat(host::IA32_SYSENTER_ESP),
        r.nat(host::IA32_SYSENTER_EIP)
    )?;

    writeln!(out, "*** Control State ***")?;
    writeln!(
        out,
        "PinBased={} PrimaryProcBased={} SecondaryProcBased={} ExitControls={} EntryControls={}",
        r.f32(ctrl::PIN_BASED),
        r.f32(ctrl::PRIMARY_PROCESSOR_BASED),
        r.f32(ctrl::SECONDARY_PROCESSOR_BASED),
        r.f32(ctrl::EXIT_CONTROLS),
        r.f32(ctrl::ENTRY_CONTROLS)
    )?;
    writeln!(
        out,
        "ExceptionBitmap={} PFECmask={} PFECmatch={} CR3TargetCount={} TPRThreshold={}",
        r.f32(ctrl::EXCEPTION_BITMAP),
        r.f32(ctrl::PAGE_FAULT_ERROR_CODE_MASK),
        r.f32(ctrl::PAGE_FAULT_ERROR_CODE_MATCH),
        r.f32(ctrl::CR3_TARGET_COUNT),
        r.f32(ctrl::TPR_THRESHOLD)
    )?;
    writeln!(
        out,
        "EntryInterruptionInfo={} EntryErrorCode={} EntryInstructionLength={}",
        r.f32(ctrl::ENTRY_INTERRUPTION_INFO),
        r.f32(ctrl::ENTRY_EXCEPTION_ERROR_CODE),
        r.f32(ctrl::ENTRY_INSTRUCTION_LENGTH)
    )?;
    writeln!(
        out,
        "MSRCounts: ExitStore={} ExitLoad={} EntryLoad={}",
        r.f32(ctrl::EXIT_MSR_STORE_COUNT),
        r.f32(ctrl::EXIT_MSR_LOAD_COUNT),
        r.f32(ctrl::ENTRY_MSR_LOAD_COUNT)
    )?;
    writeln!(
        out,
        "IOBitmapA={} IOBitmapB={} MSRBitmap={} TSCOffset={} EPTP={} VPID={} XSSExitBitmap={}",
        r.f64(ctrl::IO_BITMAP_A),
        r.f64(ctrl::IO_BITMAP_B),
        r.f64(ctrl::MSR_BITMAP),
        r.f64(ctrl::TSC_OFFSET),
        r.f64(ctrl::EPT_POINTER),
        r.f16(ctrl::VPID),
        r.f64(ctrl::XSS_EXITING_BITMAP)
    )?;

    writeln!(out, "*** Exit Information ***")?;
    let reason = vmcs.read32(exit::EXIT_REASON);
    write!(out, "ExitReason={}", ok(reason))?;
    if let Ok(raw) = reason {
        let field = ExitReasonField::from_raw(raw);
        write!(out, " ({}", field.reason.name())?;
        if field.entry_failure {
            out.write_str(", VM-entry failure")?;
        }
        out.write_str(")")?;
    }
    writeln!(
        out,
        " Qualification={} GuestLinear={} GuestPhysical={}",
        r.nat(exit::EXIT_QUALIFICATION),
        r.nat(exit::GUEST_LINEAR_ADDRESS),
        r.f64(exit::GUEST_PHYSICAL_ADDRESS)
    )?;
    let intr = vmcs.read32(exit::INTERRUPTION_INFO);
    write!(out, "InterruptionInfo={}", ok(intr))?;
    if let Ok(raw) = intr {
        let info = InterruptionInfo::decode(raw);
        if info.valid {
            write!(out, " (vector {:#x}, {:?})", info.vector, info.kind)?;
        }
    }
    writeln!(
        out,
        " ErrorCode={} IDTVectoring={} IDTVectoringErrorCode={}",
        r.f32(exit::INTERRUPTION_ERROR_CODE),
        r.f32(exit::IDT_VECTORING_INFO),
        r.f32(exit::IDT_VECTORING_ERROR_CODE)
    )?;
    writeln!(
        out,
        "InstructionLength={} InstructionInfo={}",
        r.f32(exit::INSTRUCTION_LENGTH),
        r.f32(exit::INSTRUCTION_INFO)
    )?;
    let error = vmcs.read32(exit::VM_INSTRUCTION_ERROR);
    write!(out, "VMInstructionError={}", ok(error))?;
    if let Ok(n) = error
        && n != 0
    {
        write!(out, " ({})", VmInstructionError::from_raw(n))?;
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::all::ALL_FIELDS;

    /// Writes every field of [`ALL_FIELDS`] as `group::NAME (encoding) = value`, one per line.
    pub fn dump_all<V: VmcsAccess + ?Sized, W: Write>(vmcs: &V, out: &mut W) -> fmt::Result {
        for field in &ALL_FIELDS {
            writeln!(
                out,
                "{field} ({:#06x}) = {}",
                field.encoding,
                Hex(vmcs.read_raw(field.encoding).ok())
            )?;
        }
        Ok(())
    }
    use std::collections::HashMap;

    /// A VMCS in a hash map; absent fields fail to read with VMfailValid(12).
    #[derive(Default)]
    struct FakeVmcs(HashMap<u32, u64>);

    impl VmcsAccess for FakeVmcs {
        fn read_raw(&self, encoding: u32) -> Result<u64, VmFail> {
            self.0
                .get(&encoding)
                .copied()
                .ok_or(VmFail::Valid(VmInstructionError::UnsupportedComponent))
        }
        fn write_raw(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
            self.0.insert(encoding, value);
            Ok(())
        }
    }

    #[allow(clippy::unwrap_used)]
    fn sample() -> FakeVmcs {
        let mut v = FakeVmcs::default();
        v.write_nat(guest::CR0, 0x10).unwrap();
        v.write_nat(ctrl::CR0_READ_SHADOW, 0x10).unwrap();
        v.write_nat(ctrl::CR0_GUEST_HOST_MASK, 0x8000_0021).unwrap();
        v.write_nat(guest::RIP, 0xFFF0).unwrap();
        v.write_nat(guest::RFLAGS, 0x2).unwrap();
        v.write16(guest::CS_SELECTOR, 0xF000).unwrap();
        v.write32(guest::CS_ACCESS_RIGHTS, 0x9B).unwrap();
        v.write32(guest::CS_LIMIT, 0xFFFF).unwrap();
        v.write_nat(guest::CS_BASE, 0xFFFF_0000).unwrap();
        v.write32(guest::ACTIVITY_STATE, 1).unwrap();
        v.write_nat(host::RIP, 0xFFFF_8000_0010_0000).unwrap();
        v.write32(ctrl::PIN_BASED, 0x7F).unwrap();
        v.write16(ctrl::VPID, 1).unwrap();
        v.write32(exit::EXIT_REASON, 0x8000_0021).unwrap();
        v.write32(exit::VM_INSTRUCTION_ERROR, 7).unwrap();
        v.write32(exit::INTERRUPTION_INFO, 0x8000_0B0E).unwrap();
        v
    }

    #[test]
    fn dump_prints_names_values_and_question_marks() {
        let vmcs = sample();
        let mut s = String::new();
        dump(&vmcs, &mut s).unwrap();
        for needle in [
            "*** Guest State ***",
            "CR0: actual=0x10 shadow=0x10 gh_mask=0x80000021",
            "CR4: actual=? shadow=? gh_mask=?",
            "RIP=0xfff0 RFLAGS=0x2",
            "CS: sel=0xf000 attr=0x9b limit=0xffff base=0xffff0000",
            "ES: sel=? attr=? limit=? base=?",
            "Activity=0x1 (HLT)",
            "*** Host State ***",
            "RIP=0xffff800000100000",
            "PinBased=0x7f",
            "VPID=0x1",
            "ExitReason=0x80000021 (VM-entry failure due to invalid guest state, VM-entry failure)",
            "InterruptionInfo=0x80000b0e (vector 0xe, HardwareException)",
            "VMInstructionError=0x7 (VM entry with invalid control field(s))",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
        // One line per group: 1 header + 4 CR/register lines + 8 segments + 4 more guest
        // lines, and so on; keep it compact.
        assert!(s.lines().count() < 40, "{s}");
    }

    #[test]
    fn dump_of_an_empty_vmcs_is_all_question_marks() {
        let mut s = String::new();
        dump(&FakeVmcs::default(), &mut s).unwrap();
        assert!(!s.contains("0x"), "{s}");
        assert!(s.contains("ExitReason=? Qualification=?"));
    }

    #[test]
    fn dump_all_lists_every_field() {
        let vmcs = sample();
        let mut s = String::new();
        dump_all(&vmcs, &mut s).unwrap();
        assert_eq!(s.lines().count(), ALL_FIELDS.len());
        assert!(s.contains("guest::RIP (0x681e) = 0xfff0\n"));
        assert!(s.contains("ctrl::VPID (0x0000) = 0x1\n"));
        assert!(s.contains("exit::EXIT_REASON (0x4402) = 0x80000021\n"));
        assert!(s.contains("host::RSP (0x6c14) = ?\n"));
    }

    struct Full;

    impl Write for Full {
        fn write_str(&mut self, _: &str) -> fmt::Result {
            Err(fmt::Error)
        }
    }

    #[test]
    fn write_errors_propagate() {
        assert!(dump(&sample(), &mut Full).is_err());
        assert!(dump_all(&sample(), &mut Full).is_err());
    }
}
