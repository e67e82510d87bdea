//! Speculative-execution hygiene around VM entries and exits: which of the
//! four actions a CPU needs, from what it enumerates (docs/vmx.md,
//! "Speculative-execution hygiene"). The hypervisor reads CPUID leaf 7 and
//! `IA32_ARCH_CAPABILITIES` into [`CpuFacts`]; [`SpecPolicy::decide`] says
//! what to do; `entry.S` and the scheduler do it.
//!
//! | action | when | needed where |
//! |---|---|---|
//! | return stack buffer fill | every VM exit, before the first `RET` | always, since a guest can leave return predictions that point into Basalt; one `CALL` (or none with `PBRSB_NO`) is enough with enhanced IBRS, but only while `IA32_SPEC_CTRL.IBRS` is set ([`CpuFacts::host_ibrs`]; Basalt does not set it yet, so it fills 32 entries) |
//! | IBPB (`IA32_PRED_CMD`) | a CPU switches to a vCPU of another domain | CPUID.7.EDX\[26\] (IBRS/IBPB) |
//! | L1D flush (`IA32_FLUSH_CMD`) | every VM entry | Intel, CPUID.7.EDX\[28\], and neither `RDCL_NO` (not affected by L1TF) nor `SKIP_L1DFL_VMENTRY` (an outer hypervisor flushes) |
//! | `VERW` buffer clear | every VM entry, as the last instruction before it | Intel, CPUID.7.EDX\[10\] (MD_CLEAR), and MDS applies (no `MDS_NO`) or `RFDS_CLEAR`; not when the L1D flush runs and scrubs the same buffers (no `FB_CLEAR`, no `RFDS_CLEAR`) |
//!
//! The rules follow the published guidance of Intel and the choices Xen
//! (`xen/arch/x86/spec_ctrl.c`) and KVM (`arch/x86/kvm/vmx`) make by
//! default, simplified: no per-model lists, so a CPU that enumerates
//! nothing is treated as affected.

/// CPUID.(EAX=7,ECX=0):EDX bit 10: `VERW` clears CPU buffers.
pub const CPUID7_EDX_MD_CLEAR: u32 = 1 << 10;
/// CPUID.7.EDX bit 26: IBRS and IBPB (`IA32_SPEC_CTRL`, `IA32_PRED_CMD`).
pub const CPUID7_EDX_IBRS_IBPB: u32 = 1 << 26;
/// CPUID.7.EDX bit 28: `IA32_FLUSH_CMD` (L1D flush).
pub const CPUID7_EDX_L1D_FLUSH: u32 = 1 << 28;
/// CPUID.7.EDX bit 29: `IA32_ARCH_CAPABILITIES` exists.
pub const CPUID7_EDX_ARCH_CAPS: u32 = 1 << 29;

/// `IA32_ARCH_CAPABILITIES` (MSR 0x10A) bit 0: not affected by
/// Rogue Data Cache Load, hence not by L1TF.
pub const ARCH_CAPS_RDCL_NO: u64 = 1 << 0;
/// Bit 1: enhanced IBRS.
pub const ARCH_CAPS_IBRS_ALL: u64 = 1 << 1;
/// Bit 3: no L1D flush is needed on VM entry (set by an outer hypervisor).
pub const ARCH_CAPS_SKIP_L1DFL_VMENTRY: u64 = 1 << 3;
/// Bit 5: not affected by Microarchitectural Data Sampling.
pub const ARCH_CAPS_MDS_NO: u64 = 1 << 5;
/// Bit 17: `VERW` clears fill buffers (MMIO stale data).
pub const ARCH_CAPS_FB_CLEAR: u64 = 1 << 17;
/// Bit 24: not affected by Post-barrier Return Stack Buffer Predictions.
pub const ARCH_CAPS_PBRSB_NO: u64 = 1 << 24;
/// Bit 28: `VERW` clears register files (RFDS).
pub const ARCH_CAPS_RFDS_CLEAR: u64 = 1 << 28;

