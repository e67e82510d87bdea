//! Randomised map/unmap/protect/translate against a model (one entry per 4 KiB page).

use std::collections::BTreeMap;

use basalt_paging::{EntryFormat, Ept, MapError, MapFlags, PageSize, PageTable, X86};

use crate::emu::Machine;
use crate::{DIRECT_MAP, GIB1, KIB4, MIB2};

/// xorshift64* (Vigna), seeded; no crates.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// 4 KiB page → (physical page, normalised flags).
type Model = BTreeMap<u64, (u64, MapFlags)>;

/// Ranges at least this long are applied to the model in bulk.
const BULK: u64 = GIB1 / 4;

/// The window the test works in: four 1 GiB-aligned GiBs.
const WINDOW_LEN: u64 = 4 * GIB1;

#[derive(Debug)]
struct Run<F: EntryFormat> {
    m: Machine,
    pt: PageTable<F>,
    model: Model,
    rng: Rng,
    window: u64,
    flag_choices: &'static [MapFlags],
    stats: Stats,
}

/// What a run exercised, so that it can check it covered every path.
#[derive(Debug, Default)]
struct Stats {
    maps: usize,
    overlaps: usize,
    protects: usize,
    holes: usize,
    unmaps: usize,
    rollbacks: usize,
    /// Translations checked, by page size (4 KiB, 2 MiB, 1 GiB).
    sizes: [usize; 3],
}

impl<F: EntryFormat> Run<F> {
    /// A random address in the window, most often near the start of one of its GiBs so that
    /// operations collide, and least often in the last GiB so that its 1 GiB page lives a
    /// while.
    fn address(&mut self) -> u64 {
        let gib = self.window + [0, 0, 0, 1, 1, 1, 2, 2, 2, 3][self.rng.below(10) as usize] * GIB1;
        if self.rng.percent(60) {
            gib + self.rng.below(16 * MIB2 / KIB4) * KIB4
        } else {
            gib + self.rng.below(GIB1 / KIB4) * KIB4
        }
    }

    /// A random range in the window, of sizes that give every page size a chance.
    fn range(&mut self) -> (u64, u64) {
        let class = self.rng.below(100);
        let (virt, len) = if class < 55 {
            (self.address(), KIB4 * (1 + self.rng.below(24)))
        } else if class < 90 {
            let virt = (self.address() & !(MIB2 - 1)) + self.rng.below(3) * KIB4;
            (
                virt,
                MIB2 * (1 + self.rng.below(3)) + self.rng.below(3) * KIB4,
            )
        } else if class < 98 {
            let virt = self.address() & !(MIB2 - 1);
            (virt, MIB2 * (1 + self.rng.below(8)))
        } else {
            (self.window + self.rng.below(4) * GIB1, GIB1)
        };
        let end = self.window + WINDOW_LEN;
        (virt, len.min(end - virt))
    }

    fn flags(&mut self) -> MapFlags {
        let i = self.rng.below(self.flag_choices.len() as u64) as usize;
        self.flag_choices[i]
    }

