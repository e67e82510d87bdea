//! Grant tables v1 between two test guests: a granter (an ordinary `xen=1`
//! domain, `granter=1`) and a mapper (the control domain, `role=control`).
//! They meet through the granted page itself (the mapper reads the
//! granter's marks through its mapping, and with copies once unmapped) and
//! take turns, so that only one prints at a time (the control domain's
//! console output is raw). The granter polls without sleeping (its time
//! slice ends each turn) while the mapper polls with 10 ms sleeps: a
//! sleeping `xen=1` test guest arms its single-shot timer, then halts; if it
//! is preempted in between for longer than the sleep, the timer fires while
//! it runs and its VIRQ_TIMER (bound to nothing here) is lost, so the HLT
//! that follows never ends. Seen with both guests sleeping in 10 ms steps.
//!
//! The granter maps its grant frame 0 (`XENMEM_add_to_physmap`) and grants
//! domain 0 a page read-write (ref 1) and one read-only (ref 2); ref 3 is
//! granted to another domain, ref 4 is empty. Then it waits for the
//! mapper's marks in the read-write page: while mapped, its entries must
//! show `GTF_reading` (and `GTF_writing` for ref 1); after the unmap they
//! must be clear; a copy into ref 1 must arrive.
//!
//! The mapper maps both refs (read-write and read-only) at frames above its
//! RAM, checks the hostile cases (a bad ref, a wrong domid, an empty
//! entry, a write map of a read-only grant, a missing domain, no host-map
//! flag, a host address in its RAM), reads the pages, writes its mark,
//! waits for the granter's answer through the mapping, unmaps (a bad
//! handle, a wrong address, twice) and copies both ways (a copy into a
//! read-only grant, one crossing the page end and one naming another
//! domain's frame without a grant are refused).
//!
//! First, the mapper maps the granter's grant table itself with
//! `XENMEM_acquire_resource` (privcmd's MMAP_RESOURCE): the size query
//! (4 frames), frames 0-1 at two of its frames (entry 1 reads as the
//! granter wrote it; frame 1, grown for the request, is empty), and the
//! refusals: the status frames of a v1 table, frames past the end, a
//! nonzero pad (-EINVAL), an ioreq server the granter does not have
//! (-ENOENT), a missing domain (-ESRCH), a frame already mapped
//! (-EBUSY); `XENMEM_remove_from_physmap` unmaps both.

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::xen::acquire_resource as acquire;
use basalt_test_guests::hypercall::{self, hypercall2, hypercall3};
use basalt_test_guests::{Checks, arg, fail, println};
use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};

basalt_test_guests::entry!(main);

const MEMORY_OP: u64 = 12;
const GRANT_TABLE_OP: u64 = 20;
const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
const XENMAPSPACE_GRANT_TABLE: u32 = 1;
const GNTTABOP_MAP_GRANT_REF: u64 = 0;
const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
const GNTTABOP_COPY: u64 = 5;
const DOMID_SELF: u16 = 0x7ff0;

const GTF_PERMIT_ACCESS: u16 = 1;
const GTF_READONLY: u16 = 1 << 2;
const GTF_READING: u16 = 1 << 3;
const GTF_WRITING: u16 = 1 << 4;
const GNTMAP_HOST_MAP: u32 = 1 << 1;
const GNTMAP_READONLY: u32 = 1 << 2;
const GNTCOPY_SOURCE_GREF: u16 = 1;
const GNTCOPY_DEST_GREF: u16 = 2;

/// Where the granter's grant frame 0 appears (1 GiB: above its RAM, inside
/// the 4 GiB the runtime identity-maps).
const TABLE_GPFN: u64 = 0x40000;
/// Where the mapper maps refs 1 and 2.
const MAP_RW_GPFN: u64 = 0x40010;
const MAP_RO_GPFN: u64 = 0x40011;
/// Where the mapper maps the granter's grant frames 0 and 1.
const ACQUIRED_GPFN: u64 = 0x40020;

