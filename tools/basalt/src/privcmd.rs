//! Linux's `/dev/xen/privcmd` (drivers/xen/privcmd.c, module `xen-privcmd`):
//! `IOCTL_PRIVCMD_HYPERCALL` makes a hypercall on behalf of the process,
//! from the kernel (CPL 0), with the process's pointers as they are: the
//! hypervisor reads the argument buffer at its linear address through the
//! process's page tables. The buffer therefore lives in a page of this
//! process that is locked in memory (`mlock`), so that it is present when
//! the hypervisor walks to it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

/// The device.
pub const DEVICE: &str = "/dev/xen/privcmd";

/// `struct privcmd_hypercall` (include/uapi/xen/privcmd.h).
#[repr(C)]
#[derive(Debug)]
struct PrivcmdHypercall {
    op: u64,
    arg: [u64; 5],
}

/// `IOCTL_PRIVCMD_HYPERCALL` = `_IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall))`:
/// direction 0 (bits 31:30), size 48 (bits 29:16), type `'P'` (bits 15:8), number 0.
pub const IOCTL_PRIVCMD_HYPERCALL: u64 =
    ((std::mem::size_of::<PrivcmdHypercall>() as u64) << 16) | ((b'P' as u64) << 8);

const _: () = assert!(IOCTL_PRIVCMD_HYPERCALL == 0x0030_5000);

/// The open device.
#[derive(Debug)]
pub struct Privcmd {
    file: File,
}

impl Privcmd {
    /// Opens [`DEVICE`] for reading and writing.
    pub fn open() -> io::Result<Privcmd> {
        let file = OpenOptions::new().read(true).write(true).open(DEVICE)?;
        Ok(Privcmd { file })
    }

    /// Hypercall `op` with `args`: its non-negative result, or the errno it
    /// (or privcmd) returned.
    pub fn hypercall(&self, op: u64, args: [u64; 5]) -> io::Result<i64> {
        let mut call = PrivcmdHypercall { op, arg: args };
        // SAFETY: the ioctl reads the 48-byte structure, which lives across
        // the call; what the hypercall does with `args` (a pointer into a
        // `LockedPage` the caller owns) is the caller's business.
        unsafe { self.ioctl(IOCTL_PRIVCMD_HYPERCALL, &mut call) }
    }

    /// ioctl `request` with `arg`: its non-negative result, or the errno.
    ///
    /// # Safety
    ///
    /// `request` must be one of privcmd's ioctls whose argument is a `T`,
    /// and every pointer inside `*arg` must be valid for what that ioctl
    /// does with it for the duration of the call.
    pub unsafe fn ioctl<T>(&self, request: u64, arg: &mut T) -> io::Result<i64> {
        // SAFETY: the caller vouches for the request and the argument.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                // `c_ulong` with glibc, `c_int` with musl; the values fit both.
                request as _,
                arg as *mut T,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(i64::from(r))
        }
    }
}

/// The open device, for `mmap` (basalt-dm maps guest frames through it).
impl AsRawFd for Privcmd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// One page, page-aligned.
#[repr(C, align(4096))]
#[derive(Debug)]
struct Page([u8; 4096]);

/// A page of this process locked in RAM (`mlock`) for as long as it lives:
/// the hypervisor reads and writes it by its linear address.
#[derive(Debug)]
pub struct LockedPage {
    page: Box<Page>,
}

impl LockedPage {
    /// A zeroed, locked page.
    pub fn new() -> io::Result<LockedPage> {
        let page = Box::new(Page([0; 4096]));
        // SAFETY: mlock only changes how the kernel treats the pages of this
        // live allocation; it does not touch their contents.
        let r = unsafe { libc::mlock(page.0.as_ptr().cast(), page.0.len()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LockedPage { page })
    }

    /// Its bytes.
    pub fn bytes(&mut self) -> &mut [u8; 4096] {
        &mut self.page.0
    }

    /// Its linear address.
    pub fn address(&self) -> u64 {
        self.page.0.as_ptr() as u64
    }
}

impl Drop for LockedPage {
    fn drop(&mut self) {
        // SAFETY: unlocks the range `new` locked, still allocated here.
        unsafe { libc::munlock(self.page.0.as_ptr().cast(), self.page.0.len()) };
    }
}

/// Bytes of this process locked in RAM (`mlock`) while borrowed: a buffer
/// the hypervisor reads by its linear address (`populate`).
#[derive(Debug)]
pub struct Locked<'a> {
    bytes: &'a [u8],
}

impl<'a> Locked<'a> {
    /// Locks the pages of `bytes`.
    pub fn new(bytes: &'a [u8]) -> io::Result<Locked<'a>> {
        if bytes.is_empty() {
            return Ok(Locked { bytes });
        }
        // SAFETY: mlock only changes how the kernel treats the pages of this
        // live borrow; it does not touch their contents.
        let r = unsafe { libc::mlock(bytes.as_ptr().cast(), bytes.len()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Locked { bytes })
    }

    /// The linear address of byte `offset`.
    pub fn address(&self, offset: usize) -> u64 {
        self.bytes.as_ptr() as u64 + offset as u64
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            // SAFETY: unlocks the range `new` locked, still borrowed here.
            unsafe { libc::munlock(self.bytes.as_ptr().cast(), self.bytes.len()) };
        }
    }
}
