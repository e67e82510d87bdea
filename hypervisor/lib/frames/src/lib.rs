#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Physical frame allocator for Basalt: a binary buddy system over 4 KiB frames.
//!
//! Pure logic, no heap, no `unsafe`: the hypervisor supplies the metadata array (carved out of
//! RAM at boot) and a [`LinkStore`] that reads and writes the free-list links inside free blocks
//! through the direct map. Host tests emulate that memory.
//!
//! # Blocks and orders
//!
//! A block of order `k` is `2^k` contiguous frames (`4 KiB << k`): order 0 is 4 KiB, order 9 is
//! 2 MiB, order [`MAX_ORDER`] = 18 is 1 GiB. A block of order `k` is naturally aligned: its first
//! frame number (physical address / 4096) is a multiple of `2^k`, so alignment is absolute (in
//! physical addresses), not relative to the start of the managed span. The *buddy* of the block
//! at frame `f` of order `k` is the block at `f ^ 2^k`; two free buddies merge into the block of
//! order `k + 1` at `min(f, buddy)`.
//!
//! # State
//!
//! The allocator manages the frames `[base_frame, base_frame + meta.len())` (the *span*). Each
//! frame of the span is in exactly one of three states:
//!
//! - **reserved**: never handed to the allocator (not RAM, or memory the hypervisor keeps);
//! - part of exactly one **free** block;
//! - part of exactly one **allocated** block, which has an order and an [`Owner`].
//!
//! Two structures record this:
//!
//! - **Metadata bytes**, one per frame of the span, in a caller-provided `&mut [u8]`. The byte of
//!   the *first* frame of a block says "head of a free block of order k" or "head of a block
//!   allocated with order k by owner o"; every other frame (interior frames of blocks, reserved
//!   frames) has the byte 0. These bytes are the reliable record: `free` validates its arguments
//!   against them (double free, wrong order, wrong owner, interior address) and finds free
//!   buddies through them, so nothing stored inside allocated memory is ever trusted.
//! - **Free lists**, one per order: intrusive doubly-linked lists whose [`Link`]s (previous and
//!   next free block of the same order) live in the first bytes of each free block, accessed
//!   through the [`LinkStore`]. The list heads and the per-order block counts live in the
//!   allocator itself. Links are only ever read from and written to frames whose metadata byte
//!   says "head of a free block of this order"; every link read from memory is cross-checked
//!   against the metadata and against its neighbour before it is followed, so a corrupted free
//!   list is reported as a [`Corruption`] error instead of corrupting allocated memory.
//!
//! # Invariants
//!
//! - Blocks are aligned to their size, lie entirely inside the span and never overlap.
//! - A frame's metadata byte is non-zero exactly when it is the head of a (free or allocated)
//!   block.
//! - The free list of order `k` holds exactly the free blocks of order `k`; its length is the
//!   counter reported in [`Stats::free_blocks`].
//! - Free blocks are fully coalesced: no two free blocks of the same order `k < MAX_ORDER` are
//!   buddies. Hence the free blocks are always the canonical decomposition of the set of free
//!   frames into maximal aligned blocks, whatever the history of allocations and frees: freeing
//!   everything gives back exactly the blocks present after the initial [`add_free_range`] calls
//!   (plus any reserved frames [`claim_range`] brought under management).
//! - `free_frames + used_frames == total_frames` (the frames ever handed to the allocator).
//!
//! [`add_free_range`]: FrameAllocator::add_free_range
//! [`claim_range`]: FrameAllocator::claim_range
//!
//! # Errors, not panics
//!
//! No input panics (and there is no `unwrap` outside tests): an order above [`MAX_ORDER`], an
//! address outside the span, unaligned, not allocated, allocated with another order or by
//! another owner, exhaustion, all return an error enum whose `Display` names the cause and the
//! frame. Refused operations change nothing. Adding RAM that overlaps memory already managed
//! (free or allocated) is not an error: the overlap is skipped, so only reserved frames become
//! free. The tests' `verify` checks every invariant.
//!
//! # Complexity
//!
//! - [`alloc`](FrameAllocator::alloc): O(MAX_ORDER): the smallest non-empty free list of
//!   sufficient order is found among 19 list heads, its first block is taken and the unused
//!   halves go back to the lists of lower orders. Memory is never scanned.
//! - [`free`](FrameAllocator::free): O(MAX_ORDER): validation reads one metadata byte (on an
//!   error, up to 19 more to name the block the address lies in); coalescing is O(1) per level
//!   (one metadata byte for the buddy, an O(1) unlink from a doubly-linked list).
//! - [`add_free_range`](FrameAllocator::add_free_range) and
//!   [`claim_range`](FrameAllocator::claim_range): linear in the number of frames of the range
//!   (one metadata byte each), plus O(MAX_ORDER) per block created.
//! - [`stats`](FrameAllocator::stats): O(MAX_ORDER + owners), from counters.
//! - `verify` (tests only): O(span + free blocks), a full consistency check.
//!
//! # Memory cost
//!
//! One metadata byte per 4 KiB frame of the span ([`meta_bytes_needed`]): 256 KiB per GiB
//! (1/4096, about 0.024 %), 16 MiB for a 64 GiB span. The links cost nothing (they live in the
//! free memory itself: 16 bytes at the start of each free block). The allocator structure itself
//! is about 600 bytes plus the [`LinkStore`].
//!
//! # Boot sequence
//!
//! 1. [`FrameAllocator::new`] over the span, with a metadata slice of
//!    [`meta_bytes_needed`]`(span)` bytes: everything is reserved.
//! 2. [`add_free_range`](FrameAllocator::add_free_range) for every usable RAM range (rounded
//!    inwards to whole frames, clipped to the span, split into the largest aligned blocks).
//! 3. [`claim_range`](FrameAllocator::claim_range) for memory already in use that should be
//!    accounted for (the hypervisor image, the metadata array, page tables built before the
//!    allocator existed): those frames become allocated order-0 frames of the given owner.
//!
//! The allocator does not lock: the hypervisor wraps it in its own mutex.

