//! Grant tables v1 (Xen's `public/grant_table.h`): the rules of mapping and
//! copying another domain's granted page, without the memory.
//!
//! A v1 entry is 8 bytes in the granter's grant frames: `u16 flags`,
//! `u16 domid` (the domain allowed), `u32 frame`. The first 4 bytes are one
//! word the granter changes at any time; [`pin_word`] computes what a use
//! writes there with a compare-exchange, from the value just read, and
//! [`Grants`] counts the uses of each entry (maps and copies in progress) so
//! that `GTF_reading`/`GTF_writing` are cleared only when the last use that
//! needs them ends ([`Grants::release`]).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Entries per 4 KiB grant frame (v1).
pub const ENTRIES_PER_FRAME: u32 = 512;

// GTF_* (the entry's flags).
/// The entry's type.
pub const GTF_TYPE_MASK: u16 = 3;
/// Type: the named domain may map or copy the frame.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// The named domain may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// Set by the hypervisor while the frame is in use.
pub const GTF_READING: u16 = 1 << 3;
/// Set by the hypervisor while the frame is in writable use.
pub const GTF_WRITING: u16 = 1 << 4;
/// A sub-page grant (v2 only): never mappable.
pub const GTF_SUB_PAGE: u16 = 1 << 8;

// GNTMAP_* (gnttab_map_grant_ref.flags).
/// A mapping for devices.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// A mapping for the CPU: in an HVM domain, at a guest-physical address.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// A read-only mapping.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// PV only: the mapping is usable by applications.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// PV only: `host_addr` names a PTE.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

// GNTCOPY_* (gnttab_copy.flags).
/// The source is a grant reference (else a frame of the caller).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// The destination is a grant reference (else a frame of the caller).
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

// GNTST_* (per-operation status).
/// Done.
pub const GNTST_OKAY: i16 = 0;
/// Anything else (Xen's answer for bad entry flags, a wrong domid, a
/// write use of a read-only grant, an unusable address).
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// No such domain.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// A reference past the granter's table, or bad map flags.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// No such mapping handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// The granted frame is not the granter's memory.
pub const GNTST_BAD_PAGE: i16 = -9;
/// A copy that crosses a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// A frame of another domain named without a grant.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// No mapping handle left.
pub const GNTST_NO_SPACE: i16 = -13;

/// Mappings one domain may hold at a time (each is a handle, a pin on the
/// granter's memory and a few dozen bytes of Basalt's heap).
pub const MAX_MAPS_PER_MAPPER: u32 = 4096;

/// Whether a map request with `flags` is a read-only one, or its status
/// (Xen's answers for an HVM mapper: no host or device map is a bad
/// reference; PV's PTE and application maps, and a device map alone, which
/// Basalt does not offer, are general errors).
pub fn map_mode(flags: u32) -> Result<bool, i16> {
    if flags & (GNTMAP_HOST_MAP | GNTMAP_DEVICE_MAP) == 0 {
        return Err(GNTST_BAD_GNTREF);
    }
    if flags & (GNTMAP_CONTAINS_PTE | GNTMAP_APPLICATION_MAP) != 0 || flags & GNTMAP_HOST_MAP == 0 {
        return Err(GNTST_GENERAL_ERROR);
    }
    Ok(flags & GNTMAP_READONLY != 0)
}

/// The entry word (`flags | domid << 16`) once domain `user` uses it
/// (`GTF_reading`, plus `GTF_writing` unless `readonly`), from the value
/// `word` just read; `map`: a mapping (a sub-page grant cannot be mapped).
/// Refused (general error, as Xen) unless the entry permits access to
/// `user`, or when a read-only grant is used for writing.
pub fn pin_word(word: u32, user: u16, readonly: bool, map: bool) -> Result<u32, i16> {
    let flags = word as u16;
    let domid = (word >> 16) as u16;
    let mask = if map {
        GTF_TYPE_MASK | GTF_SUB_PAGE
    } else {
        GTF_TYPE_MASK
    };
    if flags & mask != GTF_PERMIT_ACCESS || domid != user {
        return Err(GNTST_GENERAL_ERROR);
    }
    let mut new = flags | GTF_READING;
    if !readonly {
        if flags & GTF_READONLY != 0 {
            return Err(GNTST_GENERAL_ERROR);
        }
        new |= GTF_WRITING;
    }
    Ok(u32::from(new) | u32::from(domid) << 16)
}

