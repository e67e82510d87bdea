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
//! With `xen=1` (the domain built with `xen=1` or `role=control`) it also
//! calls Xen's interface (docs/control-domain.md): `memory_op`,
//! `event_channel_op`, `hvm_op`, `grant_table_op` and `set_timer_op`, with
//! the argument structure built in the scratch buffer from random values,
//! except that every frame or address Basalt would write later (a
//! shared_info or vcpu_info frame, a runstate area, a frame to map or give
//! back) is a scratch page, page 0 or no RAM at all, so that the guest does
//! not overwrite its own code on purpose.
//!
//! Options: `seed=1`, `iterations=1000000`, `progress=100000`, `xen=1`.
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
    /// Xen's interface is on (`xen=1`).
    xen: bool,
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

    /// A frame number Basalt may write to or map at: a scratch page, page 0
    /// (unused low memory), a frame beyond RAM, or one no machine has.
    fn frame(&mut self) -> u64 {
        match self.rng.below(5) {
            0 | 1 => (self.buf >> 12) + self.rng.below((SCRATCH / 4096) as u64),
            _ => self.far_frame(),
        }
    }

    /// A frame that is not the guest's code, data or scratch: page 0, one
    /// beyond RAM, or one far beyond any RAM.
    fn far_frame(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => (RAM_END >> 12) + self.rng.below(0x10_0000),
            2 => (1 << 36) + self.rng.below(1 << 20),
            _ => u64::MAX - self.rng.below(16),
        }
    }

    /// A structure of `len` bytes (at most 64) at an 8-aligned place of
    /// the scratch buffer, filled with random bytes; returns its address.
    fn structure(&mut self, len: usize) -> u64 {
        let at = self.buf + self.rng.below((SCRATCH - 64) as u64) / 8 * 8;
        for i in (0..len.min(64)).step_by(8) {
            let v = self.rng.interesting();
            self.put(at + i as u64, v);
        }
        at
    }

    /// Writes `value` at scratch address `at`.
    fn put(&mut self, at: u64, value: u64) {
        // SAFETY: `at` is within the scratch buffer (callers pass what
        // `structure` returned plus an offset below 64, and the buffer has
        // a 4 KiB tail), which only this generator and Basalt write.
        unsafe { core::ptr::write_unaligned(at as *mut u64, value) }
    }

    fn put32(&mut self, at: u64, value: u32) {
        // SAFETY: as `put`.
        unsafe { core::ptr::write_unaligned(at as *mut u32, value) }
    }

    fn put16(&mut self, at: u64, value: u16) {
        // SAFETY: as `put`.
        unsafe { core::ptr::write_unaligned(at as *mut u16, value) }
    }

    /// A domain id: itself (`DOMID_SELF`) mostly, else 0 to 3 or random.
    fn domid(&mut self) -> u16 {
        match self.rng.below(4) {
            0 | 1 => 0x7ff0,
            2 => self.rng.below(4) as u16,
            _ => self.rng.next() as u16,
        }
    }

    /// A pointer for a structure Basalt reads and writes: in the scratch
    /// buffer (built by `structure`) or somewhere no RAM is.
    fn struct_ptr(&mut self, len: usize) -> (u64, Ptr) {
        let k = self.kind(true);
        if k == Ptr::Scratch {
            (self.structure(len), k)
        } else {
            (self.ptr(k), k)
        }
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
const MEMORY_OP: u64 = 12;
const SET_TIMER_OP: u64 = 15;
const GRANT_TABLE_OP: u64 = 20;
const EVENT_CHANNEL_OP: u64 = 32;
const HVM_OP: u64 = 34;
/// Xen-interface operations, and Basalt's domain control (66): never
/// called with arguments this generator does not control.
const XEN_OPS: [u64; 6] = [
    MEMORY_OP,
    SET_TIMER_OP,
    GRANT_TABLE_OP,
    EVENT_CHANNEL_OP,
    HVM_OP,
    66,
];

fn generate(g: &mut Gen) -> Call {
    let mut args = [
        g.rng.interesting(),
        g.rng.interesting(),
        g.rng.interesting(),
        g.rng.next(),
        g.rng.next(),
    ];
    let mut op = match g.rng.below(if g.xen { 22 } else { 16 }) {
        0..=2 => XEN_VERSION,
        3..=5 => CONSOLE_IO,
        6..=9 => VCPU_OP,
        10..=12 => SCHED_OP,
        13 | 14 => g.rng.below(64),
        15 => g.rng.interesting(),
        16 => MEMORY_OP,
        17 | 18 => EVENT_CHANNEL_OP,
        19 => HVM_OP,
        20 => GRANT_TABLE_OP,
        _ => SET_TIMER_OP,
    };
    if !g.xen && XEN_OPS.contains(&op) {
        // Without Xen's interface these are unknown: -ENOSYS.
    } else if g.xen && g.rng.below(16) >= 13 && XEN_OPS.contains(&op) && op != SET_TIMER_OP {
        // A random op number that happens to be one of these is built as
        // one of these (below), never with uncontrolled arguments.
        op = XEN_OPS[g.rng.below(5) as usize];
    }
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
            if g.xen && matches!(args[0], 5 | 10 | 13) {
                // Registrations whose area Basalt writes later: a scratch
                // address or page 0 (register_runstate / time area take a
                // linear address; register_vcpu_info a frame and offset).
                let (at, k) = g.struct_ptr(16);
                if k == Ptr::Scratch {
                    let area = if args[0] == 10 {
                        g.frame()
                    } else if g.rng.chance(1, 2) {
                        g.buf + g.rng.below((SCRATCH - 64) as u64)
                    } else {
                        g.rng.below(4096 - 48)
                    };
                    g.put(at, area);
                    let r = g.rng.interesting();

                    let offset = g.rng.pick(&[0u64, 64, 4032, 4033, 4088, r]);
                    g.put(at + 8, offset);
                }
                args[2] = at;
                ptr = Some(k);
                must_touch = false;
            }
        }
        MEMORY_OP => {
            let r = g.rng.below(64);

            let cmd = g.rng.pick(&[1u64, 7, 9, 15, 23, 23, 28, r]);
            args[0] = cmd;
            let (at, k) = g.struct_ptr(32);
            args[1] = at;
            ptr = Some(k);
            if k == Ptr::Scratch {
                match cmd {
                    // xen_memory_reservation: extent_start, nr_extents,
                    // extent_order, mem_flags, domid; the extents are
                    // frames Basalt may take away.
                    1 => {
                        let list = g.structure(64);
                        for i in 0..8 {
                            // Never a scratch page: the guest writes those.
                            let f = g.far_frame();
                            g.put(list + i * 8, f);
                        }
                        g.put(at, list);
                        // At most the 8 built extents from the scratch
                        // buffer (more would read the guest's own memory
                        // as frames to give back); any count from a list
                        // that is no RAM.
                        let n = g.rng.below(9);
                        g.put(at + 8, n);
                        if g.rng.chance(1, 4) {
                            let k = g.kind(true);
                            if k != Ptr::Scratch {
                                let p = g.ptr(k);
                                g.put(at, p);
                                let r = g.rng.interesting();
                                g.put(at + 8, r);
                            }
                        }
                        let order = g.rng.below(3) as u32;
                        g.put32(at + 16, order);
                        let d = g.domid();
                        g.put16(at + 24, d);
                    }
                    // xen_add_to_physmap: domid, size, space, idx, gpfn.
                    7 => {
                        let d = g.domid();
                        g.put16(at, d);
                        let space = g.rng.below(6) as u32;
                        g.put32(at + 4, space);
                        let r = g.rng.interesting();

                        let idx = g.rng.pick(&[0u64, 1, 3, 4, 1 << 31, r]);
                        g.put(at + 8, idx);
                        // Not a scratch page: a grant frame placed there
                        // replaces the RAM page, and moving the frame on
                        // leaves a hole the guest would write into.
                        let f = g.far_frame();
                        g.put(at + 16, f);
                    }
                    // xen_memory_map: nr_entries, buffer (room for 8).
                    9 => {
                        let n = g.rng.below(10);
                        g.put(at, n);
                        let k = g.kind(true);
                        let buffer = if k == Ptr::Scratch {
                            g.structure(64)
                        } else {
                            g.ptr(k)
                        };
                        g.put(at + 8, buffer);
                    }
                    // xen_remove_from_physmap: domid, gpfn.
                    15 => {
                        let d = g.domid();
                        g.put16(at, d);
                        let f = g.frame();
                        g.put(at + 8, f);
                    }
                    // xen_add_to_physmap_batch: domid, space, size,
                    // foreign domid, idxs, gpfns, errs.
                    23 => {
                        let d = g.domid();
                        g.put16(at, d);
                        let space = if g.rng.chance(3, 4) {
                            4
                        } else {
                            g.rng.below(6) as u16
                        };
                        g.put16(at + 2, space);
                        let size = g.rng.pick(&[0u16, 1, 2, 8, 65, 300, u16::MAX]);
                        g.put16(at + 4, size);
                        let foreign = g.domid();
                        g.put16(at + 6, foreign);
                        let idxs = g.structure(64);
                        let gpfns = g.structure(64);
                        for i in 0..8 {
                            let f = (RAM_END >> 12) + g.rng.below(0x10_0000);
                            g.put(gpfns + i * 8, f);
                            let idx = g.rng.below(0x1000);
                            g.put(idxs + i * 8, idx);
                        }
                        let errs = g.structure(64);
                        // Entries past the 8 built ones: pointers that
                        // fault when reached (the errs run on into the
                        // buffer's tail).
                        g.put(at + 8, idxs);
                        g.put(at + 16, gpfns);
                        g.put(at + 24, errs);
                        if size > 8 {
                            let k = g.kind(true);
                            if k != Ptr::Scratch {
                                let p = g.ptr(k);
                                g.put(at + 16, p);
                            } else {
                                g.put16(at + 4, 8);
                            }
                        }
                    }
                    // Others: only pointers that are no RAM.
                    _ => {
                        let k = g.kind(false);
                        if k != Ptr::Scratch && k.never_ram() {
                            args[1] = g.ptr(k);
                        }
                    }
                }
            }
        }
        EVENT_CHANNEL_OP => {
            args[0] = if g.rng.chance(7, 8) {
                g.rng.below(14)
            } else {
                g.rng.interesting()
            };
            let (at, k) = g.struct_ptr(24);
            args[1] = at;
            ptr = Some(k);
            if k == Ptr::Scratch {
                // Small port and vCPU numbers, domain ids that exist.
                let d = g.domid();
                g.put16(at, d);
                let port = g.rng.pick(&[0u64, 1, 2, 5, 63, 64, 1023, 4095, 4096]);
                g.put32(at + 4, port as u32);
                let small = g.rng.below(30) as u32;
                g.put32(at, small);
                if g.rng.chance(1, 2) {
                    g.put16(at, d);
                }
                let vcpu = g.rng.below(3) as u32;
                let field = 4 * g.rng.below(3);
                g.put32(at + field, vcpu);
            }
        }
        HVM_OP => {
            let r = g.rng.below(40);

            args[0] = g.rng.pick(&[0u64, 1, 9, 23, r]);
            let (at, k) = g.struct_ptr(16);
            args[1] = at;
            ptr = Some(k);
            if k == Ptr::Scratch {
                let d = g.domid();
                g.put16(at, d);
                let index = g.rng.below(48) as u32;
                g.put32(at + 4, index);
            }
        }
        GRANT_TABLE_OP => {
            // query_size, set_version, get_version and unknown ones; the
            // map/unmap/copy ops name frames and are left out here.
            let r = g.rng.interesting();

            args[0] = g.rng.pick(&[6u64, 8, 10, 14, 7, r]);
            let (at, k) = g.struct_ptr(16);
            args[1] = at;
            args[2] = g.rng.pick(&[1u64, 0, 2, u64::MAX]);
            ptr = Some(k);
            if k == Ptr::Scratch {
                let d = g.domid();
                g.put16(at, d);
                let v = g.rng.below(4) as u32;
                g.put32(at, v);
            }
        }
        SET_TIMER_OP => {
            args[0] = g.rng.interesting();
        }
        66 => {
            // Domain control: refused (-EPERM) unless this is the control
            // domain, where only its pointer decides.
            let k = g.kind(true);
            args[0] = if k == Ptr::Scratch {
                g.structure(16)
            } else {
                g.ptr(k)
            };
            let r = g.rng.interesting();

            args[1] = g.rng.pick(&[16u64, 17, 64, 4096, 4097, r]);
            ptr = Some(k);
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

/// Rows: the implemented operations, then all others.
fn row(op: u64) -> usize {
    match op {
        XEN_VERSION => 0,
        CONSOLE_IO => 1,
        VCPU_OP => 2,
        SCHED_OP => 3,
        MEMORY_OP => 5,
        EVENT_CHANNEL_OP => 6,
        HVM_OP => 7,
        GRANT_TABLE_OP => 8,
        SET_TIMER_OP => 9,
        _ => 4,
    }
}

const ROW_NAMES: [&str; 10] = [
    "xen_version",
    "console_io",
    "vcpu_op",
    "sched_op",
    "other ops",
    "memory_op",
    "evtchn_op",
    "hvm_op",
    "grant_op",
    "set_timer",
];

fn main(cmdline: &str) -> u32 {
    let seed = arg_u64(cmdline, "seed", 1);
    let iterations = arg_u64(cmdline, "iterations", 1_000_000);
    let progress = arg_u64(cmdline, "progress", 100_000).max(1);
    let mut g = Gen {
        rng: Rng::new(seed),
        buf: BUF.0.get() as u64,
        xen: arg_u64(cmdline, "xen", 0) == 1,
    };
    // `trace=1`: each call before it is made (to find one that hangs).
    let trace = arg_u64(cmdline, "trace", 0) == 1;
    println!("fuzz_hcall: seed {seed}, {iterations} hypercalls");
    let mut wake = Wakeup::new(64);
    let mut table = [[0u64; COLUMNS]; ROW_NAMES.len()];
    let mut wrong = 0u64;
    let start = basalt_test_guests::cpu::rdtsc();
    for it in 0..iterations {
        if it > 0 && it.is_multiple_of(progress) {
            println!("fuzz_hcall: {it} of {iterations} hypercalls");
        }
        let call = generate(&mut g);
        if trace {
            println!("fuzz_hcall: {it}: op {} args {:#x?}", call.op, call.args);
        }
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