use core::fmt;
use core::ops::Range;

/// Size of a frame in bytes (4 KiB).
pub const PAGE_SIZE: u64 = 4096;

/// `log2(PAGE_SIZE)`: physical address = frame number << `PAGE_SHIFT`.
pub const PAGE_SHIFT: u32 = 12;

/// The largest order: a block of order `MAX_ORDER` is `2^18` frames, 1 GiB.
pub const MAX_ORDER: u32 = 18;

/// Number of orders, `0..=MAX_ORDER`.
const ORDERS: usize = MAX_ORDER as usize + 1;

/// Exclusive upper bound on frame numbers, 2^52: the address of frame 2^52 does not fit in a
/// `u64`. Frames at or above it are never managed (the span is clipped); x86_64 physical
/// addresses have at most 52 bits, so no real machine comes close.
pub const FRAME_LIMIT: u64 = 1 << (64 - PAGE_SHIFT);

/// Bytes of metadata the allocator needs for a span of `span_frames` frames: one per frame.
///
/// That is 256 KiB per GiB of span. Pass a slice of this length to [`FrameAllocator::new`].
#[must_use]
pub const fn meta_bytes_needed(span_frames: u64) -> u64 {
    span_frames
}

/// Bytes in a block of `order`; saturates at `u64::MAX` for orders far beyond [`MAX_ORDER`]
/// (only reachable through hand-made error values, which must still print without panicking).
const fn order_bytes(order: u32) -> u64 {
    if order < u64::BITS - PAGE_SHIFT {
        PAGE_SIZE << order
    } else {
        u64::MAX
    }
}

/// Frames in a block of `order`; saturates like [`order_bytes`].
const fn order_frames(order: u32) -> u64 {
    if order < u64::BITS {
        1 << order
    } else {
        u64::MAX
    }
}

/// A byte count printed with binary units: `512 KiB`, `2 MiB`, `510.8 MiB`, `1 GiB`.
///
/// The fraction, when there is one, is truncated to one decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        let bytes = self.0;
        if bytes == 0 {
            return f.write_str("0 KiB");
        }
        if bytes < 1 << 10 {
            return write!(f, "{bytes} B");
        }
        let (unit, name) = UNITS
            .iter()
            .copied()
            .find(|&(unit, _)| bytes >= unit)
            .unwrap_or((1 << 10, "KiB"));
        let whole = bytes / unit;
        let rest = bytes % unit;
        if rest == 0 {
            write!(f, "{whole} {name}")
        } else {
            // `rest < unit <= 2^30`, so `rest * 10` cannot overflow.
            write!(f, "{whole}.{} {name}", rest * 10 / unit)
        }
    }
}

/// The size of `frames` frames (saturating).
const fn frames_size(frames: u64) -> Size {
    Size(frames.saturating_mul(PAGE_SIZE))
}

/// Who uses an allocated block, for accounting ([`Stats::used_by_owner`]).
///
/// `free` must name the same owner as `alloc` did; a mismatch is an error
/// ([`FreeError::WrongOwner`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// The hypervisor itself: its image, boot information, other boot data.
    Hypervisor = 0,
    /// The frame allocator's own metadata array.
    FrameMeta = 1,
    /// Page tables (the hypervisor's and EPT).
    PageTables = 2,
    /// Frames backing the hypervisor heap.
    Heap = 3,
    /// Kernel and interrupt stacks.
    Stacks = 4,
    /// Guest memory (per-domain accounting is kept by the domain code).
    Domain = 5,
    /// Anything else.
    Other = 6,
}

impl Owner {
    /// Number of owners.
    pub const COUNT: usize = 7;

    /// Every owner, in the order of their index.
    pub const ALL: [Owner; Owner::COUNT] = [
        Owner::Hypervisor,
        Owner::FrameMeta,
        Owner::PageTables,
        Owner::Heap,
        Owner::Stacks,
        Owner::Domain,
        Owner::Other,
    ];

    /// Index of this owner in [`Owner::ALL`] and [`Stats::used_by_owner`].
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The owner with index `index`, if any.
    #[must_use]
    pub const fn from_index(index: usize) -> Option<Owner> {
        if index < Owner::COUNT {
            Some(Owner::ALL[index])
        } else {
            None
        }
    }

    /// Short lower-case name, used in messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Owner::Hypervisor => "hypervisor",
            Owner::FrameMeta => "frame metadata",
            Owner::PageTables => "page tables",
            Owner::Heap => "heap",
            Owner::Stacks => "stacks",
            Owner::Domain => "domains",
            Owner::Other => "other",
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The links of a free block in the free list of its order: the frame numbers of the previous
/// and next free blocks of the same order, `None` at the ends of the list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Frame number of the previous free block of the same order.
    pub prev: Option<u64>,
    /// Frame number of the next free block of the same order.
    pub next: Option<u64>,
}

impl Link {
    /// The raw value that stands for `None` in [`Link::to_raw`] (not a valid frame number).
    pub const RAW_NONE: u64 = u64::MAX;

    /// The link as two `u64` (`prev`, `next`) with [`Link::RAW_NONE`] for `None`: the 16 bytes a
    /// [`LinkStore`] writes at the start of a free block.
    #[must_use]
    pub const fn to_raw(self) -> [u64; 2] {
        let prev = match self.prev {
            Some(frame) => frame,
            None => Link::RAW_NONE,
        };
        let next = match self.next {
            Some(frame) => frame,
            None => Link::RAW_NONE,
        };
        [prev, next]
    }

    /// The inverse of [`Link::to_raw`].
    #[must_use]
    pub const fn from_raw(raw: [u64; 2]) -> Link {
        let prev = if raw[0] == Link::RAW_NONE {
            None
        } else {
            Some(raw[0])
        };
        let next = if raw[1] == Link::RAW_NONE {
            None
        } else {
            Some(raw[1])
        };
        Link { prev, next }
    }
}

