//! What the processor's SVM offers (APM Vol. 2 §15.4 "Enabling SVM", CPUID Fn8000_000A).

use core::fmt;

bitflags::bitflags! {
    /// CPUID Fn8000_000A EDX: optional SVM features.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct SvmFeatures: u32 {
        /// Nested paging.
        const NPT = 1 << 0;
        /// LBR virtualization.
        const LBRV = 1 << 1;
        /// SVM lock.
        const SVML = 1 << 2;
        /// The next sequential instruction pointer is saved on #VMEXIT (nRIP).
        const NRIPS = 1 << 3;
        /// TSC rate MSR.
        const TSC_RATE = 1 << 4;
        /// VMCB clean bits.
        const VMCB_CLEAN = 1 << 5;
        /// TLB_CONTROL can flush one ASID.
        const FLUSH_BY_ASID = 1 << 6;
        /// Decode assists (instruction bytes and operands in the VMCB).
        const DECODE_ASSISTS = 1 << 7;
        /// Pause-intercept filter.
        const PAUSE_FILTER = 1 << 10;
        /// Pause-filter threshold.
        const PAUSE_FILTER_THRESHOLD = 1 << 12;
        /// Advanced virtual interrupt controller.
        const AVIC = 1 << 13;
        /// VMSAVE/VMLOAD virtualization.
        const V_VMSAVE_VMLOAD = 1 << 15;
        /// Virtual GIF.
        const VGIF = 1 << 16;
        /// Virtual NMI.
        const VNMI = 1 << 25;
    }
}

/// The SVM capabilities of a processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvmCaps {
    /// SVM revision (Fn8000_000A EAX\[7:0\]).
    pub revision: u8,
    /// Number of ASIDs (Fn8000_000A EBX), ASID 0 being the host's.
    pub asids: u32,
    /// Optional features.
    pub features: SvmFeatures,
}

/// Why Basalt cannot use SVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmUnavailable {
    /// CPUID Fn8000_0001 ECX\[2\] is clear.
    NoSvm,
    /// VM_CR.SVMDIS is set: the firmware disabled SVM.
    DisabledByFirmware,
    /// No nested paging (Basalt needs it).
    NoNestedPaging,
    /// Fewer than two ASIDs (one for the host, one for guests).
    NoAsids,
}

impl fmt::Display for SvmUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSvm => write!(
                f,
                "this CPU has no AMD-V (CPUID 8000_0001h ECX bit 2 is clear): run Basalt on an \
                 AMD CPU with SVM, or under QEMU with `-cpu EPYC` or `qemu64,+svm,+npt`"
            ),
            Self::DisabledByFirmware => write!(
                f,
                "AMD-V is disabled by the firmware (VM_CR.SVMDIS): enable \"SVM Mode\" in the \
                 BIOS/UEFI setup and reboot"
            ),
            Self::NoNestedPaging => write!(
                f,
                "this CPU's AMD-V has no nested paging (CPUID 8000_000Ah EDX bit 0): Basalt \
                 needs it (QEMU: add `+npt` to `-cpu`)"
            ),
            Self::NoAsids => write!(f, "this CPU's AMD-V reports fewer than two ASIDs"),
        }
    }
}

/// VM_CR (MSR C001_0114h) SVMDIS, bit 4.
pub const VM_CR_SVMDIS: u64 = 1 << 4;

impl SvmCaps {
    /// Reads the capabilities from CPUID (`host(leaf, subleaf)`) and VM_CR, and checks that
    /// Basalt can use them: SVM present and enabled, nested paging, at least two ASIDs.
    pub fn discover(
        host: &impl Fn(u32, u32) -> [u32; 4],
        vm_cr: u64,
    ) -> Result<Self, SvmUnavailable> {
        if host(0x8000_0000, 0)[0] < 0x8000_000a || host(0x8000_0001, 0)[2] & (1 << 2) == 0 {
            return Err(SvmUnavailable::NoSvm);
        }
        if vm_cr & VM_CR_SVMDIS != 0 {
            return Err(SvmUnavailable::DisabledByFirmware);
        }
        let [eax, ebx, _, edx] = host(0x8000_000a, 0);
        let caps = Self {
            revision: eax as u8,
            asids: ebx,
            features: SvmFeatures::from_bits_truncate(edx),
        };
        if !caps.features.contains(SvmFeatures::NPT) {
            return Err(SvmUnavailable::NoNestedPaging);
        }
        if caps.asids < 2 {
            return Err(SvmUnavailable::NoAsids);
        }
        Ok(caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(ecx1: u32, edx_a: u32, asids: u32) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| match leaf {
            0x8000_0000 => [0x8000_001f, 0, 0, 0],
            0x8000_0001 => [0, 0, ecx1, 0],
            0x8000_000a => [1, asids, 0, edx_a],
            _ => [0; 4],
        }
    }

    #[test]
    fn qemu_tcg_epyc() {
        // Measured under QEMU 7.2 TCG, -cpu EPYC: revision 1, 16 ASIDs, NPT only.
        let caps = SvmCaps::discover(&cpu(1 << 2, 1, 0x10), 0).unwrap();
        assert_eq!(caps.asids, 16);
        assert_eq!(caps.features, SvmFeatures::NPT);
        assert!(!caps.features.contains(SvmFeatures::NRIPS));
    }

    #[test]
    fn bochs_ryzen() {
        // Bochs 2.7 `ryzen`: EDX 0x44f, 0x8000 ASIDs.
        let caps = SvmCaps::discover(&cpu(1 << 2, 0x44f, 0x8000), 0).unwrap();
        assert!(caps.features.contains(
            SvmFeatures::NPT
                | SvmFeatures::NRIPS
                | SvmFeatures::FLUSH_BY_ASID
                | SvmFeatures::PAUSE_FILTER
        ));
    }

    #[test]
    fn refusals_name_the_cause() {
        assert_eq!(
            SvmCaps::discover(&cpu(0, 1, 16), 0),
            Err(SvmUnavailable::NoSvm)
        );
        assert_eq!(
            SvmCaps::discover(&cpu(1 << 2, 1, 16), VM_CR_SVMDIS),
            Err(SvmUnavailable::DisabledByFirmware)
        );
        assert_eq!(
            SvmCaps::discover(&cpu(1 << 2, 0, 16), 0),
            Err(SvmUnavailable::NoNestedPaging)
        );
        assert_eq!(
            SvmCaps::discover(&cpu(1 << 2, 1, 1), 0),
            Err(SvmUnavailable::NoAsids)
        );
        let text = std::format!("{}", SvmUnavailable::NoNestedPaging);
        assert!(text.contains("+npt"));
    }
}
