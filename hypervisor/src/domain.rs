//! Guest domains (docs/guests.md): built from Multiboot2 boot modules, each
//! with its own memory (from Basalt's frame pool, zeroed), its own EPT, its
//! vCPUs, its console and its end.

use crate::arch::x86_64::vmx::vcpu::{PvhEntry, VmxVcpu};
use crate::mm;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use basalt_boot::multiboot2::BootInfo;
use basalt_frames::Owner;
use basalt_guest::elf;
use basalt_guest::mem::{GuestMemory, MemoryError};
use basalt_guest::spec::{self, ModuleRole};
use basalt_paging::{Ept, PageTable};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use log::{error, info, warn};
use spin::Mutex;

/// A `boot=real` image must end below the legacy hole (docs/guests.md).
const REAL_MODE_END: u64 = 0x9f000;

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
    /// SCHEDOP_shutdown(reboot) — restarting comes with the lifecycle work.
    Reboot,
    /// SCHEDOP_shutdown(crash), or ended by Basalt for a guest error.
    Crash,
}

/// A domain's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its vCPUs run or wait.
    Running,
    /// Ended.
    Dead(EndReason),
}

/// A guest domain.
pub struct Domain {
    /// Domain id (1, 2, …; 0 is reserved for a control domain).
    pub id: u32,
    /// Its name from `name=`.
    pub name: String,
    /// Memory in bytes (a whole number of 2 MiB blocks).
    pub memory: u64,
    blocks: Mutex<Vec<u64>>,
    /// The allocations behind `blocks`: (physical address, order).
    allocations: Mutex<Vec<(u64, u32)>>,
    ept: Mutex<Option<PageTable<Ept>>>,
    /// State.
    pub state: Mutex<State>,
    /// Exit code set with Basalt's SCHEDOP exit-code operation.
    pub exit_code: AtomicU32,
    console: Mutex<Vec<u8>>,
    /// The 12-byte CPUID hypervisor signature this domain sees.
    pub signature: [u8; 12],
    /// The physical CPU its vCPU runs on (first CPU of `cpus=`).
    pub pinned_cpu: Option<usize>,
}

impl core::fmt::Debug for Domain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domain")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

/// A vCPU of a domain, as the scheduler sees it.
pub struct Vcpu {
    /// Its domain.
    pub domain: Arc<Domain>,
    /// Index within the domain.
    pub index: u32,
    /// The vendor part.
    pub arch: VmxVcpu,
    /// TSC deadline of its single-shot timer (0 = none).
    pub timer_deadline: u64,
    /// Blocked in HLT until its timer.
    pub blocked: bool,
}

impl core::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "d{}v{}", self.domain.id, self.index)
    }
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CREATED: AtomicUsize = AtomicUsize::new(0);
static NEXT_VPID: AtomicU32 = AtomicU32::new(1);
/// A domain that ended, for the final verdict.
struct Ended {
    id: u32,
    name: String,
    reason: EndReason,
    code: u32,
}

static ENDED: Mutex<Vec<Ended>> = Mutex::new(Vec::new());

/// Domains still running.
pub fn live_count() -> usize {
    LIVE.load(Ordering::SeqCst)
}

/// Domains created at boot.
pub fn created_count() -> usize {
    CREATED.load(Ordering::SeqCst)
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

    /// Adds console output from the guest; complete lines are printed as
    /// `(dN) line`.
    pub fn console_write(&self, bytes: &[u8]) {
        let mut buf = self.console.lock();
        for &b in bytes {
            if b == b'\n' || buf.len() >= 512 {
                crate::println!("(d{}) {}", self.id, String::from_utf8_lossy(&buf));
                buf.clear();
            } else if b != b'\r' {
                buf.push(b);
            }
        }
    }

    /// Ends the domain: frees its memory and EPT, records why.
    pub fn end(&self, reason: EndReason) {
        {
            let mut state = self.state.lock();
            if *state != State::Running {
                return;
            }
            *state = State::Dead(reason);
        }
        if !self.console.lock().is_empty() {
            self.console_write(b"\n");
        }
        if let Some(ept) = self.ept.lock().take() {
            mm::destroy_ept(ept);
        }
        let freed = self.blocks.lock().drain(..).count() as u64 * BLOCK;
        for (phys, order) in self.allocations.lock().drain(..) {
            mm::free_frames(phys, order, Owner::Domain);
        }
        let code = self.exit_code.load(Ordering::SeqCst);
        info!(
            "domain d{} ({}) ended: {}{}; {} returned to the pool",
            self.id,
            self.name,
            match reason {
                EndReason::Poweroff => "poweroff",
                EndReason::Reboot => "reboot (restart not supported yet)",
                EndReason::Crash => "crashed",
            },
            if reason == EndReason::Crash {
                String::new()
            } else {
                alloc::format!(", exit code {code}")
            },
            basalt_boot::memmap::ByteSize(freed)
        );
        ENDED.lock().push(Ended {
            id: self.id,
            name: self.name.clone(),
            reason,
            code,
        });
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether the domain still runs.
    pub fn is_running(&self) -> bool {
        *self.state.lock() == State::Running
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
            Self::Vcpu(e) => write!(f, "cannot create its vCPU: {e}"),
        }
    }
}

