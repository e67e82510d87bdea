//! Host tests: unit tests and a model-based random test.

use super::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Links in a hash map, as the crate documentation suggests for tests.
#[derive(Debug, Default)]
struct HashLinks(HashMap<u64, Link>);

impl LinkStore for HashLinks {
    fn read(&self, frame: u64) -> Link {
        self.0.get(&frame).copied().unwrap_or_default()
    }

    fn write(&mut self, frame: u64, link: Link) {
        self.0.insert(frame, link);
    }
}

/// Links in a vector over the span (faster), with a log of the frames the allocator wrote.
#[derive(Debug)]
struct VecLinks {
    base: u64,
    links: Vec<Link>,
    written: Vec<u64>,
}

impl VecLinks {
    fn new(base: u64, frames: usize) -> Self {
        VecLinks {
            base,
            links: vec![Link::default(); frames],
            written: Vec::new(),
        }
    }

    /// What the owner of allocated memory might do: overwrite the first bytes of its frames.
    fn scribble(&mut self, frame: u64, garbage: u64) {
        if let Some(link) = self.links.get_mut((frame - self.base) as usize) {
            *link = Link {
                prev: Some(garbage),
                next: Some(garbage.rotate_left(17)),
            };
        }
    }
}

impl LinkStore for VecLinks {
    fn read(&self, frame: u64) -> Link {
        frame
            .checked_sub(self.base)
            .and_then(|i| self.links.get(i as usize))
            .copied()
            .unwrap_or(Link {
                prev: Some(0xdead),
                next: Some(0xbeef),
            })
    }

    fn write(&mut self, frame: u64, link: Link) {
        self.written.push(frame);
        let i = (frame - self.base) as usize;
        self.links[i] = link;
    }
}

/// xorshift64* PRNG, seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn owner(&mut self) -> Owner {
        Owner::ALL[self.below(Owner::COUNT as u64) as usize]
    }

    /// An order biased towards small ones, sometimes beyond what the span can hold.
    fn order(&mut self) -> u32 {
        match self.below(100) {
            0..45 => 0,
            45..65 => 1,
            65..77 => 2,
            77..85 => 3,
            85..90 => 4,
            90..95 => 5 + self.below(3) as u32,
            _ => 8 + self.below(u64::from(MAX_ORDER) - 7) as u32,
        }
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// QEMU's usable RAM with `-m 512`: low memory below the EBDA, and RAM above 1 MiB up to the
/// ACPI tables.
const QEMU_RANGES: [(u64, u64); 2] = [(0, 0x9f000), (0x10_0000, 0x1ffe_0000)];
const QEMU_SPAN: u64 = 0x1ffe0;

fn free_blocks<L: LinkStore>(a: &FrameAllocator<'_, L>) -> BTreeSet<(u64, u32)> {
    let mut set = BTreeSet::new();
    a.for_each_free_block(|addr, order| {
        assert!(set.insert((addr, order)), "{addr:#x} listed twice");
    })
    .unwrap();
    set
}

/// Reference: the maximal aligned blocks (at most `MAX_ORDER`) inside a set of frames, computed
/// from the definition (largest orders first), independently of the allocator.
fn canonical_blocks(base: u64, managed: &[bool]) -> BTreeSet<(u64, u32)> {
    let end = base + managed.len() as u64;
    let mut covered = vec![false; managed.len()];
    let mut blocks = BTreeSet::new();
    for order in (0..=MAX_ORDER).rev() {
        let n = 1u64 << order;
        let mut frame = base.div_ceil(n) * n;
        while frame + n <= end {
            let range = (frame - base) as usize..(frame - base + n) as usize;
            if managed[range.clone()].iter().all(|&m| m) && !covered[range.clone()][0] {
                covered[range].iter_mut().for_each(|c| *c = true);
                blocks.insert((frame << PAGE_SHIFT, order));
            }
            frame += n;
        }
    }
    blocks
}

fn managed_from_ranges(base: u64, frames: u64, ranges: &[(u64, u64)]) -> Vec<bool> {
    let mut managed = vec![false; frames as usize];
    for &(start, end) in ranges {
        for frame in start.div_ceil(PAGE_SIZE)..end / PAGE_SIZE {
            if frame >= base && frame < base + frames {
                managed[(frame - base) as usize] = true;
            }
        }
    }
    managed
}

fn qemu(meta: &mut [u8]) -> FrameAllocator<'_, HashLinks> {
    let mut a = FrameAllocator::new(0, meta, HashLinks::default());
    for (start, end) in QEMU_RANGES {
        a.add_free_range(start, end).unwrap();
    }
    a
}

#[test]
fn meta_bytes_round_trip() {
    assert_eq!(Meta::decode(0), Meta::None);
    let mut seen = BTreeSet::new();
    let mut all = vec![Meta::None];
    for order in 0..=MAX_ORDER {
        all.push(Meta::Free(order));
        for owner in Owner::ALL {
            all.push(Meta::Used(order, owner));
        }
    }
    for meta in all {
        assert_eq!(Meta::decode(meta.encode()), meta);
        assert!(seen.insert(meta.encode()), "{meta:?} encoded twice");
    }
    // Bytes never written decode as "not a head".
    for byte in 0..=255u8 {
        if !seen.contains(&byte) {
            assert_eq!(Meta::decode(byte), Meta::None, "{byte:#x}");
        }
    }
    assert_eq!(meta_bytes_needed(1 << 18), 256 * 1024);
}

#[test]
fn link_raw_round_trip() {
    for link in [
        Link::default(),
        Link {
            prev: Some(0),
            next: None,
        },
        Link {
            prev: Some(FRAME_LIMIT - 1),
            next: Some(7),
        },
    ] {
        assert_eq!(Link::from_raw(link.to_raw()), link);
    }
    assert_eq!(Link::default().to_raw(), [u64::MAX, u64::MAX]);
}

#[test]
fn owner_indices() {
    for (i, owner) in Owner::ALL.iter().enumerate() {
        assert_eq!(owner.index(), i);
        assert_eq!(Owner::from_index(i), Some(*owner));
    }
    assert_eq!(Owner::from_index(Owner::COUNT), None);
    assert_eq!(Owner::PageTables.to_string(), "page tables");
}

