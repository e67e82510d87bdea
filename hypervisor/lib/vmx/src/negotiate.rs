//! Choosing the control values for this CPU (Intel SDM Vol. 3C, Appendix A, "VMX Capability
//! Reporting Facility", and the checks of "VM Entries": "Checks on VMX Controls").
//!
//! The algorithm follows Xen's `adjust_vmx_controls`: ask for `required | optional`, drop what
//! the allowed 1-settings forbid, add what the allowed 0-settings force, and fail if any
//! required bit was dropped ([`adjust`]). [`negotiate`] applies it to all five control fields
//! and the EPT/VPID capabilities at once, then enforces the dependencies between controls that
//! VM entry checks (and a few of Basalt's own), and either returns the [`Negotiated`] values
//! or a [`Missing`] list naming *every* missing required feature, so one boot log line says
//! all that a CPU lacks.
//!
//! # Default1 controls
//!
//! With the TRUE capability MSRs some *default1* controls may be 0 (CR3-load/store exiting,
//! save/load debug controls). Following the SDM's advice ("Algorithms for Determining VMX
//! Capabilities"), [`negotiate`] keeps every default1 control at 1 unless the [`Want`] lists
//! it in `avoid`. Basalt avoids CR3-load/store exiting (EPT makes them pointless) and keeps
//! save/load debug controls, so the guest's DR7 and IA32_DEBUGCTL switch with it.

use core::fmt;

use crate::caps::{AllowedBits, EptVpidCaps, VmxCaps};
use crate::controls::{EntryControls, ExitControls, PinBased, PrimaryControls, SecondaryControls};

/// Adjusts one 32-bit control value to what the CPU allows.
///
/// Returns `((required | optional) & allowed1) | allowed0` — every bit the allowed
/// 0-settings force to 1 is on, no bit the allowed 1-settings forbid is on — or, if that loses
/// any `required` bit, `Err` with the lost bits.
pub const fn adjust(required: u32, optional: u32, allowed: AllowedBits) -> Result<u32, u32> {
    let value = ((required | optional) & allowed.allowed1) | allowed.allowed0;
    let missing = required & !value;
    if missing != 0 {
        Err(missing)
    } else {
        Ok(value)
    }
}

/// What software wants of one control field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Want<T> {
    /// Controls that must be 1; negotiation fails without them.
    pub required: T,
    /// Controls to set to 1 when the CPU allows it.
    pub optional: T,
    /// Default1 controls to clear when the CPU allows it (see the module docs); every other
    /// default1 control stays 1.
    pub avoid: T,
}

/// What software wants of the EPT and VPID capabilities (`IA32_VMX_EPT_VPID_CAP`). Checked
/// only when EPT is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EptWant {
    /// Capabilities EPT must have.
    pub required: EptVpidCaps,
    /// Capabilities to use when present.
    pub optional: EptVpidCaps,
}

/// Everything software asks [`negotiate`] for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Wanted {
    /// Pin-based VM-execution controls.
    pub pin: Want<PinBased>,
    /// Primary processor-based VM-execution controls.
    pub primary: Want<PrimaryControls>,
    /// Secondary processor-based VM-execution controls. Wanting any makes "activate
    /// secondary controls" wanted in the same way.
    pub secondary: Want<SecondaryControls>,
    /// VM-exit controls.
    pub exit: Want<ExitControls>,
    /// VM-entry controls. "IA-32e mode guest" is set per vCPU, not negotiated.
    pub entry: Want<EntryControls>,
    /// EPT capabilities.
    pub ept: EptWant,
}

