//! Linux's Xen devices, thinly: `/dev/xen/privcmd` for `dm_op` and for
//! mapping the ioreq page and the guest's RAM (include/uapi/xen/privcmd.h),
//! `/dev/xen/evtchn` for the event channels to the guest's vCPUs
//! (include/uapi/xen/evtchn.h); and `poll` and the tap's `TUNSETIFF`
//! (include/uapi/linux/if_tun.h). The only module with `unsafe`.

use crate::privcmd::Privcmd;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// Bytes in a frame.
pub const PAGE: usize = 4096;

/// `_IOC(_IOC_NONE, ty, nr, size)`: direction 0, size in bits 29:16.
const fn ioc(ty: u8, nr: u64, size: usize) -> u64 {
    ((size as u64) << 16) | ((ty as u64) << 8) | nr
}

/// `struct privcmd_dm_op_buf`.
#[repr(C)]
#[derive(Debug)]
struct DmOpBuf {
    uptr: *mut u8,
    size: usize,
}

/// `struct privcmd_dm_op`.
#[repr(C)]
#[derive(Debug)]
struct DmOp {
    dom: u16,
    num: u16,
    ubufs: *const DmOpBuf,
}

/// `struct privcmd_mmapbatch_v2`.
#[repr(C)]
#[derive(Debug)]
struct MmapBatchV2 {
    num: u32,
    dom: u16,
    addr: u64,
    arr: *const u64,
    err: *mut i32,
}

/// `struct privcmd_mmap_resource`.
#[repr(C)]
#[derive(Debug)]
struct MmapResource {
    dom: u16,
    kind: u32,
    id: u32,
    idx: u32,
    num: u64,
    addr: u64,
}

const IOCTL_PRIVCMD_MMAPBATCH_V2: u64 = ioc(b'P', 4, size_of::<MmapBatchV2>());
const IOCTL_PRIVCMD_DM_OP: u64 = ioc(b'P', 5, size_of::<DmOp>());
const IOCTL_PRIVCMD_MMAP_RESOURCE: u64 = ioc(b'P', 7, size_of::<MmapResource>());
const _: () = assert!(IOCTL_PRIVCMD_MMAPBATCH_V2 == 0x0020_5004);
const _: () = assert!(IOCTL_PRIVCMD_DM_OP == 0x0010_5005);
const _: () = assert!(IOCTL_PRIVCMD_MMAP_RESOURCE == 0x0020_5007);

/// `struct ioctl_evtchn_bind_interdomain` / `ioctl_evtchn_notify`.
const IOCTL_EVTCHN_BIND_INTERDOMAIN: u64 = ioc(b'E', 1, 8);
const IOCTL_EVTCHN_NOTIFY: u64 = ioc(b'E', 4, 4);

/// `dm_op` on domain `dom` with one buffer, `op` (a `struct xen_dm_op`);
/// Xen writes its OUT fields back into it.
pub fn dm_op(privcmd: &Privcmd, dom: u16, op: &mut [u8]) -> io::Result<()> {
    let buf = DmOpBuf {
        uptr: op.as_mut_ptr(),
        size: op.len(),
    };
    let mut arg = DmOp {
        dom,
        num: 1,
        ubufs: &buf,
    };
    // SAFETY: DM_OP's argument is a `privcmd_dm_op` naming one buffer
    // descriptor, which names `op`: both live across the call, and privcmd
    // copies (and locks) them itself.
    unsafe { privcmd.ioctl(IOCTL_PRIVCMD_DM_OP, &mut arg) }.map(|_| ())
}

