//! Basalt's memory manager (docs/memory.md): its own page tables, the direct
//! map, the frame allocator, the heap and the per-CPU stacks.
//!
//! The pure parts are `basalt-frames` (buddy allocator) and `basalt-paging`
//! (page-table builder); this module is the thin layer that gives them
//! memory (through the boot identity map at first, the direct map after)
//! and loads CR3.

mod heap;

use crate::arch::x86_64::percpu::{Stack, Stacks};
use crate::arch::x86_64::{self as x86, cpu};
use basalt_boot::FixedVec;
use basalt_boot::elf::{self, SymbolTables, Symbols};
use basalt_boot::identity::{self, Ranges};
use basalt_boot::memmap::{ByteSize, RegionKind};
use basalt_boot::multiboot2::BootInfo;
use basalt_frames::{FrameAllocator, Link, LinkStore, Owner, PAGE_SIZE, meta_bytes_needed};
use basalt_paging::{FrameSource, MapError, MapFlags, PageSize, PageTable, TableMemory, X86};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, Once};

/// Start of the direct map of physical memory.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Start of the heap's virtual range.
pub const HEAP_BASE: u64 = 0xffff_e000_0000_0000;
/// The heap's virtual range is at most this large.
pub const HEAP_MAX: u64 = 64 << 30;
/// Start of the per-CPU stack area.
pub const STACKS_BASE: u64 = 0xffff_f000_0000_0000;
/// Virtual space per CPU in the stack area.
pub const CPU_STACK_STRIDE: u64 = 256 << 10;
/// Size of a CPU's main stack.
pub const MAIN_STACK_SIZE: u64 = 64 << 10;
/// Size of each IST stack.
pub const IST_STACK_SIZE: u64 = 16 << 10;
/// Where the image is linked: KERNEL_VMA + physical address.
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

/// Offset from physical to virtual addresses for `phys_*`: 0 while the boot
/// identity map is in use, [`DIRECT_MAP_BASE`] after the switch.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

struct Mm {
    frames: FrameAllocator<'static, DirectLinks>,
    table: PageTable<X86>,
    max_page: PageSize,
    /// Physical ranges the allocator must never hand out (for reports).
    reserved: FixedVec<(u64, u64), 80>,
}

static MM: Mutex<Option<Mm>> = Mutex::new(None);
static SYMBOLS: Once<Symbols<'static>> = Once::new();

// The boot stack in .bss (entry.S), used until the boot CPU switches to its
// own stack, and the section bounds from linker.ld.
unsafe extern "C" {
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __bss_end: u8;
}

fn sym(s: *const u8) -> u64 {
    s as u64
}

/// Whether `addr` is inside the boot stack.
pub fn in_boot_stack(addr: u64) -> bool {
    (sym(&raw const boot_stack_bottom)..sym(&raw const boot_stack_top)).contains(&addr)
}

/// Frame links written into free frames through the direct map.
struct DirectLinks;

impl LinkStore for DirectLinks {
    fn read(&self, frame: u64) -> Link {
        let p = (DIRECT_MAP_BASE + frame * PAGE_SIZE) as *const [u64; 2];
        // SAFETY: the allocator only names frames of usable RAM it manages,
        // all of which the direct map covers; a free frame belongs to nobody
        // else.
        Link::from_raw(unsafe { core::ptr::read_volatile(p) })
    }

    fn write(&mut self, frame: u64, link: Link) {
        let p = (DIRECT_MAP_BASE + frame * PAGE_SIZE) as *mut [u64; 2];
        // SAFETY: as in `read`: the frame is free and direct-mapped.
        unsafe { core::ptr::write_volatile(p, link.to_raw()) }
    }
}

/// Page-table memory through a fixed physical-to-virtual offset.
struct OffsetTables(u64);

impl TableMemory for OffsetTables {
    fn read_entry(&self, table_phys: u64, index: usize) -> u64 {
        let p = (self.0 + table_phys + index as u64 * 8) as *const u64;
        // SAFETY: page tables live in RAM below 4 GiB (bootstrap, identity
        // map) or anywhere in RAM (direct map); `index` < 512.
        unsafe { core::ptr::read_volatile(p) }
    }

    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64) {
        let p = (self.0 + table_phys + index as u64 * 8) as *mut u64;
        // SAFETY: as in `read_entry`; the table belongs to Basalt's tables.
        unsafe { core::ptr::write_volatile(p, value) }
    }
}

