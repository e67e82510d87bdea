//! A domain's memory map (docs/memory.md, "Guest memory"): its RAM, one
//! range from guest-physical 0, taken from Basalt's frame pool in 1 GiB or
//! 2 MiB allocations and zeroed; the stage-2 tables (EPT) that map it; and
//! access to it by guest-physical address (for loaders, hypercall
//! arguments and emulation).
//!
//! Guest memory comes in 1 GiB allocations where a whole 1 GiB of the
//! domain is aligned and the CPU has 1 GiB stage-2 pages, in 2 MiB blocks
//! (order 9) otherwise; `blocks` lists it in 2 MiB steps either way, and the
//! stage-2 tables map each contiguous run with the largest pages alignment
//! allows.

use crate::arch::x86_64::hvm as vendor;
use crate::mm;
use alloc::vec::Vec;
use basalt_frames::Owner;
use basalt_guest::mem::{GuestMemory, MemoryError};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

const GIB: u64 = 1 << 30;
const GIB_ORDER: u32 = 18;
/// The unit of a domain's memory (2 MiB).
pub const BLOCK: u64 = 2 << 20;
const BLOCK_ORDER: u32 = 9;

/// Why a domain's RAM could not be set up.
#[derive(Debug)]
pub enum RamError {
    /// The frame pool has not this much free memory.
    NoMemory(u64),
    /// The stage-2 tables could not be built.
    Map(basalt_paging::MapError),
}

/// A domain's RAM and its stage-2 tables.
pub struct GuestRam {
    /// Bytes of RAM (a whole number of 2 MiB blocks).
    size: u64,
    /// Host-physical address of each 2 MiB block, in guest-physical order.
    blocks: Mutex<Vec<u64>>,
    /// The allocations behind `blocks`: (physical address, order).
    allocations: Mutex<Vec<(u64, u32)>>,
    stage2: Mutex<Option<mm::Stage2>>,
    /// The root of `stage2` (what a vCPU's EPTP or nCR3 names).
    stage2_root: u64,
    /// The RAM pages the domain gave back (`XENMEM_decrease_reservation`,
    /// or a page a grant-table frame replaced): unmapped from `stage2`, no
    /// longer RAM for Basalt's own accesses either; their memory stays in
    /// `allocations` until the domain ends (the pool works in 2 MiB blocks).
    removed: Mutex<Removed>,
    /// Frames of this RAM another domain maps (the control domain's
    /// foreign mappings): while any is, the RAM is not freed.
    pinned: AtomicUsize,
}

/// Pages of RAM per bitmap frame of [`Removed`] (128 MiB of RAM).
const PAGES_PER_BITMAP_FRAME: u64 = 4096 * 8;

/// One bit per RAM page given back, kept in 4 KiB frames of the pool (one
/// per 128 MiB of RAM, taken when a page there is first given back and
/// freed with the domain's RAM), so that what a guest gives back costs
/// Basalt's heap nothing: the list of bitmap frames is sized when the RAM
/// is (8 bytes per 128 MiB) and never grows.
struct Removed {
    /// Host-physical address of each bitmap frame; 0: none yet (no page of
    /// that 128 MiB given back).
    frames: Vec<u64>,
}

impl Removed {
    fn new(ram_size: u64) -> Self {
        let pages = ram_size.div_ceil(4096);
        Self {
            frames: alloc::vec![0; pages.div_ceil(PAGES_PER_BITMAP_FRAME) as usize],
        }
    }

    /// Runs `f` on the byte of the bitmap that holds page `gfn`'s bit, if
    /// its frame exists.
    fn with_byte<R>(&self, gfn: u64, f: impl FnOnce(&mut u8) -> R) -> Option<R> {
        let frame = *self.frames.get((gfn / PAGES_PER_BITMAP_FRAME) as usize)?;
        if frame == 0 {
            return None;
        }
        let p = (mm::DIRECT_MAP_BASE + frame + (gfn % PAGES_PER_BITMAP_FRAME) / 8) as *mut u8;
        // SAFETY: `p` is within a 4 KiB bitmap frame this domain's RAM owns
        // (freed only with it, after the structure is gone), direct-mapped;
        // nothing else refers to that memory, and the structure is only
        // used behind the lock of `GuestRam::removed`.
        let byte = unsafe { &mut *p };
        Some(f(byte))
    }

