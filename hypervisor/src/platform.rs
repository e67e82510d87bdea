//! Taking ownership of the machine after the memory manager is up
//! (docs/smp.md): per-CPU state, ACPI, interrupt controllers, timers, and
//! every CPU online.

use crate::arch::x86_64::percpu::{self, PerCpu};
use crate::arch::x86_64::{apic, cpu, idt, smp};
use crate::verdict::{Verdict, finish};
use crate::{acpi, fault, mm, time};
use alloc::boxed::Box;
use basalt_boot::cmdline::{Options, TestFault};
use basalt_boot::multiboot2::BootInfo;
use basalt_platform::topology::Topology;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use log::{error, info, warn};

/// Milliseconds an AP gets to check in before it is skipped.
const AP_TIMEOUT_MS: u64 = 100;

/// Set once guest domains exist: idle CPUs then run the scheduler.
static GUESTS: AtomicBool = AtomicBool::new(false);
/// Whether VT-x works (decided on the boot CPU).
static VMX_OK: AtomicBool = AtomicBool::new(false);

/// Turns the virtualization backend (VT-x or AMD-V) on for this CPU and
/// logs the outcome (docs/vmx.md, docs/amd-v.md).
fn vmx_on_this_cpu() -> bool {
    let index = percpu::index();
    crate::arch::x86_64::cpu::enable_caching();
    crate::arch::x86_64::switch::enable_fpu_switching();
    if index != 0 && !VMX_OK.load(Ordering::SeqCst) {
        return false;
    }
    let hvm = crate::arch::x86_64::hvm::backend();
    match crate::arch::x86_64::hvm::enable_on_this_cpu() {
        Ok(line) => {
            if index == 0 {
                match hvm {
                    Ok(crate::arch::x86_64::hvm::Backend::Vmx) => {
                        if let Ok(config) = crate::arch::x86_64::vmx::negotiated() {
                            info!("VT-x: {}", config.negotiated);
                        }
                    }
                    Ok(b) => info!("{}: SVM with nested paging", b.name()),
                    Err(_) => {}
                }
                let (spec, facts) = crate::arch::x86_64::vmx::spec::init();
                info!(
                    "speculation: RSB fill on exit {:?}, IBPB between domains {}, L1D flush on entry {}, VERW on entry {} (CPUID.7.EDX {:#x}, ARCH_CAPABILITIES {:#x})",
                    spec.rsb,
                    spec.ibpb_on_domain_switch,
                    spec.l1d_flush_on_entry,
                    spec.verw_on_entry,
                    facts.cpuid7_edx,
                    facts.arch_caps
                );
                VMX_OK.store(true, Ordering::SeqCst);
            }
            info!("{line}");
            true
        }
        Err(e) => {
            if index == 0 {
                warn!(
                    "no virtualization: {e}; Basalt stays up with its console and starts no guest"
                );
            } else {
                error!("cpu{index}: virtualization could not be turned on: {e}");
            }
            false
        }
    }
}

/// Set by an AP once it runs Rust code on its own stack.
static AP_STARTED: AtomicBool = AtomicBool::new(false);
/// CPUs whose one-shot timer self-test passed.
static TIMERS_OK: AtomicUsize = AtomicUsize::new(0);
/// The test fault requested on the command line (for the APs).
static TEST_FAULT_AP: AtomicBool = AtomicBool::new(false);
/// `test-fault=guest`: the boot CPU faults once another CPU runs a guest.
static TEST_FAULT_GUEST: AtomicBool = AtomicBool::new(false);

/// Whether `test-fault=guest` still waits for its moment.
pub fn test_fault_guest_armed() -> bool {
    TEST_FAULT_GUEST.load(Ordering::Relaxed)
}