/// One mapping of a grant.
#[derive(Debug, Clone)]
pub struct Map<G> {
    /// The granter (ring 0 keeps a reference to the domain here).
    pub granter: G,
    /// The granter's domain id.
    pub granter_id: u32,
    /// The grant reference.
    pub gref: u32,
    /// Where it is mapped in the mapper (guest-physical).
    pub gpa: u64,
    /// A read-only mapping.
    pub readonly: bool,
}

/// Uses of one entry.
#[derive(Debug, Clone, Copy, Default)]
struct Uses {
    all: u32,
    writers: u32,
}

/// Every domain's active mappings (by mapper and handle) and the uses of
/// each granted entry (by granter and reference).
#[derive(Debug)]
pub struct Grants<G> {
    maps: BTreeMap<(u32, u32), Map<G>>,
    uses: BTreeMap<(u32, u32), Uses>,
}

impl<G> Default for Grants<G> {
    fn default() -> Self {
        Self::new()
    }
}

impl<G> Grants<G> {
    /// No mapping, no use.
    pub const fn new() -> Self {
        Self {
            maps: BTreeMap::new(),
            uses: BTreeMap::new(),
        }
    }

    /// A free handle of `mapper`, if it may map one more.
    pub fn free_handle(&self, mapper: u32) -> Option<u32> {
        let mut next = 0u32;
        for (&(_, h), _) in self.maps.range((mapper, 0)..=(mapper, u32::MAX)) {
            if h != next {
                break;
            }
            next += 1;
        }
        (next < MAX_MAPS_PER_MAPPER).then_some(next)
    }

    /// Records a use of entry `gref` of `granter` (its word was just
    /// changed with [`pin_word`]).
    pub fn acquire(&mut self, granter: u32, gref: u32, readonly: bool) {
        let u = self.uses.entry((granter, gref)).or_default();
        u.all += 1;
        if !readonly {
            u.writers += 1;
        }
    }

    /// Ends a use recorded by [`Self::acquire`]: the flags to clear in the
    /// entry now (`GTF_writing` when no writer is left, `GTF_reading` too
    /// when no use is).
    pub fn release(&mut self, granter: u32, gref: u32, readonly: bool) -> u16 {
        let Some(u) = self.uses.get_mut(&(granter, gref)) else {
            return 0;
        };
        u.all = u.all.saturating_sub(1);
        if !readonly {
            u.writers = u.writers.saturating_sub(1);
        }
        let mut clear = 0;
        if u.writers == 0 {
            clear |= GTF_WRITING;
        }
        if u.all == 0 {
            clear |= GTF_READING;
            self.uses.remove(&(granter, gref));
        }
        clear
    }

    /// Adds `map` under `handle` of `mapper` (from [`Self::free_handle`]).
    pub fn insert(&mut self, mapper: u32, handle: u32, map: Map<G>) {
        self.maps.insert((mapper, handle), map);
    }

    /// The mapping `handle` of `mapper`.
    pub fn get(&self, mapper: u32, handle: u32) -> Option<&Map<G>> {
        self.maps.get(&(mapper, handle))
    }

    /// Removes the mapping `handle` of `mapper` (the caller releases its
    /// use).
    pub fn remove(&mut self, mapper: u32, handle: u32) -> Option<Map<G>> {
        self.maps.remove(&(mapper, handle))
    }

    /// Removes every mapping of `mapper` (a domain that ends).
    pub fn take_mapper(&mut self, mapper: u32) -> Vec<Map<G>> {
        let handles: Vec<u32> = self
            .maps
            .range((mapper, 0)..=(mapper, u32::MAX))
            .map(|(&(_, h), _)| h)
            .collect();
        handles
            .into_iter()
            .filter_map(|h| self.maps.remove(&(mapper, h)))
            .collect()
    }