/// Pages mapped from privcmd into this process, unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, usable from any thread; who
// writes it when is the protocol's business (atomics for the ioreq page,
// vm-memory's volatile accesses for guest RAM).
unsafe impl Send for Mapping {}
// SAFETY: as for Send: `&Mapping` hands out only raw pointers and atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `pages` of address space backed by privcmd, empty until an ioctl
    /// fills them.
    fn new(privcmd: &Privcmd, pages: usize) -> io::Result<Mapping> {
        let len = pages * PAGE;
        // SAFETY: a fresh shared mapping of privcmd at an address the kernel
        // chooses; it touches no memory of ours.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                privcmd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(Mapping { ptr, len })
    }

    /// Its first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The first page as 512 shared 64-bit words: the ioreq page, which
    /// the hypervisor reads and writes at the same time as we do.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, at least a page long and lives
        // as long as the borrow; `AtomicU64` has the layout of `u64`, and
        // every access through it is atomic (the hypervisor's side writes
        // aligned words and bytes).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<AtomicU64>(), PAGE / 8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range `new` mapped; nothing borrows it any more (the
        // borrows of `words` and vm-memory's regions end before this).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Frames `frame..frame + pages` of resource `kind`/`id` of domain `dom`
/// (`XENMEM_acquire_resource`; type 0 is an ioreq server, whose frame 1 is
/// its first synchronous ioreq page).
pub fn map_resource(
    privcmd: &Privcmd,
    dom: u16,
    kind: u32,
    id: u32,
    frame: u32,
    pages: usize,
) -> io::Result<Mapping> {
    let map = Mapping::new(privcmd, pages)?;
    let mut arg = MmapResource {
        dom,
        kind,
        id,
        idx: frame,
        num: pages as u64,
        addr: map.as_ptr() as u64,
    };
    // SAFETY: MMAP_RESOURCE's argument is a `privcmd_mmap_resource`; `addr`
    // is our fresh privcmd mapping of exactly `num` pages.
    unsafe { privcmd.ioctl(IOCTL_PRIVCMD_MMAP_RESOURCE, &mut arg) }?;
    Ok(map)
}

/// The guest frames `0..pages` of domain `dom`, mapped at one range
/// (MMAPBATCH_V2, Xen's `add_to_physmap_batch(gmfn_foreign)`), and which
/// of them the hypervisor mapped (a frame the guest does not have is left
/// out, with its errno in `err`, and never touched here).
fn map_foreign(privcmd: &Privcmd, dom: u16, pages: usize) -> io::Result<(Mapping, Vec<bool>)> {
    let map = Mapping::new(privcmd, pages)?;
    let frames: Vec<u64> = (0..pages as u64).collect();
    let mut errs = vec![0i32; pages];
    let mut arg = MmapBatchV2 {
        num: u32::try_from(pages).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        dom,
        addr: map.as_ptr() as u64,
        arr: frames.as_ptr(),
        err: errs.as_mut_ptr(),
    };
    // SAFETY: MMAPBATCH_V2's argument is a `privcmd_mmapbatch_v2`: `addr` is
    // our fresh privcmd mapping of `num` pages, `arr` and `err` hold `num`
    // entries each and live across the call.
    match unsafe { privcmd.ioctl(IOCTL_PRIVCMD_MMAPBATCH_V2, &mut arg) } {
        // privcmd answers -ENOENT when a frame was paged out, with `err`
        // filled in as for the other per-frame errors.
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(e),
        _ => {}
    }
    Ok((map, errs.iter().map(|&e| e == 0).collect()))
}

/// `/dev/xen/evtchn`: event channels of this process.
#[derive(Debug)]
pub struct Evtchn {
    file: File,
}

