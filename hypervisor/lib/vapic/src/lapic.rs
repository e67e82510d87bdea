//! A virtual local APIC as a pure state machine with an explicit clock.
//!
//! One [`Lapic`] per vCPU. The guest reaches it three ways:
//!
//! * the xAPIC page (4 KiB at [`Lapic::base`], 0xFEE00000 after reset):
//!   [`Lapic::read`] and [`Lapic::write`] take the offset into the page
//!   (32-bit accesses at 16-byte aligned offsets; anything else reads 0
//!   and is ignored);
//! * the x2APIC MSRs 0x800-0x8FF (MSR = 0x800 + offset / 16), the
//!   `IA32_APIC_BASE` MSR 0x1B and `IA32_TSC_DEADLINE` 0x6E0, through
//!   [`Lapic::rdmsr`] and [`Lapic::wrmsr`]; an [`Error`] means the caller
//!   injects #GP(0);
//! * interrupts the caller delivers: [`Lapic::accept`] for a fixed vector,
//!   [`Lapic::receive`] for any delivery mode (NMI, INIT, SIPI, ...).
//!
//! The CPU side: [`Lapic::highest_pending`] is the vector to inject (IRR
//! gated by PPR), [`Lapic::acknowledge`] moves it from IRR to ISR when the
//! caller injects it, and a write to EOI clears the highest ISR bit and
//! reports it in an [`Action::Eoi`] (level-triggered EOIs must be broadcast
//! to the I/O APICs by the caller).
//!
//! Time: every access takes `now_ns`. The timer counts at
//! [`LapicConfig::timer_hz`] divided by the divide configuration; the guest
//! TSC is `now_ns * tsc_hz / 1e9` (a caller with a TSC offset converts
//! before calling). After any access the caller asks
//! [`Lapic::next_timer_deadline`] and arms a host timer for it; when it
//! expires it calls [`Lapic::on_time`].
//!
//! Simplifications: interrupts are delivered instantly (delivery status
//! bits always read 0); the remote read register reads 0; focus checking
//! (SVR bit 9) is stored but unused; there is no CMCI LVT (the version
//! register says five is the highest LVT index, so six LVTs); writing the
//! divide configuration while the timer runs restarts the current count
//! from the initial count.

use core::fmt;

/// The `IA32_APIC_BASE` MSR.
pub const MSR_APIC_BASE: u32 = 0x1B;
/// The `IA32_TSC_DEADLINE` MSR.
pub const MSR_TSC_DEADLINE: u32 = 0x6E0;
/// First x2APIC MSR.
pub const MSR_X2APIC_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const MSR_X2APIC_LAST: u32 = 0x8FF;

/// Default physical address of the xAPIC page.
pub const APIC_BASE_DEFAULT: u64 = 0xFEE0_0000;
/// `IA32_APIC_BASE` bit 8: this is the bootstrap processor (read-only here).
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10: x2APIC mode (EXTD).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11: the APIC is globally enabled (EN).
pub const APIC_BASE_EN: u64 = 1 << 11;

/// Offset of the local APIC ID register.
pub const REG_ID: u32 = 0x020;
/// Offset of the version register.
pub const REG_VERSION: u32 = 0x030;
/// Offset of the task priority register.
pub const REG_TPR: u32 = 0x080;
/// Offset of the arbitration priority register (xAPIC only).
pub const REG_APR: u32 = 0x090;
/// Offset of the processor priority register.
pub const REG_PPR: u32 = 0x0A0;
/// Offset of the EOI register (write-only).
pub const REG_EOI: u32 = 0x0B0;
/// Offset of the remote read register (xAPIC only, reads 0).
pub const REG_RRD: u32 = 0x0C0;
/// Offset of the logical destination register.
pub const REG_LDR: u32 = 0x0D0;
/// Offset of the destination format register (xAPIC only).
pub const REG_DFR: u32 = 0x0E0;
/// Offset of the spurious interrupt vector register.
pub const REG_SVR: u32 = 0x0F0;
/// Offset of the first of the eight in-service registers.
pub const REG_ISR: u32 = 0x100;
/// Offset of the first of the eight trigger mode registers.
pub const REG_TMR: u32 = 0x180;
/// Offset of the first of the eight interrupt request registers.
pub const REG_IRR: u32 = 0x200;
/// Offset of the error status register.
pub const REG_ESR: u32 = 0x280;
/// Offset of the interrupt command register, low half (writing it sends).
pub const REG_ICR_LOW: u32 = 0x300;
/// Offset of the interrupt command register, high half (xAPIC only).
pub const REG_ICR_HIGH: u32 = 0x310;
/// Offset of the LVT timer register.
pub const REG_LVT_TIMER: u32 = 0x320;
/// Offset of the LVT LINT0 register.
pub const REG_LVT_LINT0: u32 = 0x350;
/// Offset of the LVT LINT1 register.
pub const REG_LVT_LINT1: u32 = 0x360;
/// Offset of the timer initial count register.
pub const REG_TIMER_INITIAL: u32 = 0x380;
/// Offset of the timer current count register (read-only).
pub const REG_TIMER_CURRENT: u32 = 0x390;
/// Offset of the timer divide configuration register.
pub const REG_TIMER_DIVIDE: u32 = 0x3E0;
/// Offset of the SELF IPI register (x2APIC only, write-only).
pub const REG_SELF_IPI: u32 = 0x3F0;

