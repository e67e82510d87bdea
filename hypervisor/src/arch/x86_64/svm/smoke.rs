//! The SVM bring-up test (`test-svm`, docs/amd-v.md "Status"): on the boot
//! CPU, a real-mode guest of a few bytes runs under nested paging and takes
//! every kind of exit the first slice handles: CPUID, OUT to port 0xE9, a
//! nested page fault on a page left out of the NPT, VMMCALL and HLT. Each
//! exit is checked against what the guest must have done, and the guest's
//! registers and console bytes against what Basalt gave it.

use super::{GuestRegs, NptMemory, SvmCpu, owned_frames_mut};
use crate::arch::x86_64::apic;
use crate::mm;
use alloc::string::String;
use alloc::vec::Vec;
use basalt_frames::Owner;
use basalt_paging::{MapFlags, Npt, PageSize, PageTable};
use basalt_svm::asid::TlbFlush;
use basalt_svm::caps::SvmFeatures;
use basalt_svm::exit::{ExitCode, IoioInfo, NpfInfo};
use basalt_svm::maps::{IOPM_SIZE, Iopm, MSRPM_SIZE, Msrpm};
use basalt_svm::vmcb::{
    Intercept1, Intercept2, Segment, TLB_FLUSH_ALL, TLB_FLUSH_ASID, TLB_NO_FLUSH, Vmcb, control,
    save,
};
use core::fmt::Write;
use log::{error, info};

/// Guest-physical layout: four pages of RAM at 0, the code at 0x1000, and
/// 0x5000 left out of the NPT until the guest touches it.
const GUEST_RAM: u64 = 0x4000;
const CODE_GPA: u64 = 0x1000;
const LAZY_GPA: u64 = 0x5000;
/// What Basalt puts on the lazily mapped page for the guest to print.
const LAZY_BYTE: u8 = b'!';
/// The port the guest prints on (Bochs/QEMU debug console convention).
const CONSOLE_PORT: u16 = 0xe9;
/// What the guest must have printed in the end.
const EXPECTED_OUTPUT: &[u8] = b"SVM!";
/// Values in registers the guest never touches: they must come back.
const MARK_RSI: u64 = 0x5151_5151_0000_5151;
const MARK_R15: u64 = 0xf15f_15f1_5f15_f15f;
/// More exits than the guest can cause: a guest stuck in a loop fails.
const MAX_EXITS: usize = 32;

/// The guest (16-bit real mode, CS:IP = 0:0x1000).
#[rustfmt::skip]
const GUEST_CODE: &[u8] = &[
    0x66, 0x31, 0xc0,       // xor eax, eax
    0x0f, 0xa2,             // cpuid             (leaf 0: exit 0x72)
    0xb0, b'S',             // mov al, 'S'
    0xe6, 0xe9,             // out 0xe9, al      (exit 0x7b)
    0xb0, b'V',             // mov al, 'V'
    0xe6, 0xe9,             // out 0xe9, al
    0xb0, b'M',             // mov al, 'M'
    0xe6, 0xe9,             // out 0xe9, al
    0xa0, 0x00, 0x50,       // mov al, [0x5000]  (not in the NPT: exit 0x400)
    0xe6, 0xe9,             // out 0xe9, al      (the byte Basalt put there)
    0x0f, 0x01, 0xd9,       // vmmcall           (exit 0x81)
    0xf4,                   // hlt               (exit 0x78)
];
const CPUID: [u8; 2] = [0x0f, 0xa2];
const VMMCALL: [u8; 3] = [0x0f, 0x01, 0xd9];
const HLT: [u8; 1] = [0xf4];

