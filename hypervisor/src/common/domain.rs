//! Guest domains (docs/guests.md): built from Multiboot2 boot modules, each
//! with its own memory (from Basalt's frame pool, zeroed), its own EPT, its
//! vCPUs, its console and its end.

use crate::mm;
use crate::stats::ExitCounts;
use crate::vcpu::{ArchVcpu, Long64State, StartState};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_boot::multiboot2::{BootInfo, Module};
use basalt_console::ring::Ring;
use basalt_frames::Owner;
use basalt_guest::elf;
use basalt_guest::linux::{self, BzImage, LinuxLayout};
use basalt_guest::mem::{GuestMemory, MemoryError};
use basalt_guest::spec::{self, ModuleRole};
use basalt_paging::{Ept, PageTable};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use log::{error, info};
use spin::Mutex;

/// A `boot=real` image must end below the legacy hole (docs/guests.md).
const REAL_MODE_END: u64 = 0x9f000;
/// The most RAM a domain gets: its memory is one range from guest-physical
/// 0 and must stay below the device pages near 4 GiB.
const MAX_GUEST_RAM: u64 = 3 * GIB;
/// Where a domain's ACPI tables go (the BIOS area, reserved in its e820).
const ACPI_TABLES: u64 = 0xe0000;

/// Guest memory comes in 1 GiB allocations where a whole 1 GiB of the
/// domain is aligned and the CPU has 1 GiB EPT pages, in 2 MiB blocks
/// (order 9) otherwise; `blocks` lists it in 2 MiB steps either way, and the
/// EPT maps each contiguous run with the largest pages alignment allows.
const GIB: u64 = 1 << 30;
const GIB_ORDER: u32 = 18;
const BLOCK: u64 = 2 << 20;
const BLOCK_ORDER: u32 = 9;

/// How a domain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// SCHEDOP_shutdown(poweroff).
    Poweroff,
    /// SCHEDOP_shutdown(reboot) or the monitor's `reboot`: it starts again
    /// from its image.
    Reboot,
    /// SCHEDOP_shutdown(crash), or ended by Basalt for a guest error.
    Crash,
    /// The monitor's `destroy`.
    Destroyed,
}

impl EndReason {
    /// The word the monitor and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Crash => "crashed",
            Self::Destroyed => "destroyed",
        }
    }
}

/// A domain's life (docs/scheduler.md, "Domain lifecycle"): running ⇄
/// paused → dying (its vCPUs are being taken off the CPUs) → dead (every
/// resource returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its vCPUs run or wait.
    Running,
    /// Its vCPUs are held off the CPUs until `unpause`.
    Paused,
    /// Ending: its vCPUs are leaving the CPUs; memory is freed when the
    /// last one has.
    Dying(EndReason),
    /// Ended; nothing left.
    Dead(EndReason),
}

impl State {
    /// The word the monitor uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Dying(_) => "dying",
            Self::Dead(_) => "dead",
        }
    }
}

/// Bytes of console input waiting for a domain to read them.
pub const CONSOLE_INPUT: usize = 256;

/// Longest console line of a domain without the console; a longer one is
/// cut into lines of this length.
const LINE_MAX: usize = 512;