/// The version register: version 0x14, highest LVT index 5.
pub const VERSION: u32 = 0x0005_0014;
/// SVR bit 8: the APIC is software-enabled.
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: the entry is masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// ESR: a fixed IPI with a vector below 16 was sent.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR: an interrupt with a vector below 16 was received.
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

const SVR_WRITABLE: u32 = 0x3FF;
const ICR_LOW_WRITABLE: u32 = 0x000C_CFFF;
const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_MODE_BITS: u32 = 3 << TIMER_MODE_SHIFT;
/// Writable bits of the six LVT entries (timer, thermal, perf, LINT0,
/// LINT1, error).
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0x0007_00FF,
    0x0001_07FF,
    0x0001_07FF,
    0x0001_A7FF,
    0x0001_A7FF,
    0x0001_00FF,
];
const LVT_COUNT: usize = 6;
const LVT_TIMER: usize = 0;
const LVT_ERROR: usize = 5;
const NS_PER_SEC: u128 = 1_000_000_000;

/// Which interface the APIC presents, from `IA32_APIC_BASE` EN and EXTD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// Globally disabled (EN = 0): no MMIO page, no MSRs, no interrupts.
    Disabled,
    /// xAPIC: the MMIO page.
    XApic,
    /// x2APIC: the MSRs 0x800-0x8FF.
    X2Apic,
}

/// Why an MSR access fails; the caller injects #GP(0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Reserved bits set in a write.
    ReservedBits {
        /// The MSR.
        msr: u32,
        /// The value written.
        value: u64,
    },
    /// `IA32_APIC_BASE` with EXTD set but EN clear.
    InvalidMode,
    /// A mode change the architecture forbids (x2APIC to xAPIC, disabled to
    /// x2APIC).
    IllegalTransition {
        /// The current mode.
        from: ApicMode,
        /// The mode asked for.
        to: ApicMode,
    },
    /// An x2APIC MSR accessed while the APIC is not in x2APIC mode.
    NotX2Apic {
        /// The MSR.
        msr: u32,
    },
    /// An MSR that is not an (implemented) APIC register.
    Unknown {
        /// The MSR.
        msr: u32,
    },
    /// A write to a read-only register.
    ReadOnly {
        /// The MSR.
        msr: u32,
    },
    /// A read of a write-only register.
    WriteOnly {
        /// The MSR.
        msr: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ReservedBits { msr, value } => {
                write!(f, "write of {value:#x} to MSR {msr:#x} sets reserved bits")
            }
            Error::InvalidMode => f.write_str("IA32_APIC_BASE: x2APIC mode needs the APIC enabled"),
            Error::IllegalTransition { from, to } => {
                write!(
                    f,
                    "IA32_APIC_BASE: illegal APIC mode change {from:?} -> {to:?}"
                )
            }
            Error::NotX2Apic { msr } => {
                write!(
                    f,
                    "MSR {msr:#x} is an x2APIC register, but the APIC is not in x2APIC mode"
                )
            }
            Error::Unknown { msr } => write!(f, "MSR {msr:#x} is not an APIC register"),
            Error::ReadOnly { msr } => write!(f, "MSR {msr:#x} is read-only"),
            Error::WriteOnly { msr } => write!(f, "MSR {msr:#x} is write-only"),
        }
    }
}

/// The delivery mode of an interrupt message (ICR, LVT, I/O APIC entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 000: the vector, to every destination.
    Fixed,
    /// 001: the vector, to the destination with the lowest priority.
    LowestPriority,
    /// 010: a system management interrupt.
    Smi,
    /// 011: reserved.
    Reserved,
    /// 100: a non-maskable interrupt (the vector is ignored).
    Nmi,
    /// 101: INIT.
    Init,
    /// 110: a start-up IPI; the vector is the start page (CS = vector << 8).
    StartUp,
    /// 111: external interrupt (the vector comes from an 8259).
    ExtInt,
}

impl Delivery {
    /// Decodes the three delivery-mode bits.
    pub fn from_bits(bits: u32) -> Delivery {
        match bits & 7 {
            0 => Delivery::Fixed,
            1 => Delivery::LowestPriority,
            2 => Delivery::Smi,
            3 => Delivery::Reserved,
            4 => Delivery::Nmi,
            5 => Delivery::Init,
            6 => Delivery::StartUp,
            _ => Delivery::ExtInt,
        }
    }

    /// The three delivery-mode bits.
    pub fn bits(self) -> u32 {
        match self {
            Delivery::Fixed => 0,
            Delivery::LowestPriority => 1,
            Delivery::Smi => 2,
            Delivery::Reserved => 3,
            Delivery::Nmi => 4,
            Delivery::Init => 5,
            Delivery::StartUp => 6,
            Delivery::ExtInt => 7,
        }
    }
}

/// How the destination field is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestMode {
    /// An APIC ID.
    Physical,
    /// Matched against each APIC's LDR (and DFR in xAPIC mode).
    Logical,
}

/// The ICR destination shorthand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shorthand {
    /// 00: the destination field decides.
    None,
    /// 01: the sender only.
    SelfOnly,
    /// 10: every APIC, the sender included.
    AllIncludingSelf,
    /// 11: every APIC but the sender.
    AllExcludingSelf,
}

/// Edge or level triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Edge triggered.
    Edge,
    /// Level triggered: the EOI must reach the source (I/O APIC).
    Level,
}