#[test]
fn sizes_display() {
    assert_eq!(Size(0).to_string(), "0 KiB");
    assert_eq!(Size(4096).to_string(), "4 KiB");
    assert_eq!(Size(2 * MIB).to_string(), "2 MiB");
    assert_eq!(Size(GIB).to_string(), "1 GiB");
    assert_eq!(Size(GIB + GIB / 2).to_string(), "1.5 GiB");
    assert_eq!(Size(0x1ffe_0000 - 0x10_0000).to_string(), "510.8 MiB");
    assert_eq!(Size(100).to_string(), "100 B");
}

#[test]
fn hand_made_values_display_without_panicking() {
    let corruption = Corruption {
        addr: u64::MAX,
        order: u32::MAX,
        what: "test",
    };
    let texts = [
        AllocError::OutOfMemory {
            order: u32::MAX,
            free_frames: u64::MAX,
        }
        .to_string(),
        AllocError::OutOfMemory {
            order: 60,
            free_frames: 1,
        }
        .to_string(),
        AllocError::Corrupted(corruption).to_string(),
        FreeError::Unaligned { addr: 1, order: 64 }.to_string(),
        FreeError::InsideAllocatedBlock {
            addr: 0,
            order: 99,
            block: 0,
            block_order: u32::MAX,
        }
        .to_string(),
        ClaimError::AlreadyAllocated {
            addr: 0,
            block: 0,
            order: 1000,
            owner: Owner::Other,
            claimant: Owner::Heap,
        }
        .to_string(),
        Stats {
            span_frames: u64::MAX,
            total_frames: u64::MAX,
            free_frames: u64::MAX,
            used_frames: u64::MAX,
            free_blocks: [u64::MAX; MAX_ORDER as usize + 1],
            used_by_owner: [u64::MAX; Owner::COUNT],
        }
        .to_string(),
    ];
    assert!(texts.iter().all(|t| !t.is_empty()));
    assert_eq!(
        texts[2],
        "frame allocator corrupted: test (frame 0xffffffffffffffff, order 4294967295)"
    );
}

#[test]
fn qemu_ranges_become_canonical_blocks() {
    let mut meta = vec![0xa5; QEMU_SPAN as usize];
    let a = qemu(&mut meta);
    let stats = a.stats();
    let expected = 0x9f + (0x1ffe0 - 0x100);
    assert_eq!(stats.span_frames, QEMU_SPAN);
    assert_eq!(stats.total_frames, expected);
    assert_eq!(stats.free_frames, expected);
    assert_eq!(stats.used_frames, 0);
    let managed = managed_from_ranges(0, QEMU_SPAN, &QEMU_RANGES);
    assert_eq!(free_blocks(&a), canonical_blocks(0, &managed));
    // Spot checks: low memory is 512 + 64 + 32 + 16 + 8 + 4 KiB; above 1 MiB, blocks grow from
    // 1 MiB at 1 MiB to 128 MiB at 128 MiB, then shrink towards the end.
    let blocks = free_blocks(&a);
    for block in [
        (0, 7),
        (0x80000, 4),
        (0x90000, 3),
        (0x98000, 2),
        (0x9c000, 1),
    ] {
        assert!(blocks.contains(&block), "{block:x?}");
    }
    assert!(blocks.contains(&(0x9e000, 0)));
    assert!(blocks.contains(&(0x10_0000, 8)));
    assert!(blocks.contains(&(0x800_0000, 15)));
    assert!(blocks.contains(&(0x1000_0000, 15)));
    assert!(blocks.contains(&(0x1ffc_0000, 5)));
    assert_eq!(stats.largest_free_order(), Some(15));
    a.verify().unwrap();

    assert_eq!(
        a.lookup(0x9e123),
        FrameState::Free {
            block: 0x9e000,
            order: 0
        }
    );
    assert_eq!(
        a.lookup(0x1234_5678),
        FrameState::Free {
            block: 0x1000_0000,
            order: 15
        }
    );
    assert_eq!(a.lookup(0x9f000), FrameState::Reserved);
    assert_eq!(a.lookup(0xfffff), FrameState::Reserved);
    assert_eq!(a.lookup(0x1ffe_0000), FrameState::OutOfSpan);
    assert_eq!(a.lookup(u64::MAX), FrameState::OutOfSpan);
}

#[test]
fn every_block_is_aligned() {
    let mut meta = vec![0; QEMU_SPAN as usize];
    let mut a = qemu(&mut meta);
    let mut rng = Rng(7);
    let mut live = Vec::new();
    for i in 0..4000 {
        let order = if i % 3 == 0 {
            rng.below(u64::from(MAX_ORDER) + 1) as u32
        } else {
            rng.order()
        };
        let owner = rng.owner();
        match a.alloc(order, owner) {
            Ok(addr) => {
                assert_eq!(addr % (PAGE_SIZE << order), 0, "order {order}: {addr:#x}");
                assert_eq!(
                    a.lookup(addr + (PAGE_SIZE << order) - 1),
                    FrameState::Allocated {
                        block: addr,
                        order,
                        owner
                    }
                );
                live.push((addr, order, owner));
            }
            Err(AllocError::OutOfMemory { .. }) => {
                assert!(a.stats().largest_free_order().is_none_or(|l| order > l));
            }
            Err(e) => panic!("{e}"),
        }
    }
    a.verify().unwrap();
    for (addr, order, owner) in live {
        a.free(addr, order, owner).unwrap();
    }
    a.verify().unwrap();
}

