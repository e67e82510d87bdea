//! The control domain's foreign mappings (privcmd's MMAPBATCH path), as a
//! test guest built with `role=control` (or, with `expect=eperm`, as an
//! ordinary `xen=1` domain that must be refused):
//!
//! 1. `XENMEM_add_to_physmap_batch` (`XENMAPSPACE_gmfn_foreign`) maps frame
//!    0x100 (the start of its kernel image, at 1 MiB) of domain `victim=ID`
//!    at a frame of its own above its RAM, plus one entry naming a frame
//!    the victim does not have: per-entry results 0 and -EINVAL.
//! 2. The mapped page holds what this guest's own page at 1 MiB holds (the
//!    victim is this image with `live_ms=`: it only lives that long).
//! 3. Mapping the same frame again: -EBUSY; the guest itself or a domain
//!    that does not exist as the foreign domain: -EINVAL, -ESRCH.
//!    (The ordinary domain gets -EPERM for the batch and for
//!    `XENMEM_acquire_resource` of the victim's grant table, and -ENOSYS
//!    for `PHYSDEVOP_pci_device_add`, as on Xen.)
//! 4. After `wait_ms=` (the victim ends meanwhile) the page still reads the
//!    same: the victim stays dying while mapped.
//! 5. `XENMEM_remove_from_physmap` unmaps it (0); again: -EINVAL.

#![no_std]
#![no_main]

use basalt_test_guests::hypercall::{self, hypercall2};
use basalt_test_guests::{arg, arg_u64, fail, pass, println};

basalt_test_guests::entry!(main);

const MEMORY_OP: u64 = 12;
const XENMEM_REMOVE_FROM_PHYSMAP: u64 = 15;
const XENMEM_ADD_TO_PHYSMAP_BATCH: u64 = 23;
const DOMID_SELF: u16 = 0x7ff0;
/// Where the victim's page appears: 1 GiB, above this guest's RAM and
/// inside the 4 GiB its page tables map.
const SCRATCH_GPFN: u64 = 0x40000;
/// The page both guests' images start with.
const IMAGE_GPFN: u64 = 0x100;

#[repr(C)]
struct Batch {
    domid: u16,
    space: u16,
    size: u16,
    foreign: u16,
    idxs: u64,
    gpfns: u64,
    errs: u64,
}

fn batch(foreign: u16, idxs: &[u64], gpfns: &[u64], errs: &mut [i32]) -> i64 {
    let b = Batch {
        domid: DOMID_SELF,
        space: 4,
        size: idxs.len() as u16,
        foreign,
        idxs: idxs.as_ptr() as u64,
        gpfns: gpfns.as_ptr() as u64,
        errs: errs.as_mut_ptr() as u64,
    };
    // SAFETY: the structure and its three arrays are this guest's memory;
    // the hypervisor writes only `errs` (and the structure, to continue).
    unsafe {
        hypercall2(
            MEMORY_OP,
            XENMEM_ADD_TO_PHYSMAP_BATCH,
            &b as *const Batch as u64,
        )
    }
}

fn remove(gpfn: u64) -> i64 {
    let arg: [u64; 2] = [u64::from(DOMID_SELF), gpfn];
    // SAFETY: a 16-byte structure in this guest's memory, only read.
    unsafe { hypercall2(MEMORY_OP, XENMEM_REMOVE_FROM_PHYSMAP, arg.as_ptr() as u64) }
}

fn page(gpfn: u64) -> &'static [u8] {
    // SAFETY: the first 4 GiB are identity-mapped by the test runtime; the
    // caller names a page that is its own RAM or a mapped foreign frame.
    unsafe { core::slice::from_raw_parts((gpfn * 4096) as *const u8, 64) }
}

fn sleep_ms(ms: u64) {
    let until = hypercall::system_time_ns() as u64 + ms * 1_000_000;
    while (hypercall::system_time_ns() as u64) < until {
        hypercall::sleep_until(until, hypercall::Wait::Hlt);
    }
}

fn main(cmdline: &str) -> u32 {
    // The other side: the same image (so the mapped page is known), alive
    // for `live_ms=`.
    if let Some(ms) = arg(cmdline, "live_ms") {
        sleep_ms(ms.parse().unwrap_or(0));
        return pass();
    }
    let victim = arg_u64(cmdline, "victim", 1) as u16;
    // Lets the control domain's lines out first (its console output is not
    // line-buffered, so another domain's line could cut into one).
    sleep_ms(arg_u64(cmdline, "delay_ms", 0));
    let mut errs = [7i32; 2];
    let r = batch(
        victim,
        &[IMAGE_GPFN, 0xffff_ffff],
        &[SCRATCH_GPFN, SCRATCH_GPFN + 1],
        &mut errs,
    );
    if arg(cmdline, "expect") == Some("eperm") {
        // XENMEM_acquire_resource of the victim's grant table, frame 0.
        let mut a = [0u8; 32];
        a[0..2].copy_from_slice(&victim.to_le_bytes());
        a[2] = 1;
        a[8] = 1;
        let list = [SCRATCH_GPFN];
        a[24..32].copy_from_slice(&(list.as_ptr() as u64).to_le_bytes());
        // SAFETY: the structure and the list are this guest's memory.
        let acq = unsafe { hypercall2(MEMORY_OP, 28, a.as_mut_ptr() as u64) };
        // PHYSDEVOP_pci_device_add of 00:00.0: the control domain's only.
        let dev = [0u8; 8];
        // SAFETY: an 8-byte structure in this guest's memory, only read.
        let add = unsafe { hypercall2(33, 25, dev.as_ptr() as u64) };
        println!(
            "foreign: batch from an ordinary domain returned {r}, acquire_resource {acq}, \
             pci_device_add {add}"
        );
        return if r == -1 && errs == [7, 7] && acq == -1 && add == -38 {
            pass()
        } else {
            fail!("an ordinary domain must get -EPERM")
        };
    }
    println!("foreign: batch returned {r}, errs {errs:?}");
    if r != 0 || errs != [0, -22] {
        return fail!("expected 0 and per-entry results [0, -EINVAL]");
    }
    if page(SCRATCH_GPFN) != page(IMAGE_GPFN) {
        return fail!("the mapped page is not the victim's image");
    }
    println!("foreign: victim frame mapped and read");
    let mut again = [7i32; 1];
    let r = batch(victim, &[IMAGE_GPFN], &[SCRATCH_GPFN], &mut again);
    let own = batch(DOMID_SELF, &[IMAGE_GPFN], &[SCRATCH_GPFN + 2], &mut [7]);
    let none = batch(999, &[IMAGE_GPFN], &[SCRATCH_GPFN + 3], &mut [7]);
    println!("foreign: again {r} {again:?}, self {own}, no such domain {none}");
    if r != 0 || again != [-16] || own != -22 || none != -3 {
        return fail!("expected -EBUSY, -EINVAL and -ESRCH");
    }
    let wait = arg_u64(cmdline, "wait_ms", 0);
    if wait > 0 {
        sleep_ms(wait);
        if page(SCRATCH_GPFN) != page(IMAGE_GPFN) {
            return fail!("the victim's page changed while mapped");
        }
        println!("foreign: still mapped after {wait} ms; removing the mapping");
    }
    let r = remove(SCRATCH_GPFN);
    let twice = remove(SCRATCH_GPFN);
    println!("foreign: remove {r}, again {twice}");
    if r != 0 || twice != -22 {
        return fail!("expected 0, then -EINVAL");
    }
    pass()
}