/// Builds a domain from each kernel module; returns their vCPUs.
pub fn create_from_modules(info: &BootInfo<'_>) -> Vec<Vcpu> {
    let mut vcpus = Vec::new();
    let modules: Vec<_> = info.modules.iter().copied().collect();
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
        let initrds: Vec<_> = modules
            .iter()
            .filter(|m| matches!(spec::parse_module(m.cmdline), Ok(ModuleRole::Initrd { domain, .. }) if domain == spec.name))
            .copied()
            .collect();
        match build(next_id, &spec, module, &initrds) {
            Ok(mut built) => {
                info!(
                    "domain d{next_id} ({}) created: {} memory, {} vCPU(s), entry {:#x}",
                    spec.name,
                    basalt_boot::memmap::ByteSize(built.domain.memory),
                    spec.vcpus,
                    built.entry
                );
                if spec.vcpus > 1 {
                    warn!(
                        "domain d{next_id}: only vCPU 0 starts; secondary vCPUs come with VCPUOP_up"
                    );
                }
                built.vcpu.arch.release();
                vcpus.push(built.vcpu);
                next_id += 1;
            }
            Err(e) => error!(
                "boot module {index} (domain {}) refused: {e}; other domains still start",
                spec.name
            ),
        }
    }
    vcpus
}

struct Built {
    domain: Arc<Domain>,
    vcpu: Vcpu,
    entry: u64,
}

fn build(
    id: u32,
    spec: &spec::DomainSpec<'_>,
    module: &basalt_boot::multiboot2::Module<'_>,
    initrds: &[basalt_boot::multiboot2::Module<'_>],
) -> Result<Built, BuildError> {
    let memory = spec.memory.next_multiple_of(BLOCK);
    let bytes = mm::phys_slice(module.start, module.len() as usize)
        .ok_or(BuildError::Spec("module not readable".into()))?;
    let real = spec.boot == spec::BootProtocol::Real;
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
    } else {
        Some(elf::parse(bytes, memory).map_err(BuildError::Image)?)
    };

    let use_1g = crate::arch::x86_64::vmx::negotiated()
        .as_ref()
        .is_ok_and(|c| c.negotiated.ept_1g);
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
    let domain = Arc::new(Domain {
        id,
        name: spec.name.into(),
        memory,
        blocks: Mutex::new(blocks),
        allocations: Mutex::new(allocations),
        ept: Mutex::new(Some(ept)),
        state: Mutex::new(State::Running),
        exit_code: AtomicU32::new(0),
        console: Mutex::new(Vec::new()),
        signature: basalt_guest::cpuid::BASALT_SIGNATURE,
        pinned_cpu: spec
            .cpus
            .filter(|m| *m != 0)
            .map(|m| m.trailing_zeros() as usize),
    });
    // From here on, failures must end the domain to free its memory.
    let fail = |domain: &Arc<Domain>, e: BuildError| {
        LIVE.fetch_add(1, Ordering::SeqCst);
        domain.end(EndReason::Crash);
        ENDED.lock().pop();
        e
    };
    let mut entry = PvhEntry::RealMode { ip: 0x7c00 };
    if image.is_none() {
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
            0,
        )
        .map_err(|e| fail(&domain, BuildError::Layout(alloc::format!("{e}"))))?;
        entry = PvhEntry::Pvh {
            rip: u64::from(image.entry),
            start_info: plan.start_info_gpa,
        };
    }
    let negotiated = match crate::arch::x86_64::vmx::negotiated() {
        Ok(n) => n,
        Err(_) => return Err(fail(&domain, BuildError::Spec("no VT-x".into()))),
    };
    let vpid = NEXT_VPID.fetch_add(1, Ordering::SeqCst) as u16;
    let arch = VmxVcpu::new(negotiated, ept_root, vpid, entry, domain.signature)
        .map_err(|e| fail(&domain, BuildError::Vcpu(e)))?;
    LIVE.fetch_add(1, Ordering::SeqCst);
    CREATED.fetch_add(1, Ordering::SeqCst);
    let vcpu = Vcpu {
        domain: domain.clone(),
        index: 0,
        arch,
        timer_deadline: 0,
        blocked: false,
    };
    let entry = match entry {
        PvhEntry::Pvh { rip, .. } => rip,
        PvhEntry::RealMode { ip } => u64::from(ip),
    };
    Ok(Built {
        domain,
        vcpu,
        entry,
    })
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
