//! Guest domains (docs/guests.md): built from Multiboot2 boot modules. A
//! [`Domain`] is its configuration (from the module's command line), its
//! memory map ([`GuestRam`]: RAM and stage-2 tables), its platform
//! ([`Platform`]: devices and console), its lifecycle ([`Lifecycle`]), its
//! vCPUs' single-shot timers and its exit counters.

use super::lifecycle::Lifecycle;
use crate::hvm::irq::{IrqSink, VcpuWaker};
use crate::hvm::memory::{BLOCK, GuestRam, RamError, Remains};
use crate::hvm::platform::Platform;
use crate::mm;
use crate::stats::ExitCounts;
use crate::vcpu::{ArchVcpu, Loaded, Long64State, StartState};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_boot::multiboot2::{BootInfo, Module};
use basalt_guest::elf;
use basalt_guest::linux::{self, BzImage, LinuxLayout};
use basalt_guest::mem::GuestMemory;
use basalt_guest::spec::{self, ModuleRole};
use basalt_guest::start_info as si;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use log::{error, info};
use spin::Mutex;

/// A `boot=real` image must end below the legacy hole (docs/guests.md).
const REAL_MODE_END: u64 = 0x9f000;
/// The most RAM a domain gets: its memory is one range from guest-physical
/// 0 and must stay below the device pages near 4 GiB.
const MAX_GUEST_RAM: u64 = 3 * GIB;
const _: () =
    assert!(MAX_GUEST_RAM == basalt_domctl::MAX_MEMORY && BLOCK == basalt_domctl::MEMORY_ALIGN);
/// Room for the identity-mapped control domain's ACPI tables without the
/// host's (Basalt's own set for guests).
const DOM0_ACPI_BYTES: u64 = 16 << 10;

const GIB: u64 = 1 << 30;

pub use super::lifecycle::{EndReason, State};

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
    /// Each vCPU's timers, system time in ns, 0 = none: its single-shot
    /// deadline, its periodic timer's period and next deadline.
    pub timers: Vec<[AtomicU64; 3]>,
    /// Its memory map: RAM and stage-2 tables.
    pub ram: GuestRam,
    /// Its devices and console.
    pub platform: Platform,
    /// Running, paused, dying or dead; its exit code.
    pub life: Lifecycle,
    /// The 12-byte CPUID hypervisor signature this domain sees.
    pub signature: [u8; 12],
    /// TSC offset of every vCPU: the guest's TSC counts from its creation.
    pub tsc_offset: u64,
    /// VM exits per reason.
    pub exits: Arc<ExitCounts>,
    /// Xen's interface (`xen=1`, `role=control`; docs/control-domain.md).
    pub xen: Option<crate::hvm::xen::XenDomain>,
    /// A domain the control domain created (domain control's `create`)
    /// and has not started yet: it has no vCPU until its first `unpause`;
    /// this holds the start state of vCPU 0 set so far. `None` once
    /// started, and for domains built from boot modules.
    pub unstarted: Mutex<Option<Option<StartState>>>,
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