/// Table frames from the buddy allocator, zeroed through the direct map, counted for
/// `Owner::PageTables` (or the heap's own, which grow with it and are never freed, so that
/// the end-of-run accounting of page tables sees only the domains').
struct AllocatorTables<'a>(&'a mut FrameAllocator<'static, DirectLinks>, Owner);

impl FrameSource for AllocatorTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let phys = self.0.alloc_frame(self.1).ok()?;
        // SAFETY: a frame just allocated is ours and direct-mapped.
        unsafe {
            core::ptr::write_bytes((DIRECT_MAP_BASE + phys) as *mut u8, 0, PAGE_SIZE as usize)
        };
        Some(phys)
    }

    fn free_table(&mut self, phys: u64) {
        let _ = self.0.free_frame(phys, self.1);
    }
}

/// Bootstrap frames: handed out downward from `next` to `floor`, reached
/// through the boot identity map (below 4 GiB).
struct BumpFrames {
    floor: u64,
    next: u64,
}

impl FrameSource for BumpFrames {
    fn alloc_table(&mut self) -> Option<u64> {
        if self.next < self.floor + PAGE_SIZE {
            return None;
        }
        self.next -= PAGE_SIZE;
        // SAFETY: [floor, top) is usable RAM below 4 GiB outside every
        // reserved range, identity-mapped by the boot tables.
        unsafe { core::ptr::write_bytes(self.next as *mut u8, 0, PAGE_SIZE as usize) };
        Some(self.next)
    }

    fn free_table(&mut self, _phys: u64) {}
}

/// Why the memory manager cannot start.
#[derive(Debug)]
pub enum MmError {
    /// No room below 4 GiB for the frame metadata and first tables.
    NoBootstrapMemory {
        /// Bytes needed.
        needed: u64,
    },
    /// Building the address space failed.
    Map(MapError),
    /// The control domain's identity-mapped RAM does not fit, or the boot
    /// data in its range has nowhere to go.
    Dom0 {
        /// Bytes asked for.
        bytes: u64,
    },
}

impl core::fmt::Display for MmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoBootstrapMemory { needed } => write!(
                f,
                "no free RAM range below 4 GiB holds the {} Basalt needs for frame metadata and \
                 its first page tables; the machine has too little low memory",
                ByteSize(*needed)
            ),
            Self::Map(e) => write!(f, "building the hypervisor's page tables failed: {e}"),
            Self::Dom0 { bytes } => write!(
                f,
                "the control domain's {} of identity-mapped RAM, Basalt's own memory and the boot \
                 modules moved above it do not fit in this machine's RAM below 4 GiB: lower \
                 dom0_mem= (or memory= on the role=control module)",
                ByteSize(*bytes)
            ),
        }
    }
}

/// Physical ranges Basalt must never allocate from.
fn reserved_ranges(
    info: &BootInfo<'_>,
    symtabs: Option<SymbolTables>,
    info_phys: u64,
) -> FixedVec<(u64, u64), 80> {
    let mut r = FixedVec::new();
    // Never allocated: BIOS data, EBDA, option ROMs on BIOS, whatever the
    // firmware left on UEFI; the AP start-up page is picked in it.
    let _ = r.push((0, 1 << 20));
    let _ = r.push(x86::image_phys_range());
    let _ = r.push((info_phys, info_phys + u64::from(info.total_size)));
    for m in info.modules.iter() {
        let _ = r.push((m.start, m.end));
    }
    if let Some(t) = symtabs {
        let _ = r.push((t.symtab.0, t.symtab.0 + t.symtab.1));
        let _ = r.push((t.strtab.0, t.strtab.0 + t.strtab.1));
    }
    r
}

/// Usable RAM minus the reserved ranges, page-aligned.
fn free_ranges(info: &BootInfo<'_>, reserved: &[(u64, u64)]) -> Ranges {
    let mut out = Ranges::new();
    for (start, end) in info.memory_map.usable() {
        let mut pieces = Ranges::new();
        let _ = pieces.push((start, end));
        for &(rs, re) in reserved {
            pieces = identity::cut(&pieces, rs, re);
        }
        for &p in pieces.iter() {
            let _ = out.push(p);
        }
    }
    out
}

