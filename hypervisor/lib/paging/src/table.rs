//! The format-independent walker: [`PageTable`].

use core::marker::PhantomData;

use crate::{
    ENTRIES_PER_TABLE, EntryFormat, FrameSource, MapError, MapFlags, PHYS_LIMIT, PageSize,
    TABLE_SIZE, TableMemory, Translation,
};

/// The level of the root table (PML4 / EPT PML4).
const ROOT_LEVEL: u8 = 4;

/// Most tables one [`PageTable::unmap`] or [`PageTable::protect`] can need for splits: only the
/// leaves containing the first and the last address of the range can be partly covered, and
/// each split goes at most two levels down (1 GiB → 2 MiB → 4 KiB).
const MAX_SPLITS: usize = 4;

/// Bit position of the lowest address bit that indexes a table at `level` (12, 21, 30, 39).
const fn shift(level: u8) -> u32 {
    12 + 9 * (level.saturating_sub(1) as u32)
}

/// The offset mask of the region one entry at `level` covers.
const fn slot_mask(level: u8) -> u64 {
    (1 << shift(level)) - 1
}

/// The index of the entry for `addr` in a table at `level`.
const fn index(addr: u64, level: u8) -> usize {
    ((addr >> shift(level)) as usize) & (ENTRIES_PER_TABLE - 1)
}

/// The part of an inclusive range `first ..= last` that falls into one entry of a table.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Entry index in the table.
    index: usize,
    /// Lowest address the entry covers.
    base: u64,
    /// First address of the range in this entry.
    first: u64,
    /// Last address of the range in this entry.
    last: u64,
}

impl Seg {
    /// Whether the range covers the entry's whole region.
    fn is_full(&self, level: u8) -> bool {
        self.first == self.base && self.last == self.base | slot_mask(level)
    }
}

/// The entries of a table at `level` that an inclusive range touches, in ascending order.
///
/// Inclusive bounds let a range end at the top of the address space (`u64::MAX`).
#[derive(Debug)]
struct Segs {
    next: Option<u64>,
    last: u64,
    level: u8,
}

impl Iterator for Segs {
    type Item = Seg;

    fn next(&mut self) -> Option<Seg> {
        let first = self.next?;
        let base = first & !slot_mask(self.level);
        let last = (base | slot_mask(self.level)).min(self.last);
        self.next = if last >= self.last {
            None
        } else {
            Some(last + 1)
        };
        Some(Seg {
            index: index(first, self.level),
            base,
            first,
            last,
        })
    }
}

fn segments(first: u64, last: u64, level: u8) -> Segs {
    Segs {
        next: (first <= last).then_some(first),
        last,
        level,
    }
}

/// Checks `virt .. virt + len` for a format and returns the last address of the range.
fn check_range<F: EntryFormat>(virt: u64, len: u64) -> Result<u64, MapError> {
    if len == 0 {
        return Err(MapError::ZeroLength);
    }
    if virt & (TABLE_SIZE - 1) != 0 {
        return Err(MapError::UnalignedVirt { virt });
    }
    if len & (TABLE_SIZE - 1) != 0 {
        return Err(MapError::UnalignedLength { len });
    }
    let last = virt
        .checked_add(len - 1)
        .ok_or(MapError::Overflow { virt, len })?;
    match F::input_region(virt) {
        None => Err(MapError::NonCanonical { virt }),
        Some((_, region_last)) if last > region_last => Err(MapError::NonCanonical {
            virt: region_last.wrapping_add(1),
        }),
        Some(_) => Ok(last),
    }
}

/// Checks the physical range `phys .. phys + len` (`len` already checked non-zero).
fn check_phys(phys: u64, len: u64) -> Result<(), MapError> {
    if phys & (TABLE_SIZE - 1) != 0 {
        return Err(MapError::UnalignedPhys { phys });
    }
    match phys.checked_add(len - 1) {
        Some(last) if last < PHYS_LIMIT => Ok(()),
        _ => Err(MapError::PhysOutOfRange { phys, len }),
    }
}