#[test]
fn gib_aligned_ram_gives_gib_blocks() {
    let span = 2 * (GIB / PAGE_SIZE) + 16;
    let mut meta = vec![0; span as usize];
    let mut a = FrameAllocator::new(0, &mut meta, HashLinks::default());
    assert_eq!(a.add_free_range(GIB, 2 * GIB).unwrap(), GIB / PAGE_SIZE);
    assert_eq!(free_blocks(&a), BTreeSet::from([(GIB, MAX_ORDER)]));
    // Not 1 GiB aligned at the start: no 1 GiB block there, but the 1 GiB above stays one.
    a.add_free_range(PAGE_SIZE, GIB).unwrap();
    let stats = a.stats();
    assert_eq!(stats.free_blocks[MAX_ORDER as usize], 1);
    assert_eq!(stats.free_blocks[MAX_ORDER as usize - 1], 1);
    assert_eq!(stats.free_blocks[0], 1);
    // Frame 0 completes the low GiB; two 1 GiB blocks never merge (order 18 is the maximum).
    a.add_free_range(0, PAGE_SIZE).unwrap();
    assert_eq!(
        free_blocks(&a),
        BTreeSet::from([(0, MAX_ORDER), (GIB, MAX_ORDER)])
    );
    let first = a.alloc(MAX_ORDER, Owner::Domain).unwrap();
    let second = a.alloc(MAX_ORDER, Owner::Domain).unwrap();
    assert_eq!(BTreeSet::from([first, second]), BTreeSet::from([0, GIB]));
    let err = a.alloc(MAX_ORDER, Owner::Domain).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: no free block of order 18 (1 GiB); no frames free"
    );
    a.free(second, MAX_ORDER, Owner::Domain).unwrap();
    // A 2 MiB allocation splits the 1 GiB block.
    let huge = a.alloc(9, Owner::Heap).unwrap();
    assert_eq!(huge, second);
    assert_eq!(a.stats().largest_free_order(), Some(MAX_ORDER - 1));
    a.free(huge, 9, Owner::Heap).unwrap();
    a.free(first, MAX_ORDER, Owner::Domain).unwrap();
    assert_eq!(
        free_blocks(&a),
        BTreeSet::from([(0, MAX_ORDER), (GIB, MAX_ORDER)])
    );
    a.verify().unwrap();
}

#[test]
fn exhaustion_is_an_error_and_recovers() {
    let base = 0x100;
    let mut meta = vec![0; 64];
    let mut a = FrameAllocator::new(base, &mut meta, HashLinks::default());
    a.add_free_range(base * PAGE_SIZE, (base + 64) * PAGE_SIZE)
        .unwrap();
    let mut frames = Vec::new();
    loop {
        match a.alloc_frame(Owner::Other) {
            Ok(addr) => frames.push(addr),
            Err(e) => {
                assert_eq!(
                    e,
                    AllocError::OutOfMemory {
                        order: 0,
                        free_frames: 0
                    }
                );
                assert_eq!(
                    e.to_string(),
                    "out of memory: no free block of order 0 (4 KiB); no frames free"
                );
                break;
            }
        }
    }
    assert_eq!(frames.len(), 64);
    assert_eq!(a.stats().used_by(Owner::Other), 64);
    assert_eq!(a.stats().free_frames, 0);
    // Free every other frame: 32 frames free, but no two contiguous.
    for &addr in frames.iter().step_by(2) {
        a.free_frame(addr, Owner::Other).unwrap();
    }
    let err = a.alloc(1, Owner::Other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: no free block of order 1 (8 KiB); 32 frames free but fragmented"
    );
    let err = a.alloc(6, Owner::Other).unwrap_err();
    assert_eq!(
        err.to_string(),
        "out of memory: no free block of order 6 (256 KiB); only 32 frames free"
    );
    let again = a.alloc_frame(Owner::Heap).unwrap();
    assert!(frames.contains(&again));
    a.free_frame(again, Owner::Heap).unwrap();
    for &addr in frames.iter().skip(1).step_by(2) {
        a.free_frame(addr, Owner::Other).unwrap();
    }
    assert_eq!(free_blocks(&a), BTreeSet::from([(base * PAGE_SIZE, 6)]));
    assert_eq!(a.alloc(6, Owner::Stacks).unwrap(), base * PAGE_SIZE);
    a.verify().unwrap();
}

#[test]
fn bad_frees_are_rejected_without_changes() {
    let mut meta = vec![0; QEMU_SPAN as usize];
    let mut a = qemu(&mut meta);
    let big = a.alloc(9, Owner::Heap).unwrap();
    let small = a.alloc(0, Owner::PageTables).unwrap();
    let freed = a.alloc(0, Owner::PageTables).unwrap();
    a.free_frame(freed, Owner::PageTables).unwrap();
    let before = a.stats();
    let blocks = free_blocks(&a);

    let cases: Vec<(FreeError, String)> = vec![
        (
            a.free(small, 0, Owner::Heap).unwrap_err(),
            format!("free of {small:#x} by heap but it was allocated by page tables"),
        ),
        (
            a.free(big, 0, Owner::Heap).unwrap_err(),
            format!("free of {big:#x} with order 0 but it was allocated with order 9"),
        ),
        (
            a.free(big, 8, Owner::Heap).unwrap_err(),
            format!("free of {big:#x} with order 8 but it was allocated with order 9"),
        ),
        (
            a.free(0x20_0000, 10, Owner::Heap).unwrap_err(),
            "free of 0x200000 with order 10: not aligned to 4 MiB".to_string(),
        ),
        (
            a.free(big + 0x1000, 0, Owner::Heap).unwrap_err(),
            format!(
                "free of {:#x} with order 0 but it lies inside the block {big:#x} allocated with \
             order 9 (2 MiB)",
                big + 0x1000
            ),
        ),
        (
            a.free(big + 0x10_0000, 8, Owner::Heap).unwrap_err(),
            format!(
                "free of {:#x} with order 8 but it lies inside the block {big:#x} allocated with \
             order 9 (2 MiB)",
                big + 0x10_0000
            ),
        ),
        (
            a.free(freed, 0, Owner::PageTables).unwrap_err(),
            format!("double free of frame {freed:#x}"),
        ),
        (
            // Inside the free 4 MiB block at 4 MiB.
            a.free(0x40_1000, 0, Owner::Heap).unwrap_err(),
            "double free of frame 0x401000: it lies in the free block 0x400000 of order 10 \
             (4 MiB)"
                .to_string(),
        ),
        (
            a.free(small + 1, 0, Owner::PageTables).unwrap_err(),
            format!(
                "free of {:#x} with order 0: not aligned to 4 KiB",
                small + 1
            ),
        ),
        (
            a.free(0x1000, 1, Owner::PageTables).unwrap_err(),
            "free of 0x1000 with order 1: not aligned to 8 KiB".to_string(),
        ),
        (
            a.free(0x1ffe_0000, 0, Owner::Other).unwrap_err(),
            "free of 0x1ffe0000 with order 0 (4 KiB): outside the managed memory".to_string(),
        ),
        (
            a.free(0x1ffc_0000, 6, Owner::Other).unwrap_err(),
            "free of 0x1ffc0000 with order 6 (256 KiB): outside the managed memory".to_string(),
        ),
        (
            a.free(u64::MAX - 0xfff, 0, Owner::Other).unwrap_err(),
            "free of 0xfffffffffffff000 with order 0 (4 KiB): outside the managed memory"
                .to_string(),
        ),
        (
            a.free(0xa0000, 0, Owner::Other).unwrap_err(),
            "free of 0xa0000: reserved frame, never given to the allocator".to_string(),
        ),
        (
            a.free(0, MAX_ORDER + 1, Owner::Other).unwrap_err(),
            "free with invalid order 19: the largest is 18 (1 GiB)".to_string(),
        ),
        (
            a.free(0, u32::MAX, Owner::Other).unwrap_err(),
            "free with invalid order 4294967295: the largest is 18 (1 GiB)".to_string(),
        ),
    ];
    for (err, message) in cases {
        assert_eq!(err.to_string(), message, "{err:?}");
    }
    assert_eq!(
        a.alloc(MAX_ORDER + 1, Owner::Other)
            .unwrap_err()
            .to_string(),
        "invalid order 19: the largest is 18 (1 GiB)"
    );
    assert_eq!(a.stats(), before);
    assert_eq!(free_blocks(&a), blocks);
    a.verify().unwrap();
    a.free(big, 9, Owner::Heap).unwrap();
    a.free(small, 0, Owner::PageTables).unwrap();
    let managed = managed_from_ranges(0, QEMU_SPAN, &QEMU_RANGES);
    assert_eq!(free_blocks(&a), canonical_blocks(0, &managed));
}