/// A guest domain.
pub struct Domain {
    /// Domain id (1, 2, …; 0 is reserved for a control domain). A domain
    /// that reboots keeps its id; `generation` tells the two apart.
    pub id: u32,
    /// Unique to this incarnation of the domain (never reused, not even by
    /// a reboot of the same id): a late timer, kick or wake-up that names
    /// an older generation reaches nothing (docs/scheduler.md).
    pub generation: u64,
    /// Its name from `name=`.
    pub name: String,
    /// Memory in bytes (a whole number of 2 MiB blocks).
    pub memory: u64,
    /// Number of vCPUs (`vcpus=`).
    pub vcpu_count: u32,
    /// Physical CPUs its vCPUs may run on (`cpus=`; 0 = any).
    pub affinity: u64,
    /// Which start this is (1 at boot, +1 per reboot).
    pub boot: u32,
    /// Scheduling weight from `weight=` (the monitor's `sched` may change
    /// the scheduler's copy).
    pub weight: u16,
    /// CPU cap from `cap=`, percent of one CPU (0 = none).
    pub cap: u16,
    /// Each vCPU's single-shot timer: system time in ns, 0 = none.
    pub timers: Vec<AtomicU64>,
    blocks: Mutex<Vec<u64>>,
    /// The allocations behind `blocks`: (physical address, order).
    allocations: Mutex<Vec<(u64, u32)>>,
    ept: Mutex<Option<PageTable<Ept>>>,
    state: Mutex<State>,
    /// Exit code set with Basalt's SCHEDOP exit-code operation.
    pub exit_code: AtomicU32,
    line: Mutex<Vec<u8>>,
    /// Its console output on the way to the serial line, with counters and
    /// its budget of log lines it can cause (`crate::console::Source`).
    pub console_out: Arc<crate::console::Source>,
    /// Console input typed for this domain, read through `console_io` or
    /// its COM1.
    pub input: Mutex<Ring<CONSOLE_INPUT>>,
    /// Its COM1 (docs/platform.md).
    pub serial: Mutex<crate::hvm::vdev::Serial>,
    /// Its 8259 PIC pair.
    pub pic: Mutex<basalt_devices::pic::Pic>,
    /// Its 8254 PIT.
    pub pit: Mutex<basalt_devices::pit::Pit>,
    /// When the PIT's IRQ 0 edges were last looked at (system ns).
    pub pit_last_edge: AtomicU64,
    /// Its RTC and CMOS.
    pub rtc: Mutex<basalt_devices::rtc::Rtc>,
    /// Its PCI configuration space (a host bridge).
    pub pci: Mutex<basalt_devices::pci::PciHost>,
    /// ACPI fixed hardware: PM1 event/control blocks, PM timer, reset
    /// register.
    pub pm: Mutex<basalt_devices::acpi_pm::AcpiPm>,
    /// System time (ns) when a timed device (PIT, RTC) may next raise an
    /// interrupt; 0: none.
    pub device_deadline: AtomicU64,
    /// System time (ns) before which the timed devices are not looked at
    /// again ([`crate::hvm::vdev::MIN_DEVICE_GAP_NS`] after the last look).
    pub device_quiet_until: AtomicU64,
    /// The PIC asks for an interrupt (vCPU 0 injects it before its next
    /// entry); a cheap check for the hot path.
    pub irq_pending: core::sync::atomic::AtomicBool,
    /// The 12-byte CPUID hypervisor signature this domain sees.
    pub signature: [u8; 12],
    /// Its local APICs and I/O APIC (`crate::hvm::vapic`).
    pub apic: crate::hvm::vapic::DomainApic,
    /// TSC offset of every vCPU: the guest's TSC counts from its creation.
    pub tsc_offset: u64,
    /// VM exits per reason.
    pub exits: Arc<ExitCounts>,
    /// vCPUs not yet retired.
    alive_vcpus: AtomicU32,
    /// Its boot modules, to start again on reboot.
    module: Module<'static>,
    initrds: Vec<Module<'static>>,
}

impl core::fmt::Debug for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// A vCPU of a domain: what the CPU that runs it owns.
pub struct Vcpu {
    /// Its domain.
    pub domain: Arc<Domain>,
    /// Index within the domain.
    pub index: u32,
    /// The vendor part.
    pub arch: ArchVcpu,
}

impl core::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "d{}v{}", self.domain.id, self.index)
    }
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CREATED: AtomicUsize = AtomicUsize::new(0);
/// The next domain generation (1, 2, …).
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
/// Domains not yet dead, by id.
static DOMAINS: Mutex<Vec<Arc<Domain>>> = Mutex::new(Vec::new());

/// A domain that ended, for the final verdict.
struct Ended {
    id: u32,
    name: String,
    reason: EndReason,
    code: u32,
}

static ENDED: Mutex<Vec<Ended>> = Mutex::new(Vec::new());

/// Domains not yet dead.
pub fn live_count() -> usize {
    LIVE.load(Ordering::SeqCst)
}

/// Domains created (at boot and by reboots).
pub fn created_count() -> usize {
    CREATED.load(Ordering::SeqCst)
}

/// The domains not yet dead, by id.
pub fn all() -> Vec<Arc<Domain>> {
    DOMAINS.lock().clone()
}

/// Domain `id`, if not dead.
pub fn get(id: u32) -> Option<Arc<Domain>> {
    DOMAINS.lock().iter().find(|d| d.id == id).cloned()
}

struct DomainMemory<'a> {
    blocks: &'a [u64],
    size: u64,
}