/// What the granter writes at the start of both pages.
const GRANTED: &[u8; 8] = b"GRANTED!";
const RO_TEXT: &[u8; 8] = b"READONLY";
/// Marks in the read-write page: the mapper mapped it (offset 16), the
/// granter saw its flags (offset 24); the mapper's copy (offset 100).
const MAPPED: u64 = 0x4d41_5050_4544_2121;
const SEEN: u64 = 0x5345_454e_2121_2121;
const COPIED: &[u8; 16] = b"COPIED-BY-DOM0!!";
/// The granter's marks after the unmap (offset 32) and at its end (40),
/// which the mapper reads with copies.
const CLEARED: u64 = 0x434c_4541_5245_4421;
const DONE: u64 = 0x444f_4e45_2121_2121;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The granter's two granted pages; the mapper's copy buffer.
static mut PAGES: [Page; 2] = [Page([0; 4096]), Page([0; 4096])];

fn page_addr(i: usize) -> u64 {
    // SAFETY: only the address is taken.
    unsafe { addr_of_mut!(PAGES[i]) as u64 }
}

/// Page `i` of `PAGES`.
fn page_mut(i: usize) -> &'static mut [u8; 4096] {
    // SAFETY: one vCPU; the callers keep no two references to one page.
    unsafe { &mut (*addr_of_mut!(PAGES[i])).0 }
}

fn sleep_ms(ms: u64) {
    let until = hypercall::system_time_ns() as u64 + ms * 1_000_000;
    while (hypercall::system_time_ns() as u64) < until {
        hypercall::sleep_until(until, hypercall::Wait::Hlt);
    }
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: the callers name 8-aligned addresses of this guest's pages
    // or of a granted page it has mapped (identity-mapped by the runtime).
    unsafe { read_volatile(addr as *const u64) }
}

fn write_u64(addr: u64, value: u64) {
    // SAFETY: as in `read_u64`, writable pages.
    unsafe { write_volatile(addr as *mut u64, value) }
}

fn bytes(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: as in `read_u64`; read only.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

/// Polls `cond` without sleeping for up to `ms` (the granter: the time
/// slice ends its turn).
fn spin_for(ms: u64, cond: impl Fn() -> bool) -> bool {
    let until = hypercall::system_time_ns() as u64 + ms * 1_000_000;
    while (hypercall::system_time_ns() as u64) < until {
        if cond() {
            return true;
        }
        core::hint::spin_loop();
    }
    cond()
}

/// Polls `cond` every 10 ms for up to `ms`.
fn wait_for(ms: u64, cond: impl Fn() -> bool) -> bool {
    for _ in 0..ms / 10 {
        if cond() {
            return true;
        }
        sleep_ms(10);
    }
    cond()
}

fn main(cmdline: &str) -> u32 {
    if arg(cmdline, "granter").is_some() {
        granter()
    } else {
        mapper()
    }
}

/// Entry `gref` of the granter's table: its flags/domid word.
fn entry_word(gref: u64) -> &'static AtomicU32 {
    // SAFETY: the grant frame is mapped at TABLE_GPFN (8-byte entries).
    unsafe { &*((TABLE_GPFN * 4096 + gref * 8) as *const AtomicU32) }
}

fn flags(gref: u64) -> u16 {
    entry_word(gref).load(Ordering::SeqCst) as u16
}

fn grant(gref: u64, frame: u64, domid: u16, flags: u16) {
    let at = TABLE_GPFN * 4096 + gref * 8;
    // SAFETY: the frame word of entry `gref` in the mapped grant frame.
    unsafe { write_volatile((at + 4) as *mut u32, frame as u32) };
    // The frame first, then the flags that make the entry valid.
    entry_word(gref).store(u32::from(flags) | u32::from(domid) << 16, Ordering::SeqCst);
}