fn has_1g_pages() -> bool {
    cpu::max_leaves().1 >= 0x8000_0001 && cpu::cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// Maps the image with per-section permissions.
fn map_image(
    table: &mut PageTable<X86>,
    mem: &mut OffsetTables,
    frames: &mut impl FrameSource,
) -> Result<(), MapError> {
    let g = MapFlags::GLOBAL;
    let sections = [
        (
            sym(&raw const __text_start),
            sym(&raw const __text_end),
            MapFlags::READ | MapFlags::EXECUTE | g,
        ),
        (
            sym(&raw const __rodata_start),
            sym(&raw const __rodata_end),
            MapFlags::READ | g,
        ),
        (
            sym(&raw const __data_start),
            sym(&raw const __bss_end).next_multiple_of(PAGE_SIZE),
            MapFlags::READ | MapFlags::WRITE | g,
        ),
    ];
    for (start, end, flags) in sections {
        if end > start {
            table.map(
                mem,
                frames,
                start,
                start - KERNEL_VMA,
                end - start,
                flags,
                PageSize::Size4K,
            )?;
        }
    }
    Ok(())
}

/// The RAM the direct map covers: usable and ACPI regions, and the first MiB,
/// as page-aligned disjoint ranges.
fn direct_map_ranges(info: &BootInfo<'_>) -> FixedVec<(u64, u64), 256> {
    let mut out: FixedVec<(u64, u64), 256> = FixedVec::new();
    let _ = out.push((0, 1 << 20));
    for r in info.memory_map.regions() {
        if !matches!(
            r.kind,
            RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
        ) {
            continue;
        }
        let start = r.start - r.start % PAGE_SIZE;
        let end = r.end.next_multiple_of(PAGE_SIZE);
        match out.as_mut_slice().last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => {
                let _ = out.push((start, end));
            }
        }
    }
    out
}

/// The control domain's identity-mapped RAM (docs/control-domain.md,
/// "Memory ownership"): guest-physical = host-physical below `end`, on the
/// `pieces` of usable host RAM there that are not Basalt's image.
#[derive(Debug)]
pub struct Dom0Ram {
    /// One past its last byte (2 MiB-aligned).
    pub end: u64,
    /// Its RAM, page-aligned, ascending.
    pub pieces: Ranges,
}

static DOM0_RAM: Once<Dom0Ram> = Once::new();
static AP_START_PAGE: AtomicU64 = AtomicU64::new(0);

/// A page below 1 MiB for the APs' start-up code: usable in the firmware's
/// map, away from the image and the boot data (`MemoryMap::low_page`).
pub fn ap_start_page() -> Option<u64> {
    Some(AP_START_PAGE.load(Ordering::Relaxed)).filter(|&p| p != 0)
}

/// The control domain's identity-mapped RAM, if `mm::init` set one aside.
pub fn dom0_ram() -> Option<&'static Dom0Ram> {
    DOM0_RAM.get()
}