impl Evtchn {
    /// Opens the device.
    pub fn open() -> io::Result<Evtchn> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/xen/evtchn")?;
        Ok(Evtchn { file })
    }

    /// ioctl `request` with the `u32`s of `arg`.
    fn ioctl(&self, request: u64, arg: &mut [u32]) -> io::Result<u32> {
        // SAFETY: both evtchn ioctls used here take a structure of `u32`s
        // (`bind_interdomain`: 2, `notify`: 1), which `arg` is, alive across
        // the call.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg.as_mut_ptr()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u32)
        }
    }

    /// Binds a local port to `port` of domain `dom`: the local port.
    pub fn bind_interdomain(&self, dom: u32, port: u32) -> io::Result<u32> {
        self.ioctl(IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut [dom, port])
    }

    /// Signals local port `port`'s other end.
    pub fn notify(&self, port: u32) -> io::Result<()> {
        self.ioctl(IOCTL_EVTCHN_NOTIFY, &mut [port]).map(|_| ())
    }

    /// Its descriptor, readable when a port fired.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The ports that fired (each masked until [`Evtchn::unmask`]): call
    /// when [`poll`] says the descriptor is readable.
    pub fn fired(&mut self) -> io::Result<Vec<u32>> {
        let mut buf = [0u8; 4 * 64];
        let n = self.file.read(&mut buf)?;
        Ok(buf[..n - n % 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Unmasks `ports`.
    pub fn unmask(&mut self, ports: &[u32]) -> io::Result<()> {
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.file.write_all(&bytes)
    }
}

/// Waits up to `timeout_ms` for any of `fds` to be readable (or to fail,
/// which a read then reports): which are.
pub fn poll(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` holds `p.len()` live `pollfd`s across the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(p.iter().map(|f| r > 0 && f.revents != 0).collect())
}

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: u64 = 0x4004_54ca;

/// Attaches to dom0's existing tap `name` (`/dev/net/tun`, `IFF_TAP |
/// IFF_NO_PI`: bare Ethernet frames), non-blocking.
pub fn open_tap(name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ']) {
        return Err(io::Error::other(
            "not an interface name (1 to 15 characters)",
        ));
    }
    if !Path::new("/sys/class/net").join(name).exists() {
        return Err(io::Error::other(
            "no such interface: make the tap first (/usr/lib/basalt/net-up TAP)",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::other(format!("/dev/net/tun: {e} (modprobe tun)")))?;
    // `struct ifreq`: the name (16 bytes), then `ifr_flags` (a short).
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` (40 bytes on
    // x86-64), which `ifr` is, alive across the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::other(format!(
            "{e}: is it a tap (tunctl -t NAME), not in use by another process?"
        )));
    }
    Ok(file)
}

/// A guest's RAM mapped here, as vm-memory's bounds-checked guest memory.
#[derive(Debug)]
pub struct GuestRam {
    // Declared first, so dropped before the mapping it points into.
    mem: vm_memory::GuestMemoryMmap,
    _map: Mapping,
}

impl GuestRam {
    /// Frames `0..pages` of domain `dom` ([`map_foreign`]) at guest
    /// address 0: one vm-memory region per run of mapped frames, so that a
    /// frame the guest does not have is outside guest memory here too.
    pub fn map(privcmd: &Privcmd, dom: u16, pages: usize) -> io::Result<GuestRam> {
        use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
        let (map, mapped) = map_foreign(privcmd, dom, pages)?;
        let mut regions = Vec::new();
        for (first, count) in runs(&mapped) {
            // SAFETY: `map` is a live shared read-write mapping made with
            // these flags, the run lies inside it and the hypervisor filled
            // every frame of it; `map` outlives the region: both are owned
            // by the `GuestRam`, which drops `mem` first.
            let region = unsafe {
                MmapRegion::build_raw(
                    map.as_ptr().wrapping_add(first * PAGE),
                    count * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                )
            }
            .map_err(io::Error::other)?;
            let at = GuestAddress((first * PAGE) as u64);
            regions.push(
                GuestRegionMmap::new(region, at)
                    .ok_or_else(|| io::Error::other("guest RAM does not fit the address space"))?,
            );
        }
        let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| {
            io::Error::other(format!(
                "{e} (the hypervisor mapped none of the guest's frames)"
            ))
        })?;
        Ok(GuestRam { mem, _map: map })
    }

    /// The memory.
    pub fn mem(&self) -> &vm_memory::GuestMemoryMmap {
        &self.mem
    }
}

/// The runs of `true` in `mapped`: (first index, length).
pub fn runs(mapped: &[bool]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, _) in mapped.iter().enumerate().filter(|(_, m)| **m) {
        match out.last_mut() {
            Some((first, n)) if *first + *n == i => *n += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_of_mapped_frames() {
        let t = true;
        let f = false;
        assert_eq!(
            super::runs(&[t, t, f, t, f, f, t, t, t]),
            vec![(0, 2), (3, 1), (6, 3)]
        );
        assert_eq!(super::runs(&[f, f]), vec![]);
        assert_eq!(super::runs(&[]), vec![]);
    }
}