impl DomainMemory<'_> {
    fn host_ptr(&self, gpa: u64) -> Option<*mut u8> {
        let block = self.blocks.get((gpa / BLOCK) as usize)?;
        Some((mm::DIRECT_MAP_BASE + block + gpa % BLOCK) as *mut u8)
    }

    /// Calls `f` on each host-contiguous piece of `[gpa, gpa + len)`.
    fn pieces(
        &self,
        gpa: u64,
        len: u64,
        mut f: impl FnMut(*mut u8, usize, usize),
    ) -> Result<(), MemoryError> {
        basalt_guest::mem::check_range(self.size, gpa, len)?;
        let mut done = 0u64;
        while done < len {
            let at = gpa + done;
            let room = BLOCK - at % BLOCK;
            let n = room.min(len - done);
            let p = self.host_ptr(at).ok_or(MemoryError::OutOfRange {
                gpa: at,
                len: n,
                size: self.size,
            })?;
            f(p, done as usize, n as usize);
            done += n;
        }
        Ok(())
    }
}

impl GuestMemory for DomainMemory<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        self.pieces(gpa, bytes.len() as u64, |p, off, n| {
            // SAFETY: `p` points into a 2 MiB block owned by this domain,
            // direct-mapped, with `n` bytes left in the block.
            unsafe { core::ptr::copy_nonoverlapping(bytes[off..].as_ptr(), p, n) }
        })
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        self.pieces(gpa, len, |p, _, n| {
            // SAFETY: as in `write`.
            unsafe { core::ptr::write_bytes(p, byte, n) }
        })
    }

    fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let len = out.len() as u64;
        let base = out.as_mut_ptr();
        self.pieces(gpa, len, |p, off, n| {
            let dst = base.wrapping_add(off);
            // SAFETY: as in `write`; `out` has room for `off + n` bytes.
            unsafe { core::ptr::copy_nonoverlapping(p, dst, n) }
        })
    }
}

impl Domain {
    /// vCPU `index`'s single-shot timer (system time in ns, 0 = none).
    pub fn timer(&self, index: u32) -> &AtomicU64 {
        static NONE: AtomicU64 = AtomicU64::new(0);
        self.timers.get(index as usize).unwrap_or(&NONE)
    }

    /// Reads guest-physical memory (for hypercall arguments).
    pub fn read_gpa(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let blocks = self.blocks.lock();
        DomainMemory {
            blocks: &blocks,
            size: self.memory,
        }
        .read(gpa, out)
    }

    /// Writes guest-physical memory.
    pub fn write_gpa(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let blocks = self.blocks.lock();
        DomainMemory {
            blocks: &blocks,
            size: self.memory,
        }
        .write(gpa, bytes)
    }

    /// Adds console output from the guest; returns how many of `bytes`
    /// were taken. The domain with the console: its bytes go out as they
    /// are (prompts and terminal control included), as many as its queue
    /// has room for; the caller keeps the rest and retries (back-pressure:
    /// never lost). Any other domain: complete lines are queued as
    /// `(dN) line` units, each dropped whole and counted when its queue is
    /// full; all bytes are taken.
    pub fn console_write(&self, bytes: &[u8]) -> usize {
        let mut buf = self.line.lock();
        if crate::console::is_raw(self.id) {
            if !buf.is_empty() {
                // The line it had started before it got the console.
                let n = self.console_out.push_partial(&buf);
                buf.drain(..n);
                if !buf.is_empty() {
                    return 0;
                }
            }
            return self.console_out.push_partial(bytes);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = LINE_MAX - buf.len();
            let window = &rest[..rest.len().min(room)];
            let (text, ends_line, used) = match window.iter().position(|&b| b == b'\n') {
                Some(i) => (&window[..i], true, i + 1),
                None => (window, window.len() == room, window.len()),
            };
            buf.extend(text.iter().copied().filter(|&b| b != b'\r'));
            rest = &rest[used..];
            if ends_line {
                let mut prefix = crate::StackString::<16>::new();
                prefix.push_fmt(format_args!("(d{}) ", self.id));
                let head = prefix.as_str().len();
                let mut unit = [0u8; LINE_MAX + 16];
                unit[..head].copy_from_slice(prefix.as_str().as_bytes());
                unit[head..head + buf.len()].copy_from_slice(&buf);
                unit[head + buf.len()] = b'\n';
                self.console_out.push_unit(&unit[..head + buf.len() + 1]);
                buf.clear();
            }
        }
        bytes.len()
    }

    /// Bytes of console output this domain can hand over now without
    /// waiting: what its queue has room for while it has the console
    /// (back-pressure), else unlimited (output nobody waits for is queued
    /// or dropped, never waited for).
    pub fn console_room(&self) -> usize {
        if crate::console::is_raw(self.id) {
            let free = self.console_out.free();
            if free == 0 {
                crate::console::pump();
                return self.console_out.free();
            }
            free
        } else {
            usize::MAX
        }
    }