/// `test-fault=guest`, called on the boot CPU once another CPU runs a
/// guest: 50 ms later (busy-waiting, so that the guest is well inside VMX
/// non-root operation rather than being entered), the boot CPU reads an
/// unmapped address.
pub fn cause_guest_test_fault() {
    TEST_FAULT_GUEST.store(false, Ordering::SeqCst);
    let start = crate::time::now_ns();
    while crate::time::now_ns().saturating_sub(start) < 50_000_000 {
        core::hint::spin_loop();
    }
    info!("test-fault=guest: cpu0 reads an unmapped address while another CPU runs a guest");
    // SAFETY: none: this read faults on purpose (test-only option); the
    // page-fault handler stops every CPU and reports.
    let value = unsafe { core::ptr::read_volatile(0x10 as *const u64) };
    info!("unreachable: read {value:#x}");
}

/// What the scheduler runs at its scheduling points and tells the services
/// above it.
const SERVICES: crate::common::sched::Services = crate::common::sched::Services {
    monitor: cpu0_service,
    departures_pending: crate::common::monitor::departures_pending,
    measure: crate::common::measure::check,
    next_deadline: crate::common::measure::next_deadline,
    domain_gone: crate::common::monitor::domain_gone,
    guest_fault_armed: test_fault_guest_armed,
    cause_guest_fault: cause_guest_test_fault,
};

/// CPU 0's service after an interrupt or at a scheduling point: the control
/// domain's physical interrupts (they arrive on CPU 0), then the monitor.
fn cpu0_service() {
    if crate::hvm::pirq::pending() {
        let d = crate::common::domain::get(0);
        crate::hvm::pirq::deliver(d.as_ref().map(|d| &d.platform));
    }
    crate::common::monitor::service();
}

struct Boot {
    info: BootInfo<'static>,
    rsdp: Option<basalt_boot::multiboot2::Rsdp>,
    maxcpus: Option<usize>,
    test_fault: Option<TestFault>,
    test_panic: bool,
    test_exit: bool,
    test_pirq: bool,
    sched: crate::common::sched::Settings,
    /// `test-measure=WARMUP,WINDOW` in ms.
    test_measure: Option<(u64, u64)>,
    dom0: crate::common::domain::Dom0Options,
}

/// Sets up the boot CPU's own stack and continues there; never returns.
pub fn start(info: &BootInfo<'static>, options: &Options<'_>) -> ! {
    let boot = Box::new(Boot {
        info: *info,
        rsdp: info.rsdp(),
        maxcpus: options.maxcpus,
        test_fault: options.test_fault,
        test_panic: options.test_panic,
        test_exit: options.test_exit,
        test_pirq: options.test_pirq,
        test_measure: options.test_measure,
        dom0: crate::common::domain::Dom0Options {
            vcpus: options.dom0_max_vcpus,
            crash_halts: options.dom0_crash_halt,
        },
        sched: crate::common::sched::Settings {
            tslice_ms: options.sched_tslice_ms,
            ratelimit_us: options.sched_ratelimit_us,
            cap_period_ms: options.cap_period_ms,
            test_exit: options.test_exit,
        },
    });
    let Some(stacks) = mm::alloc_stacks(0) else {
        error!("cannot allocate the boot CPU's stacks");
        finish(Verdict::Fail, "out of memory");
    };
    let this = Box::leak(Box::new(PerCpu::new(0, cpu::apic_id(), stacks)));
    PerCpu::install(this);
    let top = stacks.main.top;
    let arg = Box::into_raw(boot) as u64;
    // SAFETY: `top` is the top of a freshly mapped 64 KiB stack with a guard
    // page below; `bsp_main` never returns.
    unsafe { cpu::run_on_stack(top, bsp_main, arg) }
}