    /// Whether page `gfn` was given back.
    fn contains(&self, gfn: u64) -> bool {
        self.with_byte(gfn, |b| *b & (1 << (gfn % 8)) != 0)
            .unwrap_or(false)
    }

    /// The first page in `first..=last` that was given back.
    fn first_in(&self, first: u64, last: u64) -> Option<u64> {
        if self.frames.iter().all(|&f| f == 0) {
            return None;
        }
        (first..=last).find(|&gfn| self.contains(gfn))
    }

    /// Unmarks page `gfn` (its removal failed half-way).
    fn clear(&mut self, gfn: u64) {
        self.with_byte(gfn, |b| *b &= !(1 << (gfn % 8)));
    }

    /// Marks page `gfn` (within the RAM) given back, taking its bitmap
    /// frame from the pool if needed (recorded in `allocations`). `false`
    /// if the pool has no frame.
    fn insert(&mut self, gfn: u64, allocations: &Mutex<Vec<(u64, u32)>>) -> bool {
        let index = (gfn / PAGES_PER_BITMAP_FRAME) as usize;
        let Some(slot) = self.frames.get_mut(index) else {
            return false;
        };
        if *slot == 0 {
            let Some(frame) = mm::alloc_zeroed_frame(Owner::Domain) else {
                return false;
            };
            allocations.lock().push((frame, 0));
            *slot = frame;
        }
        self.with_byte(gfn, |b| *b |= 1 << (gfn % 8)).is_some()
    }
}

impl core::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GuestRam")
            .field("size", &self.size)
            .finish()
    }
}

impl GuestRam {
    /// Takes `size` bytes (a multiple of [`BLOCK`]) from the frame pool,
    /// zeroed, and maps them from guest-physical 0. `name` is the domain's,
    /// for the log.
    pub fn allocate(size: u64, name: &str) -> Result<Self, RamError> {
        let use_1g = vendor::stage2_supports_1g();
        let mut blocks = Vec::new();
        let mut allocations: Vec<(u64, u32)> = Vec::new();
        let mut gpa = 0;
        while gpa < size {
            let whole_gib = use_1g && gpa % GIB == 0 && size - gpa >= GIB;
            let got = whole_gib
                .then(|| mm::alloc_frames(GIB_ORDER, Owner::Domain).map(|p| (p, GIB_ORDER, GIB)))
                .flatten()
                .or_else(|| {
                    mm::alloc_frames(BLOCK_ORDER, Owner::Domain).map(|p| (p, BLOCK_ORDER, BLOCK))
                });
            let Some((phys, order, step)) = got else {
                for (p, o) in allocations {
                    mm::free_frames(p, o, Owner::Domain);
                }
                return Err(RamError::NoMemory(size));
            };
            mm::zero_phys(phys, step);
            if order == GIB_ORDER {
                log::debug!(
                    "domain {name}: guest-physical {gpa:#x} is a 1 GiB EPT page at {phys:#x}"
                );
            }
            allocations.push((phys, order));
            blocks.extend((0..step / BLOCK).map(|k| phys + k * BLOCK));
            gpa += step;
        }
        let stage2 = match mm::build_stage2(&blocks, use_1g, vendor::stage2_is_npt()) {
            Ok(ept) => ept,
            Err(e) => {
                for (p, o) in allocations {
                    mm::free_frames(p, o, Owner::Domain);
                }
                return Err(RamError::Map(e));
            }
        };
        Ok(Self {
            size,
            stage2_root: stage2.root(),
            blocks: Mutex::new(blocks),
            allocations: Mutex::new(allocations),
            stage2: Mutex::new(Some(stage2)),
            removed: Mutex::new(Removed::new(size)),
            pinned: AtomicUsize::new(0),
        })
    }