    /// The domain was given the console: the line it had started goes out
    /// as it is (a shell prompt waiting for input).
    pub fn console_focus_gained(&self) {
        let mut buf = self.line.lock();
        if !buf.is_empty() {
            let n = self.console_out.push_partial(&buf);
            buf.drain(..n);
        }
    }

    /// The domain's state.
    pub fn state(&self) -> State {
        *self.state.lock()
    }

    /// Whether it is ending or ended.
    pub fn is_ending(&self) -> bool {
        matches!(self.state(), State::Dying(_) | State::Dead(_))
    }

    /// Running → paused; false if it was not running.
    pub fn set_paused(&self, paused: bool) -> bool {
        let mut state = self.state.lock();
        match (*state, paused) {
            (State::Running, true) => *state = State::Paused,
            (State::Paused, false) => *state = State::Running,
            _ => return false,
        }
        true
    }

    /// Starts the end of the domain (the scheduler then takes its vCPUs off
    /// the CPUs; see `sched::end_domain`). False if it was already ending.
    pub fn begin_end(&self, reason: EndReason) -> bool {
        let mut state = self.state.lock();
        if matches!(*state, State::Dying(_) | State::Dead(_)) {
            return false;
        }
        *state = State::Dying(reason);
        true
    }

    /// One of its vCPUs was dropped (its VMCS freed). When it was the last:
    /// the domain is dead and its memory and EPT are handed back as
    /// [`Remains`], which the scheduler frees with [`Domain::reclaim`] once
    /// no CPU can hold a translation of them (docs/scheduler.md, "Domain
    /// lifecycle").
    pub fn vcpu_retired(&self) -> Option<(EndReason, Remains)> {
        if self.alive_vcpus.fetch_sub(1, Ordering::SeqCst) != 1 {
            return None;
        }
        let reason = match self.state() {
            State::Dying(r) | State::Dead(r) => r,
            State::Running | State::Paused => EndReason::Destroyed,
        };
        Some((reason, self.release(reason)))
    }

    /// Marks the domain dead and takes its memory and EPT out (no vCPU can
    /// use them any more; CPUs may still cache their translations).
    fn release(&self, reason: EndReason) -> Remains {
        *self.state.lock() = State::Dead(reason);
        if !self.line.lock().is_empty() {
            self.console_write(b"\n");
        }
        DOMAINS.lock().retain(|d| d.generation != self.generation);
        let bytes = self.blocks.lock().drain(..).count() as u64 * BLOCK;
        Remains {
            ept: self.ept.lock().take(),
            allocations: core::mem::take(&mut *self.allocations.lock()),
            bytes,
        }
    }

    /// Frees what [`Domain::vcpu_retired`] handed back. The caller promises
    /// that every CPU has flushed its EPT-derived translations since the
    /// domain's last vCPU left (`sched`'s EPT generation protocol). Then
    /// the end is recorded.
    pub fn reclaim(&self, remains: Remains, reason: EndReason) {
        if let Some(ept) = remains.ept {
            mm::destroy_ept(ept);
        }
        for (phys, order) in remains.allocations {
            mm::free_frames(phys, order, Owner::Domain);
        }
        let freed = remains.bytes;
        let code = self.exit_code.load(Ordering::SeqCst);
        info!(
            "domain d{} ({}) ended: {}{}; {} returned to the pool",
            self.id,
            self.name,
            reason.as_str(),
            if matches!(reason, EndReason::Crash | EndReason::Destroyed) {
                String::new()
            } else {
                alloc::format!(", exit code {code}")
            },
            basalt_boot::memmap::ByteSize(freed)
        );
        if reason == EndReason::Reboot {
            // Still counted as live until `rebuild` replaced it, so a test
            // run does not end in between.
            return;
        }
        ENDED.lock().push(Ended {
            id: self.id,
            name: self.name.clone(),
            reason,
            code,
        });
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }

