//! Random hypercalls against the hypervisor: operation numbers leaning
//! toward the ones Basalt implements (`xen_version`, `console_io`,
//! `vcpu_op`, `sched_op`, docs/hypercalls.md) and their sub-operations,
//! plus random ones; arguments random, with pointers into a scratch buffer
//! of the guest's RAM, into guest RAM's low megabyte, just below the end of
//! RAM (crossing it), beyond RAM (mapped by the guest's page tables but no
//! RAM behind them), at the local and I/O APIC pages, unmapped (above the
//! 5 GiB the runtime maps), non-canonical and near 2^64; lengths small,
//! page-sized, one past the limit and huge.
//!
//! Left out, because they end or stop the domain on purpose:
//! `SCHEDOP_shutdown` and `VCPUOP_down` of vCPU 0 (`fuzz::defuse_hypercall`
//! turns them into harmless neighbours). `SCHEDOP_block`/`SCHEDOP_poll`
//! run with the single-shot timer armed just before, so they return.
//! `CONSOLEIO_write` from readable memory prints at most 16 bytes of a
//! printable text (random memory holds control characters that garble the
//! log); the long and huge lengths go with pointers that cannot be read.
//!
//! Checked on the way: a hypercall that must read or write its buffer
//! (`CONSOLEIO_write` with a length, `XENVER_extraversion`,
//! `VCPUOP_get_runstate_info`, `VCPUOP_set_singleshot_timer` of vCPU 0)
//! and got a pointer that cannot be guest RAM must answer `-EFAULT`; every
//! answer must be 0, positive or a Xen errno (-1 to -133). The guest's own
//! memory outside the scratch buffer is never passed where Basalt writes.
//!
//! Options: `seed=1`, `iterations=1000000`, `progress=100000`.
//! At the end: the results by operation and error code, then `TEST PASS`.

#![no_std]
#![no_main]

use basalt_test_guests::fuzz::{Rng, Wakeup, defuse_hypercall};
use basalt_test_guests::hypercall::{self, vmcall};
use basalt_test_guests::{arg_u64, fail, pass, print, println};
use core::cell::UnsafeCell;

basalt_test_guests::entry!(main);

/// The buffer Basalt may read and write: 16 KiB, then a 4 KiB tail that
/// absorbs a structure written at the buffer's last bytes.
const SCRATCH: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; SCRATCH + 4096]>);

// SAFETY: one vCPU; only the hypervisor writes the buffer (during a
// hypercall), the guest never reads it back.
unsafe impl Sync for Scratch {}

static BUF: Scratch = Scratch(UnsafeCell::new([0; SCRATCH + 4096]));

/// What `CONSOLEIO_write` prints when its pointer is readable.
const CONSOLE_TEXT: &str = "[fuzz_hcall console text: 0123456789 abcdefghijklmnopqrstuvwxyz]";

/// The domain's RAM size the scenario gives (`memory=16M`): pointers just
/// below and beyond it.
const RAM_END: u64 = 16 << 20;

/// Where a pointer argument points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ptr {
    /// The scratch buffer: Basalt may read and write.
    Scratch,
    /// The guest's low megabyte (RAM, nothing the guest still uses): only
    /// for hypercalls that read.
    Low,
    /// The last bytes of RAM, running over its end.
    RamEnd,
    /// Mapped by the guest's tables, no RAM behind (16 MiB to 4 GiB and
    /// 4 GiB to 5 GiB).
    BeyondRam,
    /// The local APIC or I/O APIC page.
    Device,
    /// Not mapped by the guest's tables (from 5 GiB), or in the top half.
    Unmapped,
    /// Bits 63:48 not a sign extension.
    NonCanonical,
    /// Random bits.
    Random,
}

impl Ptr {
    /// Whether no byte at the pointer can be guest RAM.
    fn never_ram(self) -> bool {
        matches!(
            self,
            Ptr::BeyondRam | Ptr::Device | Ptr::Unmapped | Ptr::NonCanonical
        )
    }
}

struct Gen {
    rng: Rng,
    buf: u64,
}

impl Gen {
    /// A pointer of class `kind`.
    fn ptr(&mut self, kind: Ptr) -> u64 {
        let r = &mut self.rng;
        match kind {
            Ptr::Scratch => self.buf + r.below(SCRATCH as u64),
            Ptr::Low => r.below(0x9_f000),
            Ptr::RamEnd => RAM_END - 1 - r.below(64),
            Ptr::BeyondRam => match r.below(3) {
                0 => RAM_END + r.below(0x1000_0000),
                1 => 0x8000_0000 + r.below(0x7000_0000),
                _ => 0x1_0000_0000 + r.below(0x4000_0000),
            },
            Ptr::Device => {
                let base = r.pick(&[0xfee0_0000u64, 0xfec0_0000]);
                base + r.below(0x1000)
            }
            Ptr::Unmapped => match r.below(3) {
                0 => 0x1_4000_0000 + r.below(1 << 40),
                1 => 0xffff_8000_0000_0000 + r.below(1 << 40),
                _ => u64::MAX - r.below(0x2000),
            },
            Ptr::NonCanonical => 0x8000_0000_0000_0000 | r.below(1 << 62) | (1 << 50),
            Ptr::Random => r.next(),
        }
    }