impl Wanted {
    /// What Basalt asks of every CPU.
    ///
    /// | field | required | optional | avoid |
    /// | --- | --- | --- | --- |
    /// | pin | external-interrupt exiting, NMI exiting | virtual NMIs, VMX-preemption timer | |
    /// | primary | HLT, MWAIT, MONITOR exiting; use I/O bitmaps; use MSR bitmaps; activate secondary | use TSC offsetting | CR3-load/store exiting |
    /// | secondary | EPT, unrestricted guest | VPID, enable RDTSCP, enable INVPCID, enable XSAVES/XRSTORS, WBINVD exiting | |
    /// | exit | host address-space size, save/load IA32_EFER, acknowledge interrupt on exit | save VMX-preemption timer value, save/load IA32_PAT | |
    /// | entry | load IA32_EFER | load IA32_PAT | |
    /// | EPT | 4-level walk, write-back memory type, INVEPT all-context | 2-MByte pages, 1-GByte pages, INVEPT single-context, accessed/dirty flags | |
    ///
    /// MOV-DR exiting stays off. The default1 controls save/load debug controls stay on.
    pub fn basalt_default() -> Self {
        Self {
            pin: Want {
                required: PinBased::EXTERNAL_INTERRUPT_EXITING | PinBased::NMI_EXITING,
                optional: PinBased::VIRTUAL_NMIS | PinBased::PREEMPTION_TIMER,
                avoid: PinBased::empty(),
            },
            primary: Want {
                required: PrimaryControls::HLT_EXITING
                    | PrimaryControls::MWAIT_EXITING
                    | PrimaryControls::MONITOR_EXITING
                    | PrimaryControls::USE_IO_BITMAPS
                    | PrimaryControls::USE_MSR_BITMAPS
                    | PrimaryControls::ACTIVATE_SECONDARY,
                optional: PrimaryControls::USE_TSC_OFFSETTING,
                avoid: PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::CR3_STORE_EXITING,
            },
            secondary: Want {
                required: SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST,
                optional: SecondaryControls::ENABLE_VPID
                    | SecondaryControls::ENABLE_RDTSCP
                    | SecondaryControls::ENABLE_INVPCID
                    | SecondaryControls::ENABLE_XSAVES
                    | SecondaryControls::WBINVD_EXITING,
                avoid: SecondaryControls::empty(),
            },
            exit: Want {
                required: ExitControls::HOST_ADDRESS_SPACE_SIZE
                    | ExitControls::SAVE_EFER
                    | ExitControls::LOAD_EFER
                    | ExitControls::ACK_INTERRUPT_ON_EXIT,
                optional: ExitControls::SAVE_PREEMPTION_TIMER
                    | ExitControls::SAVE_PAT
                    | ExitControls::LOAD_PAT,
                avoid: ExitControls::empty(),
            },
            entry: Want {
                required: EntryControls::LOAD_EFER,
                optional: EntryControls::LOAD_PAT,
                avoid: EntryControls::empty(),
            },
            ept: EptWant {
                required: EptVpidCaps::WALK_4
                    | EptVpidCaps::MEMTYPE_WB
                    | EptVpidCaps::INVEPT_ALL_CONTEXT,
                optional: EptVpidCaps::PAGE_2M
                    | EptVpidCaps::PAGE_1G
                    | EptVpidCaps::INVEPT_SINGLE_CONTEXT
                    | EptVpidCaps::ACCESSED_DIRTY,
            },
        }
    }
}

/// The names of missing required features (fixed capacity, no allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Missing {
    names: [&'static str; Self::CAPACITY],
    len: usize,
    dropped: usize,
}

impl Missing {
    /// How many names are kept; further ones are only counted.
    pub const CAPACITY: usize = 32;

    const fn new() -> Self {
        Self {
            names: [""; Self::CAPACITY],
            len: 0,
            dropped: 0,
        }
    }