/// Builds Basalt's address space, switches to it and starts the frame
/// allocator and the heap. `info` must come from the boot identity map; read
/// the boot information again afterwards (through [`phys_slice`]) at the
/// address returned: with `dom0` bytes of identity-mapped RAM for the control
/// domain (the low range of RAM, never given to the allocator), the boot
/// information and the modules in that range are moved above it first.
pub fn init(info: &BootInfo<'_>, info_phys: u64, dom0: Option<u64>) -> Result<u64, MmError> {
    let symtabs = info
        .elf_sections
        .and_then(|s| elf::find_symbol_tables(s.headers, s.num as usize, s.entsize as usize));
    let mut reserved = reserved_ranges(info, symtabs, info_phys);
    // The first entry is the whole first MiB; the page is picked in it.
    let ap_page = info.memory_map.low_page(&reserved[1..]).unwrap_or(0);
    AP_START_PAGE.store(ap_page, Ordering::Relaxed);
    let mut free = free_ranges(info, &reserved);
    let span_end = info.memory_map.usable_end();
    let meta_len = meta_bytes_needed(span_end / PAGE_SIZE).next_multiple_of(PAGE_SIZE);
    let tables_budget = 128 * PAGE_SIZE;
    let needed = meta_len + tables_budget;

    // dom0's range leaves the allocator's ranges; what must move out of it
    // (the boot information, then each module) is placed above it.
    let mut dom0_end = 0;
    // (from, length, to, module index or usize::MAX for the boot information)
    let mut moves: FixedVec<(u64, u64, u64, usize), 66> = FixedVec::new();
    let mut sizes = [0u64; 66];
    if let Some(bytes) = dom0 {
        let mut usable = Ranges::new();
        for r in info.memory_map.usable() {
            let _ = usable.push(r);
        }
        dom0_end = identity::identity_end(&usable, x86::image_phys_range(), bytes)
            .ok_or(MmError::Dom0 { bytes })?;
        free = identity::cut(&free, 0, dom0_end);
        let _ = reserved.push((0, dom0_end));
        let boot_info = (info_phys, info_phys + u64::from(info.total_size));
        let modules = info.modules.iter().map(|m| (m.start, m.end)).enumerate();
        for (i, (s, e)) in core::iter::once((usize::MAX, boot_info)).chain(modules) {
            if s < dom0_end {
                sizes[moves.len()] = e - s;
                let _ = moves.push((s, e - s, 0, i));
            }
        }
    }
    // Bootstrap area: the top of the highest free range below 4 GiB that fits.
    let area = free
        .iter()
        .rev()
        .map(|&(s, e)| (s, e.min(1 << 32)))
        .find(|&(s, e)| e > s && e - s >= needed)
        .ok_or(MmError::NoBootstrapMemory { needed })?;
    free = identity::cut(&free, area.1 - needed, area.1);
    if !moves.is_empty() {
        let mut at = [0u64; 66];
        identity::place_high(&free, 1 << 32, &sizes[..moves.len()], &mut at).ok_or(
            MmError::Dom0 {
                bytes: dom0.unwrap_or(0),
            },
        )?;
        for (m, &to) in moves.as_mut_slice().iter_mut().zip(at.iter()) {
            m.2 = to;
            free = identity::cut(&free, to, to + m.1);
            let _ = reserved.push((to, to + m.1));
        }
    }
    let meta_phys = area.1 - meta_len;
    let mut bump = BumpFrames {
        floor: area.1 - needed,
        next: meta_phys,
    };
    let mut mem = OffsetTables(0);

    let max_page = if has_1g_pages() {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let mut table = PageTable::<X86>::new(&mut bump).map_err(MmError::Map)?;
    map_image(&mut table, &mut mem, &mut bump).map_err(MmError::Map)?;
    for &(start, end) in direct_map_ranges(info).iter() {
        let flags = MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL;
        table
            .map(
                &mut mem,
                &mut bump,
                DIRECT_MAP_BASE + start,
                start,
                end - start,
                flags,
                max_page,
            )
            .map_err(MmError::Map)?;
    }
    let bump_low = bump.next;

    // SAFETY: the new tables map the running code (image), its stack (.bss),
    // and all RAM through the direct map; the root is below 4 GiB.
    unsafe { load_cr3(table.root()) };
    PHYS_OFFSET.store(DIRECT_MAP_BASE, Ordering::SeqCst);

    let mut info_at = info_phys;
    for &(from, len, to, index) in moves.iter() {
        // SAFETY: both ranges are usable RAM, direct-mapped, disjoint (the
        // target was cut out of the free ranges, which exclude the source),
        // and nothing else uses either yet.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (DIRECT_MAP_BASE + from) as *const u8,
                (DIRECT_MAP_BASE + to) as *mut u8,
                len as usize,
            );
        }
        if index == usize::MAX {
            info_at = to;
        } else {
            // SAFETY: the boot information (where it is now) is RAM
            // reserved for it, direct-mapped; nothing else refers to it
            // until `init` returns, and this reference ends here.
            let copy = unsafe {
                core::slice::from_raw_parts_mut(
                    (DIRECT_MAP_BASE + info_at) as *mut u8,
                    info.total_size as usize,
                )
            };
            basalt_boot::multiboot2::relocate_module(copy, index, to as u32);
        }
    }
    if dom0.is_some() {
        let mut pieces = Ranges::new();
        for (s, e) in info.memory_map.usable() {
            let _ = pieces.push((
                s.next_multiple_of(PAGE_SIZE),
                e.min(dom0_end) & !(PAGE_SIZE - 1),
            ));
        }
        let (is, ie) = x86::image_phys_range();
        let mut kept = Ranges::new();
        for &p in identity::cut(&pieces, is, ie).iter().filter(|p| p.0 < p.1) {
            let _ = kept.push(p);
        }
        DOM0_RAM.call_once(|| Dom0Ram {
            end: dom0_end,
            pieces: kept,
        });
    }

    // SAFETY: [meta_phys, meta_phys + meta_len) is bootstrap RAM given to
    // nobody else, direct-mapped, and lives forever.
    let meta = unsafe {
        core::slice::from_raw_parts_mut((DIRECT_MAP_BASE + meta_phys) as *mut u8, meta_len as usize)
    };
    meta.fill(0);
    let mut frames = FrameAllocator::new(0, meta, DirectLinks);
    // Everything free but the bootstrap area, which holds the frame metadata
    // and the page tables (cut out of `free` above): adding it would write
    // free-list links into them. Its used part is claimed instead.
    for &(s, e) in free.iter() {
        let _ = frames.add_free_range(s, e);
    }
    if bump_low > area.1 - needed {
        let _ = frames.add_free_range(area.1 - needed, bump_low);
    }
    let _ = frames.claim_range(bump_low, meta_phys, Owner::PageTables);
    let _ = frames.claim_range(meta_phys, meta_phys + meta_len, Owner::FrameMeta);

    *MM.lock() = Some(Mm {
        frames,
        table,
        max_page,
        reserved,
    });
    // Symbols inside dom0's range are dom0's memory now.
    if let Some(t) = symtabs.filter(|t| t.symtab.0.min(t.strtab.0) >= dom0_end) {
        let symtab = phys_slice(t.symtab.0, t.symtab.1 as usize);
        let strtab = phys_slice(t.strtab.0, t.strtab.1 as usize);
        if let (Some(a), Some(b)) = (symtab, strtab) {
            SYMBOLS.call_once(|| Symbols::new(a, b));
        }
    }
    heap::init()?;
    Ok(info_at)
}