    /// The control domain's RAM, identity-mapped (guest-physical =
    /// host-physical, docs/control-domain.md "Memory ownership"): every page
    /// below `r.end` that is in `r.pieces`; the others (Basalt's image, the
    /// firmware's areas) are holes, as pages given back are. Not zeroed: like
    /// a machine's RAM at boot, it holds what firmware and loader left. Its
    /// frames never return to the pool (dom0's end is the host's).
    pub fn identity(r: &mm::Dom0Ram) -> Result<Self, RamError> {
        let blocks: Vec<u64> = (0..r.end / BLOCK).map(|i| i * BLOCK).collect();
        let use_1g = vendor::stage2_supports_1g();
        let stage2 =
            mm::build_stage2(&blocks, use_1g, vendor::stage2_is_npt()).map_err(RamError::Map)?;
        let ram = Self {
            size: r.end,
            stage2_root: stage2.root(),
            blocks: Mutex::new(blocks),
            allocations: Mutex::new(Vec::new()),
            stage2: Mutex::new(Some(stage2)),
            removed: Mutex::new(Removed::new(r.end)),
            pinned: AtomicUsize::new(0),
        };
        let mut hole_start = 0;
        for &(s, e) in r.pieces.iter().chain(core::iter::once(&(r.end, r.end))) {
            for gpa in (hole_start..s).step_by(4096) {
                ram.remove_page(gpa).map_err(RamError::Map)?;
            }
            hole_start = e;
        }
        Ok(ram)
    }

    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the stage-2 tables.
    pub fn stage2_root(&self) -> u64 {
        self.stage2_root
    }