    fn push(&mut self, name: &'static str) {
        if self.contains(name) {
            return;
        }
        if let Some(slot) = self.names.get_mut(self.len) {
            *slot = name;
            self.len += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The missing features' names, in the order pin, primary, secondary, exit, entry
    /// controls, then EPT/VPID capabilities and dependencies.
    pub fn names(&self) -> &[&'static str] {
        self.names.get(..self.len).unwrap_or(&[])
    }

    /// Whether `name` is among the missing features.
    pub fn contains(&self, name: &str) -> bool {
        self.names().contains(&name)
    }

    /// Whether nothing is missing.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Names that did not fit in [`Self::CAPACITY`].
    pub const fn dropped(&self) -> usize {
        self.dropped
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the CPU lacks VMX features Basalt requires: ")?;
        for (i, name) in self.names().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        if self.dropped > 0 {
            write!(f, " and {} more", self.dropped)?;
        }
        Ok(())
    }
}

/// The outcome of [`negotiate`]: the five control values to write into every VMCS, and what
/// they mean for the rest of the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Negotiated {
    /// VMCS revision identifier, for the VMXON region and every VMCS.
    pub revision_id: u32,
    /// Pin-based VM-execution controls.
    pub pin: PinBased,
    /// Primary processor-based VM-execution controls.
    pub primary: PrimaryControls,
    /// Secondary processor-based VM-execution controls.
    pub secondary: SecondaryControls,
    /// VM-exit controls.
    pub exit: ExitControls,
    /// VM-entry controls, without "IA-32e mode guest".
    pub entry: EntryControls,
    /// EPT is enabled.
    pub ept: bool,
    /// EPT may map 2-MByte pages.
    pub ept_2m: bool,
    /// EPT may map 1-GByte pages.
    pub ept_1g: bool,
    /// EPT accessed/dirty flags are used (EPTP bit 6).
    pub ept_ad: bool,
    /// INVEPT single-context is available (all-context always is, when wanted as required).
    pub invept_single_context: bool,
    /// INVEPT all-context is available.
    pub invept_all_context: bool,
    /// VPIDs tag the guest's TLB entries (the kernel must write a non-zero VPID).
    pub vpid: bool,
    /// INVVPID single-context is available (only meaningful with [`Self::vpid`]).
    pub invvpid_single_context: bool,
    /// INVVPID all-context is available (only meaningful with [`Self::vpid`]).
    pub invvpid_all_context: bool,
    /// Guests may run in real mode and unpaged protected mode.
    pub unrestricted_guest: bool,
    /// The VMX-preemption timer is active, counting at the TSC rate shifted right by this.
    pub preemption_timer: Option<u8>,
    /// The exit saves the timer value back ("save VMX-preemption timer value").
    pub preemption_timer_saved: bool,
    /// Virtual NMIs (NMI blocking tracked by the processor for the guest).
    pub virtual_nmis: bool,
    /// "NMI-window exiting" may be turned on (it needs virtual NMIs; SDM Vol. 3C 25.6.2):
    /// an NMI held back by the guest's NMI blocking is injected at the exit that ends it.
    pub nmi_window: bool,
    /// TSC offsetting is available.
    pub tsc_offsetting: bool,
    /// IA32_PAT is switched on entry and exit (guest saved, host and guest loaded).
    pub pat_switching: bool,
    /// "IA-32e mode guest" may be set on entry.
    pub ia32e_mode_guest: bool,
}

impl fmt::Display for Negotiated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VMCS rev {:#x}", self.revision_id)?;
        if self.ept {
            f.write_str(", EPT")?;
            let extras = [
                (self.ept_2m, "2M"),
                (self.ept_1g, "1G"),
                (self.ept_ad, "A/D"),
            ];
            let mut first = true;
            for (on, name) in extras {
                if on {
                    f.write_str(if first { " (" } else { ", " })?;
                    f.write_str(name)?;
                    first = false;
                }
            }
            if !first {
                f.write_str(")")?;
            }
        }
        if self.vpid {
            f.write_str(", VPID")?;
        }
        if self.unrestricted_guest {
            f.write_str(", unrestricted guest")?;
        }
        if let Some(shift) = self.preemption_timer {
            write!(f, ", preemption timer (TSC >> {shift})")?;
        }
        if self.virtual_nmis {
            f.write_str(", virtual NMIs")?;
        }
        Ok(())
    }
}

/// Adds the name of every bit of `missing` to `out`.
fn name_bits(
    out: &mut Missing,
    missing: u32,
    name: fn(u32) -> Option<&'static str>,
    kind: &'static str,
) {
    let mut bits = missing;
    while bits != 0 {
        let bit = bits.trailing_zeros();
        out.push(name(bit).unwrap_or(kind));
        bits &= bits - 1;
    }
}

/// One control field's negotiation.
fn control(want_required: u32, want_optional: u32, avoid: u32, allowed: AllowedBits) -> (u32, u32) {
    let optional = want_optional | (allowed.default1 & !avoid);
    match adjust(want_required, optional, allowed) {
        Ok(value) => (value, 0),
        Err(missing) => (
            (((want_required | optional) & allowed.allowed1) | allowed.allowed0),
            missing,
        ),
    }
}

/// Clears `bit` (an optional control) from `value` if it is not forced to 1.
fn drop_bit(value: &mut u32, bit: u32, allowed: AllowedBits) {
    *value &= !bit | allowed.allowed0;
}

