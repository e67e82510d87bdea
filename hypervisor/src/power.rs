//! Turning the host off and resetting it (docs/control-domain.md, "dom0's
//! end"): when the control domain powers off or reboots, so does the
//! machine, as on Xen. What the firmware says about it (the FADT's PM1
//! control ports and reset register, the DSDT's `\_S5_` sleep types) is
//! learnt once, by `acpi::discover`.

use crate::arch::x86_64::{cpu, io};
use crate::println;

pub use basalt_platform::power::{PowerInfo, SLP_EN};

static POWER: spin::Once<PowerInfo> = spin::Once::new();

/// What the firmware said (empty before ACPI was read or without it).
pub fn info() -> PowerInfo {
    POWER.get().copied().unwrap_or_default()
}

/// Records what the firmware tables say (first call wins).
pub fn learn(info: PowerInfo) {
    POWER.call_once(|| info);
}

/// Powers the machine off through ACPI S5; if the firmware gave no way
/// to, says so and halts.
pub fn power_off() -> ! {
    crate::console::flush();
    let info = POWER.get().copied().unwrap_or_default();
    match (info.pm1a_cnt, info.s5) {
        (Some(a), Some((typ_a, typ_b))) => {
            if let Some(b) = info.pm1b_cnt {
                // SAFETY: the FADT names this the PM1b control port; writing
                // SLP_TYP(S5) | SLP_EN there is how ACPI turns the machine off.
                unsafe { io::outw(b, (u16::from(typ_b & 7) << 10) | SLP_EN) };
            }
            // SAFETY: as above, for the PM1a control port.
            unsafe { io::outw(a, (u16::from(typ_a & 7) << 10) | SLP_EN) };
            println!("Basalt: the machine did not power off through ACPI S5; halted");
        }
        _ => println!(
            "Basalt: the firmware gives no ACPI S5 state (no FADT PM1 control port or no \
             static \\_S5_ in the DSDT): halted; power the machine off by hand"
        ),
    }
    crate::console::flush();
    cpu::halt_forever()
}

/// Resets the machine: the FADT reset register, then port 0xCF9, then the
/// keyboard controller.
pub fn reboot() -> ! {
    crate::console::flush();
    let info = POWER.get().copied().unwrap_or_default();
    if let Some((port, value)) = info.reset {
        // SAFETY: the FADT names this port its reset register and `value`
        // the value that resets the machine; no memory is touched.
        unsafe { io::outb(port, value) };
    }
    // SAFETY: 0xCF9 is the PCI reset control register of PC chipsets: 0x02
    // then 0x06 asks for a hard reset; no memory is touched.
    unsafe { io::outb(0xcf9, 0x02) };
    // SAFETY: as above.
    unsafe { io::outb(0xcf9, 0x06) };
    // SAFETY: 0xFE to the 8042's command port pulses the CPU reset line.
    unsafe { io::outb(0x64, 0xfe) };
    println!("Basalt: the machine did not reset; halted");
    cpu::halt_forever()
}