/// Loads CR3.
///
/// # Safety
///
/// `root` must be a complete PML4 that maps everything the CPU is about to use.
pub unsafe fn load_cr3(root: u64) {
    // SAFETY: the caller guarantees the tables are complete.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags)) };
}

/// The root of Basalt's page tables (for APs).
pub fn page_table_root() -> u64 {
    MM.lock().as_ref().map_or(0, |m| m.table.root())
}

/// The symbol table, when GRUB loaded it.
pub fn symbols() -> Option<&'static Symbols<'static>> {
    SYMBOLS.get()
}

/// `len` bytes of physical memory through the current mapping (identity
/// before the switch, direct map after), when the range is RAM Basalt maps.
pub fn phys_slice(phys: u64, len: usize) -> Option<&'static [u8]> {
    let offset = PHYS_OFFSET.load(Ordering::SeqCst);
    if offset == 0 {
        // SAFETY: boot time: callers read boot information and modules.
        return unsafe { x86::boot_phys_slice(phys, len) };
    }
    let end = phys.checked_add(len as u64)?;
    let mm = MM.lock();
    let m = mm.as_ref()?;
    let mut page = phys - phys % PAGE_SIZE;
    while page < end {
        m.table
            .translate(&OffsetTables(DIRECT_MAP_BASE), DIRECT_MAP_BASE + page)?;
        page += PAGE_SIZE;
    }
    // SAFETY: every page of the range is mapped in the direct map (checked
    // above); callers read firmware tables and boot data nobody writes.
    Some(unsafe { core::slice::from_raw_parts((offset + phys) as *const u8, len) })
}

/// `len` bytes at `phys` as a byte array, when mapped (see [`phys_slice`]).
pub fn phys_bytes<const N: usize>(phys: u64, len: usize) -> Option<[u8; N]> {
    let slice = phys_slice(phys, len.min(N))?;
    let mut out = [0; N];
    out[..slice.len()].copy_from_slice(slice);
    Some(out)
}

fn map_into_direct(phys: u64, len: u64, flags: MapFlags) -> u64 {
    let start = phys - phys % PAGE_SIZE;
    let end = (phys + len.max(1)).next_multiple_of(PAGE_SIZE);
    let mut guard = MM.lock();
    if let Some(m) = guard.as_mut() {
        let mut mem = OffsetTables(DIRECT_MAP_BASE);
        let mut page = start;
        while page < end {
            if m.table.translate(&mem, DIRECT_MAP_BASE + page).is_none() {
                let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
                let _ = m.table.map(
                    &mut mem,
                    &mut frames,
                    DIRECT_MAP_BASE + page,
                    page,
                    PAGE_SIZE,
                    flags,
                    PageSize::Size4K,
                );
            }
            page += PAGE_SIZE;
        }
    }
    DIRECT_MAP_BASE + phys
}

/// Makes `[phys, phys + len)` readable through the direct map (write-back;
/// for firmware tables outside the RAM regions) and returns its address.
pub fn map_phys_for_read(phys: u64, len: u64) -> u64 {
    map_into_direct(phys, len, MapFlags::READ | MapFlags::GLOBAL)
}

/// Makes `[phys, phys + len)` writable through the direct map (write-back;
/// for RAM outside the usable regions, e.g. the AP trampoline page) and
/// returns its address.
pub fn map_phys_for_write(phys: u64, len: u64) -> u64 {
    map_into_direct(
        phys,
        len,
        MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL,
    )
}

