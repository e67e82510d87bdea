//! [`CpuMask`]: a set of physical CPU indices `0..MAX_CPUS`.

use core::fmt;
use core::ops::{BitAnd, BitOr};

use crate::MAX_CPUS;

/// Number of 64-bit words in a [`CpuMask`].
const WORDS: usize = MAX_CPUS / 64;

/// A set of physical CPUs (indices `0..`[`MAX_CPUS`]), used for vCPU affinity.
///
/// Bit `n` set means "CPU `n` is in the set". `CpuMask::from(bits: u64)` covers the first 64
/// CPUs, which is what most callers need; [`CpuMask::single`], [`CpuMask::first`] and
/// [`insert`](CpuMask::insert) reach all 256. Indices at or above [`MAX_CPUS`] are silently
/// ignored (never stored, never reported as members).
///
/// As an affinity (see [`Scheduler::add_vcpu`](crate::Scheduler::add_vcpu)), the empty mask means
/// "any CPU", like Xen's default of no pinning.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuMask {
    words: [u64; WORDS],
}

impl CpuMask {
    /// The empty set (as an affinity: any CPU).
    pub const EMPTY: CpuMask = CpuMask { words: [0; WORDS] };

    /// Every CPU index `0..MAX_CPUS`.
    pub const ALL: CpuMask = CpuMask {
        words: [u64::MAX; WORDS],
    };

    /// The set whose members are the set bits of `bits` (CPUs 0 to 63).
    #[must_use]
    pub const fn from_u64(bits: u64) -> Self {
        let mut words = [0; WORDS];
        words[0] = bits;
        CpuMask { words }
    }

    /// The set holding only `cpu` (empty if `cpu >= MAX_CPUS`).
    #[must_use]
    pub const fn single(cpu: usize) -> Self {
        let mut m = CpuMask::EMPTY;
        if cpu < MAX_CPUS {
            m.words[cpu / 64] = 1 << (cpu % 64);
        }
        m
    }

    /// The set of CPUs `0..n` (all of them if `n >= MAX_CPUS`).
    #[must_use]
    pub const fn first(n: usize) -> Self {
        let mut m = CpuMask::EMPTY;
        let mut w = 0;
        while w < WORDS {
            let lo = w * 64;
            m.words[w] = if n >= lo + 64 {
                u64::MAX
            } else if n > lo {
                (1u64 << (n - lo)) - 1
            } else {
                0
            };
            w += 1;
        }
        m
    }

    /// Whether `cpu` is in the set (false for `cpu >= MAX_CPUS`).
    #[must_use]
    pub const fn contains(&self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.words[cpu / 64] & (1 << (cpu % 64)) != 0
    }

    /// Adds `cpu` to the set (ignored if `cpu >= MAX_CPUS`).
    pub fn insert(&mut self, cpu: usize) {
        if let Some(w) = self.words.get_mut(cpu / 64) {
            *w |= 1 << (cpu % 64);
        }
    }

    /// Removes `cpu` from the set.
    pub fn remove(&mut self, cpu: usize) {
        if let Some(w) = self.words.get_mut(cpu / 64) {
            *w &= !(1 << (cpu % 64));
        }
    }

    /// Whether the set is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        let mut w = 0;
        while w < WORDS {
            if self.words[w] != 0 {
                return false;
            }
            w += 1;
        }
        true
    }

    /// Number of CPUs in the set.
    #[must_use]
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The lowest CPU in the set, if any.
    #[must_use]
    pub fn lowest(&self) -> Option<usize> {
        self.next_from(0)
    }

    /// The lowest member `>= from`, if any.
    #[must_use]
    pub fn next_from(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut bits = self.words.get(w).copied()? & (u64::MAX << (from % 64));
        loop {
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            bits = self.words.get(w).copied()?;
        }
    }

    /// The members of `self` that are not in `other`.
    #[must_use]
    pub fn and_not(self, other: CpuMask) -> CpuMask {
        let mut m = self;
        for (a, b) in m.words.iter_mut().zip(other.words.iter()) {
            *a &= !b;
        }
        m
    }

    /// Whether every member of `self` is also in `other`.
    #[cfg(test)]
    #[must_use]
    pub fn is_subset(&self, other: &CpuMask) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(a, b)| a & !b == 0)
    }

    /// The members in increasing order (cost proportional to the members, plus 4 words).
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        core::iter::successors(self.next_from(0), move |&c| self.next_from(c + 1))
    }

    /// The members `>= start` in increasing order, then those `< start`: a rotating scan, so that
    /// ties do not always favour the lowest CPUs.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = usize> + '_ {
        let high = core::iter::successors(self.next_from(start), move |&c| self.next_from(c + 1));
        let low = self.iter().take_while(move |&c| c < start);
        high.chain(low)
    }
}

impl From<u64> for CpuMask {
    fn from(bits: u64) -> Self {
        CpuMask::from_u64(bits)
    }
}

impl BitAnd for CpuMask {
    type Output = CpuMask;
    fn bitand(self, rhs: CpuMask) -> CpuMask {
        let mut m = self;
        for (a, b) in m.words.iter_mut().zip(rhs.words.iter()) {
            *a &= b;
        }
        m
    }
}

impl BitOr for CpuMask {
    type Output = CpuMask;
    fn bitor(self, rhs: CpuMask) -> CpuMask {
        let mut m = self;
        for (a, b) in m.words.iter_mut().zip(rhs.words.iter()) {
            *a |= b;
        }
        m
    }
}

/// Prints the members as ranges: `CpuMask{0-3,7}`.
impl fmt::Debug for CpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CpuMask{")?;
        let mut first = true;
        let mut c = 0;
        while c < MAX_CPUS {
            if !self.contains(c) {
                c += 1;
                continue;
            }
            let start = c;
            while c + 1 < MAX_CPUS && self.contains(c + 1) {
                c += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == c {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{c}")?;
            }
            c += 1;
        }
        f.write_str("}")
    }
}
