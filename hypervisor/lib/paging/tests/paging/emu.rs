//! Emulated physical memory and frame source for the tests.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use basalt_paging::{ENTRIES_PER_TABLE, EntryFormat, FrameSource, PageSize, TableMemory};

/// Where emulated table frames start (far away from the physical addresses the tests map).
pub const FRAME_BASE: u64 = 0x80_0000_0000;

#[derive(Debug, Default)]
struct State {
    /// Tables by frame number (`(phys - FRAME_BASE) / 4096`); `None` when not live.
    tables: Vec<Option<Box<[u64; ENTRIES_PER_TABLE]>>>,
    /// Live tables.
    live: usize,
    /// Freed frames, reused first (LIFO) so that reuse is exercised.
    free: Vec<u64>,
    allocs: usize,
    frees: usize,
    /// Allocations still allowed, or `None` for no limit.
    budget: Option<usize>,
}

/// [`TableMemory`] over the shared state: only live tables can be read or written.
#[derive(Debug)]
pub struct Mem(Rc<RefCell<State>>);

/// [`FrameSource`] over the shared state: counts and checks allocations and frees.
#[derive(Debug)]
pub struct Frames(Rc<RefCell<State>>);

impl State {
    fn slot(phys: u64) -> Option<usize> {
        let offset = phys.checked_sub(FRAME_BASE)?;
        (offset % 4096 == 0).then_some((offset / 4096) as usize)
    }

    fn table(&self, phys: u64) -> Option<&[u64; ENTRIES_PER_TABLE]> {
        self.tables.get(Self::slot(phys)?)?.as_deref()
    }

    fn table_mut(&mut self, phys: u64) -> Option<&mut [u64; ENTRIES_PER_TABLE]> {
        self.tables.get_mut(Self::slot(phys)?)?.as_deref_mut()
    }
}

impl TableMemory for Mem {
    fn read_entry(&self, table_phys: u64, index: usize) -> u64 {
        let state = self.0.borrow();
        let table = state
            .table(table_phys)
            .unwrap_or_else(|| panic!("read from {table_phys:#x}, which is not a live table"));
        table[index]
    }

    fn write_entry(&mut self, table_phys: u64, index: usize, value: u64) {
        let mut state = self.0.borrow_mut();
        let table = state
            .table_mut(table_phys)
            .unwrap_or_else(|| panic!("write to {table_phys:#x}, which is not a live table"));
        table[index] = value;
    }
}

impl FrameSource for Frames {
    fn alloc_table(&mut self) -> Option<u64> {
        let mut state = self.0.borrow_mut();
        if let Some(budget) = state.budget.as_mut() {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
        }
        let frame = match state.free.pop() {
            Some(frame) => frame,
            None => {
                state.tables.push(None);
                FRAME_BASE + (state.tables.len() as u64 - 1) * 4096
            }
        };
        let slot = State::slot(frame).expect("frame outside the pool");
        state.tables[slot] = Some(Box::new([0; ENTRIES_PER_TABLE]));
        state.live += 1;
        state.allocs += 1;
        Some(frame)
    }

    fn free_table(&mut self, phys: u64) {
        let mut state = self.0.borrow_mut();
        let slot = State::slot(phys).filter(|&slot| slot < state.tables.len());
        let table = slot.and_then(|slot| state.tables[slot].take());
        assert!(
            table.is_some(),
            "free of {phys:#x}, which is not a live table"
        );
        state.live -= 1;
        state.free.push(phys);
        state.frees += 1;
    }
}

/// Memory and frame source sharing one state.
#[derive(Debug)]
pub struct Machine {
    pub mem: Mem,
    pub frames: Frames,
}

impl Machine {
    pub fn new() -> Self {
        let state = Rc::new(RefCell::new(State::default()));
        Self {
            mem: Mem(Rc::clone(&state)),
            frames: Frames(state),
        }
    }

    /// Tables currently allocated.
    pub fn live(&self) -> usize {
        self.mem.0.borrow().live
    }

    /// Total allocations so far.
    pub fn allocs(&self) -> usize {
        self.mem.0.borrow().allocs
    }