/// Picks the control values for a CPU with `caps`, or names everything `wanted` requires that
/// the CPU lacks.
///
/// Besides adjusting each field ([`adjust`], plus the default1 rule of the module docs), this
/// enforces:
///
/// - "activate secondary controls" is required (optional) when any secondary control is;
///   without it the secondary controls are 0;
/// - "virtual NMIs" needs "NMI exiting", "NMI-window exiting" needs "virtual NMIs", "save
///   VMX-preemption timer value" needs the preemption timer, "unrestricted guest", "enable
///   PML", "EPT-violation #VE", "mode-based execute control for EPT" and "sub-page write
///   permissions for EPT" need EPT, "process posted interrupts" needs "virtual-interrupt
///   delivery" and "acknowledge interrupt on exit" (SDM "Checks on VMX Controls"; the APIC
///   virtualization dependencies are not checked, as Basalt uses none of those controls);
/// - "unrestricted guest" needs `IA32_VMX_MISC` bit 5 (VM exits store EFER.LMA);
/// - with EPT, the wanted EPT capabilities (required ones are reported as missing by their
///   [`EptVpidCaps::bit_name`]);
/// - VPID only with INVVPID single- or all-context (Basalt must be able to flush a VPID);
/// - save IA32_PAT, load IA32_PAT on exit and load IA32_PAT on entry all or none, when they
///   are optional.
///
/// A dependency failure drops an optional control and reports a required one as missing.
// `Missing` is a fixed array of names (about 0.5 KiB) so that it needs no allocation; this runs
// once per CPU at boot, where that much stack is no concern.
#[allow(clippy::result_large_err)]
pub fn negotiate(caps: &VmxCaps, wanted: &Wanted) -> Result<Negotiated, Missing> {
    let mut missing = Missing::new();

    let mut primary_required = wanted.primary.required.bits();
    let mut primary_optional = wanted.primary.optional.bits();
    if !wanted.secondary.required.is_empty() {
        primary_required |= PrimaryControls::ACTIVATE_SECONDARY.bits();
    } else if !wanted.secondary.optional.is_empty() {
        primary_optional |= PrimaryControls::ACTIVATE_SECONDARY.bits();
    }

    let (mut pin, pin_missing) = control(
        wanted.pin.required.bits(),
        wanted.pin.optional.bits(),
        wanted.pin.avoid.bits(),
        caps.pin,
    );
    let (mut primary, primary_missing) = control(
        primary_required,
        primary_optional,
        wanted.primary.avoid.bits(),
        caps.primary,
    );
    let (mut secondary, secondary_missing) =
        if primary & PrimaryControls::ACTIVATE_SECONDARY.bits() != 0 {
            control(
                wanted.secondary.required.bits(),
                wanted.secondary.optional.bits(),
                wanted.secondary.avoid.bits(),
                caps.secondary,
            )
        } else {
            (0, wanted.secondary.required.bits())
        };
    let (mut exit, exit_missing) = control(
        wanted.exit.required.bits(),
        wanted.exit.optional.bits(),
        wanted.exit.avoid.bits(),
        caps.exit,
    );
    let (mut entry, entry_missing) = control(
        wanted.entry.required.bits(),
        wanted.entry.optional.bits(),
        wanted.entry.avoid.bits(),
        caps.entry,
    );

    name_bits(
        &mut missing,
        pin_missing,
        PinBased::bit_name,
        "a reserved pin-based control",
    );
    name_bits(
        &mut missing,
        primary_missing,
        PrimaryControls::bit_name,
        "a reserved primary processor-based control",
    );
    name_bits(
        &mut missing,
        secondary_missing,
        SecondaryControls::bit_name,
        "a reserved secondary processor-based control",
    );
    name_bits(
        &mut missing,
        exit_missing,
        ExitControls::bit_name,
        "a reserved VM-exit control",
    );
    name_bits(
        &mut missing,
        entry_missing,
        EntryControls::bit_name,
        "a reserved VM-entry control",
    );

    // Dependencies between controls: if `bit` is on but its prerequisite is not met, drop
    // `bit` when it was optional, report it (by `name`) when it was required.
    let mut dependency = |value: &mut u32,
                          bit: u32,
                          allowed: AllowedBits,
                          required: u32,
                          prerequisite_met: bool,
                          name: &'static str| {
        if *value & bit != 0 && !prerequisite_met {
            if required & bit != 0 {
                missing.push(name);
            }
            drop_bit(value, bit, allowed);
        }
    };
    let has = |value: u32, bit: u32| value & bit != 0;

    let nmi_exiting = has(pin, PinBased::NMI_EXITING.bits());
    dependency(
        &mut pin,
        PinBased::VIRTUAL_NMIS.bits(),
        caps.pin,
        wanted.pin.required.bits(),
        nmi_exiting,
        "virtual NMIs",
    );
    let virtual_nmis = has(pin, PinBased::VIRTUAL_NMIS.bits());
    dependency(
        &mut primary,
        PrimaryControls::NMI_WINDOW_EXITING.bits(),
        caps.primary,
        primary_required,
        virtual_nmis,
        "NMI-window exiting",
    );
    let posted_ok = has(
        secondary,
        SecondaryControls::VIRTUAL_INTERRUPT_DELIVERY.bits(),
    ) && has(exit, ExitControls::ACK_INTERRUPT_ON_EXIT.bits());
    dependency(
        &mut pin,
        PinBased::POSTED_INTERRUPTS.bits(),
        caps.pin,
        wanted.pin.required.bits(),
        posted_ok,
        "process posted interrupts",
    );
    let timer = has(pin, PinBased::PREEMPTION_TIMER.bits());
    dependency(
        &mut exit,
        ExitControls::SAVE_PREEMPTION_TIMER.bits(),
        caps.exit,
        wanted.exit.required.bits(),
        timer,
        "save VMX-preemption timer value",
    );
    let ept = has(secondary, SecondaryControls::ENABLE_EPT.bits());
    dependency(
        &mut secondary,
        SecondaryControls::UNRESTRICTED_GUEST.bits(),
        caps.secondary,
        wanted.secondary.required.bits(),
        ept && caps.misc.lma_store,
        "unrestricted guest",
    );
    for control in [
        SecondaryControls::ENABLE_PML,
        SecondaryControls::EPT_VE,
        SecondaryControls::MODE_BASED_EPT_EXEC,
        SecondaryControls::SUB_PAGE_WRITE_PERMISSIONS,
    ] {
        let bit = control.bits();
        let name = SecondaryControls::bit_name(bit.trailing_zeros()).unwrap_or("an EPT feature");
        dependency(
            &mut secondary,
            bit,
            caps.secondary,
            wanted.secondary.required.bits(),
            ept,
            name,
        );
    }
    let invvpid = caps
        .ept_vpid
        .intersects(EptVpidCaps::INVVPID_SINGLE_CONTEXT.union(EptVpidCaps::INVVPID_ALL_CONTEXT));
    dependency(
        &mut secondary,
        SecondaryControls::ENABLE_VPID.bits(),
        caps.secondary,
        wanted.secondary.required.bits(),
        invvpid,
        "INVVPID single-context or all-context",
    );

    // PAT switching: all three or none, unless required.
    let pat_bits_exit = ExitControls::SAVE_PAT.union(ExitControls::LOAD_PAT).bits();
    let pat_entry = EntryControls::LOAD_PAT.bits();
    let pat_complete = exit & pat_bits_exit == pat_bits_exit && entry & pat_entry != 0;
    if !pat_complete {
        let exit_optional = pat_bits_exit & !wanted.exit.required.bits();
        exit &= !exit_optional | caps.exit.allowed0;
        if wanted.entry.required.bits() & pat_entry == 0 {
            entry &= !pat_entry | caps.entry.allowed0;
        }
    }

    // EPT capabilities.
    let ept_wanted = wanted.ept.required.union(wanted.ept.optional);
    let ept_used = if ept {
        caps.ept_vpid.intersection(ept_wanted)
    } else {
        EptVpidCaps::empty()
    };
    if ept {
        let lacking = wanted.ept.required.difference(caps.ept_vpid);
        for (name, flag) in lacking.iter_names() {
            let bit = flag.bits().trailing_zeros();
            missing.push(EptVpidCaps::bit_name(bit).unwrap_or(name));
        }
    }

    if !missing.is_empty() {
        return Err(missing);
    }

    let pin = PinBased::from_bits_retain(pin);
    let secondary = SecondaryControls::from_bits_retain(secondary);
    let exit = ExitControls::from_bits_retain(exit);
    let entry = EntryControls::from_bits_retain(entry);
    let primary = PrimaryControls::from_bits_retain(primary);
    let vpid = secondary.contains(SecondaryControls::ENABLE_VPID);
    Ok(Negotiated {
        revision_id: caps.basic.revision_id,
        pin,
        primary,
        secondary,
        exit,
        entry,
        ept,
        ept_2m: ept_used.contains(EptVpidCaps::PAGE_2M),
        ept_1g: ept_used.contains(EptVpidCaps::PAGE_1G),
        ept_ad: ept_used.contains(EptVpidCaps::ACCESSED_DIRTY),
        invept_single_context: ept_used.contains(EptVpidCaps::INVEPT_SINGLE_CONTEXT),
        invept_all_context: ept_used.contains(EptVpidCaps::INVEPT_ALL_CONTEXT),
        vpid,
        invvpid_single_context: vpid && caps.ept_vpid.contains(EptVpidCaps::INVVPID_SINGLE_CONTEXT),
        invvpid_all_context: vpid && caps.ept_vpid.contains(EptVpidCaps::INVVPID_ALL_CONTEXT),
        unrestricted_guest: secondary.contains(SecondaryControls::UNRESTRICTED_GUEST),
        preemption_timer: if pin.contains(PinBased::PREEMPTION_TIMER) {
            Some(caps.misc.preemption_timer_shift)
        } else {
            None
        },
        preemption_timer_saved: exit.contains(ExitControls::SAVE_PREEMPTION_TIMER),
        virtual_nmis: pin.contains(PinBased::VIRTUAL_NMIS),
        nmi_window: pin.contains(PinBased::VIRTUAL_NMIS)
            && caps
                .primary
                .may_be_one(PrimaryControls::NMI_WINDOW_EXITING.bits()),
        tsc_offsetting: primary.contains(PrimaryControls::USE_TSC_OFFSETTING),
        pat_switching: exit.contains(ExitControls::SAVE_PAT | ExitControls::LOAD_PAT)
            && entry.contains(EntryControls::LOAD_PAT),
        ia32e_mode_guest: caps
            .entry
            .may_be_one(EntryControls::IA32E_MODE_GUEST.bits()),
    })
}

