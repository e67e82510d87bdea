//! Grant mapping, unmapping and copying (`GNTTABOP_map_grant_ref`,
//! `unmap_grant_ref`, `copy`; docs/control-domain.md): a domain with Xen's
//! interface uses a page another domain granted it in its grant table (v1).
//! The rules are `basalt_xen::grant`; here the entries are read and changed
//! in the granter's frames, its page pinned and mapped into the mapper's
//! stage-2 tables, or bytes copied.
//!
//! The granter may change its entry at any time: the entry word is changed
//! with a compare-exchange from the value just read (never one read
//! earlier), and the frame is read once, after the entry is marked in use.

use super::{Answer, ok, read, u16_at, u32_at, u64_at, write};
use crate::common::domain::{self, Domain, Running};
use crate::common::hypercall::{After, SchedOps};
use alloc::sync::Arc;
use basalt_xen::DOMID_SELF;
use basalt_xen::grant::{self as g, Grants, Map};
use core::sync::atomic::Ordering;

/// Every domain's grant mappings and the uses of granted entries.
static GRANTS: spin::Mutex<Grants<Arc<Domain>>> = spin::Mutex::new(Grants::new());

/// Map or unmap requests done per VM exit; the rest is a continuation.
const MAPS_PER_EXIT: u64 = 32;
/// Copies (up to 4 KiB each) done per VM exit.
const COPIES_PER_EXIT: u64 = 8;
/// Compare-exchange attempts on an entry the granter keeps changing before
/// the use is refused (Xen gives up after five as well).
const RETRIES: u32 = 5;

