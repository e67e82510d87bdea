//! Intel VT-x (docs/vmx.md): turning VMX on, the VMCS of each vCPU, VM
//! entries and exits. Pure VMX logic (field encodings, control negotiation,
//! exit decoding, the VMCS dump) is `basalt-vmx`; this module executes the
//! instructions.

pub mod instr;
pub mod spec;
pub mod vcpu;
pub mod vpid;

use super::cpu;
use super::msr;
use basalt_frames::Owner;
use basalt_vmx::caps::{self, MsrSource, VmxCaps};
use basalt_vmx::negotiate::{self, Negotiated, Wanted};
use core::fmt;
use spin::Once;
use x86_64::registers::control::{Cr0, Cr4, Cr4Flags};

/// What VT-x Basalt negotiated on the boot CPU; every CPU must match it.
static NEGOTIATED: Once<Result<VmxConfig, VmxUnavailable>> = Once::new();

/// The negotiated controls and the capabilities they came from.
#[derive(Debug, Clone)]
pub struct VmxConfig {
    /// Controls and features in use.
    pub negotiated: Negotiated,
    /// The capability MSRs.
    pub caps: VmxCaps,
}

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;

impl VmxConfig {
    /// `value` with the bits VMX operation fixes (host CR0).
    pub fn fix_cr0(&self, value: u64) -> u64 {
        (value | self.caps.cr0_fixed0) & self.caps.cr0_fixed1
    }

    /// `value` with the bits VMX operation fixes (host CR4).
    pub fn fix_cr4(&self, value: u64) -> u64 {
        (value | self.caps.cr4_fixed0) & self.caps.cr4_fixed1
    }

    /// A guest's CR0 with the fixed bits applied; with unrestricted guest, PE
    /// and PG are the guest's to choose.
    pub fn fix_guest_cr0(&self, value: u64) -> u64 {
        let fixed0 = if self.negotiated.unrestricted_guest {
            self.caps.cr0_fixed0 & !(CR0_PE | CR0_PG)
        } else {
            self.caps.cr0_fixed0
        };
        (value | fixed0) & self.caps.cr0_fixed1
    }

    /// A guest's CR4 with the fixed bits (CR4.VMXE) applied.
    pub fn fix_guest_cr4(&self, value: u64) -> u64 {
        self.fix_cr4(value)
    }

    /// CR0 bits whose value VMX fixes (forced to 1 or to 0).
    pub fn cr0_fixed_mask(&self) -> u64 {
        (self.caps.cr0_fixed0 | !self.caps.cr0_fixed1) & 0xffff_ffff
    }

    /// CR4 bits whose value VMX fixes.
    pub fn cr4_fixed_mask(&self) -> u64 {
        (self.caps.cr4_fixed0 | !self.caps.cr4_fixed1) & 0xffff_ffff
    }
}

/// Why Basalt cannot use VT-x.
#[derive(Debug, Clone)]
pub enum VmxUnavailable {
    /// CPUID.1:ECX.VMX is clear.
    NoVmx,
    /// IA32_FEATURE_CONTROL is locked with VMX disabled.
    DisabledByFirmware,
    /// A capability MSR could not be read or is inconsistent.
    Caps(caps::CapsError),
    /// Required features are missing.
    Missing(alloc::boxed::Box<negotiate::Missing>),
}

impl fmt::Display for VmxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoVmx => write!(
                f,
                "this CPU has no Intel VT-x (CPUID.1:ECX bit 5 is clear): on an AMD CPU or under \
                 QEMU's TCG there is no VMX. Run Basalt on an Intel CPU with VT-x, under Bochs \
                 (`cargo xtask run --emulator bochs`), or under KVM with nested VMX \
                 (`--emulator kvm`, see README)"
            ),
            Self::DisabledByFirmware => write!(
                f,
                "VT-x is disabled and locked by the firmware (IA32_FEATURE_CONTROL): enable \
                 \"Intel Virtualization Technology\" in the BIOS/UEFI setup and reboot"
            ),
            Self::Caps(e) => write!(f, "the VMX capability MSRs are unusable: {e}"),
            Self::Missing(m) => write!(f, "{m}"),
        }
    }
}

struct HardwareMsrs;

impl MsrSource for HardwareMsrs {
    fn read_msr(&self, msr: u32) -> Option<u64> {
        // The capability reader only asks for MSRs that CPUID.1:ECX.VMX (and
        // the primary/secondary capability bits it checks first) guarantee.
        Some(msr::read_raw(msr))
    }
}

/// Whether CPUID reports VMX.
pub fn cpu_has_vmx() -> bool {
    cpu::cpuid(1).ecx & (1 << 5) != 0
}

