//! The panic handler: report, then a failure verdict.

use crate::arch::x86_64::cpu;
use crate::verdict::{Verdict, finish};
use crate::{console, println};
use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if !console::enter_panic() {
        // A panic while reporting a panic: stop here, the first report stands.
        cpu::halt_forever();
    }
    crate::fault::stop_other_cpus();
    println!();
    match info.location() {
        Some(loc) => println!(
            "PANIC on cpu{} at {}:{}:{}: {}",
            crate::arch::x86_64::percpu::index(),
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        ),
        None => println!(
            "PANIC on cpu{}: {}",
            crate::arch::x86_64::percpu::index(),
            info.message()
        ),
    }
    finish(Verdict::Fail, "panic")
}