/// Runs `each` on `count` structures of `size` bytes from linear address
/// `uop`, at most `per_exit` of them; the rest is a continuation with the
/// arguments advanced in the caller's registers, as Xen does.
fn batch(
    v: &mut Running<'_>,
    uop: u64,
    count: u64,
    size: u64,
    per_exit: u64,
    mut each: impl FnMut(&mut Running<'_>, u64) -> Result<(), Answer>,
) -> Answer {
    let n = count.min(per_exit);
    for i in 0..n {
        if let Err(e) = each(v, uop.wrapping_add(i * size)) {
            return e;
        }
    }
    if n == count {
        return ok(0);
    }
    let (next, rest) = (uop.wrapping_add(n * size), count - n);
    use crate::vcpu::gpr;
    if v.arch.long_mode() {
        v.arch.set_reg(gpr::RSI, next);
        v.arch.set_reg(gpr::RDX, rest);
    } else {
        v.arch.set_reg(gpr::RCX, next & 0xffff_ffff);
        v.arch.set_reg(gpr::RDX, rest & 0xffff_ffff);
    }
    (0, After::Again(false))
}

/// The domain a grant operation names (`DOMID_SELF`: the caller): one with
/// Xen's interface that is not ending.
fn granter(v: &Running<'_>, id: u16) -> Result<Arc<Domain>, i16> {
    let id = if id == DOMID_SELF {
        v.domain.id
    } else {
        u32::from(id)
    };
    match domain::get(id) {
        Some(d) if d.xen.is_some() && !d.life.is_ending() => Ok(d),
        _ => Err(g::GNTST_BAD_DOMAIN),
    }
}

/// Marks entry `gref` of `granter` in use by domain `user` (`GTF_reading`,
/// and `GTF_writing` unless `readonly`) and records the use; returns the
/// granted frame.
fn acquire(
    grants: &mut Grants<Arc<Domain>>,
    granter: &Domain,
    user: u16,
    gref: u32,
    readonly: bool,
    map: bool,
) -> Result<u64, i16> {
    let Some(x) = &granter.xen else {
        return Err(g::GNTST_BAD_DOMAIN);
    };
    let frame = x
        .with_grant_entry(&granter.ram, gref, |word, frame| {
            let mut seen = word.load(Ordering::SeqCst);
            for _ in 0..RETRIES {
                let new = g::pin_word(seen, user, readonly, map)?;
                match word.compare_exchange(seen, new, Ordering::SeqCst, Ordering::SeqCst) {
                    // The frame is read once the entry is in use.
                    Ok(_) => return Ok(frame.load(Ordering::SeqCst)),
                    Err(now) => seen = now,
                }
            }
            Err(g::GNTST_GENERAL_ERROR)
        })
        .ok_or(g::GNTST_BAD_GNTREF)??;
    grants.acquire(granter.id, gref, readonly);
    Ok(u64::from(frame))
}

/// Ends a use recorded by [`acquire`]: the entry's flags no use needs any
/// more are cleared.
fn release(grants: &mut Grants<Arc<Domain>>, granter: &Domain, gref: u32, readonly: bool) {
    let clear = grants.release(granter.id, gref, readonly);
    if clear != 0
        && let Some(x) = &granter.xen
    {
        x.with_grant_entry(&granter.ram, gref, |word, _| {
            word.fetch_and(!u32::from(clear), Ordering::SeqCst)
        });
    }
}

/// `GNTTABOP_map_grant_ref`: `count` × struct gnttab_map_grant_ref
/// { uint64_t host_addr; uint32_t flags; grant_ref_t ref; domid_t dom;
/// int16_t status; grant_handle_t handle; uint64_t dev_bus_addr; } (32 bytes).
pub fn map(v: &mut Running<'_>, uop: u64, count: u64) -> Answer {
    batch(v, uop, count, 32, MAPS_PER_EXIT, |v, at| {
        let b = read::<32>(v, at)?;
        let (status, handle) = match map_one(
            v,
            u64_at(&b, 0),
            u32_at(&b, 8),
            u32_at(&b, 12),
            u16_at(&b, 16),
        ) {
            Ok(h) => (g::GNTST_OKAY, h),
            Err(s) => (s, 0),
        };
        let mut out = [0u8; 14];
        out[0..2].copy_from_slice(&status.to_le_bytes());
        out[2..6].copy_from_slice(&handle.to_le_bytes());
        // dev_bus_addr (bytes 24..32): no device mapping is made.
        write(v, at + 18, &out)
    })
}

fn map_one(v: &Running<'_>, host_addr: u64, flags: u32, gref: u32, dom: u16) -> Result<u32, i16> {
    let readonly = g::map_mode(flags)?;
    let owner = granter(v, dom)?;
    let d = v.domain;
    let mut grants = GRANTS.lock();
    let handle = grants.free_handle(d.id).ok_or(g::GNTST_NO_SPACE)?;
    let frame = acquire(&mut grants, &owner, d.id as u16, gref, readonly, true)?;
    let Some(hpa) = frame
        .checked_mul(4096)
        .and_then(|gpa| owner.ram.pin_frame(gpa))
    else {
        release(&mut grants, &owner, gref, readonly);
        return Err(g::GNTST_BAD_PAGE);
    };
    if d.ram.map_extra_as(host_addr, hpa, readonly).is_err() {
        // Nothing was mapped: the pin goes at once.
        owner.ram.unpin();
        release(&mut grants, &owner, gref, readonly);
        return Err(g::GNTST_GENERAL_ERROR);
    }
    let granter_id = owner.id;
    grants.insert(
        d.id,
        handle,
        Map {
            granter: owner,
            granter_id,
            gref,
            gpa: host_addr,
            readonly,
        },
    );
    Ok(handle)
}

/// `GNTTABOP_unmap_grant_ref`: `count` × struct gnttab_unmap_grant_ref
/// { uint64_t host_addr; uint64_t dev_bus_addr; grant_handle_t handle;
/// int16_t status; } (24 bytes).
pub fn unmap(v: &mut Running<'_>, uop: u64, count: u64, ops: &impl SchedOps) -> Answer {
    batch(v, uop, count, 24, MAPS_PER_EXIT, |v, at| {
        let b = read::<24>(v, at)?;
        let status = match unmap_one(v.domain, u32_at(&b, 16), u64_at(&b, 0)) {
            Ok(m) => {
                ops.after_flush(finish_unmap(m));
                g::GNTST_OKAY
            }
            Err(s) => s,
        };
        write(v, at + 20, &status.to_le_bytes())
    })
}

/// Removes mapping `handle` of `d` at `host_addr` from its stage-2 tables
/// and from the table of mappings (its use is released by
/// [`finish_unmap`], after every CPU's flush).
fn unmap_one(d: &Domain, handle: u32, host_addr: u64) -> Result<Map<Arc<Domain>>, i16> {
    let mut grants = GRANTS.lock();
    let m = grants.get(d.id, handle).ok_or(g::GNTST_BAD_HANDLE)?;
    if m.gpa != host_addr || d.ram.unmap_extra(host_addr).is_err() {
        return Err(g::GNTST_GENERAL_ERROR);
    }
    grants.remove(d.id, handle).ok_or(g::GNTST_BAD_HANDLE)
}

/// What ends an unmapped mapping once no CPU can reach its frame any more:
/// the granter's flags no use needs are cleared (as Xen, only after the
/// flush: a granter that sees them clear may reuse the page), then its
/// pin is dropped.
fn finish_unmap(m: Map<Arc<Domain>>) -> alloc::boxed::Box<dyn FnOnce() + Send> {
    alloc::boxed::Box::new(move || {
        release(&mut GRANTS.lock(), &m.granter, m.gref, m.readonly);
        m.granter.ram.unpin();
    })
}

/// A domain that ends drops every grant mapping it holds (through
/// `after_flush`, the scheduler's, as an unmap does).
pub fn mapper_gone(d: &Domain, after_flush: fn(alloc::boxed::Box<dyn FnOnce() + Send>)) {
    let maps = GRANTS.lock().take_mapper(d.id);
    for m in maps {
        let _ = d.ram.unmap_extra(m.gpa);
        after_flush(finish_unmap(m));
    }
}

/// One side of a copy: the domain and guest-physical address.
struct Side {
    domain: Arc<Domain>,
    gpa: u64,
    /// The grant used (released after the copy), if it is one.
    gref: Option<u32>,
}

/// `GNTTABOP_copy`: `count` × struct gnttab_copy { struct { union { grant_ref_t
/// ref; xen_pfn_t gmfn; } u; domid_t domid; uint16_t offset; } source, dest;
/// uint16_t len; uint16_t flags; int16_t status; }: 40 bytes from a 64-bit
/// caller; 24 from a 32-bit one, whose `xen_pfn_t` is 4 bytes (read into
/// the 64-bit layout).
pub fn copy(v: &mut Running<'_>, uop: u64, count: u64) -> Answer {
    let long = v.arch.long_mode();
    let (size, status_at) = if long { (40, 36) } else { (24, 20) };
    batch(v, uop, count, size, COPIES_PER_EXIT, |v, at| {
        let b = if long {
            read::<40>(v, at)?
        } else {
            let n = read::<24>(v, at)?;
            let mut b = [0u8; 40];
            for (from, to) in [(0, 0), (8, 16)] {
                b[to..to + 4].copy_from_slice(&n[from..from + 4]);
                b[to + 8..to + 12].copy_from_slice(&n[from + 4..from + 8]);
            }
            b[32..36].copy_from_slice(&n[16..20]);
            b
        };
        let status = match copy_one(v, &b) {
            Ok(()) => g::GNTST_OKAY,
            Err(s) => s,
        };
        write(v, at + status_at, &status.to_le_bytes())
    })
}

fn copy_one(v: &Running<'_>, b: &[u8; 40]) -> Result<(), i16> {
    let (len, flags) = (u64::from(u16_at(b, 32)), u16_at(b, 34));
    let (src_off, dst_off) = (u64::from(u16_at(b, 10)), u64::from(u16_at(b, 26)));
    if src_off + len > 4096 || dst_off + len > 4096 {
        return Err(g::GNTST_BAD_COPY_ARG);
    }
    let mut grants = GRANTS.lock();
    let src = side(
        v,
        &mut grants,
        &b[0..16],
        flags & g::GNTCOPY_SOURCE_GREF != 0,
        true,
    )?;
    let dst = match side(
        v,
        &mut grants,
        &b[16..32],
        flags & g::GNTCOPY_DEST_GREF != 0,
        false,
    ) {
        Ok(s) => s,
        Err(e) => {
            end_side(&mut grants, &src, true);
            return Err(e);
        }
    };
    let mut result = Ok(());
    let mut buf = [0u8; 512];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64);
        let chunk = &mut buf[..n as usize];
        if src
            .domain
            .ram
            .read(src.gpa + src_off + done, chunk)
            .is_err()
            || dst
                .domain
                .ram
                .write(dst.gpa + dst_off + done, chunk)
                .is_err()
        {
            result = Err(g::GNTST_BAD_PAGE);
            break;
        }
        done += n;
    }
    end_side(&mut grants, &src, true);
    end_side(&mut grants, &dst, false);
    result
}