    /// A pointer class: writable ones only when Basalt may write.
    fn kind(&mut self, may_write: bool) -> Ptr {
        let kinds: &[Ptr] = if may_write {
            &[
                Ptr::Scratch,
                Ptr::Scratch,
                Ptr::BeyondRam,
                Ptr::Device,
                Ptr::Unmapped,
                Ptr::NonCanonical,
            ]
        } else {
            &[
                Ptr::Scratch,
                Ptr::Low,
                Ptr::RamEnd,
                Ptr::BeyondRam,
                Ptr::Device,
                Ptr::Unmapped,
                Ptr::NonCanonical,
                Ptr::Random,
            ]
        };
        self.rng.pick(kinds)
    }

    fn length(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => self.rng.below(17),
            2 => self.rng.pick(&[4095u64, 4096, 4097, 8192]),
            3 => self
                .rng
                .pick(&[u64::MAX, 1 << 63, 1 << 32, 0xffff_ffff, 0x8000_0000]),
            _ => self.rng.interesting(),
        }
    }
}

/// One generated call: op, arguments, and what the pointer argument (if
/// any) pointed at and whether the call had to touch it.
struct Call {
    op: u64,
    args: [u64; 5],
    ptr: Option<Ptr>,
    must_touch: bool,
}

const XEN_VERSION: u64 = hypercall::HYPERVISOR_XEN_VERSION;
const CONSOLE_IO: u64 = hypercall::HYPERVISOR_CONSOLE_IO;
const VCPU_OP: u64 = hypercall::HYPERVISOR_VCPU_OP;
const SCHED_OP: u64 = hypercall::HYPERVISOR_SCHED_OP;

fn generate(g: &mut Gen) -> Call {
    let mut args = [
        g.rng.interesting(),
        g.rng.interesting(),
        g.rng.interesting(),
        g.rng.next(),
        g.rng.next(),
    ];
    let op = match g.rng.below(16) {
        0..=2 => XEN_VERSION,
        3..=5 => CONSOLE_IO,
        6..=9 => VCPU_OP,
        10..=12 => SCHED_OP,
        13 | 14 => g.rng.below(64),
        _ => g.rng.interesting(),
    };
    let mut ptr = None;
    let mut must_touch = false;
    match op {
        XEN_VERSION => {
            args[0] = if g.rng.chance(7, 8) {
                g.rng.below(12)
            } else {
                g.rng.interesting()
            };
            // Sub-ops that write a structure at arg 2 (extraversion,
            // compile info, capabilities, changeset, ...).
            let k = g.kind(true);
            args[1] = g.ptr(k);
            ptr = Some(k);
            must_touch = args[0] == 1;
        }
        CONSOLE_IO => {
            args[0] = if g.rng.chance(7, 8) {
                g.rng.below(3)
            } else {
                g.rng.interesting()
            };
            let reading = args[0] == hypercall::CONSOLEIO_WRITE;
            let k = g.kind(!reading);
            args[2] = g.ptr(k);
            args[1] = g.length();
            // Readable memory is printed: from a text of printable
            // characters only (random memory holds control characters that
            // garble the log), at most 16 bytes.
            if reading && !k.never_ram() {
                let off = g.rng.below((CONSOLE_TEXT.len() - 16) as u64);
                args[2] = CONSOLE_TEXT.as_ptr() as u64 + off;
                args[1] = g.rng.below(17);
            }
            ptr = Some(k);
            must_touch = reading && args[1] > 0;
        }
        VCPU_OP => {
            args[0] = match g.rng.below(8) {
                0..=5 => g.rng.below(16),
                6 => g.rng.below(64),
                _ => g.rng.interesting(),
            };
            args[1] = match g.rng.below(8) {
                0..=4 => 0,
                5 | 6 => g.rng.below(4),
                _ => g.rng.interesting(),
            };
            let k = g.kind(true);
            args[2] = g.ptr(k);
            ptr = Some(k);
            // get_runstate_info writes, set_singleshot_timer reads; both
            // only for the calling vCPU (0).
            must_touch = args[1] == 0 && matches!(args[0], 4 | 8);
        }
        SCHED_OP => {
            args[0] = match g.rng.below(8) {
                0..=5 => g.rng.below(8),
                6 => 0x4241,
                _ => g.rng.interesting(),
            };
            let k = g.kind(true);
            args[1] = g.ptr(k);
            ptr = Some(k);
        }
        _ => {
            // Unknown operations: pointers anyway, in case one is read.
            let k = g.kind(true);
            args[0] = g.ptr(k);
            args[1] = g.ptr(k);
        }
    }
    defuse_hypercall(op, &mut args);
    Call {
        op,
        args,
        ptr,
        must_touch,
    }
}

