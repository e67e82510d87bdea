//! What the two fuzzing guests (`fuzz_insn`, `fuzz_hcall`) share: a seeded
//! generator, the rules that keep a random hypercall from ending or stopping
//! the domain on purpose, and the arming of the single-shot timer that wakes
//! a random `HLT` or `SCHEDOP_block`.

use crate::hypercall::{
    HYPERVISOR_CONSOLE_IO, HYPERVISOR_SCHED_OP, HYPERVISOR_VCPU_OP, SCHEDOP_SHUTDOWN, VCPUOP_DOWN,
    set_singleshot_timer, system_time_ns,
};

/// xoshiro256** seeded through splitmix64: fast, and the same sequence for
/// the same seed on every run (the seed is in the scenario).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }

    /// A value that is often at an edge: 0, all ones, the sign bits of the
    /// operand sizes, a single bit, a small number, or random bits.
    pub fn interesting(&mut self) -> u64 {
        match self.below(8) {
            0 => self.pick(&[
                0,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
                0xffff_ffff,
                0x8000_0000,
                0xffff,
                0x7fff_ffff,
                0x0000_8000_0000_0000,
                0xffff_8000_0000_0000,
                0x0000_7fff_ffff_ffff,
            ]),
            1 => 1 << self.below(64),
            2 => self.below(256),
            3 => !(1 << self.below(64)),
            4 => self.next() & 0xffff_ffff,
            _ => self.next(),
        }
    }
}

/// Hypercalls that end or stop the calling domain on purpose, which a fuzzer
/// must not issue (docs/testing.md, "Fuzzing guests"):
/// `sched_op(SCHEDOP_shutdown)` (poweroff, reboot or crash: the run would
/// end) and `vcpu_op(VCPUOP_down)` of the calling vCPU 0 (the domain's only
/// vCPU would sleep until a `VCPUOP_up` nobody sends). Either is turned into
/// a harmless neighbour: `SCHEDOP_shutdown` into a sub-op Basalt does not
/// know, `VCPUOP_down` onto vCPU 1, which the one-vCPU fuzzing domains do
/// not have (`-ENOENT`). Returns whether it changed something.
///
/// `SCHEDOP_block`/`SCHEDOP_poll` and `HLT` stay: the fuzzers arm the
/// single-shot timer before every call that may block ([`Wakeup`]).
pub fn defuse_hypercall(op: u64, args: &mut [u64; 5]) -> bool {
    match op {
        HYPERVISOR_SCHED_OP if args[0] == SCHEDOP_SHUTDOWN => {
            args[0] = 0x7777;
            true
        }
        HYPERVISOR_VCPU_OP if args[0] == VCPUOP_DOWN && args[1] == 0 => {
            args[1] = 1;
            true
        }
        _ => false,
    }
}

/// Whether a hypercall would write guest output to the console with a
/// length the synchronous console takes long to send (over `max` bytes):
/// the fuzzers keep those to lengths that fault or to short buffers.
pub fn is_long_console_write(op: u64, args: &[u64; 5], max: u64) -> bool {
    op == HYPERVISOR_CONSOLE_IO && args[0] == 0 && args[1] > max
}

/// Keeps the single-shot timer armed so that an `HLT` or `SCHEDOP_block`
/// the fuzzer issues returns: a deadline a little after the last system
/// time read (refreshed every `refresh` calls through
/// `VCPUOP_get_runstate_info`), so that it is never far in the future and
/// usually already past (Basalt then returns from the block at once).
#[derive(Debug)]
pub struct Wakeup {
    now_ns: u64,
    calls: u64,
    refresh: u64,
}

impl Wakeup {
    /// A wake-up source refreshing its time every `refresh` arms.
    pub fn new(refresh: u64) -> Wakeup {
        Wakeup {
            now_ns: 0,
            calls: 0,
            refresh: refresh.max(1),
        }
    }

    /// Arms the single-shot timer 20 µs after the last time read. Returns
    /// the hypercall's result (0).
    pub fn arm(&mut self) -> i64 {
        if self.calls.is_multiple_of(self.refresh) {
            let now = system_time_ns();
            if now > 0 {
                self.now_ns = now as u64;
            }
        }
        self.calls += 1;
        set_singleshot_timer(self.now_ns + 20_000)
    }
}

/// A count per small key, for the final histograms.
#[derive(Debug)]
pub struct Tally<const N: usize> {
    /// Count per key.
    pub counts: [u64; N],
}

impl<const N: usize> Tally<N> {
    /// All zero.
    pub const fn new() -> Self {
        Tally { counts: [0; N] }
    }

    /// Adds one to `key` (keys at or beyond `N` count in the last slot).
    pub fn add(&mut self, key: usize) {
        let k = key.min(N - 1);
        self.counts[k] += 1;
    }
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Self::new()
    }
}