/// Where the allocator keeps the links of free blocks.
///
/// In the hypervisor this reads and writes the first 16 bytes of the free block through the
/// direct map (see [`Link::to_raw`]); in tests, a map. The allocator only calls it with frames
/// that are the first frame of a free block in the managed span, so an implementation may rely
/// on the frame being free RAM. `read` of a frame never written may return anything: the
/// allocator validates what it reads.
pub trait LinkStore {
    /// The link stored in free block `frame` (a physical frame number, address / 4096).
    fn read(&self, frame: u64) -> Link;
    /// Stores `link` in free block `frame`.
    fn write(&mut self, frame: u64, link: Link);
}

impl<L: LinkStore + ?Sized> LinkStore for &mut L {
    fn read(&self, frame: u64) -> Link {
        (**self).read(frame)
    }

    fn write(&mut self, frame: u64, link: Link) {
        (**self).write(frame, link);
    }
}

/// Decoded metadata byte.
///
/// Encoding: `0` = not a block head (reserved frame or interior frame of a block);
/// `1 + k` (1..=19) = head of a free block of order `k`; `(owner + 1) << 5 | k` (32..=210) =
/// head of a block allocated with order `k` by `owner`. Other values are never written and
/// decode as `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Meta {
    /// Not the head of a block.
    None,
    /// Head of a free block of this order.
    Free(u32),
    /// Head of a block allocated with this order by this owner.
    Used(u32, Owner),
}

impl Meta {
    const fn encode(self) -> u8 {
        match self {
            Meta::None => 0,
            Meta::Free(order) => 1 + order as u8,
            Meta::Used(order, owner) => ((owner as u8 + 1) << 5) | order as u8,
        }
    }

    const fn decode(byte: u8) -> Meta {
        let tag = (byte >> 5) as usize;
        let low = (byte & 0x1f) as u32;
        if tag == 0 {
            if low >= 1 && low <= MAX_ORDER + 1 {
                Meta::Free(low - 1)
            } else {
                Meta::None
            }
        } else if low <= MAX_ORDER {
            match Owner::from_index(tag - 1) {
                Some(owner) => Meta::Used(low, owner),
                None => Meta::None,
            }
        } else {
            Meta::None
        }
    }

    /// The order of the block this byte is the head of, if it is one.
    const fn order(self) -> Option<u32> {
        match self {
            Meta::None => None,
            Meta::Free(order) | Meta::Used(order, _) => Some(order),
        }
    }
}

/// What a frame is part of, as reported by [`FrameAllocator::lookup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameState {
    /// The address is outside the managed span.
    OutOfSpan,
    /// Inside the span but never handed to the allocator.
    Reserved,
    /// Part of the free block at `block` (physical address) of order `order`.
    Free {
        /// Physical address of the block.
        block: u64,
        /// Order of the block.
        order: u32,
    },
    /// Part of the block at `block` (physical address) allocated with `order` by `owner`.
    Allocated {
        /// Physical address of the block.
        block: u64,
        /// Order the block was allocated with.
        order: u32,
        /// Who allocated it.
        owner: Owner,
    },
}

/// Counters of a [`FrameAllocator`], from [`FrameAllocator::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames in the managed span (reserved frames included).
    pub span_frames: u64,
    /// Frames ever handed to the allocator (by `add_free_range` or `claim_range`):
    /// `free_frames + used_frames`.
    pub total_frames: u64,
    /// Frames in free blocks.
    pub free_frames: u64,
    /// Frames in allocated blocks.
    pub used_frames: u64,
    /// Number of free blocks of each order.
    pub free_blocks: [u64; MAX_ORDER as usize + 1],
    /// Frames in allocated blocks, per owner (indexed by [`Owner::index`]).
    pub used_by_owner: [u64; Owner::COUNT],
}

impl Stats {
    /// Frames allocated by `owner`.
    #[must_use]
    pub const fn used_by(&self, owner: Owner) -> u64 {
        self.used_by_owner[owner.index()]
    }

    /// The largest order with a free block, if any block is free.
    #[cfg(test)]
    #[must_use]
    pub fn largest_free_order(&self) -> Option<u32> {
        (0..=MAX_ORDER)
            .rev()
            .find(|&order| self.free_blocks[order as usize] != 0)
    }
}

impl fmt::Display for Stats {
    /// A short multi-line summary, e.g.
    ///
    /// ```text
    /// memory: 510.8 MiB managed, 498.3 MiB free, 12.5 MiB used
    /// free blocks: 1 x 4 KiB, 2 x 8 KiB, 248 x 2 MiB
    /// used by: hypervisor 12 MiB, page tables 512 KiB
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "memory: {} managed, {} free, {} used",
            frames_size(self.total_frames),
            frames_size(self.free_frames),
            frames_size(self.used_frames)
        )?;
        f.write_str("free blocks:")?;
        let mut any = false;
        for (order, &count) in (0..=MAX_ORDER).zip(self.free_blocks.iter()) {
            if count != 0 {
                let sep = if any { "," } else { "" };
                write!(f, "{sep} {count} x {}", Size(order_bytes(order)))?;
                any = true;
            }
        }
        if !any {
            f.write_str(" none")?;
        }
        f.write_str("\nused by:")?;
        let mut any = false;
        for (owner, &frames) in Owner::ALL.iter().zip(self.used_by_owner.iter()) {
            if frames != 0 {
                let sep = if any { "," } else { "" };
                write!(f, "{sep} {owner} {}", frames_size(frames))?;
                any = true;
            }
        }
        if !any {
            f.write_str(" nothing")?;
        }
        Ok(())
    }
}

/// The allocator's own structures are inconsistent: a free-list link that does not agree with
/// the metadata or with its neighbour (memory written after it was freed, or a bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// Physical address of the frame where the inconsistency was found.
    pub addr: u64,
    /// Order of the free list or block concerned.
    pub order: u32,
    /// What is wrong.
    pub what: &'static str,
}