/// The errnos to tally by name; anything else goes to "other".
const ERRNOS: [(i64, &str); 10] = [
    (-1, "EPERM"),
    (-2, "ENOENT"),
    (-14, "EFAULT"),
    (-16, "EBUSY"),
    (-17, "EEXIST"),
    (-22, "EINVAL"),
    (-38, "ENOSYS"),
    (-62, "ETIME"),
    (-95, "EOPNOTSUPP"),
    (-13, "EACCES"),
];

/// Result columns: 0, positive, the errnos above, another errno, not a
/// result at all.
const COLUMNS: usize = 2 + ERRNOS.len() + 2;

fn column(r: i64) -> usize {
    if r == 0 {
        return 0;
    }
    if r > 0 {
        return 1;
    }
    if let Some(i) = ERRNOS.iter().position(|&(e, _)| e == r) {
        return 2 + i;
    }
    if r >= -133 { COLUMNS - 2 } else { COLUMNS - 1 }
}

/// Rows: the four implemented operations, then all others.
fn row(op: u64) -> usize {
    match op {
        XEN_VERSION => 0,
        CONSOLE_IO => 1,
        VCPU_OP => 2,
        SCHED_OP => 3,
        _ => 4,
    }
}

const ROW_NAMES: [&str; 5] = [
    "xen_version",
    "console_io",
    "vcpu_op",
    "sched_op",
    "other ops",
];

fn main(cmdline: &str) -> u32 {
    let seed = arg_u64(cmdline, "seed", 1);
    let iterations = arg_u64(cmdline, "iterations", 1_000_000);
    let progress = arg_u64(cmdline, "progress", 100_000).max(1);
    let mut g = Gen {
        rng: Rng::new(seed),
        buf: BUF.0.get() as u64,
    };
    println!("fuzz_hcall: seed {seed}, {iterations} hypercalls");
    let mut wake = Wakeup::new(64);
    let mut table = [[0u64; COLUMNS]; 5];
    let mut wrong = 0u64;
    let start = basalt_test_guests::cpu::rdtsc();
    for it in 0..iterations {
        if it > 0 && it.is_multiple_of(progress) {
            println!("fuzz_hcall: {it} of {iterations} hypercalls");
        }
        let call = generate(&mut g);
        if call.op == SCHED_OP || row(call.op) == 4 {
            // A block, poll or unknown op that blocks returns at the timer.
            wake.arm();
        }
        // SAFETY: pointers Basalt may write go to the scratch buffer or to
        // addresses that are not the guest's RAM (see `Gen::kind`); the ops
        // that end or stop the domain are defused.
        let result = match unsafe { vmcall(call.op, call.args) } {
            Ok(r) => r,
            Err(vector) => return fail!("vmcall raised exception {vector} (iteration {it})"),
        };
        let c = column(result);
        table[row(call.op)][c] += 1;
        let bad_answer = c == COLUMNS - 1
            || (call.must_touch && call.ptr.is_some_and(Ptr::never_ram) && result != -14);
        if bad_answer {
            wrong += 1;
            if wrong <= 10 {
                println!(
                    "fuzz_hcall: iteration {it}: op {} args {:#x?} (pointer {:?}) returned {result}",
                    call.op, call.args, call.ptr
                );
            }
        }
    }
    let ticks = basalt_test_guests::cpu::rdtsc().wrapping_sub(start);
    println!("fuzz_hcall: {iterations} hypercalls done, seed {seed}, {ticks} TSC ticks");
    print!("fuzz_hcall: {:<12} {:>8} {:>8}", "op", "0", ">0");
    for (_, name) in ERRNOS {
        print!(" {name:>8}");
    }
    println!(" {:>8} {:>8}", "other", "bad");
    for (r, counts) in table.iter().enumerate() {
        print!("fuzz_hcall: {:<12}", ROW_NAMES[r]);
        for n in counts {
            print!(" {n:>8}");
        }
        println!();
    }
    if wrong != 0 {
        return fail!("{wrong} answers were not what the ABI allows (first ones above)");
    }
    pass()
}
