//! The smallest guest: a greeting, the command line, the start info, the
//! hypervisor's version (`xen_version(XENVER_version)`), exit code 0.
//!
//! Options for testing how the hypervisor ends a domain: `exit=N` exits with
//! code N (after `TEST PASS`); `panic` panics (runtime: `guest panic: ...`,
//! then `SCHEDOP_shutdown(crash)`); `fault` executes `ud2` (runtime: an
//! exception report, then the same crash shutdown).

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::{self, XENVER_VERSION};
use basalt_test_guests::{arg, arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

fn main(cmdline: &str) -> u32 {
    println!("hello from a Basalt guest");
    println!("command line: {cmdline:?}");
    let info = basalt_test_guests::start_info();
    println!(
        "start info at {:#x}: version {}, {} modules, rsdp {:#x}, {} memory map entries",
        info.paddr, info.version, info.nr_modules, info.rsdp_paddr, info.memmap_entries
    );
    for index in 0..info.memmap_entries {
        if let Some(e) = info.memmap(index) {
            println!(
                "  memory {:#012x}-{:#012x} type {}",
                e.addr,
                e.addr.wrapping_add(e.size).wrapping_sub(1),
                e.kind
            );
        }
    }
    let version = hypercall::xen_version(XENVER_VERSION, 0);
    if hypercall::hypervisor_missing() {
        // Only outside Basalt (e.g. QEMU's own PVH loader): the hypercall
        // part of this test cannot run, the rest did.
        println!("xen_version: vmcall raised #UD: no hypervisor");
        return finish(cmdline);
    }
    if version < 0 {
        return fail!("xen_version(XENVER_version) returned {version}");
    }
    println!("hypervisor version {}.{}", version >> 16, version & 0xffff);
    finish(cmdline)
}

/// The verdict, then whatever ending the command line asks for.
fn finish(cmdline: &str) -> u32 {
    if arg(cmdline, "panic").is_some() {
        panic!("asked to panic by the command line");
    }
    if arg(cmdline, "fault").is_some() {
        println!("executing ud2 as asked by the command line");
        // SAFETY: raises #UD, which the runtime reports before ending the
        // domain as crashed: that is what `fault` asks for.
        unsafe { core::arch::asm!("ud2", options(nostack, nomem)) };
    }
    let code = pass();
    match arg_u64(cmdline, "exit", 0) {
        0 => code,
        asked => {
            println!("exiting with code {asked} as asked by the command line");
            asked as u32
        }
    }
}