/// An inter-processor interrupt the guest sent by writing the ICR. The
/// caller resolves the destinations ([`Ipi::destinations`]) and delivers it
/// with [`Lapic::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    /// The sender's APIC ID.
    pub source: u32,
    /// Destination: 8 bits in xAPIC mode, 32 in x2APIC mode.
    pub dest: u32,
    /// Physical or logical destination.
    pub dest_mode: DestMode,
    /// The destination shorthand.
    pub shorthand: Shorthand,
    /// The delivery mode.
    pub delivery: Delivery,
    /// ICR bit 14: assert (true) or de-assert.
    pub level: bool,
    /// ICR bit 15.
    pub trigger: Trigger,
    /// The vector (the start page for a SIPI).
    pub vector: u8,
    /// Sent in x2APIC mode (32-bit destination, broadcast 0xFFFFFFFF).
    pub x2apic: bool,
}

impl Ipi {
    /// The vCPUs (indices into `targets`) this IPI goes to; `source` is the
    /// sender's index. Lowest-priority delivery picks one of them.
    pub fn destinations(&self, targets: &[Target], source: usize) -> CpuSet {
        resolve(
            targets,
            Some(source),
            self.dest,
            self.dest_mode,
            self.shorthand,
            self.x2apic,
            self.delivery == Delivery::LowestPriority,
        )
    }
}

/// What an EOI did: the vector taken out of ISR and whether it was level
/// triggered (then the caller broadcasts it to the I/O APICs:
/// [`crate::IoApic::eoi`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eoi {
    /// The vector.
    pub vector: u8,
    /// Its TMR bit was set.
    pub level_triggered: bool,
}

/// What a register write asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Deliver an IPI.
    Ipi(Ipi),
    /// An EOI; broadcast it to the I/O APICs if level-triggered.
    Eoi(Eoi),
}

/// The INIT/SIPI state of the vCPU the APIC belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running (the BSP from reset; an AP after a SIPI).
    Running,
    /// An AP after reset: start-up IPIs are ignored until an INIT.
    WaitForInit,
    /// After an INIT: the next start-up IPI starts the vCPU.
    WaitForSipi,
}

/// What [`Lapic::receive`] did with an interrupt message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A vector went into IRR; check [`Lapic::highest_pending`].
    Interrupt,
    /// Inject an NMI.
    Nmi,
    /// An SMI (the caller decides; Basalt has no SMM).
    Smi,
    /// Ask the 8259 for the vector and inject it.
    ExtInt,
    /// INIT: the APIC was reset. The caller resets the vCPU; an AP now
    /// waits for a SIPI, the BSP restarts at the reset vector.
    Init,
    /// A SIPI started the vCPU: real mode, CS selector `vector << 8`, CS
    /// base `vector << 12`, IP 0.
    StartUp {
        /// The start page.
        vector: u8,
    },
    /// Dropped (software-disabled APIC, illegal vector, SIPI when not
    /// waiting for one, reserved delivery mode).
    Ignored,
}

/// The timer modes of LVT timer bits 17-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    /// 00: count down once.
    OneShot,
    /// 01: count down, reload, repeat.
    Periodic,
    /// 10: fire when the TSC reaches `IA32_TSC_DEADLINE`.
    TscDeadline,
}

/// How a vCPU's APIC is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapicConfig {
    /// The vCPU number: the x2APIC ID, and the initial xAPIC ID (low 8 bits).
    pub vcpu_id: u32,
    /// The bootstrap processor (`IA32_APIC_BASE` bit 8; starts running).
    pub bsp: bool,
    /// The timer's input clock before the divider, in Hz (non-zero).
    pub timer_hz: u64,
    /// The guest TSC frequency in Hz (non-zero).
    pub tsc_hz: u64,
    /// The guest's physical address width: `IA32_APIC_BASE` bits from
    /// here up are reserved.
    pub phys_addr_bits: u8,
}

impl LapicConfig {
    /// A configuration with a 1 GHz timer clock, a 1 GHz TSC and 46
    /// physical address bits.
    pub fn new(vcpu_id: u32, bsp: bool) -> LapicConfig {
        LapicConfig {
            vcpu_id,
            bsp,
            timer_hz: 1_000_000_000,
            tsc_hz: 1_000_000_000,
            phys_addr_bits: 46,
        }
    }
}

/// The timer's count-down state (one-shot and periodic modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Countdown {
    Stopped,
    /// Counting since `start_ns`; `periods` expirations already handled.
    Running {
        start_ns: u64,
        periods: u64,
    },
}

/// A vCPU's local APIC as the destination of interrupt messages: what
/// [`resolve`] needs to know about it ([`Lapic::target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The mode (a disabled APIC receives nothing).
    pub mode: ApicMode,
    /// The APIC ID (8-bit xAPIC ID, or the 32-bit x2APIC ID).
    pub apic_id: u32,
    /// The logical destination register.
    pub ldr: u32,
    /// The destination format register (xAPIC).
    pub dfr: u32,
    /// The processor priority, for lowest-priority arbitration.
    pub ppr: u8,
}

/// The most vCPUs a [`CpuSet`] holds.
pub const MAX_CPUS: usize = 256;

/// A set of vCPU indices below [`MAX_CPUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuSet([u64; MAX_CPUS / 64]);

impl CpuSet {
    /// The empty set.
    pub const fn new() -> CpuSet {
        CpuSet([0; MAX_CPUS / 64])
    }

