//! Virtual-processor identifiers (SDM Vol. 3C 29.1, "Virtual Processor
//! Identifiers (VPIDs)"): the tag that keeps a vCPU's cached linear and
//! combined translations apart from the host's (VPID 0) and from every
//! other vCPU's.
//!
//! [`VpidPool`] hands out VPIDs 1 to 65535, never 0 and never one that is in
//! use, and takes them back when a vCPU is destroyed. A VPID that was handed
//! out before may still tag translations in the TLBs of the CPUs that ran
//! its old owner: [`Vpid::recycled`] says so, and the caller flushes it
//! (INVVPID single-context) on each CPU before that CPU first enters a guest
//! with it. When every VPID is in use the pool refuses ([`VpidError`]);
//! Basalt then refuses the vCPU rather than share a tag.

use core::fmt;

/// Number of 64-bit words in a bitmap of every 16-bit VPID.
const WORDS: usize = 65536 / 64;

/// A VPID handed out by [`VpidPool::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vpid {
    /// The value for the VMCS's VPID field (1 to 65535).
    pub value: u16,
    /// It was handed out before: translations tagged with it may still sit
    /// in some CPU's TLB, so each CPU flushes it before first using it.
    pub recycled: bool,
}

/// Every VPID is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpidError {
    /// How many are in use (65535).
    pub in_use: u32,
}

impl fmt::Display for VpidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} VPIDs are in use by live vCPUs; end a domain (or give this one fewer vCPUs) \
             and try again",
            self.in_use
        )
    }
}

/// The set of VPIDs in use, with a next-fit cursor so that a freed VPID is
/// reused as late as possible.
#[derive(Clone)]
pub struct VpidPool {
    in_use: [u64; WORDS],
    /// VPIDs handed out at least once.
    used_before: [u64; WORDS],
    /// Where the next search starts.
    cursor: u16,
    count: u32,
}

impl fmt::Debug for VpidPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VpidPool")
            .field("in_use", &self.count)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Default for VpidPool {
    fn default() -> Self {
        Self::new()
    }
}

impl VpidPool {
    /// The most VPIDs that can be in use at once (0 is the host's).
    pub const CAPACITY: u32 = 65535;

    /// A pool with every VPID but 0 free.
    pub const fn new() -> VpidPool {
        VpidPool {
            in_use: [0; WORDS],
            used_before: [0; WORDS],
            cursor: 1,
            count: 0,
        }
    }

    fn test(bits: &[u64; WORDS], v: u16) -> bool {
        bits[usize::from(v) / 64] & (1 << (v % 64)) != 0
    }

    fn set(bits: &mut [u64; WORDS], v: u16, on: bool) {
        let word = &mut bits[usize::from(v) / 64];
        if on {
            *word |= 1 << (v % 64);
        } else {
            *word &= !(1 << (v % 64));
        }
    }

    /// VPIDs in use.
    pub fn in_use(&self) -> u32 {
        self.count
    }

    /// Hands out a free VPID (never 0), the first free one at or after the
    /// cursor, wrapping from 65535 to 1.
    pub fn alloc(&mut self) -> Result<Vpid, VpidError> {
        if self.count >= Self::CAPACITY {
            return Err(VpidError { in_use: self.count });
        }
        let mut v = self.cursor.max(1);
        // At most one full lap: `count < CAPACITY` guarantees a free one.
        for _ in 0..Self::CAPACITY {
            if !Self::test(&self.in_use, v) {
                let recycled = Self::test(&self.used_before, v);
                Self::set(&mut self.in_use, v, true);
                Self::set(&mut self.used_before, v, true);
                self.count += 1;
                self.cursor = if v == u16::MAX { 1 } else { v + 1 };
                return Ok(Vpid { value: v, recycled });
            }
            v = if v == u16::MAX { 1 } else { v + 1 };
        }
        Err(VpidError { in_use: self.count })
    }

    /// Gives VPID `v` back; false (and nothing changes) if it was not in use
    /// or is 0.
    pub fn free(&mut self, v: u16) -> bool {
        if v == 0 || !Self::test(&self.in_use, v) {
            return false;
        }
        Self::set(&mut self.in_use, v, false);
        self.count -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_fresh_first() {
        let mut p = VpidPool::new();
        let a = p.alloc().unwrap();
        assert_eq!(
            a,
            Vpid {
                value: 1,
                recycled: false
            }
        );
        assert_eq!(p.alloc().unwrap().value, 2);
        assert_eq!(p.in_use(), 2);
    }

    #[test]
    fn freed_vpid_is_reused_last_and_marked_recycled() {
        let mut p = VpidPool::new();
        let a = p.alloc().unwrap().value;
        assert!(p.free(a));
        // The cursor moved on: fresh VPIDs come first.
        let b = p.alloc().unwrap();
        assert_eq!(b.value, 2);
        assert!(!b.recycled);
    }

    #[test]
    fn many_creations_never_hand_out_one_in_use() {
        // More than 65535 creations with some vCPUs living throughout: the
        // old counter wrapped to 0 and then to VPIDs still in use.
        let mut p = VpidPool::new();
        let keep: Vec<u16> = (0..10).map(|_| p.alloc().unwrap().value).collect();
        let mut seen_recycled = false;
        for _ in 0..200_000 {
            let v = p.alloc().unwrap();
            assert_ne!(v.value, 0);
            assert!(
                !keep.contains(&v.value),
                "VPID {} handed out twice",
                v.value
            );
            seen_recycled |= v.recycled;
            assert!(p.free(v.value));
        }
        assert!(seen_recycled);
        assert_eq!(p.in_use(), 10);
    }

    #[test]
    fn full_pool_refuses_then_recovers() {
        let mut p = VpidPool::new();
        for i in 1..=65535u32 {
            assert_eq!(u32::from(p.alloc().unwrap().value), i);
        }
        assert_eq!(p.alloc(), Err(VpidError { in_use: 65535 }));
        assert!(p.free(40_000));
        let v = p.alloc().unwrap();
        assert_eq!(v.value, 40_000);
        assert!(v.recycled);
        assert!(p.alloc().is_err());
    }

    #[test]
    fn free_rejects_zero_and_unused() {
        let mut p = VpidPool::new();
        assert!(!p.free(0));
        assert!(!p.free(7));
        let v = p.alloc().unwrap().value;
        assert!(p.free(v));
        assert!(!p.free(v), "double free must be refused");
        assert_eq!(p.in_use(), 0);
    }
}
