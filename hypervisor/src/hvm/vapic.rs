//! A domain's interrupt controllers wired to VM exits (docs/platform.md,
//! "Interrupt delivery"): one `basalt_vapic::Lapic` per vCPU (xAPIC page at
//! 0xFEE00000, `IA32_APIC_BASE`, `IA32_TSC_DEADLINE`) and one
//! `basalt_vapic::IoApic` at 0xFEC00000, all under one per-domain lock.
//!
//! State outside the lock, read on the hot path without it:
//! * `flags[v]`, one atomic byte per vCPU, so that the hot path reads one
//!   word: [`ATTN_VECTOR`] (its APIC has a vector to deliver: IRR above
//!   PPR), [`ATTN_NMI`] and [`ATTN_INIT`] (below);
//! * `deadline[v]`: when vCPU `v`'s APIC timer next fires (system ns, 0 =
//!   never);
//! * `pic_through`: vCPU 0's LINT0 lets the 8259's INTR through (APIC
//!   disabled or software-disabled, as after reset, or LINT0 unmasked in
//!   ExtINT mode, as firmware leaves it for virtual-wire mode);
//! * NMI: an NMI (an IPI or I/O APIC message with delivery mode NMI) waits
//!   for vCPU `v`: the processor's NMI latch, one deep. It is injected when
//!   the guest's NMI blocking allows (`Loaded::inject` of `Event::Nmi`), wakes a
//!   halted vCPU whatever its RFLAGS.IF, and is dropped by INIT;
//! * INIT and `sipi[v]`: an INIT reached vCPU `v` while it was up (a guest
//!   restarting a CPU it took offline): the vCPU stops running guest code
//!   at its next turn and waits for a start-up IPI, whose vector `sipi[v]`
//!   records (`0x100 | vector`; 0: none yet).
//!
//! The vector flag, deadlines and `pic_through` are recomputed under the
//! lock after every change. The models count in the domain's guest time
//! (system time since the domain's TSC was 0), so a TSC-deadline value the
//! guest computed from RDTSC means the same instant to the model.
//!
//! Messages between controllers (IPIs, I/O APIC interrupts, EOI broadcasts)
//! are resolved here; the vCPUs they reach are woken (a halted vCPU) or
//! kicked (one running elsewhere) after the lock is dropped. A start-up IPI
//! starts a vCPU that is down in real mode at `vector << 8`:0000.

use super::platform::Platform;
use alloc::vec::Vec;
use basalt_vapic::lapic::{LVT_MASKED, MSR_TSC_DEADLINE};
use basalt_vapic::{
    Action, ApicMode, CpuSet, Delivery, IoApic, IoApicInterrupt, Lapic, LapicConfig, Received,
    Target, Trigger,
};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

/// The ISA IRQ the PIT uses, wired to I/O APIC pin 2 (the MADT says so).
const PIT_IRQ: u8 = 0;
const PIT_GSI: usize = 2;
/// LVT LINT0 index in `Lapic::lvt`.
const LVT_LINT0: usize = 3;
/// The delivery-mode bits of an LVT entry.
const LVT_DELIVERY_MASK: u32 = 0x700;
/// ExtINT delivery mode in an LVT entry.
const LVT_EXTINT: u32 = 0x700;

/// [`DomainApic::attention`]: the APIC has a vector above PPR to deliver.
pub const ATTN_VECTOR: u8 = 1 << 0;
/// [`DomainApic::attention`]: an NMI waits.
pub const ATTN_NMI: u8 = 1 << 1;
/// [`DomainApic::attention`]: an INIT came while the vCPU was up; it waits
/// for a start-up IPI.
pub const ATTN_INIT: u8 = 1 << 2;

/// The controllers behind the lock.
#[derive(Debug)]
struct Controllers {
    lapics: Vec<Lapic>,
    ioapic: IoApic,
}

/// A domain's local APICs and I/O APIC.
#[derive(Debug)]
pub struct DomainApic {
    state: Mutex<Controllers>,
    flags: Vec<AtomicU8>,
    deadline: Vec<AtomicU64>,
    pic_through: AtomicBool,
    sipi: Vec<AtomicU32>,
    /// The I/O APIC's input lines as last driven (bit n = pin n).
    lines: core::sync::atomic::AtomicU32,
    /// The I/O APIC's masked pins (bit n = pin n), for skipping the lock.
    masked: core::sync::atomic::AtomicU32,
    /// The lines a host level interrupt asserts until the guest's EOI (bit
    /// n = pin n; the control domain's only, [`super::pirq`]).
    host_level: AtomicU32,
    /// System time at which the domain's TSC read 0.
    base_ns: u64,
}