/// Runs the test if the CPU has SVM; says why not otherwise. Ends the run
/// with a FAIL verdict naming the step when the guest or Basalt misbehaved.
pub fn run() {
    let cpu = match SvmCpu::enable_on_this_cpu() {
        Ok(cpu) => cpu,
        Err(e) => {
            info!("svm: unavailable: {e}");
            return;
        }
    };
    info!(
        "svm: enabled on cpu0: revision {}, {} ASIDs, features {:?} (EDX {:#x}), host save area at {:#x}",
        cpu.caps.revision,
        cpu.caps.asids,
        cpu.caps.features,
        crate::arch::x86_64::cpu::cpuid(0x8000_000a).edx,
        cpu.hsave_pa()
    );
    // `cpu` stays in SVM operation for good: its pages are never freed.
    let cpu = alloc::boxed::Box::leak(alloc::boxed::Box::new(cpu));
    match Guest::new(&mut *cpu).and_then(|mut g| {
        // Host interrupts stay off here except where entry.S opens them
        // (at STGI), so the timer armed at the VMMCALL stays pending.
        let result = x86_64::instructions::interrupts::without_interrupts(|| g.run(cpu));
        g.destroy();
        result
    }) {
        Ok(()) => info!("svm: smoke test passed"),
        Err(e) => {
            error!("svm: smoke test FAILED: {e}");
            crate::verdict::finish(crate::verdict::Verdict::Fail, "svm smoke test failed");
        }
    }
}

/// The test guest: its VMCB, permission maps, RAM and nested page table.
struct Guest {
    vmcb_pa: u64,
    iopm_pa: u64,
    msrpm_pa: u64,
    ram_pa: u64,
    lazy_pa: Option<u64>,
    npt: Option<PageTable<Npt>>,
    regs: GuestRegs,
    /// Whether the next VMRUN flushes this ASID's translations (NPT changed).
    flush_asid: bool,
}

/// A view of the VMCB, made afresh after every VMRUN (never held across one).
fn vmcb(pa: u64) -> Vmcb<'static> {
    Vmcb::new(owned_frames_mut::<4096>(pa))
}

fn real_mode_segment(attrib: u16) -> Segment {
    Segment {
        selector: 0,
        attrib,
        limit: 0xffff,
        base: 0,
    }
}

impl Guest {
    fn new(cpu: &mut SvmCpu) -> Result<Self, String> {
        let oom =
            || String::from("set-up: out of memory for the guest (give the machine more RAM)");
        let mut g = Guest {
            vmcb_pa: 0,
            iopm_pa: 0,
            msrpm_pa: 0,
            ram_pa: 0,
            lazy_pa: None,
            npt: None,
            regs: GuestRegs {
                rsi: MARK_RSI,
                r15: MARK_R15,
                ..GuestRegs::default()
            },
            flush_asid: false,
        };
        // Frames are recorded as soon as they exist, so `destroy` frees
        // whatever was allocated when a later step fails.
        let result = (|| {
            g.vmcb_pa = mm::alloc_zeroed_frame(Owner::Other).ok_or_else(oom)?;
            g.iopm_pa = mm::alloc_frames(2, Owner::Other).ok_or_else(oom)?;
            g.msrpm_pa = mm::alloc_frames(1, Owner::Other).ok_or_else(oom)?;
            g.ram_pa = mm::alloc_frames(2, Owner::Domain).ok_or_else(oom)?;
            // Everything intercepted: every port and every MSR exits.
            Iopm::new(owned_frames_mut::<IOPM_SIZE>(g.iopm_pa));
            Msrpm::new(owned_frames_mut::<MSRPM_SIZE>(g.msrpm_pa));
            let ram = owned_frames_mut::<{ GUEST_RAM as usize }>(g.ram_pa);
            ram.fill(0);
            ram[CODE_GPA as usize..CODE_GPA as usize + GUEST_CODE.len()]
                .copy_from_slice(GUEST_CODE);
            let mut npt = PageTable::<Npt>::new(&mut NptMemory)
                .map_err(|e| alloc::format!("set-up: nested page table: {e}"))?;
            let mapped = npt.map(
                &mut NptMemory,
                &mut NptMemory,
                0,
                g.ram_pa,
                GUEST_RAM,
                MapFlags::READ | MapFlags::WRITE | MapFlags::EXECUTE,
                PageSize::Size4K,
            );
            let root = npt.root();
            g.npt = Some(npt);
            mapped.map_err(|e| alloc::format!("set-up: mapping guest RAM in the NPT: {e}"))?;
            g.init_vmcb(cpu, root);
            Ok(())
        })();
        match result {
            Ok(()) => Ok(g),
            Err(e) => {
                g.destroy();
                Err(e)
            }
        }
    }