/// Heap bytes mapped so far.
pub fn heap_size() -> usize {
    heap::size()
}

/// Maps device registers at `phys` uncached in the direct map and returns
/// their virtual address.
pub fn map_mmio(phys: u64, len: u64) -> u64 {
    map_into_direct(
        phys,
        len,
        MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL | MapFlags::UNCACHEABLE,
    )
}

/// Maps (or, with `map = false`, unmaps) one page at the same virtual and
/// physical address, executable: the AP trampoline page.
pub fn identity_map_page(phys: u64, map: bool) -> Result<(), MapError> {
    let mut guard = MM.lock();
    let m = guard.as_mut().ok_or(MapError::ZeroLength)?;
    let mut mem = OffsetTables(DIRECT_MAP_BASE);
    let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
    if map {
        m.table.map(
            &mut mem,
            &mut frames,
            phys,
            phys,
            PAGE_SIZE,
            MapFlags::READ | MapFlags::EXECUTE,
            PageSize::Size4K,
        )
    } else {
        let r = m.table.unmap(&mut mem, &mut frames, phys, PAGE_SIZE);
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(phys));
        r
    }
}

/// Allocates and maps one CPU's stacks, each above an unmapped guard page.
pub fn alloc_stacks(cpu: usize) -> Option<Stacks> {
    let base = STACKS_BASE + cpu as u64 * CPU_STACK_STRIDE;
    let mut next = base;
    let mut one = |size: u64| -> Option<Stack> {
        let guard = next;
        let bottom = guard + PAGE_SIZE;
        let top = bottom + size;
        next = top;
        let order = (size / PAGE_SIZE).trailing_zeros();
        let mut mm = MM.lock();
        let m = mm.as_mut()?;
        let phys = m.frames.alloc(order, Owner::Stacks).ok()?;
        let mut mem = OffsetTables(DIRECT_MAP_BASE);
        let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
        m.table
            .map(
                &mut mem,
                &mut frames,
                bottom,
                phys,
                size,
                MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL,
                PageSize::Size4K,
            )
            .ok()?;
        Some(Stack { guard, bottom, top })
    };
    let main = one(MAIN_STACK_SIZE)?;
    let ist = [
        one(IST_STACK_SIZE)?,
        one(IST_STACK_SIZE)?,
        one(IST_STACK_SIZE)?,
    ];
    Some(Stacks { main, ist })
}

/// Maps more heap at `virt` (page-aligned) for `len` bytes; used by the heap.
fn grow_heap(virt: u64, len: u64) -> bool {
    let mut guard = MM.lock();
    let Some(m) = guard.as_mut() else {
        return false;
    };
    let mut page = virt;
    while page < virt + len {
        let phys = match m.frames.alloc_frame(Owner::Heap) {
            Ok(phys) => phys,
            Err(e) => {
                log::error!("heap: cannot grow: {e}");
                return false;
            }
        };
        let mut mem = OffsetTables(DIRECT_MAP_BASE);
        let mut frames = AllocatorTables(&mut m.frames, Owner::Heap);
        let flags = MapFlags::READ | MapFlags::WRITE | MapFlags::GLOBAL;
        if let Err(e) = m.table.map(
            &mut mem,
            &mut frames,
            page,
            phys,
            PAGE_SIZE,
            flags,
            PageSize::Size4K,
        ) {
            log::error!("heap: cannot map {page:#x}: {e}");
            let _ = m.frames.free_frame(phys, Owner::Heap);
            return false;
        }
        page += PAGE_SIZE;
    }
    true
}

/// The allocator's statistics.
pub fn stats() -> Option<basalt_frames::Stats> {
    MM.lock().as_ref().map(|m| m.frames.stats())
}