    /// Total frees so far.
    pub fn frees(&self) -> usize {
        self.mem.0.borrow().frees
    }

    /// Limits further allocations (`None`: unlimited).
    pub fn set_budget(&self, budget: Option<usize>) {
        self.mem.0.borrow_mut().budget = budget;
    }

    /// Every live table and its contents, for before/after comparisons.
    pub fn snapshot(&self) -> BTreeMap<u64, Vec<u64>> {
        let state = self.mem.0.borrow();
        let mut tables = BTreeMap::new();
        for (slot, table) in state.tables.iter().enumerate() {
            if let Some(table) = table {
                tables.insert(FRAME_BASE + slot as u64 * 4096, table.to_vec());
            }
        }
        tables
    }

    /// Panics, naming the first difference, if the tables differ from `before`.
    pub fn assert_unchanged(&self, before: &BTreeMap<u64, Vec<u64>>, what: &str) {
        let after = self.snapshot();
        if &after == before {
            return;
        }
        for (phys, table) in before {
            let Some(now) = after.get(phys) else {
                panic!("{what}: table {phys:#x} was freed");
            };
            if let Some(i) = (0..ENTRIES_PER_TABLE).find(|&i| table[i] != now[i]) {
                panic!(
                    "{what}: entry {i} of table {phys:#x} changed from {:#x} to {:#x}",
                    table[i], now[i]
                );
            }
        }
        let new: Vec<_> = after.keys().filter(|p| !before.contains_key(p)).collect();
        panic!("{what}: tables {new:x?} were allocated");
    }

    /// Entry `index` of the table at `table`.
    pub fn entry(&self, table: u64, index: usize) -> u64 {
        self.mem.read_entry(table, index)
    }

    /// The entries the walk for `virt` reads, root first, down to the leaf or the first
    /// non-present entry.
    pub fn path<F: EntryFormat>(&self, root: u64, virt: u64) -> Vec<u64> {
        let mut entries = Vec::new();
        let mut table = root;
        for level in (1..=4u8).rev() {
            let index = ((virt >> (12 + 9 * (u32::from(level) - 1))) & 511) as usize;
            let entry = self.entry(table, index);
            entries.push(entry);
            if !F::is_present(entry) || F::is_leaf(entry, level) {
                break;
            }
            table = F::table_address(entry);
        }
        entries
    }

    /// The leaf entry for `virt` (panics if not mapped).
    pub fn leaf<F: EntryFormat>(&self, root: u64, virt: u64) -> u64 {
        let path = self.path::<F>(root, virt);
        let leaf = *path.last().expect("empty path");
        assert!(F::is_present(leaf), "{virt:#x} is not mapped");
        leaf
    }

    /// Checks the tree's invariants and returns how many tables it has: every table reachable
    /// from the root is live, every non-root table has a present entry, and no live table is
    /// unreachable (no leak).
    pub fn check_tree<F: EntryFormat>(&self, root: u64) -> usize {
        fn walk<F: EntryFormat>(m: &Machine, table: u64, level: u8, count: &mut usize) {
            *count += 1;
            let mut present = 0;
            for index in 0..ENTRIES_PER_TABLE {
                let entry = m.entry(table, index);
                if !F::is_present(entry) {
                    assert_eq!(entry, 0, "non-present entry {index} of {table:#x} is not 0");
                    continue;
                }
                present += 1;
                if F::is_leaf(entry, level) {
                    let size = PageSize::from_level(level).expect("leaf at level 4");
                    let (phys, _) = F::decode_leaf(entry, size);
                    assert_eq!(phys % size.bytes(), 0, "misaligned leaf {entry:#x}");
                } else {
                    walk::<F>(m, F::table_address(entry), level - 1, count);
                }
            }
            assert!(
                level == 4 || present > 0,
                "empty table {table:#x} at level {level}"
            );
        }
        let mut count = 0;
        walk::<F>(self, root, 4, &mut count);
        assert_eq!(
            count,
            self.live(),
            "tables allocated but not reachable from the root"
        );
        count
    }
}