/// Takes a frame for a table and checks it.
fn alloc_frame<A: FrameSource + ?Sized>(
    frames: &mut A,
    virt: Option<u64>,
) -> Result<u64, MapError> {
    let phys = frames.alloc_table().ok_or(MapError::OutOfFrames { virt })?;
    if phys & (TABLE_SIZE - 1) != 0 || phys >= PHYS_LIMIT {
        frames.free_table(phys);
        return Err(MapError::BadFrame { phys });
    }
    Ok(phys)
}

/// Frames taken before an unmap or protect changes anything, so that it cannot fail halfway.
#[derive(Debug)]
struct Reserve {
    frames: [u64; MAX_SPLITS],
    len: usize,
}

impl Reserve {
    fn take<A: FrameSource + ?Sized>(
        frames: &mut A,
        count: usize,
        virt: u64,
    ) -> Result<Self, MapError> {
        let mut reserve = Self {
            frames: [0; MAX_SPLITS],
            len: 0,
        };
        while reserve.len < count.min(MAX_SPLITS) {
            match alloc_frame(frames, Some(virt)) {
                Ok(frame) => {
                    reserve.frames[reserve.len] = frame;
                    reserve.len += 1;
                }
                Err(error) => {
                    reserve.release(frames);
                    return Err(error);
                }
            }
        }
        Ok(reserve)
    }

    /// A reserved frame, or a fresh one if the reserve is used up (which the split count
    /// rules out).
    fn frame<A: FrameSource + ?Sized>(
        &mut self,
        frames: &mut A,
        virt: u64,
    ) -> Result<u64, MapError> {
        if self.len == 0 {
            return alloc_frame(frames, Some(virt));
        }
        self.len -= 1;
        Ok(self.frames[self.len])
    }

    /// Gives the unused frames back.
    fn release<A: FrameSource + ?Sized>(self, frames: &mut A) {
        for &frame in &self.frames[..self.len] {
            frames.free_table(frame);
        }
    }
}

/// What [`PageTable::modify`] does to the leaves in its range.
#[derive(Debug, Clone, Copy)]
enum Op {
    Unmap,
    Protect(MapFlags),
}

/// The constant part of one [`PageTable::map`] call.
#[derive(Debug)]
struct MapJob {
    /// `phys - virt` (wrapping): the physical address of input address `a` is `a + delta`.
    delta: u64,
    flags: MapFlags,
    /// Highest level a leaf may be placed at (from `max_page`).
    max_level: u8,
}

/// Where a mapping walk stopped: everything below `at` in the range was mapped by it.
#[derive(Debug)]
struct Failure {
    error: MapError,
    at: u64,
}

/// A 4-level page table (x86 PML4 or EPT PML4 tree) in the entry format `F`.
///
/// The value owns the tree's tables (not the pages they map) but not their memory: every
/// operation takes the [`TableMemory`] the tables live in and, when tables may be allocated or
/// freed, the [`FrameSource`] they come from. Callers must pass the same ones every time.
///
/// A dropped `PageTable` leaks its tables; use [`PageTable::destroy`] to free them.
#[derive(Debug)]
pub struct PageTable<F: EntryFormat> {
    root: u64,
    format: PhantomData<F>,
}

impl<F: EntryFormat> PageTable<F> {
    /// Creates an empty table: one zeroed root table from `frames`.
    ///
    /// # Errors
    ///
    /// [`MapError::OutOfFrames`] (with `virt: None`) or [`MapError::BadFrame`].
    pub fn new<A: FrameSource + ?Sized>(frames: &mut A) -> Result<Self, MapError> {
        let root = alloc_frame(frames, None)?;
        Ok(Self {
            root,
            format: PhantomData,
        })
    }