impl Corruption {
    const fn new(frame: u64, order: u32, what: &'static str) -> Corruption {
        Corruption {
            addr: frame << PAGE_SHIFT,
            order,
            what,
        }
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame allocator corrupted: {} (frame {:#x}, order {})",
            self.what, self.addr, self.order
        )
    }
}

/// Why [`FrameAllocator::alloc`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The order is larger than [`MAX_ORDER`].
    InvalidOrder {
        /// The order asked for.
        order: u32,
    },
    /// No free block of the order asked for or larger.
    OutOfMemory {
        /// The order asked for.
        order: u32,
        /// Frames free in total (in smaller blocks).
        free_frames: u64,
    },
    /// A free list is corrupted; nothing was allocated.
    Corrupted(Corruption),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::InvalidOrder { order } => write!(
                f,
                "invalid order {order}: the largest is {MAX_ORDER} ({})",
                Size(order_bytes(MAX_ORDER))
            ),
            AllocError::OutOfMemory { order, free_frames } => {
                write!(
                    f,
                    "out of memory: no free block of order {order} ({}); ",
                    Size(order_bytes(order))
                )?;
                if free_frames == 0 {
                    f.write_str("no frames free")
                } else if free_frames >= order_frames(order) {
                    write!(f, "{free_frames} frames free but fragmented")
                } else {
                    write!(f, "only {free_frames} frames free")
                }
            }
            AllocError::Corrupted(corruption) => corruption.fmt(f),
        }
    }
}

/// Why [`FrameAllocator::free`] refused to free a block. Nothing was changed, except for
/// [`FreeError::Corrupted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The order is larger than [`MAX_ORDER`].
    InvalidOrder {
        /// The order given.
        order: u32,
    },
    /// The address is not aligned to the size of a block of that order.
    Unaligned {
        /// The address given.
        addr: u64,
        /// The order given.
        order: u32,
    },
    /// The block is not entirely inside the managed span.
    OutOfSpan {
        /// The address given.
        addr: u64,
        /// The order given.
        order: u32,
    },
    /// The address is (inside) a free block.
    DoubleFree {
        /// The address given.
        addr: u64,
        /// The free block it lies in (equal to `addr` when it is its first frame).
        block: u64,
        /// Order of that free block.
        block_order: u32,
    },
    /// The address is the start of an allocated block, but of another order.
    WrongOrder {
        /// The address given.
        addr: u64,
        /// The order given.
        order: u32,
        /// The order it was allocated with.
        allocated_order: u32,
    },
    /// The address lies inside an allocated block but is not its first frame.
    InsideAllocatedBlock {
        /// The address given.
        addr: u64,
        /// The order given.
        order: u32,
        /// The allocated block it lies in.
        block: u64,
        /// The order that block was allocated with.
        block_order: u32,
    },
    /// The block was allocated by another owner.
    WrongOwner {
        /// The address given.
        addr: u64,
        /// The owner given.
        owner: Owner,
        /// The owner that allocated it.
        allocated_owner: Owner,
    },
    /// The address is a reserved frame: never handed to the allocator.
    NotAllocated {
        /// The address given.
        addr: u64,
    },
    /// The block was freed (and is counted as free), but a corrupted free list stopped it from
    /// merging with its buddy.
    Corrupted(Corruption),
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FreeError::InvalidOrder { order } => write!(
                f,
                "free with invalid order {order}: the largest is {MAX_ORDER} ({})",
                Size(order_bytes(MAX_ORDER))
            ),
            FreeError::Unaligned { addr, order } => write!(
                f,
                "free of {addr:#x} with order {order}: not aligned to {}",
                Size(order_bytes(order))
            ),
            FreeError::OutOfSpan { addr, order } => write!(
                f,
                "free of {addr:#x} with order {order} ({}): outside the managed memory",
                Size(order_bytes(order))
            ),
            FreeError::DoubleFree {
                addr,
                block,
                block_order,
            } => {
                if addr == block {
                    write!(f, "double free of frame {addr:#x}")
                } else {
                    write!(
                        f,
                        "double free of frame {addr:#x}: it lies in the free block {block:#x} \
                         of order {block_order} ({})",
                        Size(order_bytes(block_order))
                    )
                }
            }
            FreeError::WrongOrder {
                addr,
                order,
                allocated_order,
            } => write!(
                f,
                "free of {addr:#x} with order {order} but it was allocated with order \
                 {allocated_order}"
            ),
            FreeError::InsideAllocatedBlock {
                addr,
                order,
                block,
                block_order,
            } => write!(
                f,
                "free of {addr:#x} with order {order} but it lies inside the block {block:#x} \
                 allocated with order {block_order} ({})",
                Size(order_bytes(block_order))
            ),
            FreeError::WrongOwner {
                addr,
                owner,
                allocated_owner,
            } => write!(
                f,
                "free of {addr:#x} by {owner} but it was allocated by {allocated_owner}"
            ),
            FreeError::NotAllocated { addr } => write!(
                f,
                "free of {addr:#x}: reserved frame, never given to the allocator"
            ),
            FreeError::Corrupted(corruption) => corruption.fmt(f),
        }
    }
}

/// Why [`FrameAllocator::claim_range`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// A frame of the range is already allocated; nothing was changed.
    AlreadyAllocated {
        /// Address of the first allocated frame of the range.
        addr: u64,
        /// The allocated block it lies in.
        block: u64,
        /// The order of that block.
        order: u32,
        /// Its owner.
        owner: Owner,
        /// The owner that tried to claim it.
        claimant: Owner,
    },
    /// A free list is corrupted. The frames of the range up to the free block being split were
    /// claimed (all of them if only the merging of the unclaimed rest failed); the counters
    /// stay consistent.
    Corrupted(Corruption),
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClaimError::AlreadyAllocated {
                addr,
                block,
                order,
                owner,
                claimant,
            } => write!(
                f,
                "cannot claim {addr:#x} for {claimant}: it lies in the block {block:#x} allocated \
                 with order {order} ({}) by {owner}",
                Size(order_bytes(order))
            ),
            ClaimError::Corrupted(corruption) => corruption.fmt(f),
        }
    }
}