    fn max_page(&mut self) -> PageSize {
        match self.rng.below(10) {
            0 => PageSize::Size4K,
            1 | 2 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }

    fn first_mapped(&self, first: u64, last: u64) -> Option<u64> {
        self.model.range(first..=last).next().map(|(&page, _)| page)
    }

    fn first_hole(&self, first: u64, last: u64) -> Option<u64> {
        let mut expect = first;
        for &page in self.model.range(first..=last).map(|(page, _)| page) {
            if page != expect {
                return Some(expect);
            }
            expect += KIB4;
        }
        (expect <= last).then_some(expect)
    }

    fn model_unmap(&mut self, first: u64, last: u64) {
        if last - first < BULK {
            let pages: Vec<u64> = self
                .model
                .range(first..=last)
                .map(|(&page, _)| page)
                .collect();
            for page in pages {
                self.model.remove(&page);
            }
        } else {
            // Linear in the model's size, but much faster than page-by-page removal.
            let mut tail = self.model.split_off(&first);
            let mut rest = tail.split_off(&(last + 1));
            self.model.append(&mut rest);
        }
    }

    fn model_map(&mut self, virt: u64, phys: u64, len: u64, flags: MapFlags) {
        let pages = (0..len / KIB4).map(|page| {
            let offset = page * KIB4;
            (virt + offset, (phys + offset, flags))
        });
        if len < BULK {
            self.model.extend(pages);
        } else {
            // A sorted `collect` builds the map in bulk; `append` merges linearly.
            let mut new: Model = pages.collect();
            self.model.append(&mut new);
        }
    }

    /// Runs `op` with an allocation budget some of the time; an out-of-frames failure must
    /// leave the tables exactly as they were. Returns `None` when it failed that way.
    fn with_faults(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<(), MapError>,
    ) -> Option<Result<(), MapError>> {
        if !self.rng.percent(4) {
            return Some(op(self));
        }
        let before = self.m.snapshot();
        let budget = self.rng.below(4) as usize;
        self.m.set_budget(Some(budget));
        let result = op(self);
        self.m.set_budget(None);
        if let Err(MapError::OutOfFrames { .. }) = result {
            self.m.assert_unchanged(&before, "out of frames");
            self.stats.rollbacks += 1;
            return None;
        }
        Some(result)
    }

    /// Replaces the last GiB of the window (the coldest) by one 1 GiB page, for the random
    /// operations to split.
    fn fresh_gib(&mut self) {
        let virt = self.window + 3 * GIB1;
        let phys = (7 + self.rng.below(8)) * GIB1;
        let flags = self.flags();
        let Run { m, pt, .. } = self;
        pt.unmap(&mut m.mem, &mut m.frames, virt, GIB1).unwrap();
        pt.map(
            &mut m.mem,
            &mut m.frames,
            virt,
            phys,
            GIB1,
            flags,
            PageSize::Size1G,
        )
        .unwrap();
        self.model_unmap(virt, virt + GIB1 - 1);
        self.model_map(virt, phys, GIB1, F::validate_flags(flags).unwrap());
        let t = self.pt.translate(&self.m.mem, virt + GIB1 - 1);
        assert_eq!(t.map(|t| t.page_size), Some(PageSize::Size1G));
    }

    fn step_map(&mut self) {
        let (virt, len) = self.range();
        let last = virt + len - 1;
        let phys = match self.rng.below(100) {
            // Same offset in a GiB: large pages possible.
            0..70 => self.rng.below(1024) * GIB1 + (virt % GIB1),
            // Same offset in 2 MiB.
            70..85 => self.rng.below(1 << 19) * MIB2 + (virt % MIB2),
            _ => self.rng.below(1 << 28) * KIB4,
        };
        let flags = self.flags();
        let max = self.max_page();
        let Some(result) = self.with_faults(|run| {
            let Run { m, pt, .. } = run;
            pt.map(&mut m.mem, &mut m.frames, virt, phys, len, flags, max)
        }) else {
            return;
        };
        match self.first_mapped(virt, last) {
            Some(mapped) => {
                assert_eq!(result, Err(MapError::AlreadyMapped { virt: mapped }));
                self.stats.overlaps += 1;
            }
            None => {
                assert_eq!(result, Ok(()), "map {virt:#x} + {len:#x}");
                self.stats.maps += 1;
                self.model_map(virt, phys, len, F::validate_flags(flags).unwrap());
            }
        }
    }

    fn step_unmap(&mut self) {
        let (virt, len) = self.range();
        let Some(result) = self.with_faults(|run| {
            let Run { m, pt, .. } = run;
            pt.unmap(&mut m.mem, &mut m.frames, virt, len)
        }) else {
            return;
        };
        assert_eq!(result, Ok(()));
        self.stats.unmaps += 1;
        self.model_unmap(virt, virt + len - 1);
    }

    fn step_protect(&mut self) {
        let (mut virt, mut len) = self.range();
        if self.rng.percent(60) {
            // Start on a mapped page, so that protect often succeeds.
            let from = self.address();
            if let Some((&page, _)) = self.model.range(from..).next() {
                virt = page;
                len = KIB4 * (1 + self.rng.below(600));
                len = len.min(self.window + WINDOW_LEN - virt);
            }
        }
        let last = virt + len - 1;
        let flags = self.flags();
        let Some(result) = self.with_faults(|run| {
            let Run { m, pt, .. } = run;
            pt.protect(&mut m.mem, &mut m.frames, virt, len, flags)
        }) else {
            return;
        };
        match self.first_hole(virt, last) {
            Some(hole) => {
                assert_eq!(result, Err(MapError::NotMapped { virt: hole }));
                self.stats.holes += 1;
            }
            None => {
                assert_eq!(result, Ok(()));
                self.stats.protects += 1;
                let flags = F::validate_flags(flags).unwrap();
                for (_, entry) in self.model.range_mut(virt..=last) {
                    entry.1 = flags;
                }
            }
        }
    }

    /// Compares one address with the model, and the page the table reports with the model's
    /// pages (first, last and a few in between).
    fn check(&mut self, virt: u64) {
        let page = virt & !(KIB4 - 1);
        let t = self.pt.translate(&self.m.mem, virt);
        let Some(&(phys, flags)) = self.model.get(&page) else {
            assert_eq!(t, None, "{virt:#x} should not be mapped");
            return;
        };
        let t = t.unwrap_or_else(|| panic!("{virt:#x} should be mapped"));
        assert_eq!(t.phys, phys + (virt - page), "{virt:#x}");
        assert_eq!(t.flags, flags, "{virt:#x}");
        self.stats.sizes[usize::from(t.page_size.level()) - 1] += 1;
        let size = t.page_size.bytes();
        let base = virt & !(size - 1);
        let phys_base = t.phys - (virt - base);
        assert_eq!(phys_base % size, 0, "{virt:#x}: misaligned large page");
        let mut offsets = vec![0, size - KIB4];
        for _ in 0..3 {
            offsets.push(self.rng.below(size / KIB4) * KIB4);
        }
        for offset in offsets {
            assert_eq!(
                self.model.get(&(base + offset)),
                Some(&(phys_base + offset, flags)),
                "{virt:#x}: the {:?} page at {base:#x} disagrees with the model at +{offset:#x}",
                t.page_size
            );
        }
    }

    fn step_check(&mut self) {
        for _ in 0..24 {
            let virt = self.address() + self.rng.below(KIB4);
            self.check(virt);
        }
        for _ in 0..8 {
            let from = self.address();
            if let Some((&page, _)) = self.model.range(from..).next() {
                let virt = page + self.rng.below(KIB4);
                self.check(virt);
            }
        }
    }
}

fn run<F: EntryFormat>(seed: u64, window: u64, flag_choices: &'static [MapFlags], ops: usize) {
    let mut m = Machine::new();
    let pt = PageTable::<F>::new(&mut m.frames).unwrap();
    let mut run = Run {
        m,
        pt,
        model: Model::new(),
        rng: Rng::new(seed),
        window,
        flag_choices,
        stats: Stats::default(),
    };
    for step in 0..ops {
        if step % 1000 == 0 {
            run.fresh_gib();
        }
        match run.rng.below(100) {
            0..45 => run.step_map(),
            45..70 => run.step_unmap(),
            70..85 => run.step_protect(),
            _ => run.step_check(),
        }
        if step % 200 == 0 {
            run.m.check_tree::<F>(run.pt.root());
        }
    }
    run.m.check_tree::<F>(run.pt.root());
    for _ in 0..50 {
        run.step_check();
    }
    assert!(
        !run.model.is_empty(),
        "the run should end with something mapped"
    );
    let s = &run.stats;
    let covered = [
        s.maps,
        s.overlaps,
        s.protects,
        s.holes,
        s.unmaps,
        s.rollbacks,
    ];
    assert!(
        covered.iter().chain(&s.sizes).all(|&n| n > 0),
        "seed {seed:#x} left a path untested: {s:?}"
    );
    eprintln!("seed {seed:#x}: {s:?}");

    // Unmapping the window leaves only the root; destroy frees it.
    let Run { mut m, mut pt, .. } = run;
    pt.unmap(&mut m.mem, &mut m.frames, window, WINDOW_LEN)
        .unwrap();
    assert_eq!(m.live(), 1);
    pt.destroy(&m.mem, &mut m.frames);
    assert_eq!(m.live(), 0);
    assert_eq!(m.allocs(), m.frees());
}

const X86_FLAGS: &[MapFlags] = &[
    MapFlags::READ.union(MapFlags::WRITE),
    MapFlags::READ.union(MapFlags::EXECUTE),
    MapFlags::READ,
    MapFlags::READ.union(MapFlags::WRITE).union(MapFlags::USER),
    MapFlags::READ
        .union(MapFlags::WRITE)
        .union(MapFlags::GLOBAL),
    MapFlags::READ
        .union(MapFlags::WRITE)
        .union(MapFlags::UNCACHEABLE),
    MapFlags::EXECUTE.union(MapFlags::WRITE_THROUGH),
];

const EPT_FLAGS: &[MapFlags] = &[
    MapFlags::READ,
    MapFlags::READ.union(MapFlags::WRITE),
    MapFlags::READ
        .union(MapFlags::WRITE)
        .union(MapFlags::EXECUTE),
    MapFlags::READ.union(MapFlags::EXECUTE),
    MapFlags::EXECUTE,
    MapFlags::READ
        .union(MapFlags::WRITE)
        .union(MapFlags::UNCACHEABLE),
    MapFlags::READ
        .union(MapFlags::WRITE)
        .union(MapFlags::WRITE_THROUGH),
];

#[test]
fn random_x86_against_model() {
    for seed in [0x5eed, 0xbadc_0ffe] {
        run::<X86>(seed, DIRECT_MAP + 16 * GIB1, X86_FLAGS, 3000);
    }
}

#[test]
fn random_x86_lower_half_against_model() {
    // The last four GiBs of the lower half, up to the non-canonical hole.
    run::<X86>(0xfeed_face, (1 << 47) - WINDOW_LEN, X86_FLAGS, 3000);
}

#[test]
fn random_ept_against_model() {
    for seed in [0x1dea, 0xdead_beef] {
        run::<Ept>(seed, 4 * GIB1, EPT_FLAGS, 3000);
    }
}