/// What the CPU enumerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFacts {
    /// "GenuineIntel" (L1TF and MDS are Intel issues).
    pub intel: bool,
    /// CPUID.(EAX=7,ECX=0):EDX (0 when leaf 7 does not exist).
    pub cpuid7_edx: u32,
    /// `IA32_ARCH_CAPABILITIES`, 0 when CPUID.7.EDX\[29\] is clear.
    pub arch_caps: u64,
    /// Whether Basalt keeps `IA32_SPEC_CTRL.IBRS` set on every CPU. Enhanced
    /// IBRS protects Basalt's return predictions only while it is set, so
    /// the shorter RSB fills are chosen only then.
    pub host_ibrs: bool,
}

/// How the return stack buffer is overwritten on VM exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsbFill {
    /// 32 `CALL`s whose return addresses are speculation traps.
    Full,
    /// One `CALL` and `LFENCE` (enhanced IBRS, for PBRSB).
    Lite,
    /// Nothing (eIBRS and `PBRSB_NO`).
    None,
}

/// The actions a CPU takes around its VM entries and exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecPolicy {
    /// On every VM exit.
    pub rsb: RsbFill,
    /// IBPB when a CPU switches to a vCPU of another domain.
    pub ibpb_on_domain_switch: bool,
    /// L1D flush before every VM entry.
    pub l1d_flush_on_entry: bool,
    /// `VERW` right before every VM entry.
    pub verw_on_entry: bool,
}