    /// Reads guest-physical memory.
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let blocks = self.blocks.lock();
        let removed = self.removed.lock();
        View {
            blocks: &blocks,
            size: self.size,
            removed: &removed,
        }
        .read(gpa, out)
    }

    /// Writes guest-physical memory.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let blocks = self.blocks.lock();
        let removed = self.removed.lock();
        View {
            blocks: &blocks,
            size: self.size,
            removed: &removed,
        }
        .write(gpa, bytes)
    }

    /// Maps the host frame `hpa` (owned by the caller, which keeps it alive
    /// as long as the domain) at guest-physical `gpa`, outside the domain's
    /// RAM: Xen's grant-table frames live at frames the guest picks in its
    /// unpopulated address space. Refused for an unaligned address, one in
    /// RAM, on the APIC pages, at or above 2^46, or already mapped.
    pub fn map_extra(&self, gpa: u64, hpa: u64) -> Result<(), basalt_paging::MapError> {
        self.map_extra_as(gpa, hpa, false)
    }

    /// [`Self::map_extra`], read-only when `read_only` (a read-only grant
    /// mapping).
    pub fn map_extra_as(
        &self,
        gpa: u64,
        hpa: u64,
        read_only: bool,
    ) -> Result<(), basalt_paging::MapError> {
        use basalt_paging::MapFlags;
        let rw = MapFlags::READ | MapFlags::WRITE;
        self.map_page(gpa, hpa, if read_only { MapFlags::READ } else { rw })
    }

    /// [`Self::map_extra`] with `flags` (access, cache type): also the
    /// control domain's device pages (`hvm::passthrough`).
    pub fn map_page(
        &self,
        gpa: u64,
        hpa: u64,
        flags: basalt_paging::MapFlags,
    ) -> Result<(), basalt_paging::MapError> {
        use basalt_paging::MapError;
        if !gpa.is_multiple_of(4096)
            || (gpa < self.size && !self.removed.lock().contains(gpa >> 12))
            || gpa >= 1 << 46
            || crate::vcpu::is_device_page(gpa)
        {
            return Err(MapError::UnalignedVirt { virt: gpa });
        }
        let mut stage2 = self.stage2.lock();
        let tables = stage2.as_mut().ok_or(MapError::ZeroLength)?;
        mm::stage2_map_page(tables, gpa, hpa, flags)
    }

    /// Gives the RAM page at guest-physical `gpa` back: it leaves the
    /// stage-2 tables (a guest access then faults like one outside RAM) and
    /// Basalt's own accesses; `Ok(false)` if it was given back already.
    /// The frame stays the domain's until it ends. Stale translations of
    /// the page on other CPUs could only reach this same frame, which the
    /// domain still owns; this CPU's are dropped.
    pub fn remove_page(&self, gpa: u64) -> Result<bool, basalt_paging::MapError> {
        use basalt_paging::MapError;
        if !gpa.is_multiple_of(4096) || gpa >= self.size {
            return Err(MapError::UnalignedVirt { virt: gpa });
        }
        let mut removed = self.removed.lock();
        if removed.contains(gpa >> 12) {
            return Ok(false);
        }
        // The bit first (it may need a frame), then the tables: a failure
        // of either leaves the page as it was.
        if !removed.insert(gpa >> 12, &self.allocations) {
            return Err(MapError::OutOfFrames { virt: Some(gpa) });
        }
        let mut stage2 = self.stage2.lock();
        let unmapped = stage2
            .as_mut()
            .ok_or(MapError::ZeroLength)
            .and_then(|tables| mm::stage2_unmap_page(tables, gpa));
        if let Err(e) = unmapped {
            removed.clear(gpa >> 12);
            return Err(e);
        }
        vendor::flush_stage2_all();
        Ok(true)
    }

    /// The host frame of the RAM page at guest-physical `gpa`, pinned: the
    /// RAM stays allocated (even after the domain ends) until
    /// [`Self::unpin`]. `None` when `gpa` is not RAM or the RAM was taken.
    pub fn pin_frame(&self, gpa: u64) -> Option<u64> {
        let blocks = self.blocks.lock();
        if gpa >= self.size || self.removed.lock().contains(gpa >> 12) {
            return None;
        }
        let block = blocks.get((gpa / BLOCK) as usize)?;
        self.pinned.fetch_add(1, Ordering::SeqCst);
        Some(block + ((gpa % BLOCK) & !0xfff))
    }

    /// Pins the whole RAM (and the frames allocated with it) while Basalt
    /// reads a structure the domain keeps in its own frames (another
    /// domain's grant entries); `false` when the RAM was taken already.
    /// Dropped with [`Self::unpin`].
    pub fn pin(&self) -> bool {
        let blocks = self.blocks.lock();
        if blocks.is_empty() {
            return false;
        }
        self.pinned.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Drops a pin taken by [`Self::pin_frame`] or [`Self::pin`] (once no CPU can hold a
    /// translation to the frame any more).
    pub fn unpin(&self) {
        let _ = self
            .pinned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Frames pinned by other domains.
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::SeqCst)
    }

    /// Removes a mapping made with [`Self::map_extra`] (the caller has
    /// every CPU flush before the frame is reused).
    pub fn unmap_extra(&self, gpa: u64) -> Result<(), basalt_paging::MapError> {
        use basalt_paging::MapError;
        // Where `map_extra` may have mapped: outside the RAM, or over a
        // page given back.
        if !gpa.is_multiple_of(4096)
            || (gpa < self.size && !self.removed.lock().contains(gpa >> 12))
        {
            return Err(MapError::UnalignedVirt { virt: gpa });
        }
        let mut stage2 = self.stage2.lock();
        let tables = stage2.as_mut().ok_or(MapError::ZeroLength)?;
        mm::stage2_unmap_page(tables, gpa)
    }

    /// Allocates a zeroed 4 KiB frame that belongs to the domain (freed
    /// with its RAM, after the stage-2 flush): a grant-table frame. `None`
    /// once the RAM was taken (the domain ended: the control domain may
    /// still ask for its grant table), so no frame outlives the domain.
    pub fn alloc_frame(&self) -> Option<u64> {
        // Held while the frame is recorded: `take` cannot run meanwhile.
        let blocks = self.blocks.lock();
        if blocks.is_empty() {
            return None;
        }
        let hpa = mm::alloc_zeroed_frame(Owner::Domain)?;
        self.allocations.lock().push((hpa, 0));
        Some(hpa)
    }

    /// Runs `f` on the 8-byte word at guest-physical `gpa` as an atomic
    /// (Xen's event bits: the guest changes them concurrently with LOCK-ed
    /// instructions). `None` when `gpa` is not 8-aligned or not RAM. The
    /// block list stays locked meanwhile, so the RAM cannot be taken away.
    pub fn with_atomic_u64<R>(&self, gpa: u64, f: impl FnOnce(&AtomicU64) -> R) -> Option<R> {
        if !gpa.is_multiple_of(8) || gpa >= self.size {
            return None;
        }
        let blocks = self.blocks.lock();
        let removed = self.removed.lock();
        if removed.contains(gpa >> 12) {
            return None;
        }
        let view = View {
            blocks: &blocks,
            size: self.size,
            removed: &removed,
        };
        let p = view.host_ptr(gpa)?;
        // SAFETY: `p` is 8-aligned (the block is, and so is `gpa`) and
        // points at 8 bytes of a block owned by this domain, direct-mapped
        // and kept alive by the lock on `blocks`; an `AtomicU64` has the
        // layout of a `u64`, and every access to the word (the guest's
        // included) is atomic or a plain aligned access.
        let word = unsafe { &*(p as *const AtomicU64) };
        Some(f(word))
    }

    /// Runs `f` with the RAM as a [`GuestMemory`] (for the image loaders).
    pub fn with_memory<R>(&self, f: impl FnOnce(&mut View<'_>) -> R) -> R {
        let blocks = self.blocks.lock();
        let removed = self.removed.lock();
        f(&mut View {
            blocks: &blocks,
            size: self.size,
            removed: &removed,
        })
    }

    /// Takes the RAM and the stage-2 tables out (no vCPU can use them any
    /// more; CPUs may still cache their translations): they are freed by
    /// [`Remains::free`].
    pub fn take(&self) -> Remains {
        self.blocks.lock().clear();
        let allocations = core::mem::take(&mut *self.allocations.lock());
        // The RAM blocks taken from the pool (none for identity-mapped RAM,
        // which stays the host's).
        let bytes = allocations
            .iter()
            .filter(|a| a.1 >= BLOCK_ORDER)
            .map(|a| 4096 << a.1)
            .sum();
        Remains {
            stage2: self.stage2.lock().take(),
            allocations,
            bytes,
        }
    }
}

/// The RAM and stage-2 tables of a dead domain, waiting until no CPU can
/// cache a translation into them.
pub struct Remains {
    stage2: Option<mm::Stage2>,
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

impl Remains {
    /// Bytes of RAM.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Returns the tables and the RAM to the pool. The caller promises that
    /// no CPU holds a translation into them (every CPU flushed since the
    /// domain's last vCPU left, or the domain never ran).
    pub fn free(self) {
        if let Some(stage2) = self.stage2 {
            vendor::flush_stage2_all();
            mm::destroy_stage2(stage2);
        }
        for (phys, order) in self.allocations {
            mm::free_frames(phys, order, Owner::Domain);
        }
    }
}

/// The RAM as a [`GuestMemory`], its block list locked.
pub struct View<'a> {
    blocks: &'a [u64],
    size: u64,
    /// The pages given back ([`GuestRam::remove_page`]).
    removed: &'a Removed,
}

impl View<'_> {
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
        // A page given back is no longer RAM: refused before anything moves.
        if len > 0
            && let Some(frame) = self.removed.first_in(gpa >> 12, (gpa + len - 1) >> 12)
        {
            return Err(MemoryError::OutOfRange {
                gpa: frame << 12,
                len: 4096,
                size: self.size,
            });
        }
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

impl GuestMemory for View<'_> {
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
