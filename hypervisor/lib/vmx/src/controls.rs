//! The VMX control fields as bit sets (Intel SDM Vol. 3C, "Virtual Machine Control
//! Structures": "Pin-Based VM-Execution Controls", "Processor-Based VM-Execution Controls",
//! "VM-Exit Controls" and "VM-Entry Controls").
//!
//! Every architecturally defined bit is named; each type's `bit_name` gives the SDM's name of a
//! bit (used in [`crate::negotiate::Missing`]), with "on exit"/"on entry" added where the SDM
//! uses the same name for an exit and an entry control (e.g. "load IA32_EFER").
//!
//! Bits the SDM leaves undefined are "reserved": most of them belong to the *default1* class
//! and must be 1 (see [`crate::caps`]); they have no constants here, and [`crate::negotiate`]
//! keeps them as the capability MSRs require.

/// Defines a bitflags type whose every flag also has a human name.
macro_rules! named_bits {
    (
        $(#[$m:meta])*
        pub struct $T:ident: $R:ty {
            $( $(#[$fm:ident $($fmargs:tt)*])* const $F:ident = $bit:literal, $desc:literal; )*
        }
    ) => {
        bitflags::bitflags! {
            $(#[$m])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct $T: $R {
                $( $(#[$fm $($fmargs)*])* const $F = 1 << $bit; )*
            }
        }

        impl $T {
            /// The SDM's name for bit `bit`, or `None` for a bit without a definition here.
            pub const fn bit_name(bit: u32) -> Option<&'static str> {
                match bit {
                    $( $bit => Some($desc), )*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use named_bits;

named_bits! {
    /// Pin-based VM-execution controls (SDM "Pin-Based VM-Execution Controls"; field
    /// [`crate::fields::ctrl::PIN_BASED`]). Bits 1, 2 and 4 are reserved default1.
    pub struct PinBased: u32 {
        /// External interrupts cause VM exits (otherwise they go through the guest IDT).
        const EXTERNAL_INTERRUPT_EXITING = 0, "external-interrupt exiting";
        /// NMIs cause VM exits.
        const NMI_EXITING = 3, "NMI exiting";
        /// NMIs are never blocked by the guest; "virtual-NMI" blocking is tracked instead
        /// (requires NMI exiting).
        const VIRTUAL_NMIS = 5, "virtual NMIs";
        /// The VMX-preemption timer counts down in non-root operation and exits at zero.
        const PREEMPTION_TIMER = 6, "activate VMX-preemption timer";
        /// Posted-interrupt processing.
        const POSTED_INTERRUPTS = 7, "process posted interrupts";
    }
}

named_bits! {
    /// Primary processor-based VM-execution controls (SDM "Processor-Based VM-Execution
    /// Controls", table "Definitions of Primary Processor-Based VM-Execution Controls"; field
    /// [`crate::fields::ctrl::PRIMARY_PROCESSOR_BASED`]). Bits 1, 4-6, 8, 13-16 and 26 are
    /// default1 (15 and 16 are CR3-load/store exiting, which the TRUE capability MSRs may let
    /// software clear).
    pub struct PrimaryControls: u32 {
        /// Exit at the start of any instruction when RFLAGS.IF = 1 and nothing blocks
        /// interrupts.
        const INTERRUPT_WINDOW_EXITING = 2, "interrupt-window exiting";
        /// RDTSC/RDTSCP/RDMSR(IA32_TSC) add the TSC offset field.
        const USE_TSC_OFFSETTING = 3, "use TSC offsetting";
        /// HLT causes a VM exit.
        const HLT_EXITING = 7, "HLT exiting";
        /// INVLPG causes a VM exit.
        const INVLPG_EXITING = 9, "INVLPG exiting";
        /// MWAIT causes a VM exit.
        const MWAIT_EXITING = 10, "MWAIT exiting";
        /// RDPMC causes a VM exit.
        const RDPMC_EXITING = 11, "RDPMC exiting";
        /// RDTSC (and RDTSCP, when enabled) causes a VM exit.
        const RDTSC_EXITING = 12, "RDTSC exiting";
        /// MOV to CR3 causes a VM exit unless the value is a CR3-target value.
        const CR3_LOAD_EXITING = 15, "CR3-load exiting";
        /// MOV from CR3 causes a VM exit.
        const CR3_STORE_EXITING = 16, "CR3-store exiting";
        /// The tertiary processor-based controls are used.
        const ACTIVATE_TERTIARY = 17, "activate tertiary controls";
        /// MOV to CR8 causes a VM exit.
        const CR8_LOAD_EXITING = 19, "CR8-load exiting";
        /// MOV from CR8 causes a VM exit.
        const CR8_STORE_EXITING = 20, "CR8-store exiting";
        /// TPR virtualization through the virtual-APIC page.
        const USE_TPR_SHADOW = 21, "use TPR shadow";
        /// Exit at the start of any instruction when nothing blocks NMIs (requires virtual
        /// NMIs).
        const NMI_WINDOW_EXITING = 22, "NMI-window exiting";
        /// MOV DR causes a VM exit.
        const MOV_DR_EXITING = 23, "MOV-DR exiting";
        /// Every I/O instruction causes a VM exit (ignored when I/O bitmaps are used).
        const UNCONDITIONAL_IO_EXITING = 24, "unconditional I/O exiting";
        /// I/O bitmaps A and B decide which ports cause VM exits.
        const USE_IO_BITMAPS = 25, "use I/O bitmaps";
        /// Monitor trap flag: exit after the guest's next instruction.
        const MONITOR_TRAP_FLAG = 27, "monitor trap flag";
        /// MSR bitmaps decide which RDMSR/WRMSR cause VM exits.
        const USE_MSR_BITMAPS = 28, "use MSR bitmaps";
        /// MONITOR causes a VM exit.
        const MONITOR_EXITING = 29, "MONITOR exiting";
        /// PAUSE causes a VM exit.
        const PAUSE_EXITING = 30, "PAUSE exiting";
        /// The secondary processor-based controls are used.
        const ACTIVATE_SECONDARY = 31, "activate secondary controls";
    }
}

named_bits! {
    /// Secondary processor-based VM-execution controls (SDM "Processor-Based VM-Execution
    /// Controls", table "Definitions of Secondary Processor-Based VM-Execution Controls";
    /// field [`crate::fields::ctrl::SECONDARY_PROCESSOR_BASED`]). Used only when
    /// [`PrimaryControls::ACTIVATE_SECONDARY`] is 1. All bits are default0.
    pub struct SecondaryControls: u32 {
        /// Accesses to the APIC-access page are virtualized.
        const VIRTUALIZE_APIC_ACCESSES = 0, "virtualize APIC accesses";
        /// Extended page tables.
        const ENABLE_EPT = 1, "EPT";
        /// LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR cause VM exits.
        const DESCRIPTOR_TABLE_EXITING = 2, "descriptor-table exiting";
        /// RDTSCP does not raise #UD in the guest.
        const ENABLE_RDTSCP = 3, "enable RDTSCP";
        /// x2APIC MSR accesses to the TPR are virtualized.
        const VIRTUALIZE_X2APIC = 4, "virtualize x2APIC mode";
        /// Cached linear translations are tagged with the VPID field.
        const ENABLE_VPID = 5, "VPID";
        /// WBINVD (and WBNOINVD) causes a VM exit.
        const WBINVD_EXITING = 6, "WBINVD exiting";
        /// The guest may run unpaged or in real mode (requires EPT).
        const UNRESTRICTED_GUEST = 7, "unrestricted guest";
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRT = 8, "APIC-register virtualization";
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 9, "virtual-interrupt delivery";
        /// PAUSE loops at CPL 0 cause VM exits (PLE_Gap/PLE_Window).
        const PAUSE_LOOP_EXITING = 10, "PAUSE-loop exiting";
        /// RDRAND causes a VM exit.
        const RDRAND_EXITING = 11, "RDRAND exiting";
        /// INVPCID does not raise #UD in the guest.
        const ENABLE_INVPCID = 12, "enable INVPCID";
        /// VMFUNC is available in the guest.
        const ENABLE_VMFUNC = 13, "enable VM functions";
        /// VMREAD/VMWRITE in the guest access a shadow VMCS.
        const VMCS_SHADOWING = 14, "VMCS shadowing";
        /// ENCLS causes VM exits per the ENCLS-exiting bitmap.
        const ENCLS_EXITING = 15, "enable ENCLS exiting";
        /// RDSEED causes a VM exit.
        const RDSEED_EXITING = 16, "RDSEED exiting";
        /// Page-modification logging.
        const ENABLE_PML = 17, "enable PML";
        /// Some EPT violations become virtualization exceptions (#VE).
        const EPT_VE = 18, "EPT-violation #VE";
        /// Intel PT suppresses the VMX-related packets.
        const CONCEAL_FROM_PT = 19, "conceal VMX from PT";
        /// XSAVES/XRSTORS do not raise #UD in the guest.
        const ENABLE_XSAVES = 20, "enable XSAVES/XRSTORS";
        /// PASID translation for ENQCMD/ENQCMDS.
        const PASID_TRANSLATION = 21, "PASID translation";
        /// EPT execute permission split by guest user/supervisor mode.
        const MODE_BASED_EPT_EXEC = 22, "mode-based execute control for EPT";
        /// EPT sub-page write permissions.
        const SUB_PAGE_WRITE_PERMISSIONS = 23, "sub-page write permissions for EPT";
        /// Intel PT output addresses are guest-physical.
        const PT_USES_GUEST_PHYSICAL = 24, "Intel PT uses guest physical addresses";
        /// RDTSC/RDTSCP/RDMSR(IA32_TSC) results are scaled by the TSC multiplier.
        const TSC_SCALING = 25, "use TSC scaling";
        /// TPAUSE/UMONITOR/UMWAIT do not raise #UD in the guest.
        const ENABLE_USER_WAIT_PAUSE = 26, "enable user wait and pause";
        /// PCONFIG does not raise #UD in the guest.
        const ENABLE_PCONFIG = 27, "enable PCONFIG";
        /// ENCLV causes VM exits per the ENCLV-exiting bitmap.
        const ENCLV_EXITING = 28, "enable ENCLV exiting";
        /// Bus locks in the guest cause VM exits.
        const BUS_LOCK_DETECTION = 30, "VMM bus-lock detection";
        /// A VM exit occurs when an instruction does not complete in time.
        const INSTRUCTION_TIMEOUT = 31, "instruction timeout";
    }
}

named_bits! {
    /// VM-exit controls (SDM "VM-Exit Controls"; field
    /// [`crate::fields::ctrl::EXIT_CONTROLS`]). Bits 0-8, 10, 11, 13, 14, 16 and 17 are
    /// default1 (bit 2, save debug controls, may be cleared with the TRUE MSRs).
    pub struct ExitControls: u32 {
        /// DR7 and IA32_DEBUGCTL are saved into the guest state on exit.
        const SAVE_DEBUG = 2, "save debug controls";
        /// The host runs in 64-bit mode after the exit (must be 1 for a 64-bit host).
        const HOST_ADDRESS_SPACE_SIZE = 9, "host address-space size";
        /// IA32_PERF_GLOBAL_CTRL is loaded from the host state.
        const LOAD_PERF_GLOBAL = 12, "load IA32_PERF_GLOBAL_CTRL on exit";
        /// The processor acknowledges the interrupt controller on an external-interrupt exit
        /// and stores the vector in the exit interruption information.
        const ACK_INTERRUPT_ON_EXIT = 15, "acknowledge interrupt on exit";
        /// The guest IA32_PAT is saved on exit.
        const SAVE_PAT = 18, "save IA32_PAT";
        /// The host IA32_PAT is loaded on exit.
        const LOAD_PAT = 19, "load IA32_PAT on exit";
        /// The guest IA32_EFER is saved on exit.
        const SAVE_EFER = 20, "save IA32_EFER";
        /// The host IA32_EFER is loaded on exit.
        const LOAD_EFER = 21, "load IA32_EFER on exit";
        /// The VMX-preemption timer value is saved on exit.
        const SAVE_PREEMPTION_TIMER = 22, "save VMX-preemption timer value";
        /// IA32_BNDCFGS is cleared on exit.
        const CLEAR_BNDCFGS = 23, "clear IA32_BNDCFGS";
        /// Intel PT suppresses the PIP for the exit.
        const CONCEAL_FROM_PT = 24, "conceal VMX from PT on exit";
        /// IA32_RTIT_CTL is cleared on exit.
        const CLEAR_RTIT_CTL = 25, "clear IA32_RTIT_CTL";
        /// IA32_LBR_CTL is cleared on exit.
        const CLEAR_LBR_CTL = 26, "clear IA32_LBR_CTL";
        /// UINV is cleared on exit.
        const CLEAR_UINV = 27, "clear UINV";
        /// CET state is loaded from the host state.
        const LOAD_CET = 28, "load CET state on exit";
        /// IA32_PKRS is loaded from the host state.
        const LOAD_PKRS = 29, "load PKRS on exit";
        /// The guest IA32_PERF_GLOBAL_CTRL is saved on exit.
        const SAVE_PERF_GLOBAL = 30, "save IA32_PERF_GLOBAL_CTRL";
        /// The secondary VM-exit controls are used.
        const ACTIVATE_SECONDARY = 31, "activate secondary VM-exit controls";
    }
}

named_bits! {
    /// VM-entry controls (SDM "VM-Entry Controls"; field
    /// [`crate::fields::ctrl::ENTRY_CONTROLS`]). Bits 0-8 and 12 are default1 (bit 2, load
    /// debug controls, may be cleared with the TRUE MSRs).
    pub struct EntryControls: u32 {
        /// DR7 and IA32_DEBUGCTL are loaded from the guest state on entry.
        const LOAD_DEBUG = 2, "load debug controls";
        /// The guest runs in IA-32e mode (IA32_EFER.LMA = 1) after entry. Set per vCPU; with
        /// an unrestricted guest the processor updates it on every exit (`IA32_VMX_MISC`
        /// bit 5).
        const IA32E_MODE_GUEST = 9, "IA-32e mode guest";
        /// Entry to SMM (dual-monitor treatment only).
        const ENTRY_TO_SMM = 10, "entry to SMM";
        /// Deactivate the dual-monitor treatment of SMIs and SMM.
        const DEACTIVATE_DUAL_MONITOR = 11, "deactivate dual-monitor treatment";
        /// The guest IA32_PERF_GLOBAL_CTRL is loaded on entry.
        const LOAD_PERF_GLOBAL = 13, "load IA32_PERF_GLOBAL_CTRL on entry";
        /// The guest IA32_PAT is loaded on entry.
        const LOAD_PAT = 14, "load IA32_PAT on entry";
        /// The guest IA32_EFER is loaded on entry.
        const LOAD_EFER = 15, "load IA32_EFER on entry";
        /// The guest IA32_BNDCFGS is loaded on entry.
        const LOAD_BNDCFGS = 16, "load IA32_BNDCFGS";
        /// Intel PT suppresses the PIP for the entry.
        const CONCEAL_FROM_PT = 17, "conceal VMX from PT on entry";
        /// The guest IA32_RTIT_CTL is loaded on entry.
        const LOAD_RTIT_CTL = 18, "load IA32_RTIT_CTL";
        /// The guest UINV is loaded on entry.
        const LOAD_UINV = 19, "load UINV";
        /// The guest CET state is loaded on entry.
        const LOAD_CET = 20, "load CET state on entry";
        /// The guest IA32_LBR_CTL is loaded on entry.
        const LOAD_LBR_CTL = 21, "load guest IA32_LBR_CTL";
        /// The guest IA32_PKRS is loaded on entry.
        const LOAD_PKRS = 22, "load PKRS on entry";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_match_sdm() {
        assert_eq!(PinBased::EXTERNAL_INTERRUPT_EXITING.bits(), 1 << 0);
        assert_eq!(PinBased::NMI_EXITING.bits(), 1 << 3);
        assert_eq!(PinBased::VIRTUAL_NMIS.bits(), 1 << 5);
        assert_eq!(PinBased::PREEMPTION_TIMER.bits(), 1 << 6);
        assert_eq!(PinBased::POSTED_INTERRUPTS.bits(), 1 << 7);

        assert_eq!(PrimaryControls::INTERRUPT_WINDOW_EXITING.bits(), 1 << 2);
        assert_eq!(PrimaryControls::USE_TSC_OFFSETTING.bits(), 1 << 3);
        assert_eq!(PrimaryControls::HLT_EXITING.bits(), 1 << 7);
        assert_eq!(PrimaryControls::INVLPG_EXITING.bits(), 1 << 9);
        assert_eq!(PrimaryControls::MWAIT_EXITING.bits(), 1 << 10);
        assert_eq!(PrimaryControls::RDPMC_EXITING.bits(), 1 << 11);
        assert_eq!(PrimaryControls::RDTSC_EXITING.bits(), 1 << 12);
        assert_eq!(PrimaryControls::CR3_LOAD_EXITING.bits(), 1 << 15);
        assert_eq!(PrimaryControls::CR3_STORE_EXITING.bits(), 1 << 16);
        assert_eq!(PrimaryControls::CR8_LOAD_EXITING.bits(), 1 << 19);
        assert_eq!(PrimaryControls::CR8_STORE_EXITING.bits(), 1 << 20);
        assert_eq!(PrimaryControls::USE_TPR_SHADOW.bits(), 1 << 21);
        assert_eq!(PrimaryControls::NMI_WINDOW_EXITING.bits(), 1 << 22);
        assert_eq!(PrimaryControls::MOV_DR_EXITING.bits(), 1 << 23);
        assert_eq!(PrimaryControls::UNCONDITIONAL_IO_EXITING.bits(), 1 << 24);
        assert_eq!(PrimaryControls::USE_IO_BITMAPS.bits(), 1 << 25);
        assert_eq!(PrimaryControls::MONITOR_TRAP_FLAG.bits(), 1 << 27);
        assert_eq!(PrimaryControls::USE_MSR_BITMAPS.bits(), 1 << 28);
        assert_eq!(PrimaryControls::MONITOR_EXITING.bits(), 1 << 29);
        assert_eq!(PrimaryControls::PAUSE_EXITING.bits(), 1 << 30);
        assert_eq!(PrimaryControls::ACTIVATE_SECONDARY.bits(), 1 << 31);

        assert_eq!(SecondaryControls::VIRTUALIZE_APIC_ACCESSES.bits(), 1 << 0);
        assert_eq!(SecondaryControls::ENABLE_EPT.bits(), 1 << 1);
        assert_eq!(SecondaryControls::ENABLE_RDTSCP.bits(), 1 << 3);
        assert_eq!(SecondaryControls::ENABLE_VPID.bits(), 1 << 5);
        assert_eq!(SecondaryControls::UNRESTRICTED_GUEST.bits(), 1 << 7);
        assert_eq!(SecondaryControls::ENABLE_INVPCID.bits(), 1 << 12);
        assert_eq!(SecondaryControls::ENABLE_PML.bits(), 1 << 17);
        assert_eq!(SecondaryControls::ENABLE_XSAVES.bits(), 1 << 20);
        assert_eq!(SecondaryControls::MODE_BASED_EPT_EXEC.bits(), 1 << 22);
        assert_eq!(SecondaryControls::TSC_SCALING.bits(), 1 << 25);

        assert_eq!(ExitControls::SAVE_DEBUG.bits(), 1 << 2);
        assert_eq!(ExitControls::HOST_ADDRESS_SPACE_SIZE.bits(), 1 << 9);
        assert_eq!(ExitControls::LOAD_PERF_GLOBAL.bits(), 1 << 12);
        assert_eq!(ExitControls::ACK_INTERRUPT_ON_EXIT.bits(), 1 << 15);
        assert_eq!(ExitControls::SAVE_PAT.bits(), 1 << 18);
        assert_eq!(ExitControls::LOAD_PAT.bits(), 1 << 19);
        assert_eq!(ExitControls::SAVE_EFER.bits(), 1 << 20);
        assert_eq!(ExitControls::LOAD_EFER.bits(), 1 << 21);
        assert_eq!(ExitControls::SAVE_PREEMPTION_TIMER.bits(), 1 << 22);

        assert_eq!(EntryControls::LOAD_DEBUG.bits(), 1 << 2);
        assert_eq!(EntryControls::IA32E_MODE_GUEST.bits(), 1 << 9);
        assert_eq!(EntryControls::ENTRY_TO_SMM.bits(), 1 << 10);
        assert_eq!(EntryControls::LOAD_PERF_GLOBAL.bits(), 1 << 13);
        assert_eq!(EntryControls::LOAD_PAT.bits(), 1 << 14);
        assert_eq!(EntryControls::LOAD_EFER.bits(), 1 << 15);
    }

    #[test]
    fn every_flag_has_a_name() {
        fn check<I: Iterator<Item = u32>>(bits: I, name: fn(u32) -> Option<&'static str>) {
            for b in bits {
                assert_eq!(b.count_ones(), 1);
                assert!(name(b.trailing_zeros()).is_some());
            }
        }
        check(PinBased::all().iter().map(|f| f.bits()), PinBased::bit_name);
        check(
            PrimaryControls::all().iter().map(|f| f.bits()),
            PrimaryControls::bit_name,
        );
        check(
            SecondaryControls::all().iter().map(|f| f.bits()),
            SecondaryControls::bit_name,
        );
        check(
            ExitControls::all().iter().map(|f| f.bits()),
            ExitControls::bit_name,
        );
        check(
            EntryControls::all().iter().map(|f| f.bits()),
            EntryControls::bit_name,
        );
        assert_eq!(SecondaryControls::bit_name(7), Some("unrestricted guest"));
        assert_eq!(PrimaryControls::bit_name(0), None);
    }

    #[test]
    fn reserved_default1_bits_are_not_named() {
        // Pin-based default1 bits 1, 2, 4.
        assert_eq!(PinBased::all().bits() & 0b1_0110, 0);
        // Primary default1 bits other than CR3-load/store exiting.
        let primary_reserved = (1 << 1) | (0b111 << 4) | (1 << 8) | (0b11 << 13) | (1 << 26);
        assert_eq!(PrimaryControls::all().bits() & primary_reserved, 0);
        // Exit default1 bits other than save debug controls.
        let exit_reserved = 0x0003_6DFB;
        assert_eq!(ExitControls::all().bits() & exit_reserved, 0);
        let entry_reserved = 0x0000_11FB;
        assert_eq!(EntryControls::all().bits() & entry_reserved, 0);
    }
}