    /// The VMCB (APM Vol. 2 appendix B): intercepts, maps, ASID, nested
    /// paging, and a real-mode guest state as after reset but at 0:0x1000.
    fn init_vmcb(&mut self, cpu: &mut SvmCpu, npt_root: u64) {
        let mut v = vmcb(self.vmcb_pa);
        let i1 = Intercept1::INTR
            | Intercept1::NMI
            | Intercept1::CPUID
            | Intercept1::HLT
            | Intercept1::IOIO_PROT
            | Intercept1::MSR_PROT
            | Intercept1::SHUTDOWN;
        let i2 = Intercept2::VMRUN | Intercept2::VMMCALL;
        v.write(control::INTERCEPT1, u64::from(i1.bits()));
        v.write(control::INTERCEPT2, u64::from(i2.bits()));
        v.write(control::IOPM_BASE, self.iopm_pa);
        v.write(control::MSRPM_BASE, self.msrpm_pa);
        let (asid, flush) = cpu.asids.assign(None);
        v.write(control::ASID, u64::from(asid.asid));
        v.write(control::TLB_CONTROL, u64::from(tlb_control(cpu, flush)));
        // V_INTR_MASKING: the guest's IF masks only virtual interrupts; the
        // host's IF (set by entry.S) gates physical ones (INTR exits).
        v.write(control::VINTR, 1 << 24);
        v.write(control::NP_ENABLE, 1);
        v.write(control::N_CR3, npt_root);
        v.write(control::CLEAN_BITS, 0);

        for seg in [save::DS, save::ES, save::FS, save::GS, save::SS] {
            v.set_segment(seg, real_mode_segment(0x93));
        }
        v.set_segment(save::CS, real_mode_segment(0x9b));
        v.set_segment(save::LDTR, real_mode_segment(0x82));
        v.set_segment(save::TR, real_mode_segment(0x8b));
        v.set_segment(save::GDTR, real_mode_segment(0));
        v.set_segment(save::IDTR, real_mode_segment(0));
        v.write(save::CPL, 0);
        // EFER.SVME must stay set in the guest's EFER or VMRUN refuses it.
        v.write(save::EFER, super::EFER_SVME);
        v.write(save::CR0, 1 << 4); // ET
        v.write(save::CR3, 0);
        v.write(save::CR4, 0);
        v.write(save::DR6, 0xffff_0ff0);
        v.write(save::DR7, 0x400);
        v.write(save::RFLAGS, 0x2);
        v.write(save::RIP, CODE_GPA);
        v.write(save::RSP, 0x3ff0);
        v.write(save::RAX, 0xdead_beef);
        // The power-on PAT: with nested paging the guest's PAT is G_PAT.
        v.write(save::G_PAT, 0x0007_0406_0007_0406);
    }

    /// `N` guest bytes at guest-physical `gpa`, through the NPT.
    fn read_guest<const N: usize>(&self, gpa: u64) -> Option<[u8; N]> {
        let npt = self.npt.as_ref()?;
        let mut out = [0; N];
        for (i, byte) in out.iter_mut().enumerate() {
            let t = npt.translate(&NptMemory, gpa.checked_add(i as u64)?)?;
            let page = owned_frames_mut::<4096>(t.phys & !0xfff);
            *byte = page[(t.phys & 0xfff) as usize];
        }
        Some(out)
    }

    /// Moves RIP past the instruction at RIP after checking that it is
    /// `expected` (without NRIPS there is no next RIP to take: the length
    /// comes from the bytes, as a decoder would give it).
    fn skip(&self, v: &mut Vmcb<'_>, cpu: &SvmCpu, expected: &[u8]) -> Result<u64, String> {
        let rip = v.read(save::RIP);
        let linear = v.segment(save::CS).base.wrapping_add(rip);
        let found = self.read_guest::<3>(linear);
        let matches = found.is_some_and(|b| b[..expected.len()] == *expected);
        if !matches {
            return Err(alloc::format!(
                "the instruction at RIP {rip:#x} is {found:02x?}, not {expected:02x?}"
            ));
        }
        let next = if cpu.caps.features.contains(SvmFeatures::NRIPS) {
            v.read(control::NEXT_RIP)
        } else {
            rip + expected.len() as u64
        };
        if next != rip + expected.len() as u64 {
            return Err(alloc::format!(
                "nRIP {next:#x} after the {}-byte instruction at {rip:#x}",
                expected.len()
            ));
        }
        v.write(save::RIP, next);
        Ok(next)
    }

