//! MSR access from a guest: allowed MSRs read and write back (IA32_EFER
//! with LME and LMA set, IA32_TSC counting); VMX-related ones raise #GP.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, GP, rdmsr_checked, show, show_unit};
use basalt_test_guests::{Checks, println};

basalt_test_guests::entry!(main);

const IA32_TSC: u32 = 0x10;
const IA32_FEATURE_CONTROL: u32 = 0x3a;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_EFER: u32 = 0xc000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

fn main(_cmdline: &str) -> u32 {
    let mut checks = Checks::new();

    let efer = rdmsr_checked(IA32_EFER);
    println!("rdmsr IA32_EFER: {}", show(efer));
    let efer_ok = checks.check(
        efer.is_ok_and(|v| v & (EFER_LME | EFER_LMA) == EFER_LME | EFER_LMA),
        format_args!("IA32_EFER reads with LME and LMA set"),
    );

    let tsc1 = rdmsr_checked(IA32_TSC);
    let tsc2 = rdmsr_checked(IA32_TSC);
    println!("rdmsr IA32_TSC twice: {}, {}", show(tsc1), show(tsc2));
    checks.check(
        matches!((tsc1, tsc2), (Ok(a), Ok(b)) if b > a),
        format_args!("IA32_TSC reads and counts up"),
    );

    for (msr, name) in [
        (IA32_FEATURE_CONTROL, "IA32_FEATURE_CONTROL"),
        (IA32_VMX_BASIC, "IA32_VMX_BASIC"),
    ] {
        let result = rdmsr_checked(msr);
        println!("rdmsr {name} ({msr:#x}): {}", show(result));
        checks.check(
            result == Err(GP),
            format_args!("rdmsr {name} ({msr:#x}) raises #GP"),
        );
    }

    if efer_ok && let Ok(value) = efer {
        // SAFETY: writes back the value just read.
        let written = unsafe { cpu::wrmsr_checked(IA32_EFER, value) };
        let after = rdmsr_checked(IA32_EFER);
        println!(
            "wrmsr IA32_EFER {value:#x}: {}; reads back {}",
            show_unit(written),
            show(after)
        );
        checks.check(
            written.is_ok() && after == Ok(value),
            format_args!("wrmsr IA32_EFER with its current value works"),
        );
    }
    checks.finish()
}