extern "C" fn bsp_main(arg: u64) -> ! {
    // SAFETY: `arg` is the Box<Boot> leaked by `start`.
    let boot = unsafe { Box::from_raw(arg as *mut Boot) };
    info!("cpu0: own stack, GDT, TSS (IST stacks for #DF, NMI, #MC) and IDT loaded");

    if boot.test_panic {
        panic!("test-panic: panicking on purpose (test-only command-line option)");
    }
    if let Some(fault) = boot
        .test_fault
        .filter(|f| !matches!(f, TestFault::Ap | TestFault::Guest))
    {
        cause_test_fault(fault);
    }

    let features = apic::features();
    if !features.apic {
        error!(
            "this CPU has no local APIC (CPUID.1:EDX bit 9); Basalt needs one for interrupts, timers and SMP"
        );
        finish(Verdict::Fail, "no local APIC");
    }
    let boot_apic_id = cpu::apic_id();
    let platform = match acpi::discover(boot.rsdp, boot.info.on_efi(), boot_apic_id, boot.maxcpus) {
        Ok(p) => {
            acpi::log_platform(&p);
            Some(p)
        }
        Err(e) => {
            warn!("ACPI: {e}; running on the boot CPU only");
            None
        }
    };
    crate::hvm::passthrough::init(&boot.info.memory_map, platform.as_ref());
    let topology = platform.as_ref().map_or_else(
        || Topology::boot_cpu_only(boot_apic_id),
        |p| p.topology.clone(),
    );

    apic::mask_pics();
    let xapic_virt = if features.x2apic {
        0
    } else {
        mm::map_mmio(apic::physical_base(), 4096)
    };
    apic::choose_mode(features, xapic_virt);
    apic::enable_on_this_cpu(idt::vector::SPURIOUS, idt::vector::APIC_ERROR);
    fault::set_apic_ready();
    info!(
        "local APIC: {} mode, id {}, version {:#x}; legacy PICs masked",
        if apic::is_x2apic() { "x2APIC" } else { "xAPIC" },
        apic::id(),
        apic::version() & 0xff
    );
    for io in topology.ioapics() {
        let virt = mm::map_mmio(u64::from(io.address), 4096);
        // SAFETY: `virt` maps the I/O APIC's register page uncached.
        let regs = unsafe { apic::IoApicRegs::new(virt) };
        regs.mask_all();
        info!(
            "I/O APIC {}: {} redirection entries, all masked",
            io.id,
            regs.entries()
        );
    }

    crate::console::enable_input(&topology);
    crate::hvm::pirq::init(&topology, boot.test_pirq);

    let tsc_hz = time::tsc_hz();
    if apic::uses_tsc_deadline() {
        info!(
            "timer: local APIC in TSC-deadline mode (TSC {} kHz)",
            tsc_hz / 1000
        );
    } else {
        let hz = apic::calibrate_timer(tsc_hz);
        info!(
            "timer: local APIC one-shot mode, {} kHz (calibrated against the TSC at {} kHz)",
            hz / 1000,
            tsc_hz / 1000
        );
    }
    info!("cpu0 online (APIC id {boot_apic_id})");
    timer_self_test();
    let vmx_ok = vmx_on_this_cpu();

    TEST_FAULT_AP.store(boot.test_fault == Some(TestFault::Ap), Ordering::SeqCst);
    TEST_FAULT_GUEST.store(boot.test_fault == Some(TestFault::Guest), Ordering::SeqCst);
    start_aps(&topology, tsc_hz);
    let online = percpu::online_count();
    info!("{online} CPUs online");
    wait_for_timers(online, tsc_hz);

    if let Some(stats) = mm::stats() {
        info!(
            "frames: {} KiB free, {} KiB used after bring-up (heap {} KiB)",
            stats.free_frames * 4,
            stats.used_frames * 4,
            mm::heap_size() / 1024
        );
    }
    info!("spurious interrupts so far: {}", fault::spurious_count());
    if vmx_ok {
        let tables_before = mm::stats().map_or(0, |s| s.used_by(basalt_frames::Owner::PageTables));
        let domains = crate::common::domain::create_from_modules(
            &boot.info,
            &crate::common::sched::WAKER,
            boot.dom0,
        );
        if !domains.is_empty() {
            info!("boot complete; starting {} domain(s)", domains.len());
            // Idle CPUs look at GUESTS when the wake-up IPI arrives: set it first.
            GUESTS.store(true, Ordering::SeqCst);
            if let Some((warmup, window)) = boot.test_measure {
                crate::common::measure::arm(warmup, window);
            }
            crate::common::sched::start(domains, boot.sched, tables_before, SERVICES);
            crate::common::monitor::start();
            crate::common::sched::run();
        }
        if crate::common::domain::created_count() == 0 && !boot.info.modules.is_empty() {
            warn!("no boot module became a domain");
        }
    } else if !boot.info.modules.is_empty() {
        warn!(
            "{} boot module(s) not started: no virtualization backend (VT-x or AMD-V)",
            boot.info.modules.len()
        );
    }
    info!("boot complete; no guest domain to run");
    let no_backend = crate::arch::x86_64::hvm::available().err();
    // test-exit ends such a run, unless guests were asked for and cannot
    // start: the monitor then says why, and `halt` ends the run.
    if boot.test_exit && (boot.info.modules.is_empty() || no_backend.is_none()) {
        finish(Verdict::Pass, "");
    }
    crate::common::monitor::run_without_guests(no_backend)
}