/// What a virtual address is, for fault reports.
pub fn describe_address(addr: u64) -> &'static str {
    let text = sym(&raw const __text_start)..sym(&raw const __text_end);
    let rodata = sym(&raw const __rodata_start)..sym(&raw const __rodata_end);
    let data = sym(&raw const __data_start)..sym(&raw const __bss_end);
    if addr < PAGE_SIZE {
        "the null page: a null pointer"
    } else if text.contains(&addr) {
        "hypervisor text, which is read-only"
    } else if rodata.contains(&addr) {
        "hypervisor read-only data"
    } else if data.contains(&addr) {
        "hypervisor data"
    } else if (0x0000_8000_0000_0000..0xffff_8000_0000_0000).contains(&addr) {
        "a non-canonical address"
    } else if (DIRECT_MAP_BASE..DIRECT_MAP_BASE + (1 << 46)).contains(&addr) {
        "the direct map of physical memory"
    } else if (HEAP_BASE..HEAP_BASE + HEAP_MAX).contains(&addr) {
        "the heap"
    } else if (STACKS_BASE..STACKS_BASE + (1 << 40)).contains(&addr) {
        if (addr - STACKS_BASE) % CPU_STACK_STRIDE < PAGE_SIZE {
            "a stack guard page"
        } else {
            "the per-CPU stacks"
        }
    } else if addr < 0x0000_8000_0000_0000 {
        "the lower half, which Basalt does not map"
    } else {
        "unmapped hypervisor space"
    }
}

/// Logs the memory layout and the allocator's accounting.
pub fn log_summary() {
    let guard = MM.lock();
    let Some(m) = guard.as_ref() else { return };
    log::info!(
        "memory: own page tables at {:#x} (largest direct-map page {}), NX and write-protect on",
        m.table.root(),
        match m.max_page {
            PageSize::Size1G => "1 GiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size4K => "4 KiB",
        }
    );
    log::info!(
        "memory: {} ranges reserved from the allocator (first MiB, image, boot data, modules, symbols)",
        m.reserved.len()
    );
    match symbols() {
        Some(s) => log::info!(
            "symbols: {} entries from the boot loader's copy of .symtab",
            s.len()
        ),
        None => log::warn!(
            "symbols: the boot loader passed no symbol table; fault reports show addresses only"
        ),
    }
    let mut out = LogLines {
        prefix: "",
        line: crate::StackString::new(),
    };
    let _ = core::fmt::Write::write_fmt(&mut out, format_args!("{}\n", m.frames.stats()));
}

/// A `fmt::Write` that logs each line it is given at info level.
struct LogLines {
    prefix: &'static str,
    line: crate::StackString<256>,
}

impl core::fmt::Write for LogLines {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                log::info!("{}{}", self.prefix, self.line.as_str());
                self.line = crate::StackString::new();
            }
            let _ = core::fmt::Write::write_str(&mut self.line, part);
        }
        Ok(())
    }
}

/// Allocates one zeroed frame for `owner`.
pub fn alloc_zeroed_frame(owner: Owner) -> Option<u64> {
    let phys = MM.lock().as_mut()?.frames.alloc_frame(owner).ok()?;
    zero_phys(phys, PAGE_SIZE);
    Some(phys)
}

/// Allocates `2^order` frames for `owner` (not zeroed).
pub fn alloc_frames(order: u32, owner: Owner) -> Option<u64> {
    MM.lock().as_mut()?.frames.alloc(order, owner).ok()
}

/// Frees `2^order` frames at `phys`.
pub fn free_frames(phys: u64, order: u32, owner: Owner) {
    if let Some(m) = MM.lock().as_mut()
        && let Err(e) = m.frames.free(phys, order, owner)
    {
        log::error!("memory: {e}");
    }
}

/// Zeroes `len` bytes of RAM at `phys` through the direct map.
pub fn zero_phys(phys: u64, len: u64) {
    // SAFETY: callers pass frames they own (just allocated), direct-mapped.
    unsafe { core::ptr::write_bytes((DIRECT_MAP_BASE + phys) as *mut u8, 0, len as usize) };
}

/// Writes a u32 at `phys` (a frame the caller owns).
pub fn write_phys_u32(phys: u64, value: u32) {
    // SAFETY: as for `zero_phys`; 4-byte aligned by the callers (frame starts).
    unsafe { core::ptr::write_volatile((DIRECT_MAP_BASE + phys) as *mut u32, value) };
}

/// A frame the caller owns, as a byte array.
pub fn phys_page_mut(phys: u64) -> &'static mut [u8; 4096] {
    // SAFETY: callers pass frames they allocated and own exclusively (VMX
    // bitmaps), direct-mapped for the rest of Basalt's life.
    unsafe { &mut *((DIRECT_MAP_BASE + phys) as *mut [u8; 4096]) }
}

/// Runs `$body` on the page table of a [`Stage2`], whichever format it is
/// (`PageTable<Ept>` and `PageTable<Npt>` share their methods).
macro_rules! on_stage2 {
    ($tables:expr, $t:ident => $body:expr) => {
        match $tables {
            Stage2::Ept($t) => $body,
            Stage2::Npt($t) => $body,
        }
    };
}