impl crate::console::GuestLog for Domain {
    fn log_id(&self) -> u32 {
        self.id
    }
    fn log_allowed(&self) -> Option<u64> {
        self.platform.console.out.log_allowed()
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

/// A vCPU loaded on this CPU, with what its exit handlers need: its domain,
/// its index, and the vendor state through the [`Loaded`] guard (dropping
/// it unloads the vCPU).
pub struct Running<'a> {
    /// Its domain.
    pub domain: &'a Arc<Domain>,
    /// Index within the domain.
    pub index: u32,
    /// The loaded vendor state: registers are read and written only here.
    pub arch: Loaded<'a>,
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

/// How domain `id` ended, if it did: its name, the reason and its exit code.
pub fn ended(id: u32) -> Option<(String, EndReason, u32)> {
    let ended = ENDED.lock();
    let e = ended.iter().rev().find(|e| e.id == id)?;
    Some((e.name.clone(), e.reason, e.code))
}

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

impl Domain {
    /// vCPU `index`'s single-shot timer (system time in ns, 0 = none).
    pub fn timer(&self, index: u32) -> &AtomicU64 {
        &self.timers_of(index)[0]
    }

    /// vCPU `index`'s periodic timer (`VCPUOP_set_periodic_timer`): its
    /// period and its next deadline (ns, 0 = off).
    pub fn periodic(&self, index: u32) -> &[AtomicU64] {
        &self.timers_of(index)[1..]
    }

    /// The earliest of vCPU `index`'s single-shot and periodic deadlines
    /// (0 = none).
    pub fn timer_deadline(&self, index: u32) -> u64 {
        let t = self.timers_of(index);
        let (one, next) = (t[0].load(Ordering::SeqCst), t[2].load(Ordering::SeqCst));
        if one == 0 || (next != 0 && next < one) {
            next
        } else {
            one
        }
    }

    fn timers_of(&self, index: u32) -> &[AtomicU64; 3] {
        static NONE: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
        self.timers.get(index as usize).unwrap_or(&NONE)
    }

    /// One of its vCPUs was dropped (its VMCS freed). When it was the last:
    /// the domain is dead and its memory and EPT are handed back as
    /// [`Remains`], which the scheduler frees with [`Domain::reclaim`] once
    /// no CPU can hold a translation of them (docs/scheduler.md, "Domain
    /// lifecycle").
    pub fn vcpu_retired(&self) -> Option<(EndReason, Remains)> {
        let reason = self.life.vcpu_retired()?;
        Some((reason, self.release(reason)))
    }

    /// Marks the domain dead and takes its memory and EPT out (no vCPU can
    /// use them any more; CPUs may still cache their translations).
    fn release(&self, reason: EndReason) -> Remains {
        self.life.set_dead(reason);
        self.platform.console.end_line();
        DOMAINS.lock().retain(|d| d.generation != self.generation);
        self.ram.take()
    }

    /// Frees what [`Domain::vcpu_retired`] handed back. The caller promises
    /// that every CPU has flushed its EPT-derived translations since the
    /// domain's last vCPU left (`sched`'s EPT generation protocol). Then
    /// the end is recorded.
    pub fn reclaim(&self, remains: Remains, reason: EndReason) {
        let freed = remains.bytes();
        remains.free();
        let code = self.life.exit_code.load(Ordering::SeqCst);
        info!(
            "domain d{} ({}) ended: {}{}; {} returned to the pool{}",
            self.id,
            self.name,
            reason.as_str(),
            if matches!(reason, EndReason::Crash | EndReason::Destroyed) {
                String::new()
            } else {
                alloc::format!(", exit code {code}")
            },
            basalt_boot::memmap::ByteSize(freed),
            match &self.xen {
                Some(x) => alloc::format!(
                    "; Xen's interface held {} bytes of Basalt's memory ({} grant frames)",
                    x.footprint(),
                    x.grant_frames()
                ),
                None => String::new(),
            }
        );
        if reason == EndReason::Reboot && self.rebuilds() {
            // Still counted as live until `rebuild` replaced it, so a test
            // run does not end in between.
            return;
        }
        // Recorded once its memory is back: a toolstack that sees the end may
        // reuse the memory (until then getinfo says ESRCH: gone, not yet ended).
        ENDED.lock().push(Ended {
            id: self.id,
            name: self.name.clone(),
            reason,
            code,
        });
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether a reboot builds it again from its boot modules (a domain the
    /// control domain built has none: its toolstack decides; the control
    /// domain's reboot is the host's, so it is not rebuilt either).
    pub fn rebuilds(&self) -> bool {
        self.module.end != 0 && self.id != 0
    }

    /// Builds this domain again from its boot modules (after it ended with
    /// `reboot`): same id, name and settings, fresh memory and vCPUs. Call
    /// once per reboot.
    pub fn rebuild(&self) -> Result<(Arc<Domain>, Vec<Vcpu>), String> {
        // The new domain counts itself (from `build`); this one stops
        // counting once the new one exists or failed.
        let built = match spec::parse_module(self.module.cmdline) {
            Ok(ModuleRole::Kernel(spec)) => build(
                self.id,
                &spec,
                self.module,
                &self.initrds,
                self.boot + 1,
                self.platform.irq.waker(),
            )
            .map_err(|e| alloc::format!("{e}")),
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
            basalt_boot::memmap::ByteSize(built.0.ram.size()),
            built.0.vcpu_count
        );
        Ok(built)
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

/// The hypervisor options for the control domain (docs/command-line.md).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dom0Options {
    /// `dom0_max_vcpus=`: its vCPUs (overrides the module's `vcpus=`).
    pub vcpus: Option<u32>,
    /// `dom0_crash=halt`: a crash of dom0 halts the host instead of
    /// rebooting it.
    pub crash_halts: bool,
}

static DOM0_CRASH_HALTS: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Whether a crash of the control domain halts the host (`dom0_crash=halt`)
/// rather than rebooting it.
pub fn dom0_crash_halts() -> bool {
    DOM0_CRASH_HALTS.load(Ordering::Relaxed)
}

/// The control domain's RAM, decided before the memory manager starts
/// because it is identity-mapped from the low range of host RAM: `dom0_mem=`,
/// else the first `role=control` module's `memory=`, else a quarter of the
/// usable RAM (256 MiB to 2 GiB). `None` without a control domain.
pub fn dom0_identity_bytes(info: &BootInfo<'_>, dom0_mem: Option<u64>) -> Option<u64> {
    let spec = info
        .modules
        .iter()
        .find_map(|m| match spec::parse_module(m.cmdline) {
            Ok(ModuleRole::Kernel(spec)) if spec.control => Some(spec),
            _ => None,
        })?;
    let usable = info.memory_map.usable_bytes();
    Some(dom0_mem.unwrap_or(if spec.memory_given {
        spec.memory
    } else {
        (usable / 4).clamp(256 << 20, 2 * GIB)
    }))
}

/// Builds a domain from each kernel module; returns them with their vCPUs.
/// Their interrupt controllers wake their vCPUs through `waker`.
pub fn create_from_modules(
    info: &BootInfo<'static>,
    waker: &'static dyn VcpuWaker,
    dom0: Dom0Options,
) -> Vec<(Arc<Domain>, Vec<Vcpu>)> {
    DOM0_CRASH_HALTS.store(dom0.crash_halts, Ordering::Relaxed);
    let mut built = Vec::new();
    let modules: Vec<Module<'static>> = info.modules.iter().copied().collect();
    let mut next_id = 1;
    let mut control: Option<usize> = None;
    for (index, module) in modules.iter().enumerate() {
        let spec = match spec::parse_module(module.cmdline) {
            Ok(ModuleRole::Kernel(mut spec)) if spec.control => {
                // Its RAM was set aside by `mm::init` (`dom0_identity_bytes`).
                if let Some(r) = mm::dom0_ram() {
                    spec.memory = r.end;
                }
                if let Some(n) = dom0.vcpus {
                    spec.vcpus = n;
                }
                if let Some(first) = control {
                    error!(
                        "boot module {index} (\"{}\") refused: a second role=control; boot module \
                         {first} is the control domain already (there is exactly one: drop \
                         role=control from all but one module)",
                        module.cmdline
                    );
                    continue;
                }
                control = Some(index);
                spec
            }
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
        let id = if spec.control { 0 } else { next_id };
        match build(id, &spec, *module, &initrds, 1, waker) {
            Ok((domain, vcpus)) => {
                built.push((domain, vcpus));
                if !spec.control {
                    next_id += 1;
                }
            }
            Err(e) => error!(
                "boot module {index} (domain {}) refused: {e}; other domains still start",
                spec.name
            ),
        }
    }
    NEXT_ID.fetch_max(next_id, Ordering::SeqCst);
    built
}

/// The id the next domain the control domain creates gets (ids are not
/// reused: boot modules take 1, 2, …, created domains follow).
static NEXT_ID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

/// What the control domain asks for with domain control's `create`.
#[derive(Debug, Clone, Copy)]
pub struct NewDomain<'a> {
    /// Its name (unique among live domains).
    pub name: &'a str,
    /// RAM in bytes (a multiple of 2 MiB).
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Physical CPUs its vCPUs may run on (0: any).
    pub affinity: u64,
    /// Scheduling weight.
    pub weight: u16,
    /// CPU cap (0: none).
    pub cap: u16,
    /// Xen's interface (as `xen=1`).
    pub xen: bool,
}

/// Why `create` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// A live domain has that name.
    NameTaken,
    /// Not enough free memory.
    NoMemory,
    /// Out of range (memory, CPUs): what is wrong.
    Invalid(&'static str),
}

/// Creates an empty domain for the control domain: its RAM (zeroed), ACPI
/// tables in its BIOS area (as for every domain), its devices; paused and
/// without vCPUs until the control domain has loaded it (`populate`), set
/// vCPU 0's start state and unpaused it (`Domain::start_vcpus`).
pub fn create(
    new: &NewDomain<'_>,
    waker: &'static dyn VcpuWaker,
) -> Result<Arc<Domain>, CreateError> {
    if new.memory > MAX_GUEST_RAM || !new.memory.is_multiple_of(BLOCK) || new.memory < BLOCK {
        return Err(CreateError::Invalid(
            "memory must be a multiple of 2 MiB from 2 MiB to 3 GiB",
        ));
    }
    let online = crate::arch::x86_64::percpu::online_count().min(64);
    let online_mask = if online == 64 {
        u64::MAX
    } else {
        (1u64 << online) - 1
    };
    if new.affinity != 0 && new.affinity & online_mask == 0 {
        return Err(CreateError::Invalid("the CPU pinning names no online CPU"));
    }
    if DOMAINS.lock().iter().any(|d| d.name == new.name) {
        return Err(CreateError::NameTaken);
    }
    // Ids are never reused and never wrap (0 is the control domain's).
    let id = NEXT_ID
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1))
        .map_err(|_| CreateError::Invalid("no domain id is left"))?;
    let ram = GuestRam::allocate(new.memory, new.name).map_err(|e| match e {
        RamError::NoMemory(_) => CreateError::NoMemory,
        RamError::Map(_) => CreateError::NoMemory,
    })?;
    let tsc_zero = crate::arch::x86_64::cpu::rdtsc();
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::SeqCst);
    let domain = Arc::new(Domain {
        id,
        generation,
        name: new.name.into(),
        ram,
        platform: Platform::new(
            id,
            new.vcpus,
            crate::time::ns_at_tsc(tsc_zero),
            IrqSink::new(id, generation, waker),
        ),
        life: Lifecycle::new(),
        signature: if new.xen {
            basalt_guest::cpuid::XEN_SIGNATURE
        } else {
            basalt_guest::cpuid::BASALT_SIGNATURE
        },
        tsc_offset: 0u64.wrapping_sub(tsc_zero),
        exits: Arc::new(ExitCounts::default()),
        vcpu_count: new.vcpus,
        affinity: new.affinity,
        boot: 1,
        weight: new.weight,
        cap: new.cap,
        timers: (0..new.vcpus).map(|_| Default::default()).collect(),
        xen: new
            .xen
            .then(|| crate::hvm::xen::XenDomain::new(new.vcpus, false)),
        unstarted: Mutex::new(Some(None)),
        // No image to start again from: a reboot ends it (`rebuilds`).
        module: Module {
            start: 0,
            end: 0,
            cmdline: "",
        },
        initrds: Vec::new(),
    });
    let tables = domain.ram.with_memory(|mem| {
        basalt_guest::acpi::write_acpi_tables(
            mem,
            basalt_guest::acpi::GUEST_TABLES_GPA,
            &basalt_guest::acpi::AcpiConfig::new(new.vcpus),
        )
        .map(drop)
    });
    if tables.is_err() {
        domain.discard();
        return Err(CreateError::Invalid(
            "its ACPI tables do not fit its memory",
        ));
    }
    domain.life.set_paused(true);
    LIVE.fetch_add(1, Ordering::SeqCst);
    CREATED.fetch_add(1, Ordering::SeqCst);
    DOMAINS.lock().push(domain.clone());
    info!(
        "domain d{id} ({}) created by the control domain: {} memory, {} vCPU(s); paused until it \
         is loaded and unpaused",
        new.name,
        basalt_boot::memmap::ByteSize(new.memory),
        new.vcpus
    );
    Ok(domain)
}

impl Domain {
    /// Whether the control domain created it and has not started it yet.
    pub fn is_unstarted(&self) -> bool {
        self.unstarted.lock().is_some()
    }

    /// Sets the state vCPU 0 of an unstarted domain starts from; false if
    /// it has started.
    pub fn set_start(&self, start: StartState) -> bool {
        match &mut *self.unstarted.lock() {
            Some(slot) => {
                *slot = Some(start);
                true
            }
            None => false,
        }
    }

    /// Whether an unstarted domain has its start state.
    pub fn has_start(&self) -> bool {
        matches!(*self.unstarted.lock(), Some(Some(_)))
    }

    /// Makes the vCPUs of an unstarted domain, all from its start state
    /// (vCPU 0 runs; the others wait for `VCPUOP_initialise`/`up`). The
    /// scheduler calls this at a scheduling point (nothing loaded on this
    /// CPU), after `unpause`. On an error the domain is still unstarted
    /// (the caller discards it), unless it was destroyed meanwhile.
    pub fn start_vcpus(self: &Arc<Self>) -> Result<Vec<Vcpu>, String> {
        let entry = (*self.unstarted.lock())
            .flatten()
            .ok_or_else(|| String::from("no start state was set"))?;
        crate::arch::x86_64::hvm::available().map_err(|e| alloc::format!("{e}"))?;
        let mut vcpus = Vec::new();
        for index in 0..self.vcpu_count {
            let arch = ArchVcpu::new(
                self.ram.stage2_root(),
                entry,
                crate::vcpu::CpuidContext {
                    signature: self.signature,
                    apic_id: index,
                    tsc_hz: crate::time::tsc_hz(),
                },
                self.tsc_offset,
                self.exits.clone(),
            )
            .map_err(|e| alloc::format!("cannot create its vCPU: {e}"))?;
            vcpus.push(Vcpu {
                domain: self.clone(),
                index,
                arch,
            });
        }
        // Destroyed meanwhile (`discard_unstarted` took it): the new vCPUs
        // are dropped, nothing runs.
        if self.unstarted.lock().take().is_none() {
            return Err("it was destroyed while it started".into());
        }
        self.life.vcpus_created(self.vcpu_count);
        info!(
            "domain d{} ({}) started by the control domain, entry {:#x}",
            self.id,
            self.name,
            entry.entry_point()
        );
        Ok(vcpus)
    }

    /// Ends an unstarted domain at once (it has no vCPU to retire): it is
    /// dead and its memory is handed back, for the scheduler to free as a
    /// retired domain's ([`Domain::reclaim`] after the stage-2 flushes, and
    /// after the control domain's foreign mappings of it are gone). `None`
    /// if it had started.
    pub fn discard_unstarted(&self, reason: EndReason) -> Option<Remains> {
        self.unstarted.lock().take()?;
        self.life.begin_end(reason);
        Some(self.release(reason))
    }
}

fn build(
    id: u32,
    spec: &spec::DomainSpec<'_>,
    module: Module<'static>,
    initrds: &[Module<'static>],
    boot: u32,
    waker: &'static dyn VcpuWaker,
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

    let identity = mm::dom0_ram().filter(|_| spec.control);
    let ram = match identity {
        Some(r) => GuestRam::identity(r),
        None => GuestRam::allocate(memory, spec.name),
    }
    .map_err(|e| match e {
        RamError::NoMemory(m) => BuildError::Memory(m),
        RamError::Map(e) => BuildError::Map(e),
    })?;
    if let Some(r) = identity {
        info!(
            "domain d{id} ({}): its RAM is the host's, identity-mapped below {:#x}: {} in {} \
             ranges (Basalt's image and the firmware's areas are holes)",
            spec.name,
            r.end,
            basalt_boot::memmap::ByteSize(r.pieces.iter().map(|p| p.1 - p.0).sum()),
            r.pieces.len()
        );
    }
    let stage2_root = ram.stage2_root();
    // The guest's TSC starts at 0 now, on every vCPU; its APICs count time
    // from the same instant.
    let tsc_zero = crate::arch::x86_64::cpu::rdtsc();
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::SeqCst);
    let domain = Arc::new(Domain {
        id,
        generation,
        name: spec.name.into(),
        ram,
        platform: Platform::new(
            id,
            spec.vcpus,
            crate::time::ns_at_tsc(tsc_zero),
            IrqSink::new(id, generation, waker),
        ),
        life: Lifecycle::new(),
        signature: if spec.xen {
            basalt_guest::cpuid::XEN_SIGNATURE
        } else {
            basalt_guest::cpuid::BASALT_SIGNATURE
        },
        tsc_offset: 0u64.wrapping_sub(tsc_zero),
        exits: Arc::new(ExitCounts::default()),
        vcpu_count: spec.vcpus,
        affinity: spec.cpus.unwrap_or(0),
        boot,
        weight: spec.weight,
        cap: spec.cap,
        timers: (0..spec.vcpus).map(|_| Default::default()).collect(),
        xen: spec
            .xen
            .then(|| crate::hvm::xen::XenDomain::new(spec.vcpus, spec.control)),
        unstarted: Mutex::new(None),
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
    // RSDP; the e820 map keeps 0x9F000-1 MiB reserved. The identity-mapped
    // control domain has them at the top of its RAM instead.
    let (memmap, acpi_at) = memory_map(memory, identity, spec.vcpus);
    let acpi_config = basalt_guest::acpi::AcpiConfig::new(spec.vcpus);
    let host_acpi = crate::acpi::host_tables().filter(|_| identity.is_some());
    let rsdp = domain
        .ram
        .with_memory(|mem| match host_acpi {
            Some(h) => basalt_guest::acpi::dom0::write_dom0_acpi_tables(
                mem,
                acpi_at,
                &acpi_config,
                &h.acpi(),
            )
            .map(|l| l.rsdp),
            None => {
                basalt_guest::acpi::write_acpi_tables(mem, acpi_at, &acpi_config).map(|l| l.rsdp)
            }
        })
        .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
    if real {
        domain
            .ram
            .write(0x7c00, bytes)
            .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
    }
    if let Some(image) = &image {
        // Errors are handed out of the closure: `fail` frees the RAM, which
        // the closure holds locked.
        let loaded = domain
            .ram
            .with_memory(|mem| -> Result<StartState, BuildError> {
                let layout_error =
                    |e: &dyn core::fmt::Display| BuildError::Layout(alloc::format!("{e}"));
                elf::load(image, bytes, mem).map_err(BuildError::Image)?;
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
                let entries = memmap.len();
                let info_size = si::start_info_size(spec.cmdline, &boot_modules, entries);
                let layout = si::plan_layout(image, memory, &sizes, info_size)
                    .map_err(|e| layout_error(&e))?;
                for ((bm, m), region) in boot_modules.iter_mut().zip(initrds).zip(layout.initrds())
                {
                    bm.gpa = region.gpa;
                    let data = mm::phys_slice(m.start, m.len() as usize).unwrap_or_default();
                    mem.write(region.gpa, data).map_err(|e| layout_error(&e))?;
                }
                let plan = si::write_start_info(
                    mem,
                    layout.start_info,
                    spec.cmdline,
                    &boot_modules,
                    &memmap,
                    rsdp,
                )
                .map_err(|e| layout_error(&e))?;
                if spec.control {
                    si::write_flags(
                        mem,
                        plan.start_info_gpa,
                        si::SIF_PRIVILEGED | si::SIF_INITDOMAIN,
                    )
                    .map_err(|e| layout_error(&e))?;
                }
                Ok(StartState::Pvh {
                    rip: u64::from(image.entry),
                    start_info: plan.start_info_gpa,
                })
            });
        entry = loaded.map_err(|e| fail(&domain, e))?;
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
            stage2_root,
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
            Ok(mut arch) => {
                if identity.is_some() && crate::hvm::passthrough::active() {
                    crate::hvm::passthrough::open_ports(&mut arch);
                }
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
    domain.life.vcpus_created(spec.vcpus);
    LIVE.fetch_add(1, Ordering::SeqCst);
    CREATED.fetch_add(1, Ordering::SeqCst);
    DOMAINS.lock().push(domain.clone());
    let entry = entry.entry_point();
    info!(
        "domain d{id} ({}) created: {} memory, {} vCPU(s), entry {entry:#x}{}",
        spec.name,
        basalt_boot::memmap::ByteSize(domain.ram.size()),
        spec.vcpus,
        match (&domain.xen, spec.control) {
            (Some(x), true) => alloc::format!(
                "; the control domain, Xen's interface ({} bytes of Basalt's memory)",
                x.footprint()
            ),
            (Some(x), false) => alloc::format!(
                "; Xen's interface ({} bytes of Basalt's memory)",
                x.footprint()
            ),
            (None, _) => String::new(),
        }
    );
    if spec.control {
        // dom0 reads its TSC as Basalt's minus this (its TSC offset):
        // `cargo xtask bench dom0` adds it to what dom0 read at its shell.
        info!(
            "domain d{id}: its TSC reads 0 at {} ticks after Basalt's entry",
            0u64.wrapping_sub(domain.tsc_offset)
                .wrapping_sub(crate::time::boot_tsc())
        );
    }
    Ok((domain, vcpus))
}

/// The e820 map of a domain of `memory` bytes and where its ACPI tables go:
/// a guest's ([`si::guest_memmap`], tables in the BIOS area), or the
/// identity-mapped control domain's, the host's map with its RAM pieces
/// (`basalt_guest::acpi::dom0`), the tables at the top of the last piece.
fn memory_map(
    memory: u64,
    identity: Option<&mm::Dom0Ram>,
    vcpus: u32,
) -> (Vec<si::MemmapEntry>, u64) {
    let (Some(r), Some(&(_, top))) = (identity, identity.and_then(|r| r.pieces.last())) else {
        let mut map = [si::MemmapEntry::default(); 8];
        let n = si::guest_memmap(memory, &mut map);
        return (map[..n].to_vec(), basalt_guest::acpi::GUEST_TABLES_GPA);
    };
    let config = basalt_guest::acpi::AcpiConfig::new(vcpus);
    let size = crate::acpi::host_tables()
        .map_or(DOM0_ACPI_BYTES, |h| {
            basalt_guest::acpi::dom0::dom0_acpi_size(&config, &h.acpi())
        })
        .next_multiple_of(4096);
    let at = top - size;
    let mut map = alloc::vec![si::MemmapEntry::default(); 128];
    let host = crate::hvm::passthrough::host_map()
        .map(|m| m.regions())
        .unwrap_or_default();
    let host = host.iter().map(|h| (h.start, h.end, h.kind.e820()));
    match basalt_guest::acpi::dom0::dom0_memmap(host, &r.pieces, (at, top), &mut map) {
        Ok(n) => map.truncate(n),
        Err(e) => {
            log::error!("the control domain's memory map: {e}");
            map.clear();
        }
    }
    (map, at)
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
    let (e820, _) = memory_map(
        domain.ram.size(),
        mm::dom0_ram().filter(|_| spec.control),
        spec.vcpus,
    );
    let state = domain.ram.with_memory(|mem| {
        let state = linux::load(mem, bytes, kernel, layout, spec.cmdline, &e820, rsdp)?;
        let mut at = layout.initrd_gpa;
        for m in initrds {
            let data = mm::phys_slice(m.start, m.len() as usize).unwrap_or_default();
            mem.write(at, data)?;
            at += m.len().next_multiple_of(linux::INITRD_PIECE_ALIGN);
        }
        Ok::<_, linux::LinuxError>(state)
    })?;
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
        self.life.set_dead(EndReason::Crash);
        self.ram.take().free();
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