/// Resolves one side of a copy (`raw`: its 16 bytes): a grant of another
/// domain (marked in use, `readonly` for the source) or a frame of the
/// caller.
fn side(
    v: &Running<'_>,
    grants: &mut Grants<Arc<Domain>>,
    raw: &[u8],
    is_gref: bool,
    readonly: bool,
) -> Result<Side, i16> {
    let (u, dom) = (u64_at(raw, 0), u16_at(raw, 8));
    if is_gref {
        let owner = granter(v, dom)?;
        let gref = u as u32;
        let frame = acquire(grants, &owner, v.domain.id as u16, gref, readonly, false)?;
        return Ok(Side {
            domain: owner,
            gpa: frame * 4096,
            gref: Some(gref),
        });
    }
    // A frame without a grant: the caller's own only.
    if dom != DOMID_SELF && u32::from(dom) != v.domain.id {
        return Err(g::GNTST_PERMISSION_DENIED);
    }
    let domain = domain::get(v.domain.id).ok_or(g::GNTST_BAD_DOMAIN)?;
    Ok(Side {
        domain,
        gpa: u.checked_mul(4096).ok_or(g::GNTST_BAD_PAGE)?,
        gref: None,
    })
}

fn end_side(grants: &mut Grants<Arc<Domain>>, s: &Side, readonly: bool) {
    if let Some(gref) = s.gref {
        release(grants, &s.domain, gref, readonly);
    }
}