    fn run(&mut self, cpu: &SvmCpu) -> Result<(), String> {
        let mut output: Vec<u8> = Vec::new();
        let mut cpuid_answer = None;
        let mut faults = 0;
        let mut hypercalls = 0;
        // The host's timer count when its interrupt was made pending, until
        // the INTR exit it causes; then whether that exit was seen.
        let mut timer_pending: Option<u64> = None;
        let mut timer_exit = false;
        let mut step = String::from("first VMRUN");
        for n in 0..MAX_EXITS {
            {
                let mut v = vmcb(self.vmcb_pa);
                if self.flush_asid {
                    v.write(
                        control::TLB_CONTROL,
                        u64::from(tlb_control(cpu, TlbFlush::ThisAsid)),
                    );
                    self.flush_asid = false;
                }
                v.write(control::EXITCODE, 0);
            }
            // SAFETY: `cpu` was enabled on this CPU (the boot CPU, which runs
            // the test); the VMCB, maps and NPT are this guest's and map only
            // its own frames; VMRUN, INTR and NMI are intercepted.
            unsafe { cpu.run(self.vmcb_pa, &mut self.regs) };
            let mut v = vmcb(self.vmcb_pa);
            // Once run, the VMCB needs no more flushes until the NPT changes.
            v.write(control::TLB_CONTROL, u64::from(TLB_NO_FLUSH));
            let raw = v.read(control::EXITCODE);
            let info1 = v.read(control::EXITINFO1);
            let info2 = v.read(control::EXITINFO2);
            let rip = v.read(save::RIP);
            let fail = |what: &str| {
                alloc::format!(
                    "{what} (after {step}; exit {n}: EXITCODE {raw:#x}, EXITINFO1 {info1:#x}, EXITINFO2 {info2:#x}, RIP {rip:#x})"
                )
            };
            match ExitCode::from_raw(raw) {
                ExitCode::Cpuid => {
                    let leaf = v.read(save::RAX) as u32;
                    let sub = self.regs.rcx as u32;
                    if leaf != 0 {
                        return Err(fail(&alloc::format!(
                            "CPUID with EAX {leaf:#x}: the guest cleared EAX first"
                        )));
                    }
                    let view = basalt_cpu::cpuid::VcpuView {
                        signature: *b"BasaltBasalt",
                        apic_id: 0,
                        tsc_hz: crate::time::tsc_hz(),
                        osxsave: false,
                        xcr0: 1,
                    };
                    let r = crate::vcpu::guest_cpu().cpuid(leaf, sub, &view);
                    v.write(save::RAX, u64::from(r[0]));
                    self.regs.rbx = u64::from(r[1]);
                    self.regs.rcx = u64::from(r[2]);
                    self.regs.rdx = u64::from(r[3]);
                    cpuid_answer = Some(r);
                    let next = self.skip(&mut v, cpu, &CPUID).map_err(|e| fail(&e))?;
                    let mut vendor = String::new();
                    for word in [r[1], r[3], r[2]] {
                        for b in word.to_le_bytes() {
                            let _ = vendor.write_char(if b.is_ascii_graphic() {
                                char::from(b)
                            } else {
                                '.'
                            });
                        }
                    }
                    info!(
                        "svm: exit {raw:#x} CPUID leaf {leaf:#x} at RIP {rip:#x}: answered from the guest CPU model (max leaf {:#x}, \"{vendor}\"), next RIP {next:#x}",
                        r[0]
                    );
                    step = String::from("CPUID");
                }
                ExitCode::Ioio => {
                    let io = IoioInfo::decode(info1)
                        .ok_or_else(|| fail("IOIO with an undecodable EXITINFO1"))?;
                    if io.is_in || io.string || io.port != CONSOLE_PORT || io.size != 1 {
                        return Err(fail(&alloc::format!(
                            "an I/O access the guest does not make: {io:?}"
                        )));
                    }
                    let byte = v.read(save::RAX) as u8;
                    // The next RIP is in EXITINFO2 for every I/O exit, with
                    // or without NRIPS (APM Vol. 2 §15.10.2).
                    if info2 <= rip || info2 > rip + 15 {
                        return Err(fail("IOIO next RIP (EXITINFO2) not just after RIP"));
                    }
                    v.write(save::RIP, info2);
                    output.push(byte);
                    info!(
                        "svm: exit {raw:#x} IOIO out port {:#x} size {} value {byte:#04x} '{}' at RIP {rip:#x}, next RIP {info2:#x} (EXITINFO1 {info1:#x}, EXITINFO2)",
                        io.port,
                        io.size,
                        char::from(byte)
                    );
                    step = alloc::format!("OUT of {byte:#04x}");
                }
                ExitCode::Npf => {
                    let npf = NpfInfo::decode(info1);
                    let page = info2 & !0xfff;
                    if npf.present || npf.write || npf.fetch || !npf.final_gpa || page != LAZY_GPA {
                        return Err(fail(&alloc::format!(
                            "a nested page fault the guest does not cause: {npf:?} at GPA {info2:#x}"
                        )));
                    }
                    if self.lazy_pa.is_some() {
                        return Err(fail("a second nested page fault on a page already mapped"));
                    }
                    let frame = mm::alloc_zeroed_frame(Owner::Domain)
                        .ok_or_else(|| fail("out of memory for the faulting page"))?;
                    self.lazy_pa = Some(frame);
                    owned_frames_mut::<4096>(frame)[0] = LAZY_BYTE;
                    let npt = self.npt.as_mut().ok_or_else(|| fail("no NPT"))?;
                    npt.map(
                        &mut NptMemory,
                        &mut NptMemory,
                        page,
                        frame,
                        4096,
                        MapFlags::READ | MapFlags::WRITE,
                        PageSize::Size4K,
                    )
                    .map_err(|e| fail(&alloc::format!("mapping the faulting page: {e}")))?;
                    // A not-present entry is not cached, but the NPT changed
                    // under a live ASID: flush it (the cheap, correct rule).
                    self.flush_asid = true;
                    faults += 1;
                    info!(
                        "svm: exit {raw:#x} NPF at GPA {info2:#x}, RIP {rip:#x} (EXITINFO1 {info1:#x}: read, not present, final GPA): page mapped, instruction restarted"
                    );
                    step = String::from("the nested page fault");
                }
                ExitCode::Vmmcall => {
                    let Some(r) = cpuid_answer else {
                        return Err(fail("VMMCALL before CPUID"));
                    };
                    let got = [
                        self.regs.rbx as u32,
                        self.regs.rcx as u32,
                        self.regs.rdx as u32,
                    ];
                    if got != [r[1], r[2], r[3]] {
                        return Err(fail(&alloc::format!(
                            "the guest's EBX/ECX/EDX {got:#x?} are not the CPUID answer {:#x?}",
                            [r[1], r[2], r[3]]
                        )));
                    }
                    let al = v.read(save::RAX) as u8;
                    if al != LAZY_BYTE {
                        return Err(fail(&alloc::format!(
                            "the guest read {al:#04x} from GPA {LAZY_GPA:#x}, not {LAZY_BYTE:#04x}"
                        )));
                    }
                    if self.regs.rsi != MARK_RSI || self.regs.r15 != MARK_R15 {
                        return Err(fail(&alloc::format!(
                            "registers the guest never touched changed: RSI {:#x}, R15 {:#x}",
                            self.regs.rsi,
                            self.regs.r15
                        )));
                    }
                    let next = self.skip(&mut v, cpu, &VMMCALL).map_err(|e| fail(&e))?;
                    hypercalls += 1;
                    info!(
                        "svm: exit {raw:#x} VMMCALL at RIP {rip:#x}: guest registers hold the CPUID answer, AL {al:#04x}, RSI and R15 intact; next RIP {next:#x}"
                    );
                    // A host interrupt pending at VMRUN must end the guest
                    // at once (INTR intercept; with V_INTR_MASKING the
                    // host's IF gates it, not the guest's, which is 0) and
                    // be taken at STGI.
                    let before = timer_ticks();
                    let timer = crate::arch::x86_64::idt::vector::TIMER;
                    crate::time::arm_oneshot_in(100_000);
                    let start = crate::time::now_ns();
                    while !apic::is_requested(timer) {
                        if crate::time::now_ns().saturating_sub(start) > 1_000_000_000 {
                            return Err(fail(
                                "the host timer armed 0.1 ms ahead was not requested within 1 s",
                            ));
                        }
                        core::hint::spin_loop();
                    }
                    timer_pending = Some(before);
                    info!(
                        "svm: host timer interrupt requested (IRR) with interrupts off: pending at the next VMRUN"
                    );
                    step = String::from("VMMCALL");
                }
                ExitCode::Hlt => {
                    if !timer_exit {
                        return Err(fail(&alloc::format!(
                            "the host timer interrupt pending at VMRUN did not end the guest with an INTR exit (timer interrupts: {timer_pending:?} before, {} now)",
                            timer_ticks()
                        )));
                    }
                    self.skip(&mut v, cpu, &HLT).map_err(|e| fail(&e))?;
                    info!("svm: exit {raw:#x} HLT at RIP {rip:#x}: the guest is done");
                    if output != EXPECTED_OUTPUT {
                        return Err(fail(&alloc::format!(
                            "the guest printed {output:02x?}, not {EXPECTED_OUTPUT:02x?}"
                        )));
                    }
                    if faults != 1 || hypercalls != 1 {
                        return Err(fail(&alloc::format!(
                            "{faults} nested page faults and {hypercalls} VMMCALLs, not one of each"
                        )));
                    }
                    info!(
                        "svm: guest printed \"{}\" on port {CONSOLE_PORT:#x} after {} exits",
                        String::from_utf8_lossy(&output),
                        n + 1
                    );
                    return Ok(());
                }
                ExitCode::Intr => {
                    // A host interrupt ended the guest's slice; entry.S took
                    // it at STGI (through the host IDT, with the host's GS
                    // back: the timer handler counts in per-CPU data). The
                    // guest goes on where it was.
                    let now = timer_ticks();
                    match timer_pending.take() {
                        Some(before) if now > before => {
                            timer_exit = true;
                            info!(
                                "svm: exit {raw:#x} INTR at RIP {rip:#x}: the pending host timer interrupt ended the guest and was taken at STGI (timer interrupts {before} -> {now}); guest resumed"
                            );
                        }
                        Some(_) => {
                            return Err(fail(
                                "INTR exit, but the host timer interrupt was not taken at STGI",
                            ));
                        }
                        None => info!(
                            "svm: exit {raw:#x} INTR at RIP {rip:#x}: host interrupt taken, guest resumed"
                        ),
                    }
                }
                ExitCode::Invalid => {
                    return Err(fail(
                        "VMRUN refused the guest state (VMEXIT_INVALID): a VMCB consistency check failed",
                    ));
                }
                ExitCode::Shutdown => return Err(fail("the guest shut down (triple fault)")),
                other => return Err(fail(&alloc::format!("unexpected exit {other:?}"))),
            }
        }
        Err(alloc::format!(
            "the guest did not reach HLT within {MAX_EXITS} exits (last step: {step})"
        ))
    }