fn start_aps(topology: &Topology, tsc_hz: u64) {
    let (code, vars_offset) = smp::trampoline();
    let aps = &topology.cpus()[1..];
    if aps.is_empty() {
        return;
    }
    let Some(base) = mm::ap_start_page() else {
        error!(
            "no free page below 1 MiB in the firmware's memory map for the AP start-up code; \
             running on the boot CPU only"
        );
        return;
    };
    info!("AP start-up page at {base:#x} (free below 1 MiB in the firmware's memory map)");
    if let Err(e) = mm::identity_map_page(base, true) {
        error!("cannot map the AP start-up page: {e}; running on the boot CPU only");
        return;
    }
    let page = mm::map_phys_for_write(base, 4096);
    // SAFETY: the trampoline page (below 1 MiB, reserved from the
    // allocator) is mapped writable at `page`; the code fits in it.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };
    let efer = (1u32 << 8) | if cpu::nx_enabled() { 1 << 11 } else { 0 };
    for (n, &apic_id) in aps.iter().enumerate() {
        let index = n + 1;
        if fault::is_stopping() {
            return;
        }
        let Some(stacks) = mm::alloc_stacks(index) else {
            error!("cpu{index}: cannot allocate stacks; not started");
            continue;
        };
        let this: &'static mut PerCpu = Box::leak(Box::new(PerCpu::new(index, apic_id, stacks)));
        let vars = smp::TrampolineVars {
            cr3: mm::page_table_root() as u32,
            efer,
            stack: stacks.main.top,
            arg: &raw mut *this as u64,
            entry: ap_entry as extern "C" fn(u64) -> ! as usize as u64,
        };
        // SAFETY: the variables block lies inside the copied trampoline, in
        // the writable mapping of its page; no AP runs the trampoline now.
        unsafe {
            core::ptr::write_volatile(
                (page + vars_offset as u64) as *mut smp::TrampolineVars,
                vars,
            )
        };
        AP_STARTED.store(false, Ordering::SeqCst);
        if !smp::start_cpu(apic_id, base, &AP_STARTED, tsc_hz, AP_TIMEOUT_MS) {
            warn!(
                "cpu{index} (APIC id {apic_id}) did not answer INIT-SIPI-SIPI within {AP_TIMEOUT_MS} ms; skipped"
            );
            continue;
        }
        // Wait until it has installed its state (bounded).
        let deadline = cpu::rdtsc() + tsc_hz / 10;
        while percpu::cpu(index).is_none() && cpu::rdtsc() < deadline {
            core::hint::spin_loop();
        }
    }
    if let Err(e) = mm::identity_map_page(base, false) {
        warn!("cannot unmap the AP start-up page: {e}");
    }
}