impl SpecPolicy {
    /// The actions `facts` call for.
    pub fn decide(facts: &CpuFacts) -> SpecPolicy {
        let edx = facts.cpuid7_edx;
        let caps = if edx & CPUID7_EDX_ARCH_CAPS != 0 {
            facts.arch_caps
        } else {
            0
        };
        let eibrs = caps & ARCH_CAPS_IBRS_ALL != 0 && facts.host_ibrs;
        let rsb = if !eibrs {
            RsbFill::Full
        } else if caps & ARCH_CAPS_PBRSB_NO == 0 {
            RsbFill::Lite
        } else {
            RsbFill::None
        };
        let l1tf = facts.intel && caps & ARCH_CAPS_RDCL_NO == 0;
        let l1d_flush_on_entry =
            l1tf && edx & CPUID7_EDX_L1D_FLUSH != 0 && caps & ARCH_CAPS_SKIP_L1DFL_VMENTRY == 0;
        let md_clear = edx & CPUID7_EDX_MD_CLEAR != 0;
        let mds = facts.intel && caps & ARCH_CAPS_MDS_NO == 0;
        let rfds_clear = caps & ARCH_CAPS_RFDS_CLEAR != 0;
        let fb_clear = caps & ARCH_CAPS_FB_CLEAR != 0;
        // The L1D flush scrubs the same buffers VERW does on parts where
        // MD_CLEAR is the only clearing enumerated.
        let flush_covers_verw = l1d_flush_on_entry && !fb_clear && !rfds_clear;
        let verw_on_entry = md_clear && (mds || rfds_clear) && !flush_covers_verw;
        SpecPolicy {
            rsb,
            ibpb_on_domain_switch: edx & CPUID7_EDX_IBRS_IBPB != 0,
            l1d_flush_on_entry,
            verw_on_entry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intel(edx: u32, caps: u64) -> SpecPolicy {
        SpecPolicy::decide(&CpuFacts {
            intel: true,
            cpuid7_edx: edx,
            arch_caps: caps,
            host_ibrs: true,
        })
    }

    const ALL_FEATURES: u32 =
        CPUID7_EDX_MD_CLEAR | CPUID7_EDX_IBRS_IBPB | CPUID7_EDX_L1D_FLUSH | CPUID7_EDX_ARCH_CAPS;

    #[test]
    fn skylake_with_mitigation_microcode_does_everything_but_verw() {
        // Skylake-SP with 2019+ microcode, no ARCH_CAPABILITIES: L1TF and
        // MDS affected; the L1D flush also clears the MDS buffers.
        let p = intel(ALL_FEATURES & !CPUID7_EDX_ARCH_CAPS, 0);
        assert_eq!(p.rsb, RsbFill::Full);
        assert!(p.ibpb_on_domain_switch);
        assert!(p.l1d_flush_on_entry);
        assert!(!p.verw_on_entry);
    }

    #[test]
    fn mds_only_part_uses_verw() {
        // Cascade Lake: RDCL_NO (no L1TF) but MDS affected.
        let p = intel(ALL_FEATURES, ARCH_CAPS_RDCL_NO | ARCH_CAPS_IBRS_ALL);
        assert!(!p.l1d_flush_on_entry);
        assert!(p.verw_on_entry);
        assert_eq!(p.rsb, RsbFill::Lite);
    }

    #[test]
    fn nested_hypervisor_may_skip_the_flush() {
        let p = intel(ALL_FEATURES, ARCH_CAPS_SKIP_L1DFL_VMENTRY);
        assert!(!p.l1d_flush_on_entry);
        assert!(p.verw_on_entry, "MDS still applies, VERW takes over");
    }

    #[test]
    fn fb_clear_keeps_verw_next_to_the_flush() {
        let p = intel(ALL_FEATURES, ARCH_CAPS_FB_CLEAR);
        assert!(p.l1d_flush_on_entry);
        assert!(p.verw_on_entry);
    }

    #[test]
    fn sapphire_rapids_needs_only_ibpb() {
        let caps = ARCH_CAPS_RDCL_NO | ARCH_CAPS_IBRS_ALL | ARCH_CAPS_MDS_NO | ARCH_CAPS_PBRSB_NO;
        let p = intel(ALL_FEATURES, caps);
        assert_eq!(
            p,
            SpecPolicy {
                rsb: RsbFill::None,
                ibpb_on_domain_switch: true,
                l1d_flush_on_entry: false,
                verw_on_entry: false,
            }
        );
    }

    #[test]
    fn rfds_clear_turns_verw_on_for_mds_no_parts() {
        let caps = ARCH_CAPS_RDCL_NO | ARCH_CAPS_MDS_NO | ARCH_CAPS_RFDS_CLEAR;
        assert!(intel(ALL_FEATURES, caps).verw_on_entry);
    }

    #[test]
    fn nothing_enumerated_means_rsb_fill_only() {
        // An emulator (Bochs) or an old CPU without the microcode: no
        // IBPB, flush or VERW to use; the RSB fill needs nothing.
        let p = intel(0, 0);
        assert_eq!(
            p,
            SpecPolicy {
                rsb: RsbFill::Full,
                ibpb_on_domain_switch: false,
                l1d_flush_on_entry: false,
                verw_on_entry: false,
            }
        );
    }

    #[test]
    fn arch_caps_ignored_without_its_cpuid_bit() {
        let p = intel(CPUID7_EDX_L1D_FLUSH, ARCH_CAPS_RDCL_NO);
        assert!(p.l1d_flush_on_entry);
    }

    #[test]
    fn amd_needs_no_l1d_flush_or_verw() {
        let p = SpecPolicy::decide(&CpuFacts {
            intel: false,
            cpuid7_edx: CPUID7_EDX_IBRS_IBPB | CPUID7_EDX_MD_CLEAR | CPUID7_EDX_L1D_FLUSH,
            arch_caps: 0,
            host_ibrs: false,
        });
        assert!(!p.l1d_flush_on_entry && !p.verw_on_entry);
        assert!(p.ibpb_on_domain_switch);
        assert_eq!(p.rsb, RsbFill::Full);
    }

    #[test]
    fn enhanced_ibrs_shortens_the_fill_only_with_ibrs_on() {
        let facts = CpuFacts {
            intel: true,
            cpuid7_edx: CPUID7_EDX_IBRS_IBPB | CPUID7_EDX_ARCH_CAPS,
            arch_caps: ARCH_CAPS_IBRS_ALL
                | ARCH_CAPS_PBRSB_NO
                | ARCH_CAPS_RDCL_NO
                | ARCH_CAPS_MDS_NO,
            host_ibrs: false,
        };
        assert_eq!(SpecPolicy::decide(&facts).rsb, RsbFill::Full);
        let on = CpuFacts {
            host_ibrs: true,
            ..facts
        };
        assert_eq!(SpecPolicy::decide(&on).rsb, RsbFill::None);
    }
}