    /// Builds this domain again from its boot modules (after it ended with
    /// `reboot`): same id, name and settings, fresh memory and vCPUs. Call
    /// once per reboot.
    pub fn rebuild(&self) -> Result<(Arc<Domain>, Vec<Vcpu>), String> {
        // The new domain counts itself (from `build`); this one stops
        // counting once the new one exists or failed.
        let built = match spec::parse_module(self.module.cmdline) {
            Ok(ModuleRole::Kernel(spec)) => {
                build(self.id, &spec, self.module, &self.initrds, self.boot + 1)
                    .map_err(|e| alloc::format!("{e}"))
            }
            _ => Err("its module command line no longer parses".into()),
        };
        LIVE.fetch_sub(1, Ordering::SeqCst);
        let built = built.inspect_err(|_| {
            // A domain that cannot come back counts as crashed.
            ENDED.lock().push(Ended {
                id: self.id,
                name: self.name.clone(),
                reason: EndReason::Crash,
                code: 0,
            });
        })?;
        info!(
            "domain d{} ({}) restarted (boot {}): {} memory, {} vCPU(s)",
            self.id,
            self.name,
            self.boot + 1,
            basalt_boot::memmap::ByteSize(built.0.memory),
            built.0.vcpu_count
        );
        Ok(built)
    }
}

/// The memory and EPT of a dead domain, waiting until no CPU can cache a
/// translation into them (see [`Domain::reclaim`]).
pub struct Remains {
    ept: Option<PageTable<Ept>>,
    allocations: Vec<(u64, u32)>,
    bytes: u64,
}

impl core::fmt::Debug for Remains {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Remains")
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Why a boot module did not become a domain.
#[derive(Debug)]
enum BuildError {
    Spec(String),
    Image(elf::ImageError),
    Memory(u64),
    Map(basalt_paging::MapError),
    Layout(String),
    Linux(linux::LinuxError),
    Vcpu(crate::vcpu::GuestError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Spec(s) => write!(f, "{s}"),
            Self::Image(e) => write!(f, "{e}"),
            Self::Memory(m) => write!(
                f,
                "not enough free memory for {} (ask for less with memory=)",
                basalt_boot::memmap::ByteSize(*m)
            ),
            Self::Map(e) => write!(f, "cannot build its EPT: {e}"),
            Self::Layout(e) => write!(f, "{e}"),
            Self::Linux(e) => write!(f, "{e}"),
            Self::Vcpu(e) => write!(f, "cannot create its vCPU: {e}"),
        }
    }
}

/// Builds a domain from each kernel module; returns them with their vCPUs.
pub fn create_from_modules(info: &BootInfo<'static>) -> Vec<(Arc<Domain>, Vec<Vcpu>)> {
    let mut built = Vec::new();
    let modules: Vec<Module<'static>> = info.modules.iter().copied().collect();
    let mut next_id = 1;
    for (index, module) in modules.iter().enumerate() {
        let spec = match spec::parse_module(module.cmdline) {
            Ok(ModuleRole::Kernel(spec)) => spec,
            Ok(ModuleRole::Initrd { .. }) => continue,
            Err(e) => {
                error!("boot module {index} (\"{}\") refused: {e}", module.cmdline);
                continue;
            }
        };
        let online = crate::arch::x86_64::percpu::online_count().min(64);
        let online_mask = if online == 64 {
            u64::MAX
        } else {
            (1u64 << online) - 1
        };
        if spec.cpus.is_some_and(|m| m & online_mask == 0) {
            error!(
                "boot module {index} (domain {}) refused: cpus= names no online CPU (online: 0-{}); \
                 other domains still start",
                spec.name,
                online.saturating_sub(1)
            );
            continue;
        }
        let initrds: Vec<_> = modules
            .iter()
            .filter(|m| matches!(spec::parse_module(m.cmdline), Ok(ModuleRole::Initrd { domain, .. }) if domain == spec.name))
            .copied()
            .collect();
        match build(next_id, &spec, *module, &initrds, 1) {
            Ok((domain, vcpus)) => {
                built.push((domain, vcpus));
                next_id += 1;
            }
            Err(e) => error!(
                "boot module {index} (domain {}) refused: {e}; other domains still start",
                spec.name
            ),
        }
    }
    built
}