/// A buddy allocator of physical frames. See the [crate documentation](crate) for the design.
///
/// `'a` is the lifetime of the metadata array; `L` stores the free-list links.
pub struct FrameAllocator<'a, L: LinkStore> {
    /// First frame of the span.
    base: u64,
    /// End (exclusive) of the span, `base + meta.len()` clipped to [`FRAME_LIMIT`].
    end: u64,
    /// One byte per frame of the span, see [`Meta`].
    meta: &'a mut [u8],
    /// The links inside free blocks.
    links: L,
    /// Head of the free list of each order (a frame number).
    heads: [Option<u64>; ORDERS],
    /// Length of the free list of each order.
    free_blocks: [u64; ORDERS],
    /// Frames ever handed to the allocator.
    total: u64,
    /// Frames in free blocks.
    free: u64,
    /// Frames in allocated blocks, per owner.
    used_by_owner: [u64; Owner::COUNT],
}

impl<L: LinkStore> fmt::Debug for FrameAllocator<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("span", &(self.base..self.end))
            .field("heads", &self.heads)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<'a, L: LinkStore> FrameAllocator<'a, L> {
    /// An allocator managing the frames `[base_frame, base_frame + meta.len())`, all reserved
    /// (nothing free) until [`add_free_range`](Self::add_free_range).
    ///
    /// `meta` is overwritten (it need not be zeroed). Frames at or above [`FRAME_LIMIT`] are not
    /// managed (the span is clipped).
    pub fn new(base_frame: u64, meta: &'a mut [u8], links: L) -> Self {
        let base = base_frame.min(FRAME_LIMIT);
        let len = (meta.len() as u64).min(FRAME_LIMIT - base);
        meta.fill(Meta::None.encode());
        FrameAllocator {
            base,
            end: base + len,
            meta,
            links,
            heads: [None; ORDERS],
            free_blocks: [0; ORDERS],
            total: 0,
            free: 0,
            used_by_owner: [0; Owner::COUNT],
        }
    }

    /// The managed frames (frame numbers, not addresses).
    #[must_use]
    pub fn span(&self) -> Range<u64> {
        self.base..self.end
    }

    /// The link store.
    #[must_use]
    pub fn links(&self) -> &L {
        &self.links
    }

    /// Counters: frames managed, free and used, free blocks per order, used frames per owner.
    #[must_use]
    pub fn stats(&self) -> Stats {
        Stats {
            span_frames: self.end - self.base,
            total_frames: self.total,
            free_frames: self.free,
            used_frames: self.used_by_owner.iter().sum(),
            free_blocks: self.free_blocks,
            used_by_owner: self.used_by_owner,
        }
    }

    /// Hands the RAM `[start, end)` (physical byte addresses) to the allocator.
    ///
    /// Only whole frames inside the range count (`start` is rounded up, `end` down), clipped to
    /// the span. They are split into the largest aligned blocks (1 GiB-aligned RAM becomes
    /// order-18 blocks) and merged with adjacent free blocks.
    ///
    /// **Overlap is ignored:** frames of the range that are already managed (free or allocated)
    /// are skipped, so adding a range twice, or ranges that overlap, is harmless: only reserved
    /// frames become free. Returns the number of frames that became free.
    ///
    /// # Errors
    ///
    /// [`Corruption`] if a free list is found corrupted while merging. Every frame of the range
    /// is still added and counted; only some merges may be missing.
    pub fn add_free_range(&mut self, start: u64, end: u64) -> Result<u64, Corruption> {
        let first = start.div_ceil(PAGE_SIZE).max(self.base);
        let last = (end / PAGE_SIZE).min(self.end);
        let mut added = 0;
        let mut result = Ok(());
        let mut frame = first;
        while frame < last {
            if let Some((head, meta)) = self.containing(frame) {
                // Skip the block `frame` lies in.
                frame = head + meta.order().map_or(1, order_frames);
                continue;
            }
            let run_end = self.reserved_run_end(frame, last);
            let frames = run_end - frame;
            self.total += frames;
            self.free += frames;
            added += frames;
            let run = self.insert_run(frame, run_end);
            result = result.and(run);
            frame = run_end;
        }
        result.map(|()| added)
    }

    /// Marks the frames covering `[start, end)` (physical byte addresses: `start` is rounded
    /// down, `end` up, clipped to the span) as allocated by `owner`, for memory that is already
    /// in use: the hypervisor image, boot data, the metadata array, page tables built before
    /// the allocator existed.
    ///
    /// Each frame becomes an allocated block of order 0, so it can later be released with
    /// [`free_frame`](Self::free_frame) (for example boot data no longer needed). Free frames are
    /// taken out of their free blocks (the rest of each block goes back to the free lists);
    /// reserved frames are brought under management (counted in [`Stats::total_frames`]), so
    /// only claim RAM. Returns the number of frames claimed.
    ///
    /// # Errors
    ///
    /// [`ClaimError::AlreadyAllocated`] if any frame of the range is already allocated; nothing
    /// is changed then. [`ClaimError::Corrupted`] if a free list is corrupted.
    pub fn claim_range(&mut self, start: u64, end: u64, owner: Owner) -> Result<u64, ClaimError> {
        let first = (start / PAGE_SIZE).max(self.base);
        let last = end.div_ceil(PAGE_SIZE).min(self.end);

        // First pass: refuse before changing anything if a frame is allocated.
        let mut frame = first;
        while frame < last {
            match self.containing(frame) {
                Some((head, Meta::Used(order, used_by))) => {
                    return Err(ClaimError::AlreadyAllocated {
                        addr: frame << PAGE_SHIFT,
                        block: head << PAGE_SHIFT,
                        order,
                        owner: used_by,
                        claimant: owner,
                    });
                }
                Some((head, Meta::Free(order))) => frame = head + order_frames(order),
                _ => frame = self.reserved_run_end(frame, last),
            }
        }

        let mut claimed = 0;
        let mut result = Ok(());
        let mut frame = first;
        while frame < last {
            let (claim_end, was_free) = match self.containing(frame) {
                Some((head, Meta::Free(order))) => {
                    let block_end = head + order_frames(order);
                    self.unlink(head, order).map_err(ClaimError::Corrupted)?;
                    self.set_meta(head, Meta::None);
                    let claim_end = block_end.min(last);
                    // Give back the parts of the block outside the range.
                    let kept = (frame - head) + (block_end - claim_end);
                    self.free = self.free - order_frames(order) + kept;
                    result = result
                        .and(self.insert_run(head, frame))
                        .and(self.insert_run(claim_end, block_end));
                    (claim_end, true)
                }
                Some((head, Meta::Used(order, used_by))) => {
                    // Excluded by the first pass; kept as an error rather than a panic.
                    return Err(ClaimError::AlreadyAllocated {
                        addr: frame << PAGE_SHIFT,
                        block: head << PAGE_SHIFT,
                        order,
                        owner: used_by,
                        claimant: owner,
                    });
                }
                _ => (self.reserved_run_end(frame, last), false),
            };
            let frames = claim_end - frame;
            for f in frame..claim_end {
                self.set_meta(f, Meta::Used(0, owner));
            }
            if !was_free {
                self.total += frames;
            }
            self.used_by_owner[owner.index()] += frames;
            claimed += frames;
            frame = claim_end;
        }
        result.map(|()| claimed).map_err(ClaimError::Corrupted)
    }

    /// Allocates a block of `2^order` frames for `owner` and returns its physical address,
    /// aligned to `4 KiB << order`. The memory is not cleared.
    ///
    /// Takes the first block of the smallest non-empty free list of order `>= order` and puts
    /// the unused halves back in the lists of lower orders: O(MAX_ORDER).
    ///
    /// # Errors
    ///
    /// [`AllocError::InvalidOrder`] if `order > MAX_ORDER`, [`AllocError::OutOfMemory`] if no
    /// block is large enough, [`AllocError::Corrupted`] if the free list is corrupted.
    pub fn alloc(&mut self, order: u32, owner: Owner) -> Result<u64, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::InvalidOrder { order });
        }
        let Some(mut have) = (order..=MAX_ORDER).find(|&k| self.heads[k as usize].is_some()) else {
            return Err(AllocError::OutOfMemory {
                order,
                free_frames: self.free,
            });
        };
        let frame = self.pop(have).map_err(AllocError::Corrupted)?;
        while have > order {
            have -= 1;
            let upper = frame + order_frames(have);
            self.set_meta(upper, Meta::Free(have));
            self.push(upper, have);
        }
        self.set_meta(frame, Meta::Used(order, owner));
        self.free -= order_frames(order);
        self.used_by_owner[owner.index()] += order_frames(order);
        Ok(frame << PAGE_SHIFT)
    }

    /// Frees the block at physical address `addr` that `owner` allocated with `order`, merging
    /// it with its free buddies up to [`MAX_ORDER`].
    ///
    /// # Errors
    ///
    /// Every misuse is detected from the metadata and refused without changing anything: an
    /// invalid order, an unaligned address, a block outside the span, a double free (the frame
    /// is free), a wrong order, an address inside an allocated block, a wrong owner, a reserved
    /// frame. [`FreeError::Corrupted`] means the block was freed but could not be merged.
    pub fn free(&mut self, addr: u64, order: u32, owner: Owner) -> Result<(), FreeError> {
        if order > MAX_ORDER {
            return Err(FreeError::InvalidOrder { order });
        }
        if !addr.is_multiple_of(order_bytes(order)) {
            return Err(FreeError::Unaligned { addr, order });
        }
        let frame = addr >> PAGE_SHIFT;
        // `frame < 2^52` and `order_frames(order) <= 2^18`: no overflow.
        if frame < self.base || frame + order_frames(order) > self.end {
            return Err(FreeError::OutOfSpan { addr, order });
        }
        match self.meta_at(frame) {
            Meta::Used(allocated_order, allocated_owner) => {
                if allocated_order != order {
                    return Err(FreeError::WrongOrder {
                        addr,
                        order,
                        allocated_order,
                    });
                }
                if allocated_owner != owner {
                    return Err(FreeError::WrongOwner {
                        addr,
                        owner,
                        allocated_owner,
                    });
                }
            }
            Meta::Free(block_order) => {
                return Err(FreeError::DoubleFree {
                    addr,
                    block: addr,
                    block_order,
                });
            }
            Meta::None => {
                return Err(match self.containing(frame) {
                    Some((head, Meta::Free(block_order))) => FreeError::DoubleFree {
                        addr,
                        block: head << PAGE_SHIFT,
                        block_order,
                    },
                    Some((head, Meta::Used(block_order, _))) => FreeError::InsideAllocatedBlock {
                        addr,
                        order,
                        block: head << PAGE_SHIFT,
                        block_order,
                    },
                    _ => FreeError::NotAllocated { addr },
                });
            }
        }
        self.used_by_owner[owner.index()] -= order_frames(order);
        self.free += order_frames(order);
        self.insert_free(frame, order).map_err(FreeError::Corrupted)
    }

    /// Allocates one frame (order 0) for `owner`; see [`alloc`](Self::alloc).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc).
    pub fn alloc_frame(&mut self, owner: Owner) -> Result<u64, AllocError> {
        self.alloc(0, owner)
    }

    /// Frees one frame (order 0) allocated by `owner`; see [`free`](Self::free).
    ///
    /// # Errors
    ///
    /// As [`free`](Self::free).
    pub fn free_frame(&mut self, addr: u64, owner: Owner) -> Result<(), FreeError> {
        self.free(addr, 0, owner)
    }

    /// What the frame containing physical address `addr` is part of. O(MAX_ORDER).
    #[must_use]
    pub fn lookup(&self, addr: u64) -> FrameState {
        let frame = addr >> PAGE_SHIFT;
        if frame < self.base || frame >= self.end {
            return FrameState::OutOfSpan;
        }
        match self.containing(frame) {
            Some((head, Meta::Free(order))) => FrameState::Free {
                block: head << PAGE_SHIFT,
                order,
            },
            Some((head, Meta::Used(order, owner))) => FrameState::Allocated {
                block: head << PAGE_SHIFT,
                order,
                owner,
            },
            _ => FrameState::Reserved,
        }
    }

    /// Calls `visit(addr, order)` for every free block, walking the free lists (order 0 first,
    /// each list from its head). O(free blocks).
    ///
    /// # Errors
    ///
    /// [`Corruption`] if a list contains a block whose metadata disagrees, has broken back
    /// links, or is longer than its counter (which also stops cycles).
    #[cfg(test)]
    pub fn for_each_free_block<F: FnMut(u64, u32)>(&self, mut visit: F) -> Result<(), Corruption> {
        for order in 0..=MAX_ORDER {
            let count = self.free_blocks[order as usize];
            let mut prev = None;
            let mut next = self.heads[order as usize];
            let mut seen = 0;
            while let Some(frame) = next {
                if seen == count {
                    return Err(Corruption::new(
                        frame,
                        order,
                        "free list longer than its counter",
                    ));
                }
                if self.meta_at(frame) != Meta::Free(order) {
                    return Err(Corruption::new(
                        frame,
                        order,
                        "free list holds a frame that is not a free block of its order",
                    ));
                }
                let link = self.links.read(frame);
                if link.prev != prev {
                    return Err(Corruption::new(
                        frame,
                        order,
                        "free-list back link disagrees",
                    ));
                }
                visit(frame << PAGE_SHIFT, order);
                seen += 1;
                prev = Some(frame);
                next = link.next;
            }
            if seen != count {
                let at = prev.unwrap_or(self.base);
                return Err(Corruption::new(
                    at,
                    order,
                    "free list shorter than its counter",
                ));
            }
        }
        Ok(())
    }

    /// Checks every invariant: the free lists (as
    /// [`for_each_free_block`](Self::for_each_free_block)), then the metadata of the whole span
    /// (blocks aligned, inside the span, not overlapping, fully coalesced) against the
    /// counters. O(span + free blocks); for tests and debugging.
    ///
    /// # Errors
    ///
    /// The first inconsistency found.
    #[cfg(test)]
    pub fn verify(&self) -> Result<(), Corruption> {
        self.for_each_free_block(|_, _| ())?;
        let mut free_blocks = [0u64; ORDERS];
        let mut free = 0u64;
        let mut used = [0u64; Owner::COUNT];
        let mut frame = self.base;
        while frame < self.end {
            let meta = self.meta_at(frame);
            let Some(order) = meta.order() else {
                frame += 1;
                continue;
            };
            let frames = order_frames(order);
            if !frame.is_multiple_of(frames) {
                return Err(Corruption::new(frame, order, "block not aligned"));
            }
            if frame + frames > self.end {
                return Err(Corruption::new(frame, order, "block extends past the span"));
            }
            if ((frame + 1)..(frame + frames)).any(|f| self.meta_at(f) != Meta::None) {
                return Err(Corruption::new(frame, order, "blocks overlap"));
            }
            match meta {
                Meta::Free(_) => {
                    free_blocks[order as usize] += 1;
                    free += frames;
                    if order < MAX_ORDER && self.meta_at(frame ^ frames) == Meta::Free(order) {
                        return Err(Corruption::new(frame, order, "free buddies not merged"));
                    }
                }
                Meta::Used(_, owner) => used[owner.index()] += frames,
                Meta::None => {}
            }
            frame += frames;
        }
        if free_blocks != self.free_blocks {
            return Err(Corruption::new(
                self.base,
                0,
                "free-block counters disagree with the metadata",
            ));
        }
        if free != self.free {
            return Err(Corruption::new(
                self.base,
                0,
                "free-frame counter disagrees with the metadata",
            ));
        }
        if used != self.used_by_owner {
            return Err(Corruption::new(
                self.base,
                0,
                "used-frame counters disagree with the metadata",
            ));
        }
        if free + used.iter().sum::<u64>() != self.total {
            return Err(Corruption::new(
                self.base,
                0,
                "free + used frames differ from the total",
            ));
        }
        Ok(())
    }

    /// Mutable access to the link store, for tests that scribble over memory.
    #[cfg(test)]
    fn links_mut(&mut self) -> &mut L {
        &mut self.links
    }

    // ---- metadata ----

    /// The decoded metadata byte of `frame`; `Meta::None` outside the span.
    fn meta_at(&self, frame: u64) -> Meta {
        if frame < self.base || frame >= self.end {
            return Meta::None;
        }
        match self.meta.get((frame - self.base) as usize) {
            Some(&byte) => Meta::decode(byte),
            None => Meta::None,
        }
    }

    /// Sets the metadata byte of `frame` (ignored outside the span).
    fn set_meta(&mut self, frame: u64, meta: Meta) {
        if frame < self.base || frame >= self.end {
            return;
        }
        if let Some(byte) = self.meta.get_mut((frame - self.base) as usize) {
            *byte = meta.encode();
        }
    }

    /// The block (head frame and its metadata) that `frame` lies in, if any: the first of the
    /// aligned frames `frame & !(2^k - 1)`, `k = 0..=MAX_ORDER`, that heads a block of order
    /// `>= k`. Blocks do not overlap, so that block is the only one containing `frame`.
    fn containing(&self, frame: u64) -> Option<(u64, Meta)> {
        if frame < self.base || frame >= self.end {
            return None;
        }
        for k in 0..=MAX_ORDER {
            let head = frame & !(order_frames(k) - 1);
            if head < self.base {
                break;
            }
            let meta = self.meta_at(head);
            if meta.order().is_some_and(|order| order >= k) {
                return Some((head, meta));
            }
        }
        None
    }

    /// For a reserved `frame` (in no block), the end of the run of reserved frames starting at
    /// it, at most `limit`: the first frame after it whose metadata byte is not zero. No frame
    /// in between can be in a block: that block's head would be in the run (non-zero byte) or
    /// before `frame` (and the block would contain `frame`).
    fn reserved_run_end(&self, frame: u64, limit: u64) -> u64 {
        let limit = limit.min(self.end);
        if frame >= limit {
            return frame.saturating_add(1);
        }
        let from = (frame - self.base) as usize + 1;
        let to = (limit - self.base) as usize;
        let rest = self.meta.get(from..to).unwrap_or(&[]);
        match rest
            .iter()
            .position(|&byte| Meta::decode(byte) != Meta::None)
        {
            Some(offset) => frame + 1 + offset as u64,
            None => limit,
        }
    }

    // ---- free lists ----

    /// Inserts the free frames `[start, end)` (not in any block, already counted as free) as
    /// the largest aligned blocks, each merged with its free buddies. Keeps going after a
    /// corruption (every block is inserted) and returns the first one.
    fn insert_run(&mut self, start: u64, end: u64) -> Result<(), Corruption> {
        let mut result = Ok(());
        let mut frame = start;
        while frame < end {
            let mut order = frame.trailing_zeros().min(MAX_ORDER);
            while frame + order_frames(order) > end {
                order -= 1;
            }
            result = result.and(self.insert_free(frame, order));
            frame += order_frames(order);
        }
        result
    }

    /// Makes the block `frame` of `order` free (its frames already counted as free), merging it
    /// with its free buddies. The block always ends up in a free list; a corruption found while
    /// unlinking a buddy stops the merging there.
    fn insert_free(&mut self, frame: u64, order: u32) -> Result<(), Corruption> {
        let mut result = Ok(());
        let mut head = frame;
        let mut order = order;
        self.set_meta(frame, Meta::None);
        while order < MAX_ORDER {
            let buddy = head ^ order_frames(order);
            if self.meta_at(buddy) != Meta::Free(order) {
                break;
            }
            if let Err(corruption) = self.unlink(buddy, order) {
                result = Err(corruption);
                break;
            }
            self.set_meta(buddy, Meta::None);
            head = head.min(buddy);
            order += 1;
        }
        self.set_meta(head, Meta::Free(order));
        self.push(head, order);
        result
    }

    /// Pushes the free block `frame` (metadata already `Free(order)`) on the list of `order`.
    fn push(&mut self, frame: u64, order: u32) {
        let old = self.heads[order as usize];
        self.links.write(
            frame,
            Link {
                prev: None,
                next: old,
            },
        );
        if let Some(old) = old {
            let mut link = self.links.read(old);
            link.prev = Some(frame);
            self.links.write(old, link);
        }
        self.heads[order as usize] = Some(frame);
        self.free_blocks[order as usize] += 1;
    }

    /// Checks that `neighbour`, read from the link of `frame`, is another free block of `order`
    /// whose link points back at `frame` (`back` selects which of its links), and returns
    /// that link.
    fn checked_neighbour(
        &self,
        frame: u64,
        neighbour: u64,
        order: u32,
        back: fn(&Link) -> Option<u64>,
    ) -> Result<Link, Corruption> {
        if neighbour == frame || self.meta_at(neighbour) != Meta::Free(order) {
            return Err(Corruption::new(
                frame,
                order,
                "free-list link points to a frame that is not a free block of this order",
            ));
        }
        let link = self.links.read(neighbour);
        if back(&link) != Some(frame) {
            return Err(Corruption::new(
                neighbour,
                order,
                "free-list links of neighbouring blocks disagree",
            ));
        }
        Ok(link)
    }

    /// Takes the first block off the (non-empty) free list of `order`. Validates before
    /// changing anything.
    fn pop(&mut self, order: u32) -> Result<u64, Corruption> {
        let Some(frame) = self.heads[order as usize] else {
            return Err(Corruption::new(self.base, order, "empty free list"));
        };
        if self.meta_at(frame) != Meta::Free(order) {
            return Err(Corruption::new(
                frame,
                order,
                "free-list head is not a free block of its order",
            ));
        }
        let link = self.links.read(frame);
        if link.prev.is_some() {
            return Err(Corruption::new(
                frame,
                order,
                "free-list head has a predecessor",
            ));
        }
        if let Some(next) = link.next {
            let mut next_link = self.checked_neighbour(frame, next, order, |l| l.prev)?;
            next_link.prev = None;
            self.links.write(next, next_link);
        }
        self.heads[order as usize] = link.next;
        self.free_blocks[order as usize] -= 1;
        Ok(frame)
    }

    /// Removes the free block `frame` (metadata `Free(order)`) from the list of `order`.
    /// Validates before changing anything.
    fn unlink(&mut self, frame: u64, order: u32) -> Result<(), Corruption> {
        let link = self.links.read(frame);
        let prev_link = match link.prev {
            Some(prev) => Some(self.checked_neighbour(frame, prev, order, |l| l.next)?),
            None if self.heads[order as usize] == Some(frame) => None,
            None => {
                return Err(Corruption::new(
                    frame,
                    order,
                    "free block without predecessor is not its list's head",
                ));
            }
        };
        let next_link = match link.next {
            Some(next) => Some(self.checked_neighbour(frame, next, order, |l| l.prev)?),
            None => None,
        };
        if link.prev.is_some() && link.prev == link.next {
            return Err(Corruption::new(
                frame,
                order,
                "free-list neighbours are the same block",
            ));
        }
        match (link.prev, prev_link) {
            (Some(prev), Some(mut prev_link)) => {
                prev_link.next = link.next;
                self.links.write(prev, prev_link);
            }
            _ => self.heads[order as usize] = link.next,
        }
        if let (Some(next), Some(mut next_link)) = (link.next, next_link) {
            next_link.prev = link.prev;
            self.links.write(next, next_link);
        }
        self.free_blocks[order as usize] -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
