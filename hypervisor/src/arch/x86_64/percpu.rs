//! Per-CPU state, reached through the GS base (docs/smp.md).

use super::gdt::CpuTables;
use super::msr::{self, Msr};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The most CPUs Basalt runs on.
pub const MAX_CPUS: usize = 256;

/// A stack: `[bottom, top)` with an unmapped guard page `[guard, bottom)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stack {
    /// The unmapped page below the stack.
    pub guard: u64,
    /// Lowest usable address.
    pub bottom: u64,
    /// One past the highest address: the initial RSP.
    pub top: u64,
}

impl Stack {
    /// Whether `addr` is in the guard page.
    pub fn guards(&self, addr: u64) -> bool {
        (self.guard..self.bottom).contains(&addr)
    }

    /// Whether `addr` is inside the usable stack.
    pub fn contains(&self, addr: u64) -> bool {
        (self.bottom..self.top).contains(&addr)
    }
}

/// A CPU's stacks: the main one and the three IST stacks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stacks {
    /// The stack the CPU normally runs on.
    pub main: Stack,
    /// IST1 (double fault), IST2 (NMI), IST3 (machine check).
    pub ist: [Stack; 3],
}

impl Stacks {
    /// Names the stack whose guard page holds `addr`.
    pub fn guard_of(&self, addr: u64) -> Option<&'static str> {
        const NAMES: [&str; 3] = ["double-fault", "NMI", "machine-check"];
        if self.main.guards(addr) {
            return Some("main");
        }
        self.ist
            .iter()
            .zip(NAMES)
            .find(|(s, _)| s.guards(addr))
            .map(|(_, n)| n)
    }

    /// Whether `addr` is inside any of these stacks.
    pub fn contains(&self, addr: u64) -> bool {
        self.main.contains(addr) || self.ist.iter().any(|s| s.contains(addr))
    }
}

/// One CPU's state. `this` must stay the first field: `GS:0` reads it.
#[repr(C)]
#[derive(Debug)]
pub struct PerCpu {
    this: *const PerCpu,
    /// 0 for the boot CPU, then in MADT order.
    pub index: usize,
    /// Local APIC id.
    pub apic_id: u32,
    /// Stacks and their guard pages.
    pub stacks: Stacks,
    tables: CpuTables,
    /// Timer interrupts taken.
    pub timer_ticks: AtomicU64,
    /// TSC deadline of the armed one-shot timer (0 = none).
    pub timer_deadline: AtomicU64,
}

// SAFETY: a PerCpu is shared read-only between CPUs except for its atomics;
// `this` is only a self-pointer.
unsafe impl Sync for PerCpu {}
// SAFETY: as above.
unsafe impl Send for PerCpu {}

static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
static ONLINE: AtomicUsize = AtomicUsize::new(0);

impl PerCpu {
    /// A CPU block, not yet installed.
    pub fn new(index: usize, apic_id: u32, stacks: Stacks) -> Self {
        let ist_tops = [stacks.ist[0].top, stacks.ist[1].top, stacks.ist[2].top];
        Self {
            this: core::ptr::null(),
            index,
            apic_id,
            stacks,
            tables: CpuTables::new(ist_tops),
            timer_ticks: AtomicU64::new(0),
            timer_deadline: AtomicU64::new(0),
        }
    }

    /// Makes `this` the running CPU's block: GS base, GDT, TSS, IDT; and
    /// registers it for [`cpu`] and [`online_count`].
    pub fn install(this: &'static mut PerCpu) {
        this.this = &raw const *this;
        let index = this.index;
        let ptr: *mut PerCpu = &raw mut *this;
        // SAFETY: `tables` is part of a 'static block that is never moved
        // or freed; loading it replaces the boot GDT on this CPU only.
        let tables: &'static mut CpuTables = unsafe { &mut (*ptr).tables };
        tables.load();
        super::idt::load();
        // SAFETY: GS base becomes the address of a 'static PerCpu whose
        // first field points to itself, which is what `current` reads.
        unsafe { msr::write(Msr::GsBase, ptr as u64) };
        if let Some(slot) = CPUS.get(index) {
            slot.store(ptr, Ordering::Release);
            ONLINE.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl PerCpu {
    /// This CPU's GDT and TSS addresses.
    pub fn table_bases(&self) -> (u64, u64) {
        self.tables.bases()
    }
}

/// The running CPU's block, once installed.
pub fn current() -> Option<&'static PerCpu> {
    let base = msr::read(Msr::GsBase);
    if base == 0 {
        return None;
    }
    // SAFETY: a non-zero GS base is only ever set by `install`, to a
    // 'static PerCpu.
    Some(unsafe { &*(base as *const PerCpu) })
}

/// The running CPU's index (0 before per-CPU state exists: the boot CPU).
pub fn index() -> usize {
    current().map_or(0, |c| c.index)
}

/// The block of CPU `index`, if it is online.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    let ptr = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: registered pointers are 'static PerCpu blocks.
    (!ptr.is_null()).then(|| unsafe { &*ptr })
}

/// How many CPUs have installed their block.
pub fn online_count() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// Every online CPU.
pub fn all() -> impl Iterator<Item = &'static PerCpu> {
    (0..MAX_CPUS).filter_map(cpu)
}