#[test]
fn freeing_everything_coalesces_back() {
    let mut meta = vec![0; QEMU_SPAN as usize];
    let mut a = qemu(&mut meta);
    let initial = free_blocks(&a);
    let initial_stats = a.stats();
    let mut rng = Rng(0x5eed);
    let mut live = Vec::new();
    // Mixed orders until nothing is left, then single frames for the crumbs.
    let mut order = 9;
    loop {
        match a.alloc(order, Owner::Domain) {
            Ok(addr) => live.push((addr, order)),
            Err(AllocError::OutOfMemory { free_frames: 0, .. }) => break,
            Err(AllocError::OutOfMemory { .. }) => order = order.saturating_sub(1),
            Err(e) => panic!("{e}"),
        }
        if live.len() % 7 == 0 {
            order = rng.below(10) as u32;
        }
    }
    assert_eq!(a.stats().free_frames, 0);
    assert_eq!(a.stats().used_by(Owner::Domain), initial_stats.total_frames);
    assert!(free_blocks(&a).is_empty());
    rng.shuffle(&mut live);
    for (addr, order) in live {
        a.free(addr, order, Owner::Domain).unwrap();
    }
    assert_eq!(free_blocks(&a), initial);
    assert_eq!(a.stats(), initial_stats);
    a.verify().unwrap();
}

#[test]
fn adding_overlapping_ranges_is_ignored() {
    let base = 0x200;
    let span = 0x400;
    let mut meta = vec![0; span];
    let mut a = FrameAllocator::new(base, &mut meta, HashLinks::default());
    let addr = |frame: u64| frame * PAGE_SIZE;
    assert_eq!(a.add_free_range(addr(0x210), addr(0x300)).unwrap(), 0xf0);
    let block = a.alloc(4, Owner::Heap).unwrap();
    let blocks = free_blocks(&a);
    // The same range again: nothing new, nothing changed.
    assert_eq!(a.add_free_range(addr(0x210), addr(0x300)).unwrap(), 0);
    assert_eq!(free_blocks(&a), blocks);
    // Overlapping on both sides, and over the allocated block: only the new frames count.
    assert_eq!(
        a.add_free_range(addr(0x208) - 5, addr(0x310) + 5).unwrap(),
        8 + 0x10
    );
    assert_eq!(
        a.lookup(block),
        FrameState::Allocated {
            block,
            order: 4,
            owner: Owner::Heap
        }
    );
    // Outside the span, or empty after rounding: nothing.
    assert_eq!(a.add_free_range(0, addr(base)).unwrap(), 0);
    assert_eq!(a.add_free_range(addr(0x600), u64::MAX).unwrap(), 0);
    assert_eq!(
        a.add_free_range(addr(0x100) + 1, addr(0x101) + 1).unwrap(),
        0
    );
    assert_eq!(a.add_free_range(u64::MAX, 0).unwrap(), 0);
    a.verify().unwrap();
    let stats = a.stats();
    assert_eq!(stats.total_frames, 0x108);
    assert_eq!(stats.free_frames + stats.used_frames, stats.total_frames);
    a.free(block, 4, Owner::Heap).unwrap();
    let managed = managed_from_ranges(base, span as u64, &[(addr(0x208), addr(0x310))]);
    assert_eq!(free_blocks(&a), canonical_blocks(base, &managed));
    // Everything: the whole span becomes the canonical decomposition.
    a.add_free_range(0, u64::MAX).unwrap();
    let managed = vec![true; span];
    assert_eq!(free_blocks(&a), canonical_blocks(base, &managed));
    assert_eq!(a.stats().total_frames, span as u64);
    a.verify().unwrap();
}