    /// Mappings held by `mapper`.
    pub fn count(&self, mapper: u32) -> usize {
        self.maps.range((mapper, 0)..=(mapper, u32::MAX)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(flags: u16, domid: u16) -> u32 {
        u32::from(flags) | u32::from(domid) << 16
    }

    #[test]
    fn map_flags() {
        assert_eq!(map_mode(GNTMAP_HOST_MAP), Ok(false));
        assert_eq!(map_mode(GNTMAP_HOST_MAP | GNTMAP_READONLY), Ok(true));
        assert_eq!(map_mode(0), Err(GNTST_BAD_GNTREF));
        assert_eq!(map_mode(GNTMAP_READONLY), Err(GNTST_BAD_GNTREF));
        assert_eq!(map_mode(GNTMAP_DEVICE_MAP), Err(GNTST_GENERAL_ERROR));
        assert_eq!(
            map_mode(GNTMAP_HOST_MAP | GNTMAP_CONTAINS_PTE),
            Err(GNTST_GENERAL_ERROR)
        );
        assert_eq!(
            map_mode(GNTMAP_HOST_MAP | GNTMAP_APPLICATION_MAP),
            Err(GNTST_GENERAL_ERROR)
        );
    }

    #[test]
    fn pinning_checks_type_domid_and_readonly() {
        let rw = word(GTF_PERMIT_ACCESS, 0);
        assert_eq!(
            pin_word(rw, 0, false, true),
            Ok(word(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING, 0))
        );
        assert_eq!(
            pin_word(rw, 0, true, true),
            Ok(word(GTF_PERMIT_ACCESS | GTF_READING, 0))
        );
        // Another domain, no grant, a transfer entry, a sub-page grant.
        assert_eq!(pin_word(rw, 3, true, true), Err(GNTST_GENERAL_ERROR));
        assert_eq!(
            pin_word(word(0, 0), 0, true, true),
            Err(GNTST_GENERAL_ERROR)
        );
        assert_eq!(
            pin_word(word(2, 0), 0, true, true),
            Err(GNTST_GENERAL_ERROR)
        );
        let sub = word(GTF_PERMIT_ACCESS | GTF_SUB_PAGE, 0);
        assert_eq!(pin_word(sub, 0, true, true), Err(GNTST_GENERAL_ERROR));
        assert!(pin_word(sub, 0, true, false).is_ok());
        // A read-only grant: reading only.
        let ro = word(GTF_PERMIT_ACCESS | GTF_READONLY, 0);
        assert_eq!(pin_word(ro, 0, false, true), Err(GNTST_GENERAL_ERROR));
        assert_eq!(
            pin_word(ro, 0, true, true),
            Ok(word(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING, 0))
        );
        // Bits already set stay set.
        let busy = word(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING, 0);
        assert_eq!(pin_word(busy, 0, true, true), Ok(busy));
    }

    #[test]
    fn flags_clear_with_the_last_use() {
        let mut g: Grants<()> = Grants::new();
        g.acquire(1, 5, false);
        g.acquire(1, 5, true);
        // The writer goes: GTF_writing clears, a reader is left.
        assert_eq!(g.release(1, 5, false), GTF_WRITING);
        assert_eq!(g.release(1, 5, true), GTF_WRITING | GTF_READING);
        // Two writers: the first release clears nothing.
        g.acquire(1, 6, false);
        g.acquire(1, 6, false);
        assert_eq!(g.release(1, 6, false), 0);
        assert_eq!(g.release(1, 6, false), GTF_WRITING | GTF_READING);
        // Entries are separate per granter and reference.
        g.acquire(1, 7, true);
        g.acquire(2, 7, true);
        assert_eq!(g.release(2, 7, true), GTF_WRITING | GTF_READING);
        assert_eq!(g.release(1, 7, true), GTF_WRITING | GTF_READING);
        // A release without a use clears nothing.
        assert_eq!(g.release(1, 7, true), 0);
    }

    #[test]
    fn handles_are_reused_and_bounded() {
        let mut g: Grants<()> = Grants::new();
        let map = |gref| Map {
            granter: (),
            granter_id: 1,
            gref,
            gpa: 0,
            readonly: false,
        };
        for i in 0..3 {
            let h = g.free_handle(0).unwrap();
            assert_eq!(h, i);
            g.insert(0, h, map(i));
        }
        assert_eq!(g.free_handle(9), Some(0));
        assert!(g.remove(0, 1).is_some());
        assert!(g.get(0, 1).is_none());
        assert_eq!(g.free_handle(0), Some(1));
        assert_eq!(g.get(0, 2).map(|m| m.gref), Some(2));
        assert_eq!(g.count(0), 2);
        assert_eq!(g.take_mapper(0).len(), 2);
        assert_eq!(g.count(0), 0);
        for i in 0..MAX_MAPS_PER_MAPPER {
            g.insert(4, i, map(i));
        }
        assert_eq!(g.free_handle(4), None);
        assert_eq!(g.free_handle(3), Some(0));
        assert_eq!(g.free_handle(5), Some(0));
    }
}