    /// Adds `cpu` (ignored from [`MAX_CPUS`] up).
    pub fn insert(&mut self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0[cpu / 64] |= 1 << (cpu % 64);
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    /// How many vCPUs are in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The vCPUs in the set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Set bits only, word by word: a message reaches one or two vCPUs,
        // and testing all 256 indices cost thousands of instructions per
        // delivered interrupt.
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// Whether an APIC matches a destination field. `x2apic_format`: the
/// message uses the 32-bit x2APIC format (broadcast 0xFFFFFFFF); otherwise
/// the low 8 bits count and 0xFF is the broadcast.
pub fn matches(target: &Target, dest: u32, dest_mode: DestMode, x2apic_format: bool) -> bool {
    if target.mode == ApicMode::Disabled {
        return false;
    }
    let dest = if x2apic_format { dest } else { dest & 0xFF };
    let broadcast = if x2apic_format { u32::MAX } else { 0xFF };
    if dest == broadcast {
        return true;
    }
    match dest_mode {
        DestMode::Physical => dest == target.apic_id,
        DestMode::Logical => match target.mode {
            ApicMode::X2Apic => {
                // Cluster in bits 31:16, one bit per member in 15:0.
                dest >> 16 == target.ldr >> 16 && dest & target.ldr & 0xFFFF != 0
            }
            _ => {
                let logical = target.ldr >> 24;
                if target.dfr >> 28 == 0xF {
                    // Flat: one bit per APIC.
                    dest & logical != 0
                } else {
                    // Cluster: cluster in bits 7:4, members in 3:0.
                    dest >> 4 == logical >> 4 && dest & logical & 0xF != 0
                }
            }
        },
    }
}

/// The vCPUs (indices into `targets`) a message reaches. `source` is the
/// sender's index (for the shorthands; `None` for an I/O APIC). With
/// `lowest_priority`, only the match with the lowest PPR (the lowest index
/// on a tie) is returned.
pub fn resolve(
    targets: &[Target],
    source: Option<usize>,
    dest: u32,
    dest_mode: DestMode,
    shorthand: Shorthand,
    x2apic_format: bool,
    lowest_priority: bool,
) -> CpuSet {
    let mut set = CpuSet::new();
    for (i, t) in targets.iter().enumerate().take(MAX_CPUS) {
        let hit = match shorthand {
            Shorthand::None => matches(t, dest, dest_mode, x2apic_format),
            Shorthand::SelfOnly => source == Some(i),
            Shorthand::AllIncludingSelf => t.mode != ApicMode::Disabled,
            Shorthand::AllExcludingSelf => t.mode != ApicMode::Disabled && source != Some(i),
        };
        if hit {
            set.insert(i);
        }
    }
    if lowest_priority && let Some(best) = set.iter().min_by_key(|&i| targets[i].ppr) {
        let mut one = CpuSet::new();
        one.insert(best);
        return one;
    }
    set
}

/// Where a SIPI with `vector` starts a vCPU: (CS selector, CS base, IP).
#[cfg(test)]
pub fn sipi_entry(vector: u8) -> (u16, u64, u64) {
    (u16::from(vector) << 8, u64::from(vector) << 12, 0)
}

fn bit_test(bits: &[u32; 8], v: u8) -> bool {
    bits[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

fn bit_set(bits: &mut [u32; 8], v: u8) {
    bits[usize::from(v >> 5)] |= 1 << (v & 31);
}

fn bit_clear(bits: &mut [u32; 8], v: u8) {
    bits[usize::from(v >> 5)] &= !(1 << (v & 31));
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| bits[i] != 0)
        .map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
}

/// A virtual local APIC (see the module documentation).
#[derive(Debug, Clone)]
pub struct Lapic {
    config: LapicConfig,
    apic_base: u64,
    run_state: RunState,
    /// xAPIC ID register (ID in bits 31:24).
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    esr: u32,
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    timer_divide: u32,
    countdown: Countdown,
    tsc_deadline: u64,
}

impl Lapic {
    /// The APIC of a vCPU after power-up: xAPIC mode at 0xFEE00000,
    /// software-disabled, all LVTs masked; the BSP running, an AP waiting
    /// for INIT.
    pub fn new(config: LapicConfig) -> Lapic {
        let mut apic_base = APIC_BASE_DEFAULT | APIC_BASE_EN;
        if config.bsp {
            apic_base |= APIC_BASE_BSP;
        }
        let mut l = Lapic {
            config,
            apic_base,
            run_state: if config.bsp {
                RunState::Running
            } else {
                RunState::WaitForInit
            },
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            timer_initial: 0,
            timer_divide: 0,
            countdown: Countdown::Stopped,
            tsc_deadline: 0,
        };
        l.reset_registers();
        l.id = config.vcpu_id << 24;
        l
    }

    /// Power-up / INIT state of everything but the ID and `IA32_APIC_BASE`.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = u32::MAX;
        self.svr = 0xFF;
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.irr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [LVT_MASKED; LVT_COUNT];
        self.timer_initial = 0;
        self.timer_divide = 0;
        self.countdown = Countdown::Stopped;
        self.tsc_deadline = 0;
    }

    /// The configuration.
    pub fn config(&self) -> &LapicConfig {
        &self.config
    }

    /// The current mode.
    pub fn mode(&self) -> ApicMode {
        match (
            self.apic_base & APIC_BASE_EN != 0,
            self.apic_base & APIC_BASE_EXTD != 0,
        ) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// The `IA32_APIC_BASE` value.
    #[cfg(test)]
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// Physical address of the xAPIC page (meaningful in xAPIC mode).
    pub fn base(&self) -> u64 {
        self.apic_base & !0xFFF & ((1 << self.config.phys_addr_bits.min(63)) - 1)
    }

    /// The INIT/SIPI state of the vCPU.
    #[cfg(test)]
    pub fn run_state(&self) -> RunState {
        self.run_state
    }

    /// Whether SVR bit 8 is set.
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The APIC ID: the x2APIC ID in x2APIC mode, else xAPIC ID bits 31:24.
    pub fn apic_id(&self) -> u32 {
        match self.mode() {
            ApicMode::X2Apic => self.config.vcpu_id,
            _ => self.id >> 24,
        }
    }

    /// The logical destination register (derived in x2APIC mode).
    pub fn ldr(&self) -> u32 {
        match self.mode() {
            ApicMode::X2Apic => {
                let id = self.config.vcpu_id;
                ((id >> 4) << 16) | (1 << (id & 0xF))
            }
            _ => self.ldr,
        }
    }

    /// This APIC as a message destination.
    pub fn target(&self) -> Target {
        Target {
            mode: self.mode(),
            apic_id: self.apic_id(),
            ldr: self.ldr(),
            dfr: self.dfr,
            ppr: self.ppr(),
        }
    }

    /// The task priority.
    pub fn tpr(&self) -> u8 {
        self.tpr as u8
    }

    /// The processor priority: TPR, or the class of the highest in-service
    /// vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = highest(&self.isr).unwrap_or(0);
        if tpr >> 4 >= isrv >> 4 {
            tpr
        } else {
            isrv & 0xF0
        }
    }

    fn apr(&self) -> u8 {
        let tpr = self.tpr as u8;
        let isrv = highest(&self.isr).unwrap_or(0);
        let irrv = highest(&self.irr).unwrap_or(0);
        if tpr >> 4 >= irrv >> 4 && tpr >> 4 > isrv >> 4 {
            tpr
        } else {
            (tpr >> 4).max(isrv >> 4).max(irrv >> 4) << 4
        }
    }

    /// Whether `vector` is requested (IRR).
    pub fn irr(&self, vector: u8) -> bool {
        bit_test(&self.irr, vector)
    }

    /// Whether `vector` is in service (ISR).
    pub fn isr(&self, vector: u8) -> bool {
        bit_test(&self.isr, vector)
    }

    /// Whether `vector` was accepted level-triggered (TMR).
    #[cfg(test)]
    pub fn tmr(&self, vector: u8) -> bool {
        bit_test(&self.tmr, vector)
    }

    /// The highest vector in service.
    #[cfg(test)]
    pub fn highest_in_service(&self) -> Option<u8> {
        highest(&self.isr)
    }

    /// Raw LVT entry `index` (0 timer, 1 thermal, 2 perf, 3 LINT0, 4 LINT1,
    /// 5 error), or `None` past the end.
    pub fn lvt(&self, index: usize) -> Option<u32> {
        self.lvt.get(index).copied()
    }

    // ------------------------------------------------------------ interrupts

    /// A fixed interrupt arrives: set IRR, and TMR for a level-triggered one
    /// (cleared for an edge). Returns whether it was accepted: it is dropped
    /// if the APIC is disabled (globally or by software) or the vector is
    /// below 16 (which sets ESR bit 6).
    pub fn accept(&mut self, vector: u8, level_triggered: bool) -> bool {
        if self.mode() == ApicMode::Disabled || !self.software_enabled() {
            return false;
        }
        if vector < 16 {
            self.record_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.set_irr(vector, level_triggered);
        true
    }

    fn set_irr(&mut self, vector: u8, level_triggered: bool) {
        bit_set(&mut self.irr, vector);
        if level_triggered {
            bit_set(&mut self.tmr, vector);
        } else {
            bit_clear(&mut self.tmr, vector);
        }
    }

    /// Records `bits` in the pending ESR and raises the error interrupt
    /// through LVT Error. An unmasked LVT Error with a vector below 16 is an
    /// illegal vector generated locally, which is itself an error (SDM Vol.
    /// 3A 11.5.3, "Received Illegal Vector"): bit 6 is recorded too, and
    /// nothing is delivered (no loop: that error raises no interrupt).
    fn record_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        let vector = lvt as u8;
        if lvt & LVT_MASKED != 0 || !self.software_enabled() {
            return;
        }
        if vector >= 16 {
            self.set_irr(vector, false);
        } else {
            self.esr_pending |= ESR_RECEIVE_ILLEGAL_VECTOR;
        }
    }

    /// The vector the CPU should take now: the highest requested one, if its
    /// priority class is above PPR's.
    pub fn highest_pending(&self) -> Option<u8> {
        if self.mode() == ApicMode::Disabled {
            return None;
        }
        let irrv = highest(&self.irr)?;
        (irrv >> 4 > self.ppr() >> 4).then_some(irrv)
    }

    /// The CPU took `vector` (normally [`Lapic::highest_pending`]): move it
    /// from IRR to ISR. Returns false (and changes nothing) if it was not
    /// requested.
    pub fn acknowledge(&mut self, vector: u8) -> bool {
        if !bit_test(&self.irr, vector) {
            return false;
        }
        bit_clear(&mut self.irr, vector);
        bit_set(&mut self.isr, vector);
        true
    }

    /// End of interrupt: clear the highest ISR bit (what a write to EOI
    /// does).
    pub fn eoi(&mut self) -> Option<Eoi> {
        let vector = highest(&self.isr)?;
        bit_clear(&mut self.isr, vector);
        Some(Eoi {
            vector,
            level_triggered: bit_test(&self.tmr, vector),
        })
    }

    /// An interrupt message for this APIC (an IPI or an I/O APIC message the
    /// caller routed here): act on it by delivery mode.
    pub fn receive(&mut self, delivery: Delivery, vector: u8, trigger: Trigger) -> Received {
        if self.mode() == ApicMode::Disabled {
            return Received::Ignored;
        }
        match delivery {
            Delivery::Fixed | Delivery::LowestPriority => {
                if self.accept(vector, trigger == Trigger::Level) {
                    Received::Interrupt
                } else {
                    Received::Ignored
                }
            }
            Delivery::Nmi => Received::Nmi,
            Delivery::Smi => Received::Smi,
            Delivery::ExtInt => Received::ExtInt,
            Delivery::Init => {
                self.init();
                Received::Init
            }
            Delivery::StartUp => {
                if self.run_state == RunState::WaitForSipi {
                    self.run_state = RunState::Running;
                    Received::StartUp { vector }
                } else {
                    Received::Ignored
                }
            }
            Delivery::Reserved => Received::Ignored,
        }
    }

    /// INIT: reset the registers (the ID, mode and base survive); an AP
    /// waits for a SIPI, the BSP keeps running (from its reset vector).
    pub fn init(&mut self) {
        self.reset_registers();
        self.run_state = if self.config.bsp {
            RunState::Running
        } else {
            RunState::WaitForSipi
        };
    }

    // ----------------------------------------------------------------- timer

    /// The timer mode (LVT timer bits 17-18).
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[LVT_TIMER] & TIMER_MODE_BITS) >> TIMER_MODE_SHIFT {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// The divisor selected by the divide configuration register: 1..=128.
    pub fn timer_divisor(&self) -> u32 {
        let v = (self.timer_divide & 3) | ((self.timer_divide & 8) >> 1);
        if v == 7 { 1 } else { 2 << v }
    }

    /// The guest TSC at `now_ns`.
    #[cfg(test)]
    pub fn guest_tsc(&self, now_ns: u64) -> u64 {
        let tsc = u128::from(now_ns) * u128::from(self.config.tsc_hz) / NS_PER_SEC;
        tsc.min(u128::from(u64::MAX)) as u64
    }

    /// The first time at which the guest TSC is at least `tsc`.
    fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let hz = u128::from(self.config.tsc_hz.max(1));
        (u128::from(tsc) * NS_PER_SEC)
            .div_ceil(hz)
            .min(u128::from(u64::MAX)) as u64
    }

    /// Timer decrements since `start_ns`.
    fn decrements(&self, start_ns: u64, now_ns: u64) -> u128 {
        let elapsed = u128::from(now_ns.saturating_sub(start_ns));
        elapsed * u128::from(self.config.timer_hz) / (NS_PER_SEC * u128::from(self.timer_divisor()))
    }

    /// When the count reaches zero for the `(periods + 1)`th time.
    fn expiry(&self, start_ns: u64, periods: u64) -> u64 {
        let count = (u128::from(periods) + 1) * u128::from(self.timer_initial);
        let ticks = count.saturating_mul(u128::from(self.timer_divisor()));
        let ns = ticks
            .saturating_mul(NS_PER_SEC)
            .div_ceil(u128::from(self.config.timer_hz.max(1)));
        u128::from(start_ns)
            .saturating_add(ns)
            .min(u128::from(u64::MAX)) as u64
    }

    /// The current count register at `now_ns`.
    pub fn timer_current_count(&self, now_ns: u64) -> u32 {
        let Countdown::Running { start_ns, .. } = self.countdown else {
            return 0;
        };
        let initial = u128::from(self.timer_initial);
        let dec = self.decrements(start_ns, now_ns);
        match self.timer_mode() {
            TimerMode::TscDeadline => 0,
            TimerMode::OneShot => initial.saturating_sub(dec) as u32,
            TimerMode::Periodic => (initial - dec % initial) as u32,
        }
    }

    /// When the caller must call [`Lapic::on_time`] next (a host timer),
    /// or `None` when the timer cannot fire (stopped, disarmed or masked).
    /// Ask again after every register access.
    pub fn next_timer_deadline(&self) -> Option<u64> {
        if self.lvt[LVT_TIMER] & LVT_MASKED != 0 || self.mode() == ApicMode::Disabled {
            return None;
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                (self.tsc_deadline != 0).then(|| self.tsc_to_ns(self.tsc_deadline))
            }
            _ => match self.countdown {
                Countdown::Stopped => None,
                Countdown::Running { start_ns, periods } => Some(self.expiry(start_ns, periods)),
            },
        }
    }