/// What a change asks for once the lock is dropped.
#[derive(Default)]
struct Effects {
    kick: CpuSet,
    /// (vCPU, start page) of start-up IPIs that started a vCPU.
    start: Vec<(usize, u8)>,
    /// (vCPU, delivery mode) of an IPI Basalt does not emulate, to log
    /// (rate-limited: the guest chooses how often) once the lock is dropped.
    ignored: Option<(usize, Delivery)>,
    /// Host level GSIs the guest's EOI ended, to unmask on the host.
    host_eoi: u32,
}

impl DomainApic {
    /// The controllers of a domain with `vcpus` vCPUs whose TSC was 0 at
    /// system time `base_ns`: vCPU 0 is the bootstrap processor, the others
    /// wait for INIT and a start-up IPI.
    pub fn new(vcpus: u32, base_ns: u64) -> DomainApic {
        let lapics = (0..vcpus)
            .map(|i| {
                let mut c = LapicConfig::new(i, i == 0);
                c.timer_hz = crate::vcpu::CRYSTAL_HZ;
                c.tsc_hz = crate::time::tsc_hz().max(1);
                Lapic::new(c)
            })
            .collect();
        DomainApic {
            state: Mutex::new(Controllers {
                lapics,
                ioapic: IoApic::new(0),
            }),
            flags: (0..vcpus).map(|_| AtomicU8::new(0)).collect(),
            deadline: (0..vcpus).map(|_| AtomicU64::new(0)).collect(),
            pic_through: AtomicBool::new(true),
            sipi: (0..vcpus).map(|_| AtomicU32::new(0)).collect(),
            lines: core::sync::atomic::AtomicU32::new(0),
            masked: core::sync::atomic::AtomicU32::new(u32::MAX),
            host_level: AtomicU32::new(0),
            base_ns,
        }
    }

    fn guest_ns(&self, now: u64) -> u64 {
        now.saturating_sub(self.base_ns)
    }

    /// What waits for vCPU `v` ([`ATTN_VECTOR`], [`ATTN_NMI`],
    /// [`ATTN_INIT`]; hot path, one load, no lock).
    #[inline]
    pub fn attention(&self, v: u32) -> u8 {
        self.flags
            .get(v as usize)
            .map_or(0, |f| f.load(Ordering::Relaxed))
    }

    fn set_flag(&self, v: usize, flag: u8, on: bool) -> u8 {
        let Some(f) = self.flags.get(v) else {
            return 0;
        };
        if on {
            f.fetch_or(flag, Ordering::SeqCst)
        } else {
            f.fetch_and(!flag, Ordering::SeqCst)
        }
    }

    /// Whether vCPU `v` has an interrupt to take (hot path, no lock).
    #[inline]
    pub fn pending(&self, v: u32) -> bool {
        self.attention(v) & ATTN_VECTOR != 0
    }

    /// When vCPU `v`'s APIC timer fires next (system ns; 0 = never).
    #[inline]
    pub fn deadline(&self, v: u32) -> u64 {
        self.deadline
            .get(v as usize)
            .map_or(0, |d| d.load(Ordering::Relaxed))
    }

    /// Whether an NMI waits for vCPU `v` (no lock).
    #[inline]
    pub fn nmi_pending(&self, v: u32) -> bool {
        self.attention(v) & ATTN_NMI != 0
    }

    /// Takes vCPU `v`'s waiting NMI (true if there was one).
    pub fn take_nmi(&self, v: u32) -> bool {
        self.set_flag(v as usize, ATTN_NMI, false) & ATTN_NMI != 0
    }

    /// Puts back an NMI [`Self::take_nmi`] took but could not inject.
    pub fn return_nmi(&self, v: u32) {
        self.set_flag(v as usize, ATTN_NMI, true);
    }

    /// Whether an INIT left vCPU `v` waiting for a start-up IPI (no lock).
    #[inline]
    pub fn init_pending(&self, v: u32) -> bool {
        self.attention(v) & ATTN_INIT != 0
    }

    /// Records a start-up IPI for vCPU `v`, which is up and has an INIT
    /// pending; false if it has none (the IPI is then for a vCPU that is
    /// down, or stray).
    pub fn record_sipi(&self, v: u32, vector: u8) -> bool {
        if !self.init_pending(v) {
            return false;
        }
        self.sipi[v as usize].store(0x100 | u32::from(vector), Ordering::SeqCst);
        true
    }