/// CR0.PE (protection enable).
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG (paging).
pub const CR0_PG: u64 = 1 << 31;

/// Applies the VMX fixed bits to a CR0 value (SDM Appendix A, "VMX-Fixed Bits in CR0"): sets
/// every bit `IA32_VMX_CR0_FIXED0` has set and clears every bit `IA32_VMX_CR0_FIXED1` has
/// clear.
///
/// With `unrestricted_guest` (for a guest CR0 under the "unrestricted guest" control), PE and
/// PG are exempt from FIXED0 and keep their value from `value`. The caller still owns the
/// rule that PG = 1 needs PE = 1.
pub const fn fix_cr0(value: u64, caps: &VmxCaps, unrestricted_guest: bool) -> u64 {
    let mut fixed0 = caps.cr0_fixed0;
    if unrestricted_guest {
        fixed0 &= !(CR0_PE | CR0_PG);
    }
    (value | fixed0) & caps.cr0_fixed1
}

/// Applies the VMX fixed bits to a CR4 value (SDM Appendix A, "VMX-Fixed Bits in CR4"; in
/// practice FIXED0 is CR4.VMXE).
pub const fn fix_cr4(value: u64, caps: &VmxCaps) -> u64 {
    (value | caps.cr4_fixed0) & caps.cr4_fixed1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::testdata::skylake_x;
    use crate::caps::{
        IA32_VMX_EPT_VPID_CAP, IA32_VMX_MISC, IA32_VMX_PROCBASED_CTLS2, IA32_VMX_TRUE_PINBASED_CTLS,
    };

    fn skylake_caps() -> VmxCaps {
        VmxCaps::read(&skylake_x()).unwrap()
    }

    #[test]
    fn adjust_forces_allowed0_and_masks_allowed1() {
        let allowed = AllowedBits {
            allowed0: 0x16,
            allowed1: 0x7F,
            default1: 0x16,
        };
        assert_eq!(adjust(0x1, 0x80, allowed), Ok(0x17));
        assert_eq!(adjust(0x81, 0x0, allowed), Err(0x80));
        assert_eq!(adjust(0, 0, allowed), Ok(0x16));
    }

    #[test]
    fn basalt_default_on_skylake() {
        let caps = skylake_caps();
        let n = negotiate(&caps, &Wanted::basalt_default()).unwrap();

        assert_eq!(
            n.pin,
            PinBased::from_bits_retain(0x16)
                | PinBased::EXTERNAL_INTERRUPT_EXITING
                | PinBased::NMI_EXITING
                | PinBased::VIRTUAL_NMIS
                | PinBased::PREEMPTION_TIMER
        );
        assert_eq!(n.pin.bits(), 0x7F);

        // Reserved default1 bits on; CR3-load/store exiting off (TRUE MSR allows it).
        let primary = PrimaryControls::from_bits_retain(0x0400_6172)
            | PrimaryControls::HLT_EXITING
            | PrimaryControls::MWAIT_EXITING
            | PrimaryControls::MONITOR_EXITING
            | PrimaryControls::USE_IO_BITMAPS
            | PrimaryControls::USE_MSR_BITMAPS
            | PrimaryControls::ACTIVATE_SECONDARY
            | PrimaryControls::USE_TSC_OFFSETTING;
        assert_eq!(n.primary, primary);
        assert_eq!(n.primary.bits(), 0xB600_65FA);
        assert!(!n.primary.contains(PrimaryControls::CR3_LOAD_EXITING));
        assert!(!n.primary.contains(PrimaryControls::MOV_DR_EXITING));

        assert_eq!(
            n.secondary,
            SecondaryControls::ENABLE_EPT
                | SecondaryControls::UNRESTRICTED_GUEST
                | SecondaryControls::ENABLE_VPID
                | SecondaryControls::ENABLE_RDTSCP
                | SecondaryControls::ENABLE_INVPCID
                | SecondaryControls::ENABLE_XSAVES
                | SecondaryControls::WBINVD_EXITING
        );
        // Default1 exit bits, with save debug controls kept on.
        assert_eq!(
            n.exit,
            ExitControls::from_bits_retain(0x0003_6DFF)
                | ExitControls::HOST_ADDRESS_SPACE_SIZE
                | ExitControls::SAVE_EFER
                | ExitControls::LOAD_EFER
                | ExitControls::ACK_INTERRUPT_ON_EXIT
                | ExitControls::SAVE_PREEMPTION_TIMER
                | ExitControls::SAVE_PAT
                | ExitControls::LOAD_PAT
        );
        assert!(n.exit.contains(ExitControls::SAVE_DEBUG));
        assert_eq!(
            n.entry,
            EntryControls::from_bits_retain(0x11FF)
                | EntryControls::LOAD_EFER
                | EntryControls::LOAD_PAT
        );
        assert!(!n.entry.contains(EntryControls::IA32E_MODE_GUEST));

        assert!(n.ept && n.ept_2m && n.ept_1g && n.ept_ad);
        assert!(n.invept_single_context && n.invept_all_context);
        assert!(n.vpid && n.invvpid_single_context && n.invvpid_all_context);
        assert!(n.unrestricted_guest && n.virtual_nmis && n.tsc_offsetting && n.pat_switching);
        assert!(n.nmi_window);
        assert!(n.preemption_timer_saved && n.ia32e_mode_guest);
        assert_eq!(n.preemption_timer, Some(0));
        assert_eq!(
            n.to_string(),
            "VMCS rev 0x2b, EPT (2M, 1G, A/D), VPID, unrestricted guest, \
             preemption timer (TSC >> 0), virtual NMIs"
        );
    }

    #[test]
    fn missing_ept_and_unrestricted_guest_are_named() {
        let mut m = skylake_x();
        m.disallow(
            IA32_VMX_PROCBASED_CTLS2,
            (SecondaryControls::ENABLE_EPT | SecondaryControls::UNRESTRICTED_GUEST).bits(),
        );
        let caps = VmxCaps::read(&m).unwrap();
        let err = negotiate(&caps, &Wanted::basalt_default()).unwrap_err();
        assert_eq!(err.names(), ["EPT", "unrestricted guest"]);
        assert_eq!(
            err.to_string(),
            "the CPU lacks VMX features Basalt requires: EPT, unrestricted guest"
        );
    }

    #[test]
    fn missing_unrestricted_guest_and_ept_walk() {
        let mut m = skylake_x();
        m.disallow(
            IA32_VMX_PROCBASED_CTLS2,
            SecondaryControls::UNRESTRICTED_GUEST.bits(),
        );
        m.set(
            IA32_VMX_EPT_VPID_CAP,
            m.get(IA32_VMX_EPT_VPID_CAP) & !(1 << 6),
        );
        let caps = VmxCaps::read(&m).unwrap();
        let err = negotiate(&caps, &Wanted::basalt_default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CPU lacks VMX features Basalt requires: unrestricted guest, EPT 4-level page walk"
        );
    }

    #[test]
    fn no_secondary_controls_at_all() {
        let mut m = skylake_x();
        m.disallow(
            crate::caps::IA32_VMX_TRUE_PROCBASED_CTLS,
            PrimaryControls::ACTIVATE_SECONDARY.bits(),
        );
        let caps = VmxCaps::read(&m).unwrap();
        let err = negotiate(&caps, &Wanted::basalt_default()).unwrap_err();
        assert!(err.contains("activate secondary controls"));
        assert!(err.contains("EPT"));
        assert!(err.contains("unrestricted guest"));
    }

    #[test]
    fn unrestricted_guest_needs_lma_store() {
        let mut m = skylake_x();
        m.set(IA32_VMX_MISC, m.get(IA32_VMX_MISC) & !(1 << 5));
        let caps = VmxCaps::read(&m).unwrap();
        let err = negotiate(&caps, &Wanted::basalt_default()).unwrap_err();
        assert_eq!(err.names(), ["unrestricted guest"]);
    }

    #[test]
    fn optional_features_drop_quietly() {
        let mut m = skylake_x();
        // No preemption timer: "save timer value" must go too.
        m.disallow(
            IA32_VMX_TRUE_PINBASED_CTLS,
            PinBased::PREEMPTION_TIMER.bits(),
        );
        // No 1G pages, no A/D, no INVVPID: VPID is dropped.
        let ept = m.get(IA32_VMX_EPT_VPID_CAP) & !((1 << 17) | (1 << 21) | (1 << 32));
        m.set(IA32_VMX_EPT_VPID_CAP, ept);
        let caps = VmxCaps::read(&m).unwrap();
        let n = negotiate(&caps, &Wanted::basalt_default()).unwrap();
        assert_eq!(n.preemption_timer, None);
        assert!(!n.exit.contains(ExitControls::SAVE_PREEMPTION_TIMER));
        assert!(n.ept_2m && !n.ept_1g && !n.ept_ad);
        assert!(!n.vpid && !n.secondary.contains(SecondaryControls::ENABLE_VPID));
        assert_eq!(
            n.to_string(),
            "VMCS rev 0x2b, EPT (2M), unrestricted guest, virtual NMIs"
        );
    }

    #[test]
    fn allowed0_bits_are_forced_on() {
        let mut caps = skylake_caps();
        // A CPU that forces CR3-load exiting and RDTSC exiting on, even with TRUE MSRs.
        let forced = (PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::RDTSC_EXITING).bits();
        caps.primary.allowed0 |= forced;
        let n = negotiate(&caps, &Wanted::basalt_default()).unwrap();
        assert!(
            n.primary
                .contains(PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::RDTSC_EXITING)
        );
        assert!(!n.primary.contains(PrimaryControls::CR3_STORE_EXITING));
    }

    #[test]
    fn ept_dependent_controls_need_ept() {
        let mut caps = skylake_caps();
        caps.secondary.allowed1 &= !SecondaryControls::ENABLE_EPT.bits();
        let mut wanted = Wanted::basalt_default();
        wanted.secondary.required = SecondaryControls::ENABLE_PML;
        wanted.secondary.optional = SecondaryControls::EPT_VE | SecondaryControls::ENABLE_VPID;
        let err = negotiate(&caps, &wanted).unwrap_err();
        assert_eq!(err.names(), ["enable PML"]);
        wanted.secondary.required = SecondaryControls::empty();
        let n = negotiate(&caps, &wanted).unwrap();
        assert_eq!(n.secondary, SecondaryControls::ENABLE_VPID);
        assert!(!n.ept && !n.ept_2m && !n.unrestricted_guest);
    }

    #[test]
    fn partial_pat_support_is_dropped() {
        let mut caps = skylake_caps();
        caps.entry.allowed1 &= !EntryControls::LOAD_PAT.bits();
        let n = negotiate(&caps, &Wanted::basalt_default()).unwrap();
        assert!(!n.pat_switching);
        assert!(
            !n.exit
                .intersects(ExitControls::SAVE_PAT | ExitControls::LOAD_PAT)
        );
    }

    #[test]
    fn many_missing_names_are_all_reported() {
        let mut caps = skylake_caps();
        caps.pin.allowed1 = 0x16;
        caps.exit.allowed1 = 0x36DFF;
        caps.entry.allowed1 = 0x11FF;
        let err = negotiate(&caps, &Wanted::basalt_default()).unwrap_err();
        assert_eq!(
            err.names(),
            [
                "external-interrupt exiting",
                "NMI exiting",
                "host address-space size",
                "acknowledge interrupt on exit",
                "save IA32_EFER",
                "load IA32_EFER on exit",
                "load IA32_EFER on entry",
            ]
        );
    }

    #[test]
    fn fixed_cr_bits() {
        let caps = skylake_caps();
        // Fixed0 sets PE, NE, PG; fixed1 (all ones) clears nothing.
        assert_eq!(fix_cr0(0, &caps, false), 0x8000_0021);
        assert_eq!(fix_cr0(0x10, &caps, true), 0x30);
        assert_eq!(fix_cr0(0x1_0000_0000, &caps, false), 0x8000_0021);
        assert_eq!(fix_cr4(0x20, &caps), 0x2020);
        // Bits outside FIXED1 (e.g. CR4 bit 24) are cleared.
        assert_eq!(fix_cr4(1 << 24, &caps), 0x2000);
    }
}