#[test]
fn claimed_ranges_are_accounted_and_freeable() {
    let mut meta = vec![0; QEMU_SPAN as usize];
    let mut a = qemu(&mut meta);
    let initial = free_blocks(&a);
    let total = a.stats().total_frames;
    // The image at 2 MiB..3.5 MiB (free RAM): 384 frames, partly inside larger blocks.
    assert_eq!(
        a.claim_range(0x20_0000 + 12, 0x38_0000 - 100, Owner::Hypervisor)
            .unwrap(),
        384
    );
    // The frame metadata, in a hole (reserved): brought under management.
    assert_eq!(
        a.claim_range(0xa0000, 0xa2001, Owner::FrameMeta).unwrap(),
        3
    );
    let stats = a.stats();
    assert_eq!(stats.used_by(Owner::Hypervisor), 384);
    assert_eq!(stats.used_by(Owner::FrameMeta), 3);
    assert_eq!(stats.total_frames, total + 3);
    assert_eq!(stats.free_frames, total - 384);
    assert_eq!(
        a.lookup(0x30_0000),
        FrameState::Allocated {
            block: 0x30_0000,
            order: 0,
            owner: Owner::Hypervisor
        }
    );
    a.verify().unwrap();
    // Overlapping an allocated frame: refused, nothing changes.
    let blocks = free_blocks(&a);
    let err = a
        .claim_range(0x1f_0000, 0x20_1000, Owner::PageTables)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot claim 0x200000 for page tables: it lies in the block 0x200000 allocated with \
         order 0 (4 KiB) by hypervisor"
    );
    assert_eq!(a.stats(), stats);
    assert_eq!(free_blocks(&a), blocks);
    // Claimed frames are ordinary order-0 allocations.
    assert!(matches!(
        a.free(0x20_0000, 0, Owner::Heap),
        Err(FreeError::WrongOwner { .. })
    ));
    for frame in 0x200..0x380 {
        a.free_frame(frame * PAGE_SIZE, Owner::Hypervisor).unwrap();
    }
    assert_eq!(free_blocks(&a), initial);
    for frame in 0xa0..0xa3 {
        a.free_frame(frame * PAGE_SIZE, Owner::FrameMeta).unwrap();
    }
    let mut managed = managed_from_ranges(0, QEMU_SPAN, &QEMU_RANGES);
    managed[0xa0..0xa3].iter_mut().for_each(|m| *m = true);
    assert_eq!(free_blocks(&a), canonical_blocks(0, &managed));
    assert_eq!(a.stats().used_frames, 0);
    a.verify().unwrap();
}

#[test]
fn stats_display() {
    let mut meta = vec![0; QEMU_SPAN as usize];
    let mut a = qemu(&mut meta);
    a.claim_range(0x10_0000, 0x30_0000, Owner::Hypervisor)
        .unwrap();
    a.alloc(0, Owner::PageTables).unwrap();
    let text = a.stats().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "memory: 511.4 MiB managed, 509.4 MiB free, 2.0 MiB used"
    );
    assert!(
        lines[1].starts_with("free blocks: 1 x 8 KiB, 1 x 16 KiB,"),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with(", 2 x 128 MiB"), "{}", lines[1]);
    assert_eq!(lines[2], "used by: hypervisor 2 MiB, page tables 4 KiB");
    let empty = Stats::default().to_string();
    assert_eq!(
        empty,
        "memory: 0 KiB managed, 0 KiB free, 0 KiB used\nfree blocks: none\nused by: nothing"
    );
}

#[test]
fn extreme_spans_do_not_panic() {
    let mut meta = vec![0; 64];
    // A span at the very top of the frame numbers: clipped.
    let mut a = FrameAllocator::new(FRAME_LIMIT - 16, &mut meta, HashLinks::default());
    assert_eq!(a.span(), FRAME_LIMIT - 16..FRAME_LIMIT);
    // The last frame ends at 2^64, which `end` cannot express: 15 frames.
    assert_eq!(a.add_free_range(0, u64::MAX).unwrap(), 15);
    let low = a.alloc(3, Owner::Other).unwrap();
    assert_eq!(low, (FRAME_LIMIT - 16) << PAGE_SHIFT);
    assert!(a.alloc(3, Owner::Other).is_err());
    a.free(low, 3, Owner::Other).unwrap();
    assert!(a.free(u64::MAX, 0, Owner::Other).is_err());
    assert!(a.free(u64::MAX - 0xfff, 0, Owner::Other).is_err());
    assert_eq!(
        a.claim_range(u64::MAX - 5000, u64::MAX, Owner::Other)
            .unwrap(),
        2
    );
    a.verify().unwrap();
    drop(a);

    let mut meta = vec![0; 8];
    let mut b = FrameAllocator::new(u64::MAX, &mut meta, HashLinks::default());
    assert_eq!(b.span(), FRAME_LIMIT..FRAME_LIMIT);
    assert_eq!(b.add_free_range(0, u64::MAX).unwrap(), 0);
    assert!(b.alloc_frame(Owner::Other).is_err());
    assert_eq!(b.lookup(u64::MAX), FrameState::OutOfSpan);
    b.verify().unwrap();
    drop(b);

    let mut c = FrameAllocator::new(0, &mut [], HashLinks::default());
    assert_eq!(c.add_free_range(0, u64::MAX).unwrap(), 0);
    assert_eq!(c.claim_range(0, u64::MAX, Owner::Other).unwrap(), 0);
    assert!(c.alloc_frame(Owner::Other).is_err());
    assert!(c.free_frame(0, Owner::Other).is_err());
    c.verify().unwrap();
}