    /// Advance the timer to `now_ns`: if it expired, fire the LVT timer
    /// vector into IRR (unless masked), re-arm a periodic timer (missed
    /// periods coalesce into one interrupt), disarm the others. Returns
    /// whether a vector went into IRR.
    pub fn on_time(&mut self, now_ns: u64) -> bool {
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                if self.tsc_deadline != 0 && now_ns >= self.tsc_to_ns(self.tsc_deadline) {
                    self.tsc_deadline = 0;
                    return self.fire_timer();
                }
                false
            }
            mode => {
                let Countdown::Running { start_ns, periods } = self.countdown else {
                    return false;
                };
                if now_ns < self.expiry(start_ns, periods) {
                    return false;
                }
                self.countdown = if mode == TimerMode::Periodic {
                    let done = self.decrements(start_ns, now_ns) / u128::from(self.timer_initial);
                    Countdown::Running {
                        start_ns,
                        periods: done.min(u128::from(u64::MAX)) as u64,
                    }
                } else {
                    Countdown::Stopped
                };
                self.fire_timer()
            }
        }
    }

    fn fire_timer(&mut self) -> bool {
        let lvt = self.lvt[LVT_TIMER];
        lvt & LVT_MASKED == 0 && self.accept(lvt as u8, false)
    }

    fn write_lvt_timer(&mut self, value: u32) {
        let old_mode = self.timer_mode();
        let mut value = value & LVT_WRITABLE[LVT_TIMER];
        if value & TIMER_MODE_BITS == TIMER_MODE_BITS {
            // Reserved mode 11: keep the current mode.
            value = (value & !TIMER_MODE_BITS) | (self.lvt[LVT_TIMER] & TIMER_MODE_BITS);
        }
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        self.lvt[LVT_TIMER] = value;
        let new_mode = self.timer_mode();
        if new_mode != old_mode {
            // A mode change disarms the timer; into or out of TSC-deadline
            // mode it also clears the initial count.
            self.countdown = Countdown::Stopped;
            self.tsc_deadline = 0;
            if old_mode == TimerMode::TscDeadline || new_mode == TimerMode::TscDeadline {
                self.timer_initial = 0;
            }
        }
    }

    // ------------------------------------------------------------- registers

    /// An xAPIC MMIO read at `offset` into the APIC page. Reads 0 for
    /// write-only, absent and misaligned registers, and when the APIC is not
    /// in xAPIC mode.
    pub fn read(&self, offset: u32, now_ns: u64) -> u32 {
        if self.mode() != ApicMode::XApic || offset & 0xF != 0 || offset >= 0x1000 {
            return 0;
        }
        match offset {
            REG_ID => self.id,
            REG_APR => u32::from(self.apr()),
            REG_RRD | REG_EOI => 0,
            REG_DFR => self.dfr | 0x0FFF_FFFF,
            REG_ICR_HIGH => self.icr_high,
            REG_SELF_IPI => 0,
            _ => self.read_common(offset, now_ns).unwrap_or(0),
        }
    }

    /// Registers read the same way in both modes.
    fn read_common(&self, offset: u32, now_ns: u64) -> Option<u32> {
        Some(match offset {
            REG_VERSION => VERSION,
            REG_TPR => self.tpr,
            REG_PPR => u32::from(self.ppr()),
            REG_LDR => self.ldr(),
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - REG_ISR) >> 4) as usize],
            0x180..=0x1F0 => self.tmr[((offset - REG_TMR) >> 4) as usize],
            0x200..=0x270 => self.irr[((offset - REG_IRR) >> 4) as usize],
            REG_ESR => self.esr,
            REG_ICR_LOW => self.icr_low,
            0x320..=0x370 => self.lvt[((offset - REG_LVT_TIMER) >> 4) as usize],
            REG_TIMER_INITIAL => self.timer_initial,
            REG_TIMER_CURRENT => self.timer_current_count(now_ns),
            REG_TIMER_DIVIDE => self.timer_divide,
            _ => return None,
        })
    }

    /// An xAPIC MMIO write of `value` at `offset`. Ignored for read-only,
    /// absent and misaligned registers, and when not in xAPIC mode. The
    /// timer is first advanced to `now_ns` ([`Lapic::on_time`]).
    pub fn write(&mut self, offset: u32, value: u32, now_ns: u64) -> Action {
        if self.mode() != ApicMode::XApic || offset & 0xF != 0 || offset >= 0x1000 {
            return Action::None;
        }
        self.on_time(now_ns);
        match offset {
            REG_ID => self.id = value & 0xFF00_0000,
            REG_LDR => self.ldr = value & 0xFF00_0000,
            REG_DFR => self.dfr = value | 0x0FFF_FFFF,
            REG_ICR_HIGH => self.icr_high = value & 0xFF00_0000,
            // SELF IPI exists only in x2APIC mode.
            REG_SELF_IPI => {}
            _ => return self.write_common(offset, value, now_ns),
        }
        Action::None
    }

    /// Registers written the same way in both modes.
    fn write_common(&mut self, offset: u32, value: u32, now_ns: u64) -> Action {
        match offset {
            REG_TPR => self.tpr = value & 0xFF,
            REG_EOI => {
                if let Some(eoi) = self.eoi() {
                    return Action::Eoi(eoi);
                }
            }
            REG_SVR => {
                self.svr = value & SVR_WRITABLE;
                if !self.software_enabled() {
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            REG_ICR_LOW => {
                self.icr_low = value & ICR_LOW_WRITABLE;
                if let Some(ipi) = self.send_ipi() {
                    return Action::Ipi(ipi);
                }
            }
            REG_LVT_TIMER => self.write_lvt_timer(value),
            0x330..=0x370 => {
                let i = ((offset - REG_LVT_TIMER) >> 4) as usize;
                let mut v = value & LVT_WRITABLE[i];
                if !self.software_enabled() {
                    v |= LVT_MASKED;
                }
                // Keep the read-only remote IRR of LINT0/LINT1.
                self.lvt[i] = v | (self.lvt[i] & !LVT_WRITABLE[i] & (1 << 14));
            }
            // Ignored in TSC-deadline mode.
            REG_TIMER_INITIAL if self.timer_mode() != TimerMode::TscDeadline => {
                self.timer_initial = value;
                self.countdown = if value == 0 {
                    Countdown::Stopped
                } else {
                    Countdown::Running {
                        start_ns: now_ns,
                        periods: 0,
                    }
                };
            }
            REG_TIMER_DIVIDE => {
                self.timer_divide = value & 0xB;
                if let Countdown::Running { .. } = self.countdown {
                    self.countdown = Countdown::Running {
                        start_ns: now_ns,
                        periods: 0,
                    };
                }
            }
            REG_SELF_IPI => {
                self.accept(value as u8, false);
            }
            _ => {}
        }
        Action::None
    }

    /// The ICR was written: the IPI to send, if any. An INIT level
    /// de-assert is not sent (modern processors ignore it); a fixed or
    /// lowest-priority IPI with a vector below 16 sets ESR bit 5 instead.
    fn send_ipi(&mut self) -> Option<Ipi> {
        let low = self.icr_low;
        let x2apic = self.mode() == ApicMode::X2Apic;
        let delivery = Delivery::from_bits(low >> 8);
        let vector = low as u8;
        let level = low & (1 << 14) != 0;
        let trigger = if low & (1 << 15) != 0 {
            Trigger::Level
        } else {
            Trigger::Edge
        };
        if delivery == Delivery::Init && trigger == Trigger::Level && !level {
            return None;
        }
        if matches!(delivery, Delivery::Fixed | Delivery::LowestPriority) && vector < 16 {
            self.record_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        let shorthand = match (low >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Some(Ipi {
            source: self.apic_id(),
            dest: if x2apic {
                self.icr_high
            } else {
                self.icr_high >> 24
            },
            dest_mode: if low & (1 << 11) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            shorthand,
            delivery,
            level,
            trigger,
            vector,
            x2apic,
        })
    }

    // ------------------------------------------------------------------ MSRs

    /// RDMSR of `IA32_APIC_BASE`, `IA32_TSC_DEADLINE` or an x2APIC
    /// register. `Err` means #GP.
    pub fn rdmsr(&self, msr: u32, now_ns: u64) -> Result<u64, Error> {
        match msr {
            MSR_APIC_BASE => Ok(self.apic_base),
            MSR_TSC_DEADLINE => Ok(if self.timer_mode() == TimerMode::TscDeadline {
                self.tsc_deadline
            } else {
                0
            }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(Error::NotX2Apic { msr });
                }
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                match offset {
                    REG_ID => Ok(u64::from(self.config.vcpu_id)),
                    REG_ICR_LOW => Ok((u64::from(self.icr_high) << 32) | u64::from(self.icr_low)),
                    REG_EOI | REG_SELF_IPI => Err(Error::WriteOnly { msr }),
                    _ => self
                        .read_common(offset, now_ns)
                        .map(u64::from)
                        .ok_or(Error::Unknown { msr }),
                }
            }
            _ => Err(Error::Unknown { msr }),
        }
    }

    /// WRMSR of `IA32_APIC_BASE`, `IA32_TSC_DEADLINE` or an x2APIC
    /// register. `Err` means #GP (and nothing changed). The timer is first
    /// advanced to `now_ns`.
    pub fn wrmsr(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<Action, Error> {
        match msr {
            MSR_APIC_BASE => self.write_apic_base(value).map(|()| Action::None),
            MSR_TSC_DEADLINE => {
                self.on_time(now_ns);
                if self.timer_mode() == TimerMode::TscDeadline {
                    self.tsc_deadline = value;
                }
                Ok(Action::None)
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(Error::NotX2Apic { msr });
                }
                let offset = (msr - MSR_X2APIC_FIRST) << 4;
                if offset == REG_ICR_LOW {
                    self.on_time(now_ns);
                    self.icr_high = (value >> 32) as u32;
                    return Ok(self.write_common(offset, value as u32, now_ns));
                }
                match offset {
                    REG_TPR
                    | REG_SVR
                    | 0x320..=0x370
                    | REG_TIMER_INITIAL
                    | REG_TIMER_DIVIDE
                    | REG_SELF_IPI => {}
                    REG_EOI | REG_ESR if value == 0 => {}
                    REG_EOI | REG_ESR => return Err(Error::ReservedBits { msr, value }),
                    REG_ID
                    | REG_VERSION
                    | REG_PPR
                    | REG_LDR
                    | 0x100..=0x270
                    | REG_TIMER_CURRENT => {
                        return Err(Error::ReadOnly { msr });
                    }
                    _ => return Err(Error::Unknown { msr }),
                }
                if value >> 32 != 0 {
                    return Err(Error::ReservedBits { msr, value });
                }
                self.on_time(now_ns);
                Ok(self.write_common(offset, value as u32, now_ns))
            }
            _ => Err(Error::Unknown { msr }),
        }
    }

    /// A write to `IA32_APIC_BASE`: the legal transitions are disabled <->
    /// xAPIC, xAPIC -> x2APIC and x2APIC -> disabled; the BSP bit is
    /// read-only. Disabling resets the APIC; entering x2APIC mode makes the
    /// ID the vCPU number and derives the LDR.
    pub fn write_apic_base(&mut self, value: u64) -> Result<(), Error> {
        let phys_bits = u32::from(self.config.phys_addr_bits.min(63));
        let reserved = 0x2FF | !((1u64 << phys_bits) - 1);
        if value & reserved != 0 {
            return Err(Error::ReservedBits {
                msr: MSR_APIC_BASE,
                value,
            });
        }
        let from = self.mode();
        let to = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, false) => ApicMode::Disabled,
            (false, true) => return Err(Error::InvalidMode),
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        };
        if matches!(
            (from, to),
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic)
        ) {
            return Err(Error::IllegalTransition { from, to });
        }
        self.apic_base = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
        if to == ApicMode::Disabled && from != ApicMode::Disabled {
            self.reset_registers();
            self.id = self.config.vcpu_id << 24;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
