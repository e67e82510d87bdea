//! Address-space identifiers (APM Vol. 2 §15.16 "TLB Control"): per CPU, with a generation.
//!
//! Each CPU hands out ASIDs 1..N-1 (0 is the host's) to the vCPUs that run on it. When they
//! run out, the CPU starts a new generation: every vCPU's ASID from an older generation is
//! stale, and the first VMRUN of the new generation flushes the whole TLB, so a recycled ASID
//! never finds another vCPU's translations. A vCPU remembers the (CPU, generation, ASID) it got
//! and asks again when any of them changed.

/// A vCPU's ASID on one CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asid {
    /// The ASID (1..count).
    pub asid: u32,
    /// The generation of the CPU's allocator it belongs to.
    pub generation: u64,
}

/// What the next VMRUN must do with the TLB (the VMCB's TLB_CONTROL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbFlush {
    /// Nothing: the ASID's translations are this vCPU's.
    None,
    /// Flush every ASID's translations (TLB_CONTROL 1): a new generation began.
    All,
    /// Flush this ASID's translations only (TLB_CONTROL 3, with flush-by-ASID; otherwise
    /// [`TlbFlush::All`]).
    ThisAsid,
}

/// The ASID allocator of one CPU.
#[derive(Debug, Clone)]
pub struct AsidAllocator {
    count: u32,
    next: u32,
    generation: u64,
    /// Whether the CPU flushed since the generation began.
    flushed: bool,
}

impl AsidAllocator {
    /// An allocator for a CPU with `count` ASIDs (CPUID Fn8000_000A EBX; at least 2).
    pub fn new(count: u32) -> Self {
        Self {
            count: count.max(2),
            next: 1,
            generation: 1,
            flushed: false,
        }
    }

    /// The ASID for a vCPU that last had `current` on this CPU (`None`: never ran here, or ran
    /// elsewhere since), and the flush its next VMRUN needs.
    pub fn assign(&mut self, current: Option<Asid>) -> (Asid, TlbFlush) {
        if let Some(a) = current
            && a.generation == self.generation
        {
            return (a, TlbFlush::None);
        }
        if self.next >= self.count {
            self.generation += 1;
            self.next = 1;
            self.flushed = false;
        }
        let asid = Asid {
            asid: self.next,
            generation: self.generation,
        };
        self.next += 1;
        let flush = if self.flushed {
            // The ASID is new to this generation but the TLB may hold this vCPU's entries from
            // an older one, or another's from before the wrap: flush it.
            TlbFlush::ThisAsid
        } else {
            self.flushed = true;
            TlbFlush::All
        };
        (asid, flush)
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero_and_never_shared_within_a_generation() {
        let mut a = AsidAllocator::new(16);
        let mut seen = std::collections::HashSet::new();
        let (first, flush) = a.assign(None);
        assert_eq!(flush, TlbFlush::All);
        seen.insert(first.asid);
        for _ in 0..14 {
            let (x, flush) = a.assign(None);
            assert_ne!(x.asid, 0);
            assert!(seen.insert(x.asid), "ASID {} handed out twice", x.asid);
            assert_eq!(flush, TlbFlush::ThisAsid);
        }
        // The 16th request wraps: a new generation, a full flush, ASID 1 again.
        let (wrapped, flush) = a.assign(None);
        assert_eq!(
            (wrapped.asid, wrapped.generation, flush),
            (1, 2, TlbFlush::All)
        );
        // A vCPU holding a stale ASID gets a fresh one; a current one keeps it without flushing.
        assert_eq!(a.assign(Some(first)).0.generation, 2);
        assert_eq!(a.assign(Some(wrapped)), (wrapped, TlbFlush::None));
    }

    #[test]
    fn two_asids_is_enough() {
        let mut a = AsidAllocator::new(2);
        for g in 1..100 {
            let (x, flush) = a.assign(None);
            assert_eq!((x.asid, x.generation, flush), (1, g, TlbFlush::All));
        }
    }
}