#[test]
fn random_garbage_calls_never_panic() {
    let base = 0x7f3;
    let mut meta = vec![0; 600];
    let mut a = FrameAllocator::new(base, &mut meta, HashLinks::default());
    let mut rng = Rng(99);
    let span_bytes = |rng: &mut Rng| (base + rng.below(700)) * PAGE_SIZE + rng.below(3) * 100;
    for _ in 0..20_000 {
        let order = if rng.below(10) == 0 {
            rng.next() as u32
        } else {
            rng.below(12) as u32
        };
        let addr = match rng.below(4) {
            0 => rng.next(),
            _ => span_bytes(&mut rng),
        };
        let owner = rng.owner();
        let _ = match rng.below(6) {
            0 => a.alloc(order, owner).map(|_| ()).map_err(|e| e.to_string()),
            1 | 2 => a.free(addr, order, owner).map_err(|e| e.to_string()),
            3 => {
                let end = addr.saturating_add(rng.below(64 * PAGE_SIZE));
                a.add_free_range(addr, end)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            4 => {
                let end = addr.saturating_add(rng.below(8 * PAGE_SIZE));
                a.claim_range(addr, end, owner)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => {
                let _ = a.lookup(addr);
                Ok(())
            }
        };
    }
    a.verify().unwrap();
}

#[test]
fn corrupted_links_are_reported_not_followed() {
    let base = 0x1000;
    let mut links = VecLinks::new(base, 64);
    let mut meta = vec![0; 64];
    let mut a = FrameAllocator::new(base, &mut meta, &mut links);
    a.add_free_range(base * PAGE_SIZE, (base + 64) * PAGE_SIZE)
        .unwrap();
    let f: Vec<u64> = (0..4)
        .map(|_| a.alloc_frame(Owner::Other).unwrap())
        .collect();
    assert_eq!(f, [0, 1, 2, 3].map(|i| (base + i) * PAGE_SIZE));
    // f0 and f2 free (their buddies f1 and f3 are allocated): order-0 list f2 -> f0.
    a.free_frame(f[0], Owner::Other).unwrap();
    a.free_frame(f[2], Owner::Other).unwrap();
    assert_eq!(a.stats().free_blocks[0], 2);
    a.verify().unwrap();
    let before = a.stats();
    // A stray write into the free frame f0: its back link now points at the allocated f1.
    let f1 = f[1] >> PAGE_SHIFT;
    a.links_mut().scribble(f[0] >> PAGE_SHIFT, f1);
    a.links_mut().written.clear();
    let err = a.verify().unwrap_err();
    assert_eq!(err.order, 0);
    assert!(
        err.to_string().starts_with("frame allocator corrupted: "),
        "{err}"
    );
    // Taking f2 off the list would make f0 the head: the links disagree, nothing is allocated.
    let err = a.alloc_frame(Owner::Other).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "frame allocator corrupted: free-list links of neighbouring blocks disagree \
             (frame {:#x}, order 0)",
            f[0]
        )
    );
    assert_eq!(a.stats(), before);
    // Larger orders are unaffected.
    let other = a.alloc(2, Owner::Other).unwrap();
    a.free(other, 2, Owner::Other).unwrap();
    // Freeing f1 must merge with f0, whose links point into allocated memory: f1 is freed
    // (and counted), the merge is refused, and nothing is written into f1's old neighbours.
    a.links_mut().written.clear();
    let err = a.free_frame(f[1], Owner::Other).unwrap_err();
    assert!(matches!(err, FreeError::Corrupted(_)), "{err:?}");
    let stats = a.stats();
    assert_eq!(stats.free_frames, before.free_frames + 1);
    assert_eq!(stats.free_frames + stats.used_frames, stats.total_frames);
    // f1 itself, and the back link of f2, the head of the order-0 list.
    assert_eq!(a.links().written, [f1, f1 + 1]);
    assert!(a.verify().is_err());
}