    /// The physical address of the root table: the value for CR3 (x86) or for the EPT pointer
    /// (EPT, together with the memory type and walk length in its low bits).
    #[must_use]
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `virt .. virt + len` to `phys .. phys + len` with `flags`.
    ///
    /// Each part of the range gets the largest page that fits: a 1 GiB or 2 MiB page where
    /// `virt` and `phys` are both aligned to it at that point, the range covers it whole and
    /// `max_page` allows it; 4 KiB pages elsewhere. A range whose `virt` and `phys` differ modulo
    /// 2 MiB therefore gets only 4 KiB pages.
    ///
    /// Either the whole range is mapped or nothing changes: overlaps are found before any write,
    /// and when table frames run out the pages and tables mapped so far are removed again.
    /// Existing intermediate entries are widened for the new pages (x86 `U/S` for user pages)
    /// only after everything else succeeded.
    ///
    /// # Errors
    ///
    /// [`MapError::ZeroLength`], [`MapError::UnalignedVirt`], [`MapError::UnalignedPhys`],
    /// [`MapError::UnalignedLength`], [`MapError::Overflow`], [`MapError::PhysOutOfRange`],
    /// [`MapError::NonCanonical`], [`MapError::UnsupportedFlags`], [`MapError::AlreadyMapped`]
    /// (naming the first mapped address), [`MapError::OutOfFrames`], [`MapError::BadFrame`].
    #[expect(
        clippy::too_many_arguments,
        reason = "memory, frames, range, target, flags and page-size limit are all independent"
    )]
    pub fn map<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut A,
        virt: u64,
        phys: u64,
        len: u64,
        flags: MapFlags,
        max_page: PageSize,
    ) -> Result<(), MapError> {
        let last = check_range::<F>(virt, len)?;
        check_phys(phys, len)?;
        let flags = F::validate_flags(flags)?;
        if let Some(mapped) = Self::first_mapped(mem, self.root, ROOT_LEVEL, virt, last) {
            return Err(MapError::AlreadyMapped { virt: mapped });
        }
        let job = MapJob {
            delta: phys.wrapping_sub(virt),
            flags,
            max_level: max_page.level(),
        };
        if let Err(failure) = Self::map_walk(mem, frames, self.root, ROOT_LEVEL, virt, last, &job) {
            self.roll_back(mem, frames, virt, failure.at);
            return Err(failure.error);
        }
        // Tables were all created with at least the bits of `table(_, empty)`.
        if F::table(0, flags) & !F::table(0, MapFlags::empty()) != 0 {
            Self::widen_walk(mem, self.root, ROOT_LEVEL, virt, last, flags);
        }
        Ok(())
    }

    /// Removes every mapping in `virt .. virt + len`; parts that are not mapped are skipped.
    ///
    /// A 2 MiB or 1 GiB page only partly inside the range is split first: replaced by a table
    /// of smaller pages with the same flags (and, for a 1 GiB page, split again where needed),
    /// whose pages outside the range stay mapped. Tables left without any present entry are
    /// freed, except the root.
    ///
    /// The tables a split needs are taken before anything changes, so on error nothing has
    /// changed. Freed tables go straight back to `frames`: on a live address space the caller
    /// must flush TLBs and paging-structure caches before they are reused.
    ///
    /// # Errors
    ///
    /// [`MapError::ZeroLength`], [`MapError::UnalignedVirt`], [`MapError::UnalignedLength`],
    /// [`MapError::Overflow`], [`MapError::NonCanonical`], and, when a split needs tables,
    /// [`MapError::OutOfFrames`] or [`MapError::BadFrame`].
    pub fn unmap<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut A,
        virt: u64,
        len: u64,
    ) -> Result<(), MapError> {
        let last = check_range::<F>(virt, len)?;
        self.modify(mem, frames, virt, last, Op::Unmap)
    }

    /// Changes the flags of every page in `virt .. virt + len` to `flags`, keeping the
    /// physical addresses (e.g. to make the hypervisor's text read-only after boot).
    ///
    /// Every page of the range must be mapped. A large page only partly inside the range is
    /// split as in [`PageTable::unmap`] (unless it already has `flags`). Pages are never merged
    /// back into larger ones. On error nothing has changed.
    ///
    /// # Errors
    ///
    /// [`MapError::ZeroLength`], [`MapError::UnalignedVirt`], [`MapError::UnalignedLength`],
    /// [`MapError::Overflow`], [`MapError::NonCanonical`], [`MapError::UnsupportedFlags`],
    /// [`MapError::NotMapped`] (naming the first unmapped address), and, when a split needs
    /// tables, [`MapError::OutOfFrames`] or [`MapError::BadFrame`].
    pub fn protect<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut A,
        virt: u64,
        len: u64,
        flags: MapFlags,
    ) -> Result<(), MapError> {
        let last = check_range::<F>(virt, len)?;
        let flags = F::validate_flags(flags)?;
        if let Some(hole) = Self::first_unmapped(mem, self.root, ROOT_LEVEL, virt, last) {
            return Err(MapError::NotMapped { virt: hole });
        }
        self.modify(mem, frames, virt, last, Op::Protect(flags))
    }

    /// Looks `virt` up: the physical address, the leaf's flags and the page size, or `None` if
    /// it is not mapped (or not a valid input address for the format).
    pub fn translate<M: TableMemory + ?Sized>(&self, mem: &M, virt: u64) -> Option<Translation> {
        F::input_region(virt)?;
        let mut table = self.root;
        for level in (1..=ROOT_LEVEL).rev() {
            let entry = mem.read_entry(table, index(virt, level));
            if !F::is_present(entry) {
                return None;
            }
            if Self::is_leaf(entry, level) {
                let page_size = PageSize::from_level(level)?;
                let (base, flags) = F::decode_leaf(entry, page_size);
                return Some(Translation {
                    phys: base | (virt & (page_size.bytes() - 1)),
                    flags,
                    page_size,
                });
            }
            table = F::table_address(entry);
        }
        None
    }

    /// Frees every table of the tree, the root included, back to `frames`. The mapped pages
    /// themselves are not touched. The tree must no longer be in use by any CPU (CR3, EPT
    /// pointer) and its translations must have been flushed.
    pub fn destroy<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        self,
        mem: &M,
        frames: &mut A,
    ) {
        Self::free_tree(mem, frames, self.root, ROOT_LEVEL);
    }

    /// The first address in `first ..= last` that a leaf maps, if any.
    fn first_mapped<M: TableMemory + ?Sized>(
        mem: &M,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
    ) -> Option<u64> {
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if !F::is_present(entry) {
                continue;
            }
            if Self::is_leaf(entry, level) {
                return Some(seg.first);
            }
            let child = F::table_address(entry);
            if let Some(mapped) = Self::first_mapped(mem, child, level - 1, seg.first, seg.last) {
                return Some(mapped);
            }
        }
        None
    }

    /// The first address in `first ..= last` that no leaf maps, if any.
    fn first_unmapped<M: TableMemory + ?Sized>(
        mem: &M,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
    ) -> Option<u64> {
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if !F::is_present(entry) {
                return Some(seg.first);
            }
            if Self::is_leaf(entry, level) {
                continue;
            }
            let child = F::table_address(entry);
            if let Some(hole) = Self::first_unmapped(mem, child, level - 1, seg.first, seg.last) {
                return Some(hole);
            }
        }
        None
    }

    /// Maps `first ..= last` below `table` (at `level`); the range is known to be unmapped.
    fn map_walk<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        mem: &mut M,
        frames: &mut A,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
        job: &MapJob,
    ) -> Result<(), Failure> {
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if F::is_present(entry) {
                if Self::is_leaf(entry, level) {
                    // Ruled out by `first_mapped`; kept so that a bug cannot overwrite a page.
                    return Err(Failure {
                        error: MapError::AlreadyMapped { virt: seg.first },
                        at: seg.first,
                    });
                }
                // Existing table entries are widened only once the whole map succeeded
                // (`widen_walk`), so that a rollback has nothing to restore in them.
                let child = F::table_address(entry);
                Self::map_walk(mem, frames, child, level - 1, seg.first, seg.last, job)?;
                continue;
            }
            let phys = seg.first.wrapping_add(job.delta);
            let leaf_fits = level == 1
                || (level <= job.max_level && seg.is_full(level) && phys & slot_mask(level) == 0);
            if leaf_fits && let Some(size) = PageSize::from_level(level) {
                mem.write_entry(table, seg.index, F::leaf(phys, job.flags, size));
                continue;
            }
            let child = alloc_frame(frames, Some(seg.first)).map_err(|error| Failure {
                error,
                at: seg.first,
            })?;
            mem.write_entry(table, seg.index, F::table(child, job.flags));
            Self::map_walk(mem, frames, child, level - 1, seg.first, seg.last, job)?;
        }
        Ok(())
    }

    /// ORs the table-entry bits `flags` need (x86: `U/S` for user pages) into every table
    /// entry above `first ..= last`.
    fn widen_walk<M: TableMemory + ?Sized>(
        mem: &mut M,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
        flags: MapFlags,
    ) {
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if !F::is_present(entry) || Self::is_leaf(entry, level) {
                continue;
            }
            let child = F::table_address(entry);
            let widened = entry | F::table(child, flags);
            if widened != entry {
                mem.write_entry(table, seg.index, widened);
            }
            // Level-1 tables hold only leaves.
            if level > 2 {
                Self::widen_walk(mem, child, level - 1, seg.first, seg.last, flags);
            }
        }
    }

    /// Undoes a failed [`PageTable::map`] that mapped `first .. at`: unmaps it and frees the
    /// tables left empty, including those allocated on the way to `at`.
    fn roll_back<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut A,
        first: u64,
        at: u64,
    ) {
        if at > first {
            // Every leaf in the range was written whole by the failed call, so no split (and no
            // frame) is needed and this cannot fail.
            let mut reserve = Reserve {
                frames: [0; MAX_SPLITS],
                len: 0,
            };
            let _ = Self::modify_walk(
                mem,
                frames,
                &mut reserve,
                self.root,
                ROOT_LEVEL,
                first,
                at - 1,
                Op::Unmap,
            );
        }
        Self::prune_path(mem, frames, self.root, ROOT_LEVEL, at);
    }

    /// Frees the empty tables on the path to `addr` below `table`.
    fn prune_path<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        mem: &mut M,
        frames: &mut A,
        table: u64,
        level: u8,
        addr: u64,
    ) {
        let slot = index(addr, level);
        let entry = mem.read_entry(table, slot);
        if !F::is_present(entry) || Self::is_leaf(entry, level) {
            return;
        }
        let child = F::table_address(entry);
        Self::prune_path(mem, frames, child, level - 1, addr);
        if Self::is_empty(mem, child) {
            mem.write_entry(table, slot, 0);
            frames.free_table(child);
        }
    }

    /// Shared part of [`PageTable::unmap`] and [`PageTable::protect`]: reserve the split tables,
    /// walk, give back what was not used.
    fn modify<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        &mut self,
        mem: &mut M,
        frames: &mut A,
        first: u64,
        last: u64,
        op: Op,
    ) -> Result<(), MapError> {
        let splits = Self::count_splits(mem, self.root, ROOT_LEVEL, first, last, op);
        let mut reserve = Reserve::take(frames, splits, first)?;
        let result = Self::modify_walk(
            mem,
            frames,
            &mut reserve,
            self.root,
            ROOT_LEVEL,
            first,
            last,
            op,
        );
        reserve.release(frames);
        result
    }

    /// Whether `op` changes a leaf with flags `current` that the range covers only in part.
    fn must_split(op: Op, current: MapFlags) -> bool {
        match op {
            Op::Unmap => true,
            Op::Protect(flags) => flags != current,
        }
    }

    /// How many tables [`PageTable::modify_walk`] will allocate for splits.
    fn count_splits<M: TableMemory + ?Sized>(
        mem: &M,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
        op: Op,
    ) -> usize {
        let mut count = 0;
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if !F::is_present(entry) {
                continue;
            }
            if Self::is_leaf(entry, level) {
                if let Some(size) = PageSize::from_level(level)
                    && !seg.is_full(level)
                    && Self::must_split(op, F::decode_leaf(entry, size).1)
                {
                    count += splits_inside(level, seg.first, seg.last);
                }
            } else {
                let child = F::table_address(entry);
                count += Self::count_splits(mem, child, level - 1, seg.first, seg.last, op);
            }
        }
        count
    }

    /// Applies `op` to `first ..= last` below `table` (at `level`), splitting leaves the range
    /// covers in part and (for unmap) freeing tables it empties.
    #[expect(
        clippy::too_many_arguments,
        reason = "recursive walk state; bundling it would only rename the parameters"
    )]
    fn modify_walk<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        mem: &mut M,
        frames: &mut A,
        reserve: &mut Reserve,
        table: u64,
        level: u8,
        first: u64,
        last: u64,
        op: Op,
    ) -> Result<(), MapError> {
        for seg in segments(first, last, level) {
            let entry = mem.read_entry(table, seg.index);
            if !F::is_present(entry) {
                continue;
            }
            if !Self::is_leaf(entry, level) {
                let child = F::table_address(entry);
                if let Op::Protect(flags) = op {
                    let widened = entry | F::table(child, flags);
                    if widened != entry {
                        mem.write_entry(table, seg.index, widened);
                    }
                }
                Self::modify_walk(
                    mem,
                    frames,
                    reserve,
                    child,
                    level - 1,
                    seg.first,
                    seg.last,
                    op,
                )?;
                if matches!(op, Op::Unmap) && Self::is_empty(mem, child) {
                    mem.write_entry(table, seg.index, 0);
                    frames.free_table(child);
                }
                continue;
            }
            let Some(size) = PageSize::from_level(level) else {
                continue;
            };
            let (phys, current) = F::decode_leaf(entry, size);
            if seg.is_full(level) {
                let new_entry = match op {
                    Op::Unmap => 0,
                    Op::Protect(flags) => F::leaf(phys, flags, size),
                };
                mem.write_entry(table, seg.index, new_entry);
                continue;
            }
            if !Self::must_split(op, current) {
                continue;
            }
            // Split: fill a table with smaller pages of the same translation and flags, switch
            // the entry over to it, then apply `op` inside it.
            let Some(small) = PageSize::from_level(level - 1) else {
                continue;
            };
            let child = reserve.frame(frames, seg.first)?;
            let mut page = phys;
            for slot in 0..ENTRIES_PER_TABLE {
                mem.write_entry(child, slot, F::leaf(page, current, small));
                page += small.bytes();
            }
            let mut table_entry = F::table(child, current);
            if let Op::Protect(flags) = op {
                table_entry |= F::table(child, flags);
            }
            mem.write_entry(table, seg.index, table_entry);
            Self::modify_walk(
                mem,
                frames,
                reserve,
                child,
                level - 1,
                seg.first,
                seg.last,
                op,
            )?;
        }
        Ok(())
    }

    /// Whether a present entry at `level` is a leaf; level 1 holds only leaves whatever the
    /// format says, so that no walk can go below it.
    fn is_leaf(entry: u64, level: u8) -> bool {
        level <= 1 || F::is_leaf(entry, level)
    }

    /// Whether the table has no present entry.
    fn is_empty<M: TableMemory + ?Sized>(mem: &M, table: u64) -> bool {
        (0..ENTRIES_PER_TABLE).all(|slot| !F::is_present(mem.read_entry(table, slot)))
    }

    /// Frees `table` (at `level`) and every table below it.
    fn free_tree<M: TableMemory + ?Sized, A: FrameSource + ?Sized>(
        mem: &M,
        frames: &mut A,
        table: u64,
        level: u8,
    ) {
        if level > 1 {
            for slot in 0..ENTRIES_PER_TABLE {
                let entry = mem.read_entry(table, slot);
                if F::is_present(entry) && !Self::is_leaf(entry, level) {
                    Self::free_tree(mem, frames, F::table_address(entry), level - 1);
                }
            }
        }
        frames.free_table(table);
    }
}

/// Tables needed to split a leaf at `level` that the range `first ..= last` covers in part:
/// one for the leaf, plus those for the smaller pages the range again covers in part.
fn splits_inside(level: u8, first: u64, last: u64) -> usize {
    if level <= 1 {
        return 0;
    }
    1 + segments(first, last, level - 1)
        .filter(|seg| !seg.is_full(level - 1))
        .map(|seg| splits_inside(level - 1, seg.first, seg.last))
        .sum::<usize>()
}