    /// Whether a start-up IPI waits for vCPU `v` (after its INIT).
    pub fn sipi_recorded(&self, v: u32) -> bool {
        self.sipi
            .get(v as usize)
            .is_some_and(|s| s.load(Ordering::SeqCst) != 0)
    }

    /// For vCPU `v` with an INIT pending: the start-up IPI's vector if one
    /// came (the INIT is then done), `None` if it still waits.
    pub fn take_sipi(&self, v: u32) -> Option<u8> {
        let v = v as usize;
        let s = self.sipi.get(v)?.swap(0, Ordering::SeqCst);
        if s == 0 {
            return None;
        }
        self.set_flag(v, ATTN_INIT, false);
        Some(s as u8)
    }

    /// Forgets vCPU `v`'s INIT (it is started from down instead).
    pub fn clear_init(&self, v: u32) {
        if let Some(s) = self.sipi.get(v as usize) {
            self.set_flag(v as usize, ATTN_INIT, false);
            s.store(0, Ordering::SeqCst);
        }
    }

    /// Whether the 8259's output reaches vCPU 0 (through LINT0).
    #[inline]
    pub fn pic_through(&self) -> bool {
        self.pic_through.load(Ordering::Relaxed)
    }

    /// Recomputes the lock-free view of vCPU `v`.
    fn refresh(&self, st: &Controllers, v: usize) {
        let Some(l) = st.lapics.get(v) else {
            return;
        };
        self.set_flag(v, ATTN_VECTOR, l.highest_pending().is_some());
        let at = l
            .next_timer_deadline()
            .map_or(0, |d| d.saturating_add(self.base_ns).max(1));
        self.deadline[v].store(at, Ordering::SeqCst);
        if v == 0 {
            let lint0 = l.lvt(LVT_LINT0).unwrap_or(LVT_MASKED);
            let through = l.mode() == ApicMode::Disabled
                || !l.software_enabled()
                || (lint0 & LVT_MASKED == 0 && lint0 & LVT_DELIVERY_MASK == LVT_EXTINT);
            self.pic_through.store(through, Ordering::SeqCst);
        }
    }

    fn targets(st: &Controllers) -> Vec<Target> {
        st.lapics.iter().map(Lapic::target).collect()
    }

    /// Delivers a message to the APICs in `to`.
    fn deliver(
        &self,
        st: &mut Controllers,
        to: &CpuSet,
        delivery: Delivery,
        vector: u8,
        trigger: Trigger,
        fx: &mut Effects,
    ) {
        for d in to.iter() {
            let Some(l) = st.lapics.get_mut(d) else {
                continue;
            };
            match l.receive(delivery, vector, trigger) {
                Received::Interrupt => fx.kick.insert(d),
                Received::StartUp { vector } => fx.start.push((d, vector)),
                Received::Init => {
                    self.set_flag(d, ATTN_NMI, false);
                    self.sipi[d].store(0, Ordering::SeqCst);
                    self.set_flag(d, ATTN_INIT, true);
                    fx.kick.insert(d);
                    log::debug!("vCPU{d}: INIT");
                }
                Received::Nmi => {
                    self.set_flag(d, ATTN_NMI, true);
                    fx.kick.insert(d);
                }
                Received::Smi | Received::ExtInt => fx.ignored = Some((d, delivery)),
                Received::Ignored => {}
            }
            self.refresh(st, d);
        }
    }

    fn deliver_ioapic(&self, st: &mut Controllers, msg: IoApicInterrupt, fx: &mut Effects) {
        let to = msg.destinations(&Self::targets(st));
        self.deliver(st, &to, msg.delivery, msg.vector, msg.trigger, fx);
    }

    /// Acts on what a register write asked for.
    fn act(&self, st: &mut Controllers, from: usize, action: Action, fx: &mut Effects) {
        match action {
            Action::None => {}
            Action::Ipi(ipi) => {
                let to = ipi.destinations(&Self::targets(st), from);
                self.deliver(st, &to, ipi.delivery, ipi.vector, ipi.trigger, fx);
            }
            Action::Eoi(eoi) => {
                if eoi.level_triggered {
                    // A host line ends with its handler: deasserted before
                    // remote IRR clears, so only the device asserting it
                    // again (the host pin fires) sends again.
                    let host = self.host_level.load(Ordering::SeqCst);
                    for pin in (0..basalt_vapic::ioapic::PINS).filter(|p| host & 1 << p != 0) {
                        let e = st.ioapic.entry(pin).unwrap_or(0);
                        if e as u8 == eoi.vector && e & basalt_vapic::ioapic::RTE_REMOTE_IRR != 0 {
                            self.host_level.fetch_and(!(1 << pin), Ordering::SeqCst);
                            let device = self.lines.load(Ordering::SeqCst) & 1 << pin != 0;
                            st.ioapic.set_irq(pin, device);
                            fx.host_eoi |= 1 << pin;
                        }
                    }
                    let again = st.ioapic.eoi(eoi.vector);
                    for msg in again.iter() {
                        self.deliver_ioapic(st, msg, fx);
                    }
                }
            }
        }
    }
}