    /// Frees everything the guest had. Its ASID's translations may stay in
    /// the TLB: the CPU's allocator hands that ASID out again only in a new
    /// generation, whose first VMRUN flushes every ASID.
    fn destroy(&mut self) {
        if let Some(npt) = self.npt.take() {
            npt.destroy(&NptMemory, &mut NptMemory);
        }
        if let Some(pa) = self.lazy_pa.take() {
            mm::free_frames(pa, 0, Owner::Domain);
        }
        for (pa, order, owner) in [
            (&mut self.ram_pa, 2, Owner::Domain),
            (&mut self.msrpm_pa, 1, Owner::Other),
            (&mut self.iopm_pa, 2, Owner::Other),
            (&mut self.vmcb_pa, 0, Owner::Other),
        ] {
            if *pa != 0 {
                mm::free_frames(*pa, order, owner);
                *pa = 0;
            }
        }
    }
}

/// Timer interrupts this CPU has taken.
fn timer_ticks() -> u64 {
    crate::arch::x86_64::percpu::current().map_or(0, |c| {
        c.timer_ticks.load(core::sync::atomic::Ordering::Acquire)
    })
}

/// TLB_CONTROL for a flush decision: without flush-by-ASID, flushing one
/// ASID means flushing them all.
fn tlb_control(cpu: &SvmCpu, flush: TlbFlush) -> u8 {
    match flush {
        TlbFlush::None => TLB_NO_FLUSH,
        TlbFlush::All => TLB_FLUSH_ALL,
        TlbFlush::ThisAsid if cpu.caps.features.contains(SvmFeatures::FLUSH_BY_ASID) => {
            TLB_FLUSH_ASID
        }
        TlbFlush::ThisAsid => TLB_FLUSH_ALL,
    }
}