#[test]
fn allocated_memory_contents_are_never_trusted() {
    let base = 0x3000;
    let frames = 1024;
    let mut links = VecLinks::new(base, frames);
    let mut meta = vec![0; frames];
    let mut a = FrameAllocator::new(base, &mut meta, &mut links);
    a.add_free_range(base * PAGE_SIZE, (base + frames as u64) * PAGE_SIZE)
        .unwrap();
    let initial = free_blocks(&a);
    let mut rng = Rng(1234);
    let mut live = Vec::new();
    loop {
        let order = rng.below(4) as u32;
        match a.alloc(order, Owner::Heap) {
            Ok(addr) => live.push((addr, order)),
            Err(AllocError::OutOfMemory { free_frames: 0, .. }) => break,
            Err(AllocError::OutOfMemory { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // The owners overwrite every frame they own with garbage that looks like links.
    for &(addr, order) in &live {
        for frame in (addr >> PAGE_SHIFT)..(addr >> PAGE_SHIFT) + (1 << order) {
            let garbage = rng.next() % (base + frames as u64 + 4);
            a.links_mut().scribble(frame, garbage);
        }
    }
    rng.shuffle(&mut live);
    for (addr, order) in live {
        a.free(addr, order, Owner::Heap).unwrap();
    }
    assert_eq!(free_blocks(&a), initial);
    a.verify().unwrap();
}

/// The model of the random test.
struct Model {
    base: u64,
    /// Frames handed to the allocator.
    managed: Vec<bool>,
    /// `prefix[i]`: managed frames in `[base, base + i)`.
    prefix: Vec<u64>,
    /// Allocated blocks (frame, order, owner), sorted by frame.
    allocated: Vec<(u64, u32, Owner)>,
    /// Per frame: [`ALLOCATED`] if in an allocated block, else 0; [`check_against_model`]
    /// temporarily marks free blocks with [`FREE`].
    cover: Vec<u8>,
    /// Frames allocated, per owner.
    used_by_owner: [u64; Owner::COUNT],
}

const ALLOCATED: u8 = 1;
const FREE: u8 = 2;

impl Model {
    fn new(base: u64, managed: Vec<bool>) -> Self {
        let mut model = Model {
            base,
            cover: vec![0; managed.len()],
            managed,
            prefix: Vec::new(),
            allocated: Vec::new(),
            used_by_owner: [0; Owner::COUNT],
        };
        model.rebuild_prefix();
        model
    }

    fn end(&self) -> u64 {
        self.base + self.managed.len() as u64
    }

    fn rebuild_prefix(&mut self) {
        self.prefix.clear();
        self.prefix.push(0);
        let mut count = 0;
        for &m in &self.managed {
            count += u64::from(m);
            self.prefix.push(count);
        }
    }

    fn all_managed(&self, start: u64, end: u64) -> bool {
        let (i, j) = ((start - self.base) as usize, (end - self.base) as usize);
        self.prefix[j] - self.prefix[i] == end - start
    }

    fn total(&self) -> u64 {
        self.prefix[self.managed.len()]
    }

    /// The per-frame cover bytes of a block (which must be inside the span).
    fn cover_mut(&mut self, frame: u64, order: u32) -> &mut [u8] {
        let start = (frame - self.base) as usize;
        &mut self.cover[start..start + (1 << order)]
    }

    /// Index of the first allocated block starting at or after `frame`.
    fn index_from(&self, frame: u64) -> usize {
        self.allocated.partition_point(|&(head, _, _)| head < frame)
    }

    /// The allocated block containing `frame`.
    fn containing(&self, frame: u64) -> Option<(u64, u32, Owner)> {
        let i = self
            .allocated
            .partition_point(|&(head, _, _)| head <= frame);
        let (head, order, owner) = *self.allocated.get(i.checked_sub(1)?)?;
        (frame < head + (1 << order)).then_some((head, order, owner))
    }

    /// Records a new block, checking that it overlaps no other.
    fn insert(&mut self, frame: u64, order: u32, owner: Owner) {
        let cover = self.cover_mut(frame, order);
        assert!(
            !cover.contains(&ALLOCATED),
            "new block {frame:#x} overlaps another"
        );
        cover.fill(ALLOCATED);
        let i = self.index_from(frame);
        self.allocated.insert(i, (frame, order, owner));
        self.used_by_owner[owner.index()] += 1 << order;
    }

    fn remove_at(&mut self, index: usize) -> (u64, u32, Owner) {
        let (frame, order, owner) = self.allocated.remove(index);
        self.cover_mut(frame, order).fill(0);
        self.used_by_owner[owner.index()] -= 1 << order;
        (frame, order, owner)
    }

    fn remove(&mut self, frame: u64) {
        let i = self.index_from(frame);
        assert_eq!(self.allocated[i].0, frame);
        self.remove_at(i);
    }

    /// What `free(addr, order, owner)` must do, from the model alone: `None` if it is valid.
    fn expected_free_error(&self, addr: u64, order: u32, owner: Owner) -> Option<&'static str> {
        if order > MAX_ORDER {
            return Some("InvalidOrder");
        }
        if !addr.is_multiple_of(PAGE_SIZE << order) {
            return Some("Unaligned");
        }
        let frame = addr >> PAGE_SHIFT;
        if frame < self.base || frame + (1 << order) > self.end() {
            return Some("OutOfSpan");
        }
        match self.containing(frame) {
            Some((head, o, w)) if head == frame => {
                if o != order {
                    Some("WrongOrder")
                } else if w != owner {
                    Some("WrongOwner")
                } else {
                    None
                }
            }
            Some(_) => Some("InsideAllocatedBlock"),
            None if self.managed[(frame - self.base) as usize] => Some("DoubleFree"),
            None => Some("NotAllocated"),
        }
    }
}

fn free_error_name(err: &FreeError) -> &'static str {
    match err {
        FreeError::InvalidOrder { .. } => "InvalidOrder",
        FreeError::Unaligned { .. } => "Unaligned",
        FreeError::OutOfSpan { .. } => "OutOfSpan",
        FreeError::DoubleFree { .. } => "DoubleFree",
        FreeError::WrongOrder { .. } => "WrongOrder",
        FreeError::InsideAllocatedBlock { .. } => "InsideAllocatedBlock",
        FreeError::WrongOwner { .. } => "WrongOwner",
        FreeError::NotAllocated { .. } => "NotAllocated",
        FreeError::Corrupted(_) => "Corrupted",
    }
}

/// Checks the allocator against the model after each operation:
///
/// - the free lists (walked) agree with the per-order and free counters;
/// - every free block is aligned, made of managed frames, and overlaps neither an allocated
///   block of the model nor another free block (marking the model's per-frame cover);
/// - used frames per owner agree with the model, and free + used == total == managed frames,
///   so free and allocated blocks cover the managed frames exactly;
/// - every link the allocator wrote during the operation went into a free block, or into
///   `claimed`, the frames that were free before the operation and that it claimed.
///
/// O(free blocks), the per-frame work being `memchr`/`memset` on the cover bytes.
fn check_against_model(
    a: &mut FrameAllocator<'_, &mut VecLinks>,
    model: &mut Model,
    free_list: &mut Vec<(u64, u32)>,
    claimed: &[u64],
) {
    let stats = a.stats();
    free_list.clear();
    let mut per_order = [0u64; MAX_ORDER as usize + 1];
    let mut free = 0;
    a.for_each_free_block(|addr, order| {
        per_order[order as usize] += 1;
        free += 1u64 << order;
        free_list.push((addr >> PAGE_SHIFT, order));
    })
    .unwrap();
    assert_eq!(per_order, stats.free_blocks);
    assert_eq!(free, stats.free_frames);
    assert_eq!(model.used_by_owner, stats.used_by_owner);
    assert_eq!(stats.used_frames, model.used_by_owner.iter().sum::<u64>());
    assert_eq!(stats.free_frames + stats.used_frames, stats.total_frames);
    assert_eq!(stats.total_frames, model.total());

    for &(frame, order) in free_list.iter() {
        let end = frame + (1 << order);
        assert_eq!(frame % (1 << order), 0, "free block {frame:#x} unaligned");
        assert!(
            frame >= model.base && end <= model.end(),
            "free block {frame:#x} outside"
        );
        assert!(
            model.all_managed(frame, end),
            "free block {frame:#x} covers reserved frames"
        );
        let cover = model.cover_mut(frame, order);
        assert!(
            !cover.contains(&ALLOCATED),
            "free block {frame:#x} overlaps an allocated one"
        );
        assert!(
            !cover.contains(&FREE),
            "free block {frame:#x} overlaps another free one"
        );
        cover.fill(FREE);
    }

    let written = std::mem::take(&mut a.links_mut().written);
    for frame in written {
        let in_free = frame
            .checked_sub(model.base)
            .and_then(|i| model.cover.get(i as usize))
            == Some(&FREE);
        assert!(
            in_free || claimed.contains(&frame),
            "link written to {frame:#x}, outside the free blocks"
        );
    }

    for &(frame, order) in free_list.iter() {
        model.cover_mut(frame, order).fill(0);
    }
}

#[test]
fn random_operations_match_model() {
    // A span that does not start aligned, with a hole and ragged (unaligned) range ends.
    let base: u64 = 0x0ffd;
    let frames: u64 = 1600;
    let ranges = [
        ((base + 3) * PAGE_SIZE + 100, 0x1400 * PAGE_SIZE),
        (0x1440 * PAGE_SIZE - 1, (base + frames - 5) * PAGE_SIZE + 7),
    ];
    let mut links = VecLinks::new(base, frames as usize);
    let mut meta = vec![0x55; frames as usize];
    let mut a = FrameAllocator::new(base, &mut meta, &mut links);
    for (start, end) in ranges {
        a.add_free_range(start, end).unwrap();
    }
    let mut model = Model::new(base, managed_from_ranges(base, frames, &ranges));
    assert_eq!(free_blocks(&a), canonical_blocks(base, &model.managed));
    a.links_mut().written.clear();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut scratch = Vec::new();
    let mut counts = BTreeMap::<&str, u64>::new();
    for op in 0..100_000u32 {
        let stats = a.stats();
        let alloc_percent = if stats.free_frames * 2 > stats.total_frames {
            62
        } else {
            45
        };
        let roll = rng.below(100);
        // Frames free before this operation that a claim took.
        let mut claimed = Vec::new();
        if roll < alloc_percent || model.allocated.is_empty() {
            let order = rng.order();
            let owner = rng.owner();
            match a.alloc(order, owner) {
                Ok(addr) => {
                    let frame = addr >> PAGE_SHIFT;
                    let n = 1u64 << order;
                    assert_eq!(frame % n, 0);
                    assert!(frame >= base && frame + n <= model.end());
                    assert!(model.all_managed(frame, frame + n));
                    // `insert` checks that it overlaps no allocated block.
                    model.insert(frame, order, owner);
                    // The new owner scribbles over its memory.
                    let garbage = rng.next() % (base + frames);
                    a.links_mut().scribble(frame, garbage);
                    a.links_mut().scribble(frame + rng.below(n), garbage ^ 1);
                    *counts.entry("alloc").or_default() += 1;
                }
                Err(AllocError::OutOfMemory {
                    order: o,
                    free_frames,
                }) => {
                    assert_eq!(o, order);
                    assert_eq!(free_frames, stats.free_frames);
                    assert!(stats.free_blocks[order as usize..].iter().all(|&c| c == 0));
                    *counts.entry("alloc out of memory").or_default() += 1;
                }
                Err(e) => panic!("op {op}: {e}"),
            }
        } else if roll < 95 {
            let (frame, order, owner) =
                model.remove_at(rng.below(model.allocated.len() as u64) as usize);
            a.free(frame << PAGE_SHIFT, order, owner).unwrap();
            *counts.entry("free").or_default() += 1;
        } else if roll < 98 {
            // A free that is probably wrong: near a live block, or anywhere.
            let (addr, order) = if rng.below(2) == 0 && !model.allocated.is_empty() {
                let (frame, order, _) =
                    model.allocated[rng.below(model.allocated.len() as u64) as usize];
                let addr = (frame + rng.below(3)) << PAGE_SHIFT;
                let order = match rng.below(3) {
                    0 => order,
                    1 => order.saturating_sub(1),
                    _ => order + 1,
                };
                (addr, order)
            } else {
                let addr = (base + rng.below(frames + 8)).saturating_sub(4) << PAGE_SHIFT;
                let addr = if rng.below(10) == 0 {
                    addr + rng.below(PAGE_SIZE)
                } else {
                    addr
                };
                (addr, rng.below(u64::from(MAX_ORDER) + 3) as u32)
            };
            let owner = rng.owner();
            let expected = model.expected_free_error(addr, order, owner);
            let result = a.free(addr, order, owner);
            match (expected, result) {
                (None, Ok(())) => {
                    model.remove(addr >> PAGE_SHIFT);
                    *counts.entry("free (random, valid)").or_default() += 1;
                }
                (Some(name), Err(err)) => {
                    assert_eq!(free_error_name(&err), name, "op {op}: {err}");
                    assert_eq!(a.stats(), stats);
                    *counts.entry("free rejected").or_default() += 1;
                }
                (expected, result) => {
                    panic!(
                        "op {op}: free({addr:#x}, {order}, {owner}): expected {expected:?}, got {result:?}"
                    )
                }
            }
        } else if roll < 99 {
            // Claim a few frames (byte range, rounded outwards).
            let start =
                (base + rng.below(frames + 4)).saturating_sub(2) * PAGE_SIZE + rng.below(PAGE_SIZE);
            let end = start + rng.below(8 * PAGE_SIZE);
            let owner = rng.owner();
            let first = (start / PAGE_SIZE).max(base);
            let last = end.div_ceil(PAGE_SIZE).min(model.end());
            let busy = (first..last).find(|&f| model.containing(f).is_some());
            match (busy, a.claim_range(start, end, owner)) {
                (None, Ok(count)) => {
                    assert_eq!(count, last.saturating_sub(first));
                    for frame in first..last {
                        let managed = &mut model.managed[(frame - base) as usize];
                        if *managed {
                            claimed.push(frame);
                        }
                        *managed = true;
                        model.insert(frame, 0, owner);
                        a.links_mut().scribble(frame, rng.next());
                    }
                    model.rebuild_prefix();
                    *counts.entry("claim").or_default() += 1;
                }
                (Some(frame), Err(ClaimError::AlreadyAllocated { addr, .. })) => {
                    assert_eq!(addr, frame << PAGE_SHIFT);
                    assert_eq!(a.stats(), stats);
                    *counts.entry("claim rejected").or_default() += 1;
                }
                (busy, result) => panic!("op {op}: claim: model {busy:?}, got {result:?}"),
            }
        } else {
            // Add a small range (often overlapping managed memory).
            let start =
                (base + rng.below(frames + 4)).saturating_sub(2) * PAGE_SIZE + rng.below(PAGE_SIZE);
            let end = start + rng.below(16 * PAGE_SIZE);
            let first = start.div_ceil(PAGE_SIZE).max(base);
            let last = (end / PAGE_SIZE).min(model.end());
            let mut new = 0;
            for frame in first..last {
                let m = &mut model.managed[(frame - base) as usize];
                new += u64::from(!*m);
                *m = true;
            }
            model.rebuild_prefix();
            assert_eq!(a.add_free_range(start, end).unwrap(), new);
            *counts.entry("add").or_default() += 1;
        }
        check_against_model(&mut a, &mut model, &mut scratch, &claimed);
        if op % 64 == 0 {
            a.verify().unwrap();
        }
    }
    a.verify().unwrap();
    std::println!("{counts:?}");
    for name in [
        "alloc",
        "alloc out of memory",
        "free",
        "free rejected",
        "claim",
        "claim rejected",
        "add",
    ] {
        assert!(
            counts.get(name).copied().unwrap_or(0) > 50,
            "too few {name}: {counts:?}"
        );
    }

    // Free everything: back to the canonical blocks of what is managed now.
    let mut rest = model.allocated.clone();
    rng.shuffle(&mut rest);
    for (frame, order, owner) in rest {
        a.free(frame << PAGE_SHIFT, order, owner).unwrap();
    }
    assert_eq!(a.stats().used_frames, 0);
    assert_eq!(free_blocks(&a), canonical_blocks(base, &model.managed));
    a.verify().unwrap();
}