/// Wakes or kicks the vCPUs a change reached, and starts those a start-up
/// IPI started; `me` (the vCPU that made the change) is neither kicked nor
/// woken: it is about to look at its APIC anyway.
fn apply(p: &Platform, me: Option<usize>, fx: Effects) {
    if let Some((d, delivery)) = fx.ignored {
        crate::guest_log!(
            p,
            log::Level::Warn,
            "d{}v{d}: {delivery:?} IPI ignored (not emulated)",
            p.id
        );
    }
    if fx.host_eoi != 0 {
        super::pirq::eoi(fx.host_eoi);
    }
    if fx.kick.is_empty() && fx.start.is_empty() {
        return;
    }
    for v in fx.kick.iter() {
        if Some(v) != me {
            p.irq.kick(v as u32);
        }
    }
    for (v, vector) in fx.start {
        p.irq.start_up(v as u32, vector);
    }
}

/// A read of `size` bytes at `gpa` on an APIC page by vCPU `vcpu`.
pub fn mmio_read(p: &Platform, vcpu: u32, gpa: u64, size: u8) -> u64 {
    let a = &p.apic;
    let now = a.guest_ns(crate::time::now_ns());
    let page = gpa & !0xfff;
    let offset = (gpa & 0xfff) as u32;
    let st = a.state.lock();
    // A 32-bit register read whole; narrower reads take its bytes.
    let reg = offset & !3;
    let word = if page == u64::from(basalt_guest::acpi::LOCAL_APIC_ADDRESS) {
        let Some(l) = st.lapics.get(vcpu as usize) else {
            return 0;
        };
        if l.mode() != ApicMode::XApic || l.base() != page {
            return u64::MAX;
        }
        l.read(reg & !0xf, now)
    } else {
        st.ioapic.read(reg)
    };
    let shift = (offset & 3) * 8;
    let value = u64::from(word >> shift);
    if size >= 8 {
        value
    } else {
        value & ((1u64 << (size * 8)) - 1)
    }
}

/// A write of `value` at `gpa` on an APIC page by vCPU `vcpu`. Narrow
/// writes of a register write the whole register with the other bytes zero
/// (both controllers take 32-bit accesses only).
pub fn mmio_write(p: &Platform, vcpu: u32, gpa: u64, value: u64) {
    let a = &p.apic;
    let now = a.guest_ns(crate::time::now_ns());
    let page = gpa & !0xfff;
    let offset = (gpa & 0xfff) as u32;
    let shift = (offset & 3) * 8;
    let word = ((value << shift) & 0xffff_ffff) as u32;
    let v = vcpu as usize;
    let mut fx = Effects::default();
    // (pin, old entry, new entry) of a redirection entry the write reached.
    let mut rte = None;
    {
        let mut st = a.state.lock();
        if page == u64::from(basalt_guest::acpi::LOCAL_APIC_ADDRESS) {
            let Some(l) = st.lapics.get_mut(v) else {
                return;
            };
            if l.mode() != ApicMode::XApic || l.base() != page {
                return;
            }
            let action = l.write(offset & !0xf, word, now);
            a.act(&mut st, v, action, &mut fx);
            a.refresh(&st, v);
        } else {
            // Lines that changed while their pin was masked reach the
            // model first: unmasking an asserted level pin sends.
            let lines = a.lines.load(Ordering::SeqCst) | a.host_level.load(Ordering::SeqCst);
            for pin in 0..basalt_vapic::ioapic::PINS {
                let level = lines & (1 << pin) != 0;
                if st.ioapic.line(pin) != level
                    && let Some(msg) = st.ioapic.set_irq(pin, level)
                {
                    a.deliver_ioapic(&mut st, msg, &mut fx);
                }
            }
            let index = st.ioapic.read(basalt_vapic::ioapic::IOREGSEL) as u8;
            let pin = usize::from(index.wrapping_sub(basalt_vapic::ioapic::REG_REDTBL) / 2);
            let old = st.ioapic.entry(pin).unwrap_or(0);
            if let Some(msg) = st.ioapic.write(offset & !3, word) {
                a.deliver_ioapic(&mut st, msg, &mut fx);
            }
            if offset & !3 == basalt_vapic::ioapic::IOWIN
                && index >= basalt_vapic::ioapic::REG_REDTBL
                && pin < basalt_vapic::ioapic::PINS
            {
                rte = Some((pin, old, st.ioapic.entry(pin).unwrap_or(0)));
            }
            let mut masked = 0u32;
            for pin in 0..basalt_vapic::ioapic::PINS {
                if st
                    .ioapic
                    .entry(pin)
                    .is_none_or(|e| e & basalt_vapic::ioapic::RTE_MASKED != 0)
                {
                    masked |= 1 << pin;
                }
            }
            a.masked.store(
                masked | !((1 << basalt_vapic::ioapic::PINS) - 1),
                Ordering::SeqCst,
            );
        }
    }
    apply(p, Some(v), fx);
    if let Some((pin, old, new)) = rte {
        super::pirq::entry_written(p, pin, old, new);
    }
}