fn granter() -> u32 {
    // struct xen_add_to_physmap { domid_t domid; uint16_t size; unsigned int space; xen_ulong_t idx; xen_pfn_t gpfn; }
    let mut xatp = [0u8; 24];
    xatp[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    xatp[4..8].copy_from_slice(&XENMAPSPACE_GRANT_TABLE.to_le_bytes());
    xatp[16..24].copy_from_slice(&TABLE_GPFN.to_le_bytes());
    // SAFETY: a structure in this guest's memory, only read.
    let r = unsafe { hypercall2(MEMORY_OP, XENMEM_ADD_TO_PHYSMAP, xatp.as_ptr() as u64) };
    if r != 0 {
        return fail!("add_to_physmap(grant_table) returned {r}");
    }
    let (rw, ro) = (page_addr(0), page_addr(1));
    page_mut(0)[..8].copy_from_slice(GRANTED);
    page_mut(1)[..8].copy_from_slice(RO_TEXT);
    grant(1, rw / 4096, 0, GTF_PERMIT_ACCESS);
    grant(2, ro / 4096, 0, GTF_PERMIT_ACCESS | GTF_READONLY);
    grant(3, rw / 4096, 5, GTF_PERMIT_ACCESS);
    println!(
        "grant: granted frames {:#x} (rw) and {:#x} (ro) to d0",
        rw / 4096,
        ro / 4096
    );
    let mut c = Checks::new();
    // The mapper marks the page once both refs are mapped.
    if !spin_for(20_000, || read_u64(rw + 16) == MAPPED) {
        return fail!("the mapper's mark never arrived");
    }
    let (f1, f2) = (flags(1), flags(2));
    println!("grant: while mapped ref 1 flags {f1:#x}, ref 2 flags {f2:#x}");
    c.check(
        f1 == GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING,
        format_args!("ref 1 must show GTF_reading|GTF_writing while mapped"),
    );
    c.check(
        f2 == GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING,
        format_args!("ref 2 must show GTF_reading only while mapped"),
    );
    c.check(
        flags(3) == GTF_PERMIT_ACCESS && flags(4) == 0,
        format_args!("refs 3 and 4 must be untouched"),
    );
    write_u64(rw + 24, SEEN);
    let cleared = spin_for(20_000, || {
        flags(1) == GTF_PERMIT_ACCESS && flags(2) == GTF_PERMIT_ACCESS | GTF_READONLY
    });
    println!(
        "grant: after the unmap ref 1 flags {:#x}, ref 2 flags {:#x}",
        flags(1),
        flags(2)
    );
    c.check(
        cleared,
        format_args!("the unmap must clear GTF_reading/GTF_writing"),
    );
    // The mapper reads this mark with copies, then goes on.
    write_u64(rw + 32, CLEARED);
    let arrived = spin_for(20_000, || bytes(rw + 100, 16) == COPIED);
    println!(
        "grant: copy {}; ref 1 flags {:#x}",
        if arrived { "arrived" } else { "missing" },
        flags(1)
    );
    c.check(arrived, format_args!("the mapper's copy must arrive"));
    c.check(
        flags(1) == GTF_PERMIT_ACCESS,
        format_args!("a finished copy must leave no flag set"),
    );
    let code = c.finish();
    // The mapper ends once it reads this.
    write_u64(rw + 40, DONE);
    code
}

/// `XENMEM_remove_from_physmap` of the caller's frame `gpfn`.
fn remove(gpfn: u64) -> i64 {
    let mut x = [0u8; 16];
    x[0..2].copy_from_slice(&DOMID_SELF.to_le_bytes());
    x[8..16].copy_from_slice(&gpfn.to_le_bytes());
    // SAFETY: a structure in this guest's memory, only read.
    unsafe { hypercall2(MEMORY_OP, XENMEM_REMOVE_FROM_PHYSMAP, x.as_ptr() as u64) }
}

/// The granter's grant table through `XENMEM_acquire_resource`.
fn acquire_table(c: &mut Checks, granter: u16) {
    let (size_r, size) = acquire(granter, 1, 0, 0, &[], 0);
    let frames = [ACQUIRED_GPFN, ACQUIRED_GPFN + 1];
    let got = acquire(granter, 1, 0, 0, &frames, 0).0;
    let base = ACQUIRED_GPFN * 4096;
    let (e1, f1) = (read_u64(base + 8) as u32, (read_u64(base + 8) >> 32) as u32);
    let (e2, grown) = (read_u64(base + 16) as u32, read_u64(base + 4096 + 8));
    println!(
        "grant: acquire_resource size {size_r}/{size}, frames 0-1 {got}; entry 1 {e1:#x} frame {f1:#x}, entry 2 {e2:#x}, frame 1 {grown:#x}"
    );
    c.check(
        (size_r, size, got) == (0, 4, 0),
        format_args!("the grant table's size is 4 frames; frames 0-1 must map"),
    );
    c.check(
        e1 == u32::from(GTF_PERMIT_ACCESS)
            && f1 != 0
            && e2 == u32::from(GTF_PERMIT_ACCESS | GTF_READONLY)
            && grown == 0,
        format_args!("the acquired frames must be the granter's table (entries 1 and 2 for d0)"),
    );
    let status = acquire(granter, 1, 1, 0, &[ACQUIRED_GPFN + 2], 0).0;
    let past = acquire(granter, 1, 0, 3, &frames, 0).0;
    let pad = acquire(granter, 1, 0, 0, &[ACQUIRED_GPFN + 2], 1).0;
    let ioreq = acquire(granter, 0, 0, 0, &[ACQUIRED_GPFN + 2], 0).0;
    let none = acquire(999, 1, 0, 0, &[ACQUIRED_GPFN + 2], 0).0;
    let busy = acquire(granter, 1, 0, 2, &[ACQUIRED_GPFN], 0).0;
    let (r0, r1, again) = (
        remove(ACQUIRED_GPFN),
        remove(ACQUIRED_GPFN + 1),
        remove(ACQUIRED_GPFN),
    );
    println!(
        "grant: acquire refused: status {status}, past the end {past}, pad {pad}, ioreq {ioreq}, no domain {none}, mapped {busy}; removed {r0} {r1}, again {again}"
    );
    c.check(
        (status, past, pad, ioreq, none, busy) == (-22, -22, -22, -2, -3, -16)
            && (r0, r1, again) == (0, 0, -22),
        format_args!("expected -EINVAL x3 (status, past the end, pad), -ENOENT (no ioreq server), -ESRCH, -EBUSY; removals 0, 0, then -EINVAL"),
    );
}

fn map(host_gpfn: u64, flags: u32, gref: u32, dom: u16) -> (i64, i16, u32) {
    // struct gnttab_map_grant_ref { uint64_t host_addr; uint32_t flags; grant_ref_t ref;
    //   domid_t dom; int16_t status; grant_handle_t handle; uint64_t dev_bus_addr; }
    let mut op = [0u8; 32];
    op[0..8].copy_from_slice(&(host_gpfn * 4096).to_le_bytes());
    op[8..12].copy_from_slice(&flags.to_le_bytes());
    op[12..16].copy_from_slice(&gref.to_le_bytes());
    op[16..18].copy_from_slice(&dom.to_le_bytes());
    op[18..20].copy_from_slice(&0x77i16.to_le_bytes());
    // SAFETY: one structure in this guest's memory.
    let r = unsafe {
        hypercall3(
            GRANT_TABLE_OP,
            GNTTABOP_MAP_GRANT_REF,
            op.as_mut_ptr() as u64,
            1,
        )
    };
    let status = i16::from_le_bytes([op[18], op[19]]);
    let handle = u32::from_le_bytes([op[20], op[21], op[22], op[23]]);
    (r, status, handle)
}

fn unmap(host_gpfn: u64, handle: u32) -> i16 {
    // struct gnttab_unmap_grant_ref { uint64_t host_addr; uint64_t dev_bus_addr;
    //   grant_handle_t handle; int16_t status; }
    let mut op = [0u8; 24];
    op[0..8].copy_from_slice(&(host_gpfn * 4096).to_le_bytes());
    op[16..20].copy_from_slice(&handle.to_le_bytes());
    op[20..22].copy_from_slice(&0x77i16.to_le_bytes());
    // SAFETY: one structure in this guest's memory.
    let r = unsafe {
        hypercall3(
            GRANT_TABLE_OP,
            GNTTABOP_UNMAP_GRANT_REF,
            op.as_mut_ptr() as u64,
            1,
        )
    };
    if r != 0 {
        return 0x7fff;
    }
    i16::from_le_bytes([op[20], op[21]])
}

/// One copy: (ref or frame, domid, offset) for each side.
/// A struct gnttab_copy: (ref or frame, domid, offset) for each side.
fn copy_op(src: (u64, u16, u16), dst: (u64, u16, u16), len: u16, flags: u16) -> [u8; 40] {
    let mut op = [0u8; 40];
    for (at, (u, dom, off)) in [(0, src), (16, dst)] {
        op[at..at + 8].copy_from_slice(&u.to_le_bytes());
        op[at + 8..at + 10].copy_from_slice(&dom.to_le_bytes());
        op[at + 10..at + 12].copy_from_slice(&off.to_le_bytes());
    }
    op[32..34].copy_from_slice(&len.to_le_bytes());
    op[34..36].copy_from_slice(&flags.to_le_bytes());
    op[36..38].copy_from_slice(&0x77i16.to_le_bytes());
    op
}

/// `GNTTABOP_copy` on `ops`; the hypercall's result.
fn copy_batch(ops: &mut [[u8; 40]]) -> i64 {
    // SAFETY: `ops.len()` structures in this guest's memory.
    unsafe {
        hypercall3(
            GRANT_TABLE_OP,
            GNTTABOP_COPY,
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
        )
    }
}

fn status_of(op: &[u8; 40]) -> i16 {
    i16::from_le_bytes([op[36], op[37]])
}

/// One copy; its status.
fn copy(src: (u64, u16, u16), dst: (u64, u16, u16), len: u16, flags: u16) -> i16 {
    let mut op = [copy_op(src, dst, len, flags)];
    if copy_batch(&mut op) != 0 {
        return 0x7fff;
    }
    status_of(&op[0])
}

fn mapper() -> u32 {
    // The granter's lines first.
    sleep_ms(300);
    let granter = 1u16;
    let mut c = Checks::new();
    acquire_table(&mut c, granter);
    // Hostile requests, before anything is mapped (a use they leaked would
    // keep the granter's flags set after the unmap).
    let bad_ref = map(MAP_RW_GPFN, GNTMAP_HOST_MAP, 5000, granter).1;
    let wrong_domid = map(MAP_RW_GPFN, GNTMAP_HOST_MAP, 3, granter).1;
    let empty = map(MAP_RW_GPFN, GNTMAP_HOST_MAP, 4, granter).1;
    let write_ro = map(MAP_RO_GPFN, GNTMAP_HOST_MAP, 2, granter).1;
    let no_domain = map(MAP_RW_GPFN, GNTMAP_HOST_MAP, 1, 999).1;
    let no_host_map = map(MAP_RW_GPFN, GNTMAP_READONLY, 1, granter).1;
    let in_ram = map(0x100, GNTMAP_HOST_MAP, 1, granter).1;
    println!(
        "grant: refused: bad ref {bad_ref}, wrong domid {wrong_domid}, empty {empty}, write of r/o {write_ro}, no domain {no_domain}, no host_map {no_host_map}, in RAM {in_ram}"
    );
    c.check(
        (
            bad_ref,
            wrong_domid,
            empty,
            write_ro,
            no_domain,
            no_host_map,
            in_ram,
        ) == (-3, -1, -1, -1, -2, -3, -1),
        format_args!(
            "expected GNTST_bad_gntref, general_error x3, bad_domain, bad_gntref, general_error"
        ),
    );
    let (r1, s1, h1) = map(MAP_RW_GPFN, GNTMAP_HOST_MAP, 1, granter);
    let (r2, s2, h2) = map(MAP_RO_GPFN, GNTMAP_HOST_MAP | GNTMAP_READONLY, 2, granter);
    println!("grant: map rw {r1}/{s1} handle {h1}, ro {r2}/{s2} handle {h2}");
    if (r1, s1, r2, s2) != (0, 0, 0, 0) || h1 == h2 {
        return fail!("both maps must succeed with distinct handles");
    }
    let (rw, ro) = (MAP_RW_GPFN * 4096, MAP_RO_GPFN * 4096);
    c.check(
        bytes(rw, 8) == GRANTED && bytes(ro, 8) == RO_TEXT,
        format_args!("the mapped pages must hold the granter's text"),
    );
    // A write through the read-only mapping goes nowhere (the control
    // domain's writes where it may not write are dropped).
    write_u64(ro + 8, 0x5752_4954_5445_4e21);
    c.check(
        read_u64(ro + 8) == 0 && bytes(ro, 8) == RO_TEXT,
        format_args!("the read-only mapping must not take a write"),
    );
    write_u64(rw + 16, MAPPED);
    // The granter checks its flags and answers while this domain is quiet.
    let seen = wait_for(20_000, || read_u64(rw + 24) == SEEN);
    c.check(
        seen,
        format_args!("the granter's answer must appear in the mapping"),
    );
    let bad_handle = unmap(MAP_RW_GPFN, 77);
    let wrong_addr = unmap(MAP_RO_GPFN, h1);
    let u1 = unmap(MAP_RW_GPFN, h1);
    let u2 = unmap(MAP_RO_GPFN, h2);
    let twice = unmap(MAP_RW_GPFN, h1);
    println!(
        "grant: unmap {u1} {u2}; bad handle {bad_handle}, wrong address {wrong_addr}, twice {twice}"
    );
    c.check(
        (u1, u2, bad_handle, wrong_addr, twice) == (0, 0, -4, -1, -4),
        format_args!("expected 0, 0, GNTST_bad_handle, general_error, bad_handle"),
    );
    // The granter sees its flags clear and prints meanwhile; this domain
    // reads its mark with copies from ref 1 (nothing is mapped now).
    let own_gpfn = page_addr(0) / 4096;
    // The value at offset `at` of ref 1; `DONE` also once the granter has
    // ended (GNTST_bad_domain: it writes DONE just before it ends).
    let mark = |at: u16| {
        let s = copy(
            (1, granter, at),
            (own_gpfn, DOMID_SELF, 64),
            8,
            GNTCOPY_SOURCE_GREF,
        );
        match s {
            0 => read_u64(page_addr(0) + 64),
            -2 => DONE,
            _ => 0,
        }
    };
    if !wait_for(20_000, || mark(32) == CLEARED) {
        return fail!("the granter's mark after the unmap never arrived");
    }
    let own = page_mut(0);
    own[..16].copy_from_slice(COPIED);
    own[16..24].fill(0);
    let from_ro = copy(
        (2, granter, 0),
        (own_gpfn, DOMID_SELF, 16),
        8,
        GNTCOPY_SOURCE_GREF,
    );
    let into_ro = copy(
        (own_gpfn, DOMID_SELF, 0),
        (2, granter, 0),
        8,
        GNTCOPY_DEST_GREF,
    );
    let past_end = copy(
        (own_gpfn, DOMID_SELF, 4090),
        (1, granter, 0),
        16,
        GNTCOPY_DEST_GREF,
    );
    let no_grant = copy((0x100, granter, 0), (own_gpfn, DOMID_SELF, 0), 8, 0);
    println!(
        "grant: copy from ref 2 {from_ro}; into r/o {into_ro}, past the end {past_end}, frame without grant {no_grant}"
    );
    c.check(
        (from_ro, into_ro, past_end, no_grant) == (0, -1, -10, -8),
        format_args!("expected 0, general_error, bad_copy_arg, permission_denied"),
    );
    c.check(
        &own[16..24] == RO_TEXT,
        format_args!("the copy from the read-only grant must bring its text"),
    );
    // 20 copies in one call (more than one exit does: a continuation),
    // each of the read-only grant's text to its own place.
    let mut ops = [[0u8; 40]; 20];
    for (i, op) in ops.iter_mut().enumerate() {
        let at = 1024 + 8 * i as u16;
        *op = copy_op(
            (2, granter, 0),
            (own_gpfn, DOMID_SELF, at),
            8,
            GNTCOPY_SOURCE_GREF,
        );
    }
    let r = copy_batch(&mut ops);
    let all_ok = ops.iter().all(|op| status_of(op) == 0);
    let all_there = own[1024..1024 + 160].chunks(8).all(|t| t == RO_TEXT);
    println!(
        "grant: a batch of 20 copies returned {r}, all done {all_ok}, all arrived {all_there}"
    );
    c.check(
        r == 0 && all_ok && all_there,
        format_args!("a batch longer than one exit must complete"),
    );
    // Ref 2 is mapped again and kept: the granter ends while it is mapped
    // (it stays dying), and this domain ends with it mapped (its end drops
    // the mapping; the run's memory check finds every frame back).
    let (r3, s3, _) = map(MAP_RO_GPFN, GNTMAP_HOST_MAP | GNTMAP_READONLY, 2, granter);
    c.check(
        (r3, s3) == (0, 0),
        format_args!("ref 2 must map again after its unmap"),
    );
    // Last: the copy the granter waits for; it reports while this domain
    // is quiet.
    let to_grant = copy(
        (own_gpfn, DOMID_SELF, 0),
        (1, granter, 100),
        16,
        GNTCOPY_DEST_GREF,
    );
    let done = wait_for(20_000, || mark(40) == DONE);
    println!("grant: copy to ref 1 {to_grant}");
    c.check(
        to_grant == 0,
        format_args!("the copy into ref 1 must succeed"),
    );
    c.check(done, format_args!("the granter's end mark must arrive"));
    // Once it has ended, a copy from its grant finds no domain, but the
    // page it granted stays mapped.
    let gone = wait_for(20_000, || {
        copy(
            (1, granter, 0),
            (own_gpfn, DOMID_SELF, 64),
            8,
            GNTCOPY_SOURCE_GREF,
        ) == -2
    });
    let kept = bytes(MAP_RO_GPFN * 4096, 8) == RO_TEXT;
    println!("grant: granter gone {gone}, its read-only page still mapped {kept}");
    c.check(
        gone && kept,
        format_args!("an ended granter's mapped page must stay"),
    );
    c.finish()
}