fn discover() -> Result<VmxConfig, VmxUnavailable> {
    if !cpu_has_vmx() {
        return Err(VmxUnavailable::NoVmx);
    }
    let fc = msr::read_raw(caps::IA32_FEATURE_CONTROL);
    const LOCK: u64 = 1 << 0;
    const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    if fc & LOCK != 0 && fc & VMX_OUTSIDE_SMX == 0 {
        return Err(VmxUnavailable::DisabledByFirmware);
    }
    let caps = VmxCaps::read(&HardwareMsrs).map_err(VmxUnavailable::Caps)?;
    let negotiated = negotiate::negotiate(&caps, &basalt_wanted())
        .map_err(|m| VmxUnavailable::Missing(alloc::boxed::Box::new(m)))?;
    Ok(VmxConfig { negotiated, caps })
}

/// Basalt's control choices: `basalt-vmx`'s defaults plus CR8 exiting (a
/// guest must never write the real TPR), without "enable XSAVES/XRSTORS":
/// guests are not shown XSAVES (CPUID leaf 0xD.1 EAX bit 3), so the
/// instructions must raise #UD as on a CPU without them.
fn basalt_wanted() -> Wanted {
    let mut wanted = Wanted::basalt_default();
    wanted.primary.required |= basalt_vmx::controls::PrimaryControls::CR8_LOAD_EXITING
        | basalt_vmx::controls::PrimaryControls::CR8_STORE_EXITING;
    wanted
        .secondary
        .optional
        .remove(basalt_vmx::controls::SecondaryControls::ENABLE_XSAVES);
    wanted
}

/// What VT-x lets a guest have beyond the host's CPUID (the inputs of the
/// guest CPU model, `basalt_cpu::cpuid::Limits`): INVPCID and RDTSCP/RDPID
/// only with their "enable" controls, CR4 bits only where
/// IA32_VMX_CR4_FIXED1 allows them (Bochs, for one, fixes LA57 and PKE to 0).
/// Without VT-x no guest runs, and the defaults serve.
pub fn guest_limits() -> basalt_cpu::cpuid::Limits {
    use basalt_vmx::controls::SecondaryControls;
    match negotiated() {
        Ok(c) => basalt_cpu::cpuid::Limits {
            invpcid: c
                .negotiated
                .secondary
                .contains(SecondaryControls::ENABLE_INVPCID),
            rdtscp: c
                .negotiated
                .secondary
                .contains(SecondaryControls::ENABLE_RDTSCP),
            cr4_settable: c.caps.cr4_fixed1 & !Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits(),
            ..Default::default()
        },
        Err(_) => basalt_cpu::cpuid::Limits::default(),
    }
}

/// The negotiated VT-x configuration (decided once, on the boot CPU).
pub fn negotiated() -> &'static Result<VmxConfig, VmxUnavailable> {
    NEGOTIATED.call_once(discover)
}

/// Turns VMX operation on for this CPU: IA32_FEATURE_CONTROL, CR0/CR4 fixed
/// bits, CR4.VMXE, VMXON. Idempotent per CPU is not needed: called once.
pub fn enable_on_this_cpu() -> Result<&'static VmxConfig, VmxFailure> {
    let n = negotiated()
        .as_ref()
        .map_err(|e| VmxFailure::Unavailable(e.clone()))?;
    let fc = msr::read_raw(caps::IA32_FEATURE_CONTROL);
    if fc & 1 == 0 {
        // SAFETY: locking IA32_FEATURE_CONTROL with "VMX outside SMX" on is
        // what firmware normally does; the MSR exists when VMX does.
        unsafe { msr::write_raw(caps::IA32_FEATURE_CONTROL, fc | 1 | (1 << 2)) };
    }
    let cr0 = n.fix_cr0(Cr0::read_raw());
    // SAFETY: setting the CR0 bits VMX requires (PE, PG, NE are already on in
    // long mode; NE may be added) keeps the hypervisor's paging unchanged.
    unsafe { Cr0::write_raw(cr0) };
    let cr4 = n.fix_cr4(Cr4::read_raw() | Cr4Flags::VIRTUAL_MACHINE_EXTENSIONS.bits());
    // SAFETY: CR4.VMXE plus the fixed bits VMX requires; paging bits unchanged.
    unsafe { Cr4::write_raw(cr4) };
    let region = crate::mm::alloc_zeroed_frame(Owner::Other).ok_or(VmxFailure::OutOfMemory)?;
    crate::mm::write_phys_u32(region, n.negotiated.revision_id);
    // SAFETY: `region` is a fresh zeroed page with the revision id, owned by
    // this CPU for as long as it is in VMX operation (forever).
    unsafe { instr::vmxon(region) }.map_err(VmxFailure::Vmxon)?;
    Ok(n)
}

/// Why VMX could not be turned on for a CPU.
#[derive(Debug, Clone)]
pub enum VmxFailure {
    /// VT-x cannot be used at all.
    Unavailable(VmxUnavailable),
    /// No page for the VMXON region.
    OutOfMemory,
    /// VMXON failed.
    Vmxon(basalt_vmx::error::VmFail),
}

impl fmt::Display for VmxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "{e}"),
            Self::OutOfMemory => write!(f, "no memory for the VMXON region"),
            Self::Vmxon(e) => write!(f, "VMXON failed: {e}"),
        }
    }
}