extern "C" fn ap_entry(arg: u64) -> ! {
    AP_STARTED.store(true, Ordering::SeqCst);
    if fault::is_stopping() {
        cpu::halt_forever();
    }
    // SAFETY: reloading CR3 with its own value flushes this CPU's non-global
    // TLB entries, including the trampoline's identity mapping.
    unsafe { mm::load_cr3(mm::page_table_root()) };
    // SAFETY: `arg` is the PerCpu the boot CPU leaked for this CPU.
    let this: &'static mut PerCpu = unsafe { &mut *(arg as *mut PerCpu) };
    let index = this.index;
    PerCpu::install(this);
    apic::enable_on_this_cpu(idt::vector::SPURIOUS, idt::vector::APIC_ERROR);
    info!("cpu{index} online (APIC id {})", apic::id());
    if index == 1 && TEST_FAULT_AP.load(Ordering::SeqCst) {
        info!("test-fault=ap: cpu1 reads an unmapped address on purpose");
        // SAFETY: none: this read faults on purpose (test-only option); the
        // page-fault handler stops every CPU and reports.
        let value = unsafe { core::ptr::read_volatile(0x10 as *const u64) };
        info!("unreachable: read {value:#x}");
    }
    timer_self_test();
    vmx_on_this_cpu();
    loop {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
        if GUESTS.load(Ordering::SeqCst) && VMX_OK.load(Ordering::SeqCst) {
            crate::common::sched::run();
        }
    }
}

/// Arms a 1 ms one-shot timer and halts until it fires (at most 1 s).
fn timer_self_test() {
    let this = percpu::current();
    let before = this.map_or(0, |c| c.timer_ticks.load(Ordering::Acquire));
    time::arm_oneshot_in(1_000_000);
    let give_up = cpu::rdtsc() + time::tsc_hz();
    while this.is_some_and(|c| c.timer_ticks.load(Ordering::Acquire) == before)
        && cpu::rdtsc() < give_up
    {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    if this.is_some_and(|c| c.timer_ticks.load(Ordering::Acquire) > before) {
        TIMERS_OK.fetch_add(1, Ordering::SeqCst);
    } else {
        warn!(
            "cpu{}: the one-shot timer did not fire within 1 s",
            percpu::index()
        );
    }
}

fn wait_for_timers(online: usize, tsc_hz: u64) {
    let give_up = cpu::rdtsc() + 2 * tsc_hz;
    while TIMERS_OK.load(Ordering::SeqCst) < online && cpu::rdtsc() < give_up {
        core::hint::spin_loop();
    }
    let ok = TIMERS_OK.load(Ordering::SeqCst);
    if ok == online {
        info!("one-shot timers fired on all {online} CPUs");
    } else {
        error!("one-shot timers fired on {ok} of {online} CPUs");
    }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn overflow(depth: u64) -> u64 {
    let pad = [depth; 64];
    core::hint::black_box(&pad);
    overflow(depth + 1) + core::hint::black_box(pad[3])
}

fn cause_test_fault(fault: TestFault) {
    match fault {
        TestFault::StackOverflow => {
            info!("test-fault=stack-overflow: recursing until cpu0's stack overflows");
            let n = overflow(0);
            info!("unreachable: {n}");
        }
        TestFault::WriteText => {
            let target = cause_test_fault as *const () as *mut u8;
            info!("test-fault=write-text: writing to hypervisor text at {target:p}");
            // SAFETY: none: this write faults on purpose (test-only option);
            // text is mapped read-only with CR0.WP set.
            unsafe { core::ptr::write_volatile(target, 0xcc) };
            info!("unreachable: the write to text succeeded");
        }
        TestFault::Ap | TestFault::Guest => {}
    }
}