/// RDMSR of a platform MSR (`IA32_APIC_BASE`, `IA32_TSC_DEADLINE`, the
/// x2APIC range); `None` means #GP.
pub fn rdmsr(p: &Platform, vcpu: u32, msr: u32) -> Option<u64> {
    let a = &p.apic;
    let now = a.guest_ns(crate::time::now_ns());
    let st = a.state.lock();
    st.lapics.get(vcpu as usize)?.rdmsr(msr, now).ok()
}

/// WRMSR of a platform MSR; `false` means #GP.
pub fn wrmsr(p: &Platform, vcpu: u32, msr: u32, value: u64) -> bool {
    let a = &p.apic;
    let now = a.guest_ns(crate::time::now_ns());
    let v = vcpu as usize;
    let mut fx = Effects::default();
    let ok = {
        let mut st = a.state.lock();
        let Some(l) = st.lapics.get_mut(v) else {
            return false;
        };
        match l.wrmsr(msr, value, now) {
            Ok(action) => {
                a.act(&mut st, v, action, &mut fx);
                a.refresh(&st, v);
                true
            }
            Err(e) => {
                if msr != MSR_TSC_DEADLINE {
                    crate::guest_log!(p, log::Level::Debug, "d{}v{vcpu}: {e}: #GP", p.id);
                }
                false
            }
        }
    };
    apply(p, Some(v), fx);
    ok
}

/// ISA interrupt line `irq` of the domain changed to `level`: the I/O APIC
/// sees it on its pin (IRQ 0, the PIT, on pin 2; the others on the pin of
/// their number), and an edge or an asserted level may send an interrupt.
pub fn set_isa_irq(p: &Platform, irq: u8, level: bool) {
    set_gsi(p, isa_pin(irq), level);
}

/// The I/O APIC's input `pin` (GSI 0-23) changed to `level` (see
/// [`set_isa_irq`]); a host level interrupt of the same pin (a shared line)
/// keeps it asserted.
pub fn set_gsi(p: &Platform, pin: usize, level: bool) {
    let a = &p.apic;
    let mut fx = Effects::default();
    // Hot path (every UART access re-states its line): nothing changes
    // unless the line does.
    let bit = 1u32 << pin;
    let old = if level {
        a.lines.fetch_or(bit, Ordering::SeqCst)
    } else {
        a.lines.fetch_and(!bit, Ordering::SeqCst)
    };
    if (old & bit != 0) == level || a.masked.load(Ordering::Relaxed) & bit != 0 {
        // Unchanged, or masked: the model learns the line when the pin is
        // unmasked (`sync_lines`).
        return;
    }
    {
        let mut st = a.state.lock();
        let host = a.host_level.load(Ordering::SeqCst) & bit != 0;
        if let Some(msg) = st.ioapic.set_irq(pin, level || host) {
            a.deliver_ioapic(&mut st, msg, &mut fx);
        }
    }
    apply(p, None, fx);
}