fn build(
    id: u32,
    spec: &spec::DomainSpec<'_>,
    module: Module<'static>,
    initrds: &[Module<'static>],
    boot: u32,
) -> Result<(Arc<Domain>, Vec<Vcpu>), BuildError> {
    let memory = spec.memory.next_multiple_of(BLOCK);
    if memory > MAX_GUEST_RAM {
        return Err(BuildError::Spec(alloc::format!(
            "memory={} is more than Basalt can give a guest today: its RAM is one range from \
             address 0 and must end below the 32-bit device hole (I/O APIC at 0xFEC00000, local \
             APIC at 0xFEE00000); use memory=3G or less",
            basalt_boot::memmap::ByteSize(spec.memory)
        )));
    }
    let bytes = mm::phys_slice(module.start, module.len() as usize)
        .ok_or(BuildError::Spec("module not readable".into()))?;
    let real = spec.boot == spec::BootProtocol::Real;
    let linux = linux_plan(spec, bytes, memory, initrds).map_err(BuildError::Linux)?;
    let image = if real {
        // A flat real-mode binary at 0x7C00 must fit below the legacy hole.
        if bytes.is_empty() || 0x7c00 + bytes.len() as u64 > REAL_MODE_END {
            return Err(BuildError::Spec(alloc::format!(
                "a boot=real image must be 1 to {} bytes (it is loaded at 0x7C00, below 0x9F000); this one is {}",
                REAL_MODE_END - 0x7c00,
                bytes.len()
            )));
        }
        None
    } else if linux.is_some() {
        None
    } else {
        Some(elf::parse(bytes, memory).map_err(BuildError::Image)?)
    };

    let use_1g = crate::arch::x86_64::hvm::stage2_supports_1g();
    let mut blocks = Vec::new();
    let mut allocations: Vec<(u64, u32)> = Vec::new();
    let mut gpa = 0;
    while gpa < memory {
        let whole_gib = use_1g && gpa % GIB == 0 && memory - gpa >= GIB;
        let got = whole_gib
            .then(|| mm::alloc_frames(GIB_ORDER, Owner::Domain).map(|p| (p, GIB_ORDER, GIB)))
            .flatten()
            .or_else(|| {
                mm::alloc_frames(BLOCK_ORDER, Owner::Domain).map(|p| (p, BLOCK_ORDER, BLOCK))
            });
        let Some((phys, order, size)) = got else {
            for (p, o) in allocations {
                mm::free_frames(p, o, Owner::Domain);
            }
            return Err(BuildError::Memory(memory));
        };
        mm::zero_phys(phys, size);
        if order == GIB_ORDER {
            log::debug!(
                "domain {}: guest-physical {gpa:#x} is a 1 GiB EPT page at {phys:#x}",
                spec.name
            );
        }
        allocations.push((phys, order));
        blocks.extend((0..size / BLOCK).map(|k| phys + k * BLOCK));
        gpa += size;
    }
    let ept = match mm::build_ept(&blocks, use_1g) {
        Ok(ept) => ept,
        Err(e) => {
            for (p, o) in allocations {
                mm::free_frames(p, o, Owner::Domain);
            }
            return Err(BuildError::Map(e));
        }
    };
    let ept_root = ept.root();
    // The guest's TSC starts at 0 now, on every vCPU; its APICs count time
    // from the same instant.
    let tsc_zero = crate::arch::x86_64::cpu::rdtsc();
    let domain = Arc::new(Domain {
        id,
        generation: NEXT_GENERATION.fetch_add(1, Ordering::SeqCst),
        name: spec.name.into(),
        memory,
        blocks: Mutex::new(blocks),
        allocations: Mutex::new(allocations),
        ept: Mutex::new(Some(ept)),
        state: Mutex::new(State::Running),
        exit_code: AtomicU32::new(0),
        line: Mutex::new(Vec::new()),
        console_out: crate::console::Source::new(),
        input: Mutex::new(Ring::new()),
        serial: Mutex::new(crate::hvm::vdev::new_serial()),
        pic: Mutex::new(basalt_devices::pic::Pic::new()),
        pit: Mutex::new(basalt_devices::pit::Pit::new()),
        pit_last_edge: AtomicU64::new(0),
        rtc: Mutex::new(crate::hvm::vdev::new_rtc()),
        pci: Mutex::new(basalt_devices::pci::PciHost::new()),
        pm: Mutex::new(crate::hvm::vdev::new_pm()),
        device_deadline: AtomicU64::new(0),
        device_quiet_until: AtomicU64::new(0),
        irq_pending: core::sync::atomic::AtomicBool::new(false),
        signature: basalt_guest::cpuid::BASALT_SIGNATURE,
        apic: crate::hvm::vapic::DomainApic::new(spec.vcpus, crate::time::ns_at_tsc(tsc_zero)),
        tsc_offset: 0u64.wrapping_sub(tsc_zero),
        exits: Arc::new(ExitCounts::default()),
        vcpu_count: spec.vcpus,
        affinity: spec.cpus.unwrap_or(0),
        boot,
        weight: spec.weight,
        cap: spec.cap,
        timers: (0..spec.vcpus).map(|_| AtomicU64::new(0)).collect(),
        alive_vcpus: AtomicU32::new(0),
        module,
        initrds: initrds.to_vec(),
    });
    // From here on, failures must free what the domain holds.
    let fail = |domain: &Arc<Domain>, e: BuildError| {
        domain.discard();
        e
    };
    let mut entry = StartState::RealMode { cs: 0, ip: 0x7c00 };
    // ACPI tables in the BIOS area, where the usual scan also finds the
    // RSDP; the e820 map keeps 0x9F000-1 MiB reserved.
    let rsdp = {
        let blocks = domain.blocks.lock();
        let mut mem = DomainMemory {
            blocks: &blocks,
            size: memory,
        };
        basalt_guest::acpi::write_acpi_tables(
            &mut mem,
            ACPI_TABLES,
            &basalt_guest::acpi::AcpiConfig::new(spec.vcpus),
        )
        .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?
        .rsdp
    };
    if real {
        domain
            .write_gpa(0x7c00, bytes)
            .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
    }
    if let Some(image) = &image {
        let blocks = domain.blocks.lock();
        let mut mem = DomainMemory {
            blocks: &blocks,
            size: memory,
        };
        elf::load(image, bytes, &mut mem).map_err(|e| fail(&domain, BuildError::Image(e)))?;
        use basalt_guest::start_info as si;
        let sizes: Vec<u64> = initrds.iter().map(|m| m.len()).collect();
        let mut boot_modules: Vec<si::BootModule<'_>> = initrds
            .iter()
            .map(|m| si::BootModule {
                gpa: 0,
                size: m.len(),
                cmdline: match spec::parse_module(m.cmdline) {
                    Ok(ModuleRole::Initrd { cmdline, .. }) => cmdline,
                    _ => "",
                },
            })
            .collect();
        let mut memmap = [si::MemmapEntry::default(); 8];
        let entries = si::guest_memmap(memory, &mut memmap);
        let info_size = si::start_info_size(spec.cmdline, &boot_modules, entries);
        let layout = si::plan_layout(image, memory, &sizes, info_size)
            .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
        for ((bm, m), region) in boot_modules.iter_mut().zip(initrds).zip(layout.initrds()) {
            bm.gpa = region.gpa;
            let data = mm::phys_slice(m.start, m.len() as usize).unwrap_or_default();
            mem.write(region.gpa, data)
                .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
        }
        let plan = si::write_start_info(
            &mut mem,
            layout.start_info,
            spec.cmdline,
            &boot_modules,
            &memmap[..entries],
            rsdp,
        )
        .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
        entry = StartState::Pvh {
            rip: u64::from(image.entry),
            start_info: plan.start_info_gpa,
        };
    }
    if let Some((kernel, layout)) = &linux {
        entry = load_linux(&domain, spec, bytes, kernel, layout, initrds, rsdp)
            .map_err(|e| fail(&domain, BuildError::Linux(e)))?;
    }
    if let Err(e) = crate::arch::x86_64::hvm::available() {
        return Err(fail(&domain, BuildError::Spec(alloc::format!("{e}"))));
    }
    let mut vcpus = Vec::new();
    for index in 0..spec.vcpus {
        let made = ArchVcpu::new(
            ept_root,
            entry,
            crate::vcpu::CpuidContext {
                signature: domain.signature,
                apic_id: index,
                tsc_hz: crate::time::tsc_hz(),
            },
            domain.tsc_offset,
            domain.exits.clone(),
        );
        match made {
            Ok(arch) => {
                vcpus.push(Vcpu {
                    domain: domain.clone(),
                    index,
                    arch,
                });
            }
            Err(e) => {
                drop(vcpus);
                return Err(fail(&domain, BuildError::Vcpu(e)));
            }
        }
    }
    domain.alive_vcpus.store(spec.vcpus, Ordering::SeqCst);
    LIVE.fetch_add(1, Ordering::SeqCst);
    CREATED.fetch_add(1, Ordering::SeqCst);
    DOMAINS.lock().push(domain.clone());
    let entry = entry.entry_point();
    info!(
        "domain d{id} ({}) created: {} memory, {} vCPU(s), entry {entry:#x}",
        spec.name,
        basalt_boot::memmap::ByteSize(domain.memory),
        spec.vcpus,
    );
    Ok((domain, vcpus))
}

/// The bzImage and its layout when the module boots through the Linux boot
/// protocol (`boot=linux`, or no `boot=` and the image is a bzImage),
/// checked before the domain's memory is taken; `None` for other images.
fn linux_plan(
    spec: &spec::DomainSpec<'_>,
    bytes: &[u8],
    memory: u64,
    initrds: &[Module<'static>],
) -> Result<Option<(BzImage, LinuxLayout)>, linux::LinuxError> {
    match spec.boot {
        spec::BootProtocol::Linux => {}
        spec::BootProtocol::Auto if linux::is_bzimage(bytes) => {}
        _ => return Ok(None),
    }
    let kernel = linux::parse_bzimage(bytes)?;
    let initrd_size = linux::concatenated_initrd_size(initrds.iter().map(|m| m.len()));
    let layout = linux::plan_layout(&kernel, memory, spec.cmdline.len() as u64, initrd_size)?;
    Ok(Some((kernel, layout)))
}

/// Loads a bzImage as `layout` says (docs/guests.md, "Booting Linux"):
/// the protected-mode kernel, `boot_params` with the command line, the
/// initrds (concatenated), the e820 map of a PVH guest and the ACPI RSDP,
/// identity page tables and the boot GDT; vCPU 0 starts at `startup_64`.
fn load_linux(
    domain: &Domain,
    spec: &spec::DomainSpec<'_>,
    bytes: &[u8],
    kernel: &BzImage,
    layout: &LinuxLayout,
    initrds: &[Module<'static>],
    rsdp: u64,
) -> Result<StartState, linux::LinuxError> {
    use basalt_guest::start_info as si;
    let blocks = domain.blocks.lock();
    let mut mem = DomainMemory {
        blocks: &blocks,
        size: domain.memory,
    };
    let mut e820 = [si::MemmapEntry::default(); 8];
    let entries = si::guest_memmap(domain.memory, &mut e820);
    let state = linux::load(
        &mut mem,
        bytes,
        kernel,
        layout,
        spec.cmdline,
        &e820[..entries],
        rsdp,
    )?;
    let mut at = layout.initrd_gpa;
    for m in initrds {
        let data = mm::phys_slice(m.start, m.len() as usize).unwrap_or_default();
        mem.write(at, data)?;
        at += m.len().next_multiple_of(linux::INITRD_PIECE_ALIGN);
    }
    info!(
        "domain {}: Linux bzImage (boot protocol {}.{:02}), kernel at {:#x} (init_size {:#x}), \
         boot_params at {:#x}, initrd {:#x}+{:#x}",
        spec.name,
        kernel.version >> 8,
        kernel.version & 0xff,
        layout.load_address,
        kernel.init_size,
        layout.boot_params,
        layout.initrd_gpa,
        layout.initrd_size,
    );
    Ok(StartState::Long64(Long64State {
        rip: state.rip,
        rsi: state.rsi,
        rflags: state.rflags,
        cr0: state.cr0,
        cr3: state.cr3,
        cr4: state.cr4,
        efer: state.efer,
        gdt_base: state.gdt_base,
        gdt_limit: state.gdt_limit,
        ..Long64State::default()
    }))
}

impl Domain {
    /// Frees the memory and EPT of a domain whose build failed (it never
    /// ran; nothing is recorded).
    fn discard(&self) {
        *self.state.lock() = State::Dead(EndReason::Crash);
        if let Some(ept) = self.ept.lock().take() {
            mm::destroy_ept(ept);
        }
        self.blocks.lock().clear();
        for (phys, order) in self.allocations.lock().drain(..) {
            mm::free_frames(phys, order, Owner::Domain);
        }
    }
}

/// How the domains ended, for the final verdict: `(all clean, summary)`.
pub fn outcome() -> (bool, String) {
    let mut ended = ENDED.lock();
    ended.sort_by_key(|e| e.id);
    let mut clean = true;
    let mut summary = String::new();
    for Ended {
        id,
        name,
        reason,
        code,
    } in ended.iter()
    {
        let text = match reason {
            EndReason::Crash => {
                clean = false;
                alloc::format!("d{id} ({name}) crashed")
            }
            EndReason::Destroyed => alloc::format!("d{id} ({name}) destroyed"),
            _ if *code != 0 => {
                clean = false;
                alloc::format!("d{id} ({name}) exit code {code}")
            }
            _ => alloc::format!("d{id} ({name}) exit code 0"),
        };
        if !summary.is_empty() {
            summary.push_str(", ");
        }
        summary.push_str(&text);
    }
    (clean, summary)
}