/// A domain's stage-2 translation: EPT (VT-x) or a nested page table
/// (AMD-V), whichever the machine's virtualization backend walks.
#[derive(Debug)]
pub enum Stage2 {
    /// Intel's extended page tables.
    Ept(PageTable<basalt_paging::Ept>),
    /// AMD's nested page tables (the ordinary x86 format).
    Npt(PageTable<basalt_paging::Npt>),
}

impl Stage2 {
    /// The root table's physical address (EPTP without its low bits, or
    /// N_CR3).
    pub fn root(&self) -> u64 {
        on_stage2!(self, t => t.root())
    }
}

/// Builds stage-2 tables (nested page tables when `npt`, else EPT) mapping
/// guest-physical `i * 2 MiB` to `blocks[i]`, each run of physically
/// contiguous blocks with the largest pages its alignment allows (1 GiB
/// when `allow_1g`, else 2 MiB).
pub fn build_stage2(blocks: &[u64], allow_1g: bool, npt: bool) -> Result<Stage2, MapError> {
    if npt {
        build_tables::<basalt_paging::Npt>(blocks, allow_1g).map(Stage2::Npt)
    } else {
        build_tables::<basalt_paging::Ept>(blocks, allow_1g).map(Stage2::Ept)
    }
}

fn build_tables<F: basalt_paging::EntryFormat>(
    blocks: &[u64],
    allow_1g: bool,
) -> Result<PageTable<F>, MapError> {
    const BLOCK: u64 = 2 << 20;
    let mut guard = MM.lock();
    let m = guard.as_mut().ok_or(MapError::ZeroLength)?;
    let mut mem = OffsetTables(DIRECT_MAP_BASE);
    let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
    let mut ept = PageTable::<F>::new(&mut frames)?;
    let flags = MapFlags::READ | MapFlags::WRITE | MapFlags::EXECUTE;
    let max_page = if allow_1g {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let mut i = 0;
    while i < blocks.len() {
        let mut run = 1;
        while i + run < blocks.len() && blocks[i + run] == blocks[i] + run as u64 * BLOCK {
            run += 1;
        }
        let gpa = i as u64 * BLOCK;
        if let Err(e) = ept.map(
            &mut mem,
            &mut frames,
            gpa,
            blocks[i],
            run as u64 * BLOCK,
            flags,
            max_page,
        ) {
            ept.destroy(&mem, &mut frames);
            return Err(e);
        }
        i += run;
    }
    Ok(ept)
}

/// Maps the 4 KiB host frame `hpa` at guest-physical `gpa` in a domain's
/// stage-2 tables (a grant-table frame, a foreign page, a device page of the
/// control domain) with `flags` (access and cache type). The page must not
/// be mapped yet: a new translation needs no flush (nothing caches an absent
/// one).
pub fn stage2_map_page(
    tables: &mut Stage2,
    gpa: u64,
    hpa: u64,
    flags: MapFlags,
) -> Result<(), MapError> {
    let mut guard = MM.lock();
    let m = guard.as_mut().ok_or(MapError::ZeroLength)?;
    let mut mem = OffsetTables(DIRECT_MAP_BASE);
    let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
    on_stage2!(tables, t => t.map(&mut mem, &mut frames, gpa, hpa, PAGE_SIZE, flags, PageSize::Size4K))
}

/// Removes the 4 KiB mapping at guest-physical `gpa` from a domain's
/// stage-2 tables. The caller makes every CPU flush its stage-2
/// translations before the frame that was mapped is reused.
pub fn stage2_unmap_page(tables: &mut Stage2, gpa: u64) -> Result<(), MapError> {
    let mut guard = MM.lock();
    let m = guard.as_mut().ok_or(MapError::ZeroLength)?;
    let mut mem = OffsetTables(DIRECT_MAP_BASE);
    let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
    on_stage2!(tables, t => t.unmap(&mut mem, &mut frames, gpa, PAGE_SIZE))
}

/// Frees a domain's stage-2 tables. The caller has flushed every CPU's
/// translations derived from them (INVEPT, or a full ASID flush on SVM).
pub fn destroy_stage2(tables: Stage2) {
    let mut guard = MM.lock();
    if let Some(m) = guard.as_mut() {
        let mem = OffsetTables(DIRECT_MAP_BASE);
        let mut frames = AllocatorTables(&mut m.frames, Owner::PageTables);
        on_stage2!(tables, t => t.destroy(&mem, &mut frames));
    }
}