/// A fixed, edge-triggered interrupt with `vector` for vCPU `vcpu`, raised
/// by Basalt itself (Xen's per-vCPU event-channel upcall,
/// `HVMOP_set_evtchn_upcall_vector`): it waits in the vCPU's IRR like any
/// other and the guest EOIs it. `me`, the vCPU making the call, is not
/// kicked (it looks at its APIC before its next entry).
pub fn raise_vector(p: &Platform, vcpu: u32, vector: u8, me: Option<u32>) {
    let a = &p.apic;
    let mut fx = Effects::default();
    {
        let mut st = a.state.lock();
        let mut to = CpuSet::default();
        to.insert(vcpu as usize);
        a.deliver(
            &mut st,
            &to,
            Delivery::Fixed,
            vector,
            Trigger::Edge,
            &mut fx,
        );
    }
    apply(p, me.map(|m| m as usize), fx);
}

/// An MSI of dom0's device, `msg` decoded from its message (`pirq`).
pub fn raise_msi(p: &Platform, msg: basalt_vapic::ioapic::IoApicInterrupt) {
    let mut fx = Effects::default();
    p.apic
        .deliver_ioapic(&mut p.apic.state.lock(), msg, &mut fx);
    apply(p, None, fx);
}

/// The I/O APIC pin of ISA IRQ `irq` (the MADT's override: IRQ 0 on pin 2).
fn isa_pin(irq: u8) -> usize {
    if irq == PIT_IRQ {
        PIT_GSI
    } else {
        usize::from(irq)
    }
}

/// A pulse (rising, then falling edge) on ISA line `irq`: one interrupt from
/// an edge-triggered pin. Nothing is locked while the pin is masked.
pub fn pulse_isa_irq(p: &Platform, irq: u8) {
    pulse_gsi(p, isa_pin(irq));
}

/// A pulse on I/O APIC input `pin` (GSI 0-23; see [`pulse_isa_irq`]).
pub fn pulse_gsi(p: &Platform, pin: usize) {
    let a = &p.apic;
    if a.masked.load(Ordering::Relaxed) & (1 << pin) != 0 {
        return;
    }
    let mut fx = Effects::default();
    {
        let mut st = a.state.lock();
        if let Some(msg) = st.ioapic.set_irq(pin, true) {
            a.deliver_ioapic(&mut st, msg, &mut fx);
        }
        if let Some(msg) = st.ioapic.set_irq(pin, false) {
            a.deliver_ioapic(&mut st, msg, &mut fx);
        }
    }
    a.lines.fetch_and(!(1 << pin), Ordering::SeqCst);
    apply(p, None, fx);
}

/// A host level interrupt on GSI `pin` (< 24) reached the domain (or, `on`
/// false, its host binding changed): the line is asserted until the guest's
/// EOI, or longer if an emulated device shares it and asserts it.
pub fn host_level(p: &Platform, pin: usize, on: bool) {
    let a = &p.apic;
    let bit = 1u32 << pin;
    a.host_level.fetch_and(!bit, Ordering::SeqCst);
    a.host_level
        .fetch_or(if on { bit } else { 0 }, Ordering::SeqCst);
    if (a.lines.load(Ordering::SeqCst) | a.masked.load(Ordering::Relaxed)) & bit != 0 {
        // A device holds it, or masked: the model learns it at unmasking.
        return;
    }
    let mut fx = Effects::default();
    {
        let mut st = a.state.lock();
        if let Some(msg) = st.ioapic.set_irq(pin, on) {
            a.deliver_ioapic(&mut st, msg, &mut fx);
        }
    }
    apply(p, None, fx);
}

/// vCPU `vcpu`'s APIC timer deadline has passed (by `now`, system ns): the
/// timer fires. Returns whether the vCPU has an interrupt to take.
pub fn timer_due(p: &Platform, vcpu: u32, now: u64) -> bool {
    let a = &p.apic;
    let due = a.deadline(vcpu);
    if due != 0 && due <= now {
        let mut st = a.state.lock();
        let g = a.guest_ns(now);
        if let Some(l) = st.lapics.get_mut(vcpu as usize) {
            l.on_time(g);
        }
        a.refresh(&st, vcpu as usize);
    }
    a.pending(vcpu)
}

/// Injects vCPU `vcpu`'s highest deliverable vector through `deliver`,
/// which says whether the guest took it now (else it asked for an
/// interrupt window); only then does the vector move from IRR to ISR.
pub fn inject(p: &Platform, vcpu: u32, deliver: impl FnOnce(u8) -> bool) {
    let a = &p.apic;
    let v = vcpu as usize;
    let mut st = a.state.lock();
    let Some(l) = st.lapics.get_mut(v) else {
        return;
    };
    if let Some(vector) = l.highest_pending()
        && deliver(vector)
    {
        l.acknowledge(vector);
    }
    a.refresh(&st, v);
}
