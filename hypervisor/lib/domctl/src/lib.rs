#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Basalt's domain-control hypercall (docs/hypercalls.md, "Domain control"): the interface
//! between the toolstack in the control domain (`basalt`, through Linux's
//! `/dev/xen/privcmd`) and ring 0. This crate is the whole wire format, shared by both sides:
//! the hypercall number, the versioned argument layout, the requests and their checks, the
//! replies, and the errno values. Nothing here touches a domain.
//!
//! # The call
//!
//! `VMCALL` (or `VMMCALL`) with RAX = [`HYPERCALL`] (66), RDI = the guest-linear address of an
//! argument buffer, RSI = its length in bytes (at most [`MAX_BUFFER`]). Ring 0 copies the buffer
//! once, decodes and checks it here ([`decode`]), acts, and writes the reply (if the sub-op has
//! one) over the request, at offset [`HEADER_SIZE`] of the same buffer. RAX is then a
//! non-negative result or a negative Xen errno ([`errno`]).
//!
//! The number is in 56-127 because Linux's privcmd passes it straight through: Debian's 6.1
//! kernels up to 6.1.122 call through the hypercall page, and `xen_single_call` refuses an op of
//! 128 or more with -EINVAL (the page has 128 stubs); from 6.1.123 the op goes into RAX
//! unchecked. 48-55 are Xen's `__HYPERVISOR_arch_*`, and Xen 4.17 defines nothing above 55, so
//! 56-127 reaches Basalt on every Debian 6.1 kernel without meaning anything to Xen's tools.
//! 66 is ASCII `B`.
//!
//! # Layout
//!
//! Every field is little-endian at a fixed offset, encoded and decoded byte by byte (no
//! transmutes). The buffer starts with a [`Header`] of 16 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | interface version, [`INTERFACE_VERSION`] (another one: `-EACCES`, as Xen's domctl) |
//! | 4 | 4 | sub-op ([`SubOp`]) |
//! | 8 | 4 | the domain it acts on (ignored by `list` and `create`) |
//! | 12 | 4 | reserved, 0 |
//!
//! then the sub-op's request payload; see each variant of [`Request`] for its layout and
//! [`reply_size`] for what comes back.

/// The Basalt hypercall number: domain control.
pub const HYPERCALL: u64 = 66;

/// The interface version this crate speaks: `"BD"` and version 1. A caller built for another
/// layout gets `-EACCES` and nothing else happens.
pub const INTERFACE_VERSION: u32 = 0x4244_0001;

/// Size of the [`Header`].
pub const HEADER_SIZE: usize = 16;

/// The largest argument buffer ring 0 copies (one page).
pub const MAX_BUFFER: usize = 4096;

/// The most entries one `list` returns ([`INFO_SIZE`] bytes each after an 8-byte count).
pub const MAX_LIST: u32 = 32;

/// Size of one [`DomainInfo`] record.
pub const INFO_SIZE: usize = 80;

/// Bytes of a domain name on the wire (NUL-padded; at most `NAME_LEN - 1` used).
pub const NAME_LEN: usize = 32;

/// The most vCPUs a created domain may have.
pub const MAX_VCPUS: u32 = 64;

/// A created domain's memory: a multiple of this (2 MiB), from it up to
/// [`MAX_MEMORY`] (guests live below the 4 GiB hole).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// The most memory a created domain may have.
pub const MAX_MEMORY: u64 = 3 << 30;

/// The most bytes one `populate` copies (the caller loops for more).
pub const MAX_POPULATE: u64 = 1 << 20;

/// The most bytes one `console_write` carries.
pub const MAX_CONSOLE_WRITE: u32 = 256;

/// The most bytes one `console_read` returns.
pub const MAX_CONSOLE_READ: u32 = (MAX_BUFFER - HEADER_SIZE - CONSOLE_READ_HEAD) as u32;

/// Bytes before the data in a `console_read` reply (next position, count, bytes skipped).
pub const CONSOLE_READ_HEAD: usize = 16;

/// Xen's errno values (public/errno.h); results are their negation.
pub mod errno {
    /// Not permitted: the caller is not the control domain (or calls from user mode).
    pub const EPERM: i64 = 1;
    /// No such domain (Xen's answer for a domain id that names nothing).
    pub const ESRCH: i64 = 3;
    /// Argument list too long: a count beyond its bound.
    pub const E2BIG: i64 = 7;
    /// Out of memory.
    pub const ENOMEM: i64 = 12;
    /// Interface version mismatch (as Xen's `do_domctl`).
    pub const EACCES: i64 = 13;
    /// A buffer the caller's page tables do not map.
    pub const EFAULT: i64 = 14;
    /// Busy: the domain is not in a state for this.
    pub const EBUSY: i64 = 16;
    /// Already done (e.g. a vCPU start state set twice).
    pub const EEXIST: i64 = 17;
    /// An invalid argument.
    pub const EINVAL: i64 = 22;
    /// Not implemented, or an unknown sub-op.
    pub const ENOSYS: i64 = 38;
    /// The sub-op is known but not supported for this case.
    pub const EOPNOTSUPP: i64 = 95;
    /// The buffer cannot hold the reply.
    pub const ENOBUFS: i64 = 105;
}

/// A refused call: the Xen errno (positive; the hypercall returns its negation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i64);

impl Errno {
    /// The value for RAX: `-errno` as two's complement.
    pub fn result(self) -> u64 {
        (-self.0) as u64
    }

    /// The errno a (negative) hypercall result carries, if it is one.
    pub fn from_result(rax: u64) -> Option<Errno> {
        let v = rax as i64;
        (-4095..0).contains(&v).then_some(Errno(-v))
    }

    /// Its name, as in public/errno.h.
    pub fn name(self) -> &'static str {
        match self.0 {
            errno::EPERM => "EPERM",
            errno::ESRCH => "ESRCH",
            errno::E2BIG => "E2BIG",
            errno::ENOMEM => "ENOMEM",
            errno::EACCES => "EACCES",
            errno::EFAULT => "EFAULT",
            errno::EBUSY => "EBUSY",
            errno::EEXIST => "EEXIST",
            errno::EINVAL => "EINVAL",
            errno::ENOSYS => "ENOSYS",
            errno::EOPNOTSUPP => "EOPNOTSUPP",
            errno::ENOBUFS => "ENOBUFS",
            _ => "errno",
        }
    }
}

/// The sub-operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SubOp {
    /// Create a domain (paused, no vCPU started).
    Create = 1,
    /// Copy bytes from the caller into a domain's memory.
    Populate = 2,
    /// Set the state a vCPU of a new domain starts from.
    SetVcpuStart = 3,
    /// Let a paused domain run.
    Unpause = 4,
    /// Hold a domain's vCPUs off the CPUs.
    Pause = 5,
    /// Ask the domain to shut down (its ACPI power button).
    Shutdown = 6,
    /// End a domain at once.
    Destroy = 7,
    /// Information about the domains, from a domain id on.
    List = 8,
    /// Information about one domain.
    GetInfo = 9,
    /// Read and optionally set a domain's scheduling weight and cap.
    Sched = 10,
    /// Read what a domain wrote to its console.
    ConsoleRead = 11,
    /// Type bytes into a domain's console input.
    ConsoleWrite = 12,
}

impl SubOp {
    /// Every sub-op, in number order.
    pub const ALL: [SubOp; 12] = [
        SubOp::Create,
        SubOp::Populate,
        SubOp::SetVcpuStart,
        SubOp::Unpause,
        SubOp::Pause,
        SubOp::Shutdown,
        SubOp::Destroy,
        SubOp::List,
        SubOp::GetInfo,
        SubOp::Sched,
        SubOp::ConsoleRead,
        SubOp::ConsoleWrite,
    ];

    /// The sub-op numbered `n`.
    pub fn from_u32(n: u32) -> Option<SubOp> {
        Self::ALL.into_iter().find(|s| *s as u32 == n)
    }

    /// Bytes of its request payload after the header (for `console_write`: without the data).
    pub fn request_size(self) -> usize {
        match self {
            SubOp::Create => 64,
            SubOp::Populate => 24,
            SubOp::SetVcpuStart => 56,
            SubOp::Unpause | SubOp::Pause | SubOp::Destroy | SubOp::GetInfo => 0,
            SubOp::Shutdown | SubOp::List | SubOp::Sched | SubOp::ConsoleWrite => 8,
            SubOp::ConsoleRead => 16,
        }
    }
}

/// The 16-byte header of every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`INTERFACE_VERSION`].
    pub version: u32,
    /// The sub-op number.
    pub op: u32,
    /// The domain acted on.
    pub domain: u32,
}

/// Flags of [`CreateArgs::flags`].
pub mod create_flags {
    /// The domain gets Xen's interface (as the module key `xen=1`).
    pub const XEN: u32 = 1 << 0;
    /// Every defined flag.
    pub const ALL: u32 = XEN;
}

/// `create`: request at offset 16 (64 bytes).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | memory in bytes (a multiple of 2 MiB, at least 2 MiB) |
/// | 8 | 8 | CPU pinning: mask of physical CPUs, bit n = CPU n; 0 = any |
/// | 16 | 4 | vCPUs (1 to [`MAX_VCPUS`]) |
/// | 20 | 4 | flags ([`create_flags`]) |
/// | 24 | 2 | scheduling weight (1 to 65535) |
/// | 26 | 2 | cap, percent of one CPU (0 = none) |
/// | 28 | 4 | reserved, 0 |
/// | 32 | 32 | name, NUL-padded ASCII (1 to 31 of `A-Z a-z 0-9 - _ .`) |
///
/// Reply (8 bytes): the new domain's id (u32), 4 reserved bytes; the result is the id too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateArgs {
    /// Memory in bytes.
    pub memory: u64,
    /// CPU pinning mask (0 = any CPU).
    pub affinity: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// [`create_flags`].
    pub flags: u32,
    /// Scheduling weight.
    pub weight: u16,
    /// CPU cap (0 = none).
    pub cap: u16,
    /// The name.
    pub name: Name,
}

/// A domain name as carried on the wire: up to `NAME_LEN - 1` bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; NAME_LEN],
    len: u8,
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Name {
    /// The empty name.
    pub const EMPTY: Name = Name {
        bytes: [0; NAME_LEN],
        len: 0,
    };

    /// `text` as a name; `None` if it is longer than `NAME_LEN - 1` bytes (any bytes are
    /// carried; [`Name::is_valid_new`] is the rule for a new domain).
    pub fn new(text: &str) -> Option<Name> {
        let b = text.as_bytes();
        if b.len() >= NAME_LEN {
            return None;
        }
        let mut bytes = [0u8; NAME_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(Name {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The name's text (lossy: bytes up to the first one that is not UTF-8).
    pub fn as_str(&self) -> &str {
        let b = &self.bytes[..usize::from(self.len)];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Whether this is a name a new domain may take: 1 to 31 of `A-Z a-z 0-9 - _ .`.
    pub fn is_valid_new(&self) -> bool {
        self.len > 0
            && self.bytes[..usize::from(self.len)]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }

    fn from_wire(field: &[u8]) -> Option<Name> {
        let field = field.get(..NAME_LEN)?;
        let len = field.iter().position(|&b| b == 0)?;
        // Everything after the terminator must be padding.
        if field[len..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut bytes = [0u8; NAME_LEN];
        bytes[..len].copy_from_slice(&field[..len]);
        Some(Name {
            bytes,
            len: len as u8,
        })
    }
}

/// The entry conventions of [`VcpuStart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StartMode {
    /// Xen's PVH entry: 32-bit protected mode, paging off, EBX = the guest-physical address of
    /// `hvm_start_info`, flat segments.
    Pvh32 = 1,
    /// Linux's 64-bit boot protocol entry (`startup_64`): long mode with the loader's page
    /// tables (CR3) and GDT, RSI = the guest-physical address of `boot_params`.
    Linux64 = 2,
}

/// `set_vcpu_start`: request at offset 16 (56 bytes). Fields a mode does not use must be 0.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | vCPU index |
/// | 4 | 4 | mode ([`StartMode`]) |
/// | 8 | 8 | entry point (RIP; below 4 GiB for PVH, canonical for Linux) |
/// | 16 | 8 | PVH: `hvm_start_info` address (EBX, below 4 GiB) |
/// | 24 | 8 | Linux: `boot_params` address (RSI) |
/// | 32 | 8 | Linux: CR3 (4 KiB aligned) |
/// | 40 | 8 | Linux: GDT base |
/// | 48 | 4 | Linux: GDT limit (at most 0xFFFF) |
/// | 52 | 4 | reserved, 0 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuStart {
    /// vCPU index.
    pub vcpu: u32,
    /// Entry convention.
    pub mode: StartMode,
    /// Entry point.
    pub rip: u64,
    /// PVH: `hvm_start_info`.
    pub start_info: u64,
    /// Linux: `boot_params`.
    pub boot_params: u64,
    /// Linux: CR3.
    pub cr3: u64,
    /// Linux: GDT base.
    pub gdt_base: u64,
    /// Linux: GDT limit.
    pub gdt_limit: u32,
}

/// Flags of [`SchedArgs::flags`].
pub mod sched_flags {
    /// Set the weight.
    pub const WEIGHT: u32 = 1 << 0;
    /// Set the cap.
    pub const CAP: u32 = 1 << 1;
    /// Every defined flag.
    pub const ALL: u32 = WEIGHT | CAP;
}

/// `sched`: request at offset 16 (8 bytes): flags (u32, [`sched_flags`]), weight (u16, 1 to
/// 65535), cap (u16, percent of one CPU, 0 = none). With flags 0 it only reads.
///
/// Reply (8 bytes): weight (u16), cap (u16) after the call, 4 reserved bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedArgs {
    /// Which fields to set.
    pub flags: u32,
    /// New weight.
    pub weight: u16,
    /// New cap.
    pub cap: u16,
}

/// Xen's `SHUTDOWN_*` reasons that `shutdown` accepts.
pub mod shutdown {
    /// Power off.
    pub const POWEROFF: u32 = 0;
    /// Reboot.
    pub const REBOOT: u32 = 1;
}

/// A decoded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// See [`CreateArgs`].
    Create(CreateArgs),
    /// `populate`: request (24 bytes): guest-physical address in the domain (u64), the
    /// caller's linear address of the bytes (u64), their length (u64, 1 to [`MAX_POPULATE`]).
    /// No reply; the result is 0.
    Populate {
        /// Where in the domain.
        gpa: u64,
        /// The caller's buffer (a linear address in the caller).
        source: u64,
        /// Bytes.
        length: u64,
    },
    /// See [`VcpuStart`].
    SetVcpuStart(VcpuStart),
    /// `unpause`: no payload.
    Unpause,
    /// `pause`: no payload.
    Pause,
    /// `shutdown`: request (8 bytes): reason (u32, [`shutdown`]), 4 reserved bytes.
    Shutdown {
        /// [`shutdown::POWEROFF`] or [`shutdown::REBOOT`].
        reason: u32,
    },
    /// `destroy`: no payload.
    Destroy,
    /// `list`: request (8 bytes): first domain id (u32), most entries (u32, 1 to
    /// [`MAX_LIST`]). Reply: count (u32), domains existing in all (u32), then `count`
    /// [`DomainInfo`] records of [`INFO_SIZE`] bytes, by increasing id from the first id.
    /// The result is the count.
    List {
        /// First domain id.
        first: u32,
        /// Most entries.
        max: u32,
    },
    /// `getinfo`: no payload; reply: one [`DomainInfo`].
    GetInfo,
    /// See [`SchedArgs`].
    Sched(SchedArgs),
    /// `console_read`: request (16 bytes): the byte position to read from (u64; 0 = the
    /// oldest kept), most bytes (u32, 1 to [`MAX_CONSOLE_READ`]), 4 reserved bytes. Reply:
    /// the next position (u64), count (u32), bytes skipped because they were no longer kept
    /// (u32), then the bytes. The result is the count.
    ConsoleRead {
        /// Position in the domain's output stream.
        from: u64,
        /// Most bytes.
        max: u32,
    },
    /// `console_write`: request: count (u32, 1 to [`MAX_CONSOLE_WRITE`]), 4 reserved bytes,
    /// then the bytes. The result is how many the domain's input ring took.
    ConsoleWrite(&'a [u8]),
}

impl Request<'_> {
    /// Its sub-op.
    pub fn op(&self) -> SubOp {
        match self {
            Request::Create(_) => SubOp::Create,
            Request::Populate { .. } => SubOp::Populate,
            Request::SetVcpuStart(_) => SubOp::SetVcpuStart,
            Request::Unpause => SubOp::Unpause,
            Request::Pause => SubOp::Pause,
            Request::Shutdown { .. } => SubOp::Shutdown,
            Request::Destroy => SubOp::Destroy,
            Request::List { .. } => SubOp::List,
            Request::GetInfo => SubOp::GetInfo,
            Request::Sched(_) => SubOp::Sched,
            Request::ConsoleRead { .. } => SubOp::ConsoleRead,
            Request::ConsoleWrite(_) => SubOp::ConsoleWrite,
        }
    }

    /// Bytes the whole call occupies: header, request, and room for the reply.
    pub fn buffer_size(&self) -> usize {
        let request = match self {
            Request::ConsoleWrite(data) => 8 + data.len(),
            r => r.op().request_size(),
        };
        HEADER_SIZE + request.max(reply_size(self))
    }
}

/// Bytes of the reply written at offset [`HEADER_SIZE`] for `request` (0: none).
pub fn reply_size(request: &Request<'_>) -> usize {
    match request {
        Request::Create(_) | Request::Sched(_) => 8,
        Request::List { max, .. } => 8 + *max as usize * INFO_SIZE,
        Request::GetInfo => INFO_SIZE,
        Request::ConsoleRead { max, .. } => CONSOLE_READ_HEAD + *max as usize,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// Little-endian fields.

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

const fn einval() -> Errno {
    Errno(errno::EINVAL)
}

fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

/// Decodes and checks the call in `buf` (the bytes copied from the caller, as long as the
/// length it gave). Returns the domain named in the header and the request.
///
/// In order: a buffer shorter than the header or longer than [`MAX_BUFFER`] is `-EINVAL`;
/// another interface version `-EACCES`; a reserved field not 0 `-EINVAL`; an unknown sub-op
/// `-ENOSYS`; a payload cut short `-EINVAL`; a count beyond its bound `-E2BIG`; a value out of
/// range `-EINVAL`; a buffer without room for the reply `-ENOBUFS`.
pub fn decode(buf: &[u8]) -> Result<(u32, Request<'_>), Errno> {
    if buf.len() < HEADER_SIZE || buf.len() > MAX_BUFFER {
        return Err(einval());
    }
    let header = Header {
        version: get_u32(buf, 0),
        op: get_u32(buf, 4),
        domain: get_u32(buf, 8),
    };
    if header.version != INTERFACE_VERSION {
        return Err(Errno(errno::EACCES));
    }
    if get_u32(buf, 12) != 0 {
        return Err(einval());
    }
    let op = SubOp::from_u32(header.op).ok_or(Errno(errno::ENOSYS))?;
    let p = &buf[HEADER_SIZE..];
    if p.len() < op.request_size() {
        return Err(einval());
    }
    let request = match op {
        SubOp::Create => {
            let args = CreateArgs {
                memory: get_u64(p, 0),
                affinity: get_u64(p, 8),
                vcpus: get_u32(p, 16),
                flags: get_u32(p, 20),
                weight: get_u16(p, 24),
                cap: get_u16(p, 26),
                name: Name::from_wire(&p[32..64]).ok_or_else(einval)?,
            };
            const TWO_MIB: u64 = 2 << 20;
            if get_u32(p, 28) != 0
                || args.memory < TWO_MIB
                || !args.memory.is_multiple_of(TWO_MIB)
                || args.flags & !create_flags::ALL != 0
                || args.weight == 0
                || !args.name.is_valid_new()
            {
                return Err(einval());
            }
            if args.vcpus == 0 {
                return Err(einval());
            }
            if args.vcpus > MAX_VCPUS {
                return Err(Errno(errno::E2BIG));
            }
            Request::Create(args)
        }
        SubOp::Populate => {
            let (gpa, source, length) = (get_u64(p, 0), get_u64(p, 8), get_u64(p, 16));
            if length == 0 || gpa.checked_add(length).is_none() {
                return Err(einval());
            }
            if length > MAX_POPULATE {
                return Err(Errno(errno::E2BIG));
            }
            Request::Populate {
                gpa,
                source,
                length,
            }
        }
        SubOp::SetVcpuStart => {
            let mode = match get_u32(p, 4) {
                1 => StartMode::Pvh32,
                2 => StartMode::Linux64,
                _ => return Err(einval()),
            };
            let s = VcpuStart {
                vcpu: get_u32(p, 0),
                mode,
                rip: get_u64(p, 8),
                start_info: get_u64(p, 16),
                boot_params: get_u64(p, 24),
                cr3: get_u64(p, 32),
                gdt_base: get_u64(p, 40),
                gdt_limit: get_u32(p, 48),
            };
            let ok = get_u32(p, 52) == 0
                && match mode {
                    StartMode::Pvh32 => {
                        s.rip <= u64::from(u32::MAX)
                            && s.start_info <= u64::from(u32::MAX)
                            && s.boot_params == 0
                            && s.cr3 == 0
                            && s.gdt_base == 0
                            && s.gdt_limit == 0
                    }
                    StartMode::Linux64 => {
                        canonical(s.rip)
                            && canonical(s.gdt_base)
                            && s.cr3 & 0xfff == 0
                            && s.gdt_limit <= 0xffff
                            && s.start_info == 0
                    }
                };
            if !ok {
                return Err(einval());
            }
            if s.vcpu >= MAX_VCPUS {
                return Err(einval());
            }
            Request::SetVcpuStart(s)
        }
        SubOp::Unpause => Request::Unpause,
        SubOp::Pause => Request::Pause,
        SubOp::Destroy => Request::Destroy,
        SubOp::GetInfo => Request::GetInfo,
        SubOp::Shutdown => {
            let reason = get_u32(p, 0);
            if get_u32(p, 4) != 0 || !matches!(reason, shutdown::POWEROFF | shutdown::REBOOT) {
                return Err(einval());
            }
            Request::Shutdown { reason }
        }
        SubOp::List => {
            let (first, max) = (get_u32(p, 0), get_u32(p, 4));
            if max == 0 {
                return Err(einval());
            }
            if max > MAX_LIST {
                return Err(Errno(errno::E2BIG));
            }
            Request::List { first, max }
        }
        SubOp::Sched => {
            let args = SchedArgs {
                flags: get_u32(p, 0),
                weight: get_u16(p, 4),
                cap: get_u16(p, 6),
            };
            if args.flags & !sched_flags::ALL != 0
                || (args.flags & sched_flags::WEIGHT != 0 && args.weight == 0)
            {
                return Err(einval());
            }
            Request::Sched(args)
        }
        SubOp::ConsoleRead => {
            let (from, max) = (get_u64(p, 0), get_u32(p, 8));
            if get_u32(p, 12) != 0 || max == 0 {
                return Err(einval());
            }
            if max > MAX_CONSOLE_READ {
                return Err(Errno(errno::E2BIG));
            }
            Request::ConsoleRead { from, max }
        }
        SubOp::ConsoleWrite => {
            let count = get_u32(p, 0);
            if get_u32(p, 4) != 0 || count == 0 {
                return Err(einval());
            }
            if count > MAX_CONSOLE_WRITE {
                return Err(Errno(errno::E2BIG));
            }
            let data = p.get(8..8 + count as usize).ok_or_else(einval)?;
            Request::ConsoleWrite(data)
        }
    };
    if buf.len() < HEADER_SIZE + reply_size(&request) {
        return Err(Errno(errno::ENOBUFS));
    }
    Ok((header.domain, request))
}

/// Encodes the call `request` on `domain` into `out` (the toolstack's side); returns the
/// length to pass, [`Request::buffer_size`]. `-ENOBUFS` if `out` is smaller than that.
/// Fields are written as given, unchecked (ring 0 checks them).
pub fn encode(domain: u32, request: &Request<'_>, out: &mut [u8]) -> Result<usize, Errno> {
    let size = request.buffer_size();
    if out.len() < size {
        return Err(Errno(errno::ENOBUFS));
    }
    let out = &mut out[..size];
    out.fill(0);
    put_u32(out, 0, INTERFACE_VERSION);
    put_u32(out, 4, request.op() as u32);
    put_u32(out, 8, domain);
    let p = &mut out[HEADER_SIZE..];
    match *request {
        Request::Create(a) => {
            put_u64(p, 0, a.memory);
            put_u64(p, 8, a.affinity);
            put_u32(p, 16, a.vcpus);
            put_u32(p, 20, a.flags);
            put_u16(p, 24, a.weight);
            put_u16(p, 26, a.cap);
            p[32..64].copy_from_slice(&a.name.bytes);
        }
        Request::Populate {
            gpa,
            source,
            length,
        } => {
            put_u64(p, 0, gpa);
            put_u64(p, 8, source);
            put_u64(p, 16, length);
        }
        Request::SetVcpuStart(s) => {
            put_u32(p, 0, s.vcpu);
            put_u32(p, 4, s.mode as u32);
            put_u64(p, 8, s.rip);
            put_u64(p, 16, s.start_info);
            put_u64(p, 24, s.boot_params);
            put_u64(p, 32, s.cr3);
            put_u64(p, 40, s.gdt_base);
            put_u32(p, 48, s.gdt_limit);
        }
        Request::Unpause | Request::Pause | Request::Destroy | Request::GetInfo => {}
        Request::Shutdown { reason } => put_u32(p, 0, reason),
        Request::List { first, max } => {
            put_u32(p, 0, first);
            put_u32(p, 4, max);
        }
        Request::Sched(a) => {
            put_u32(p, 0, a.flags);
            put_u16(p, 4, a.weight);
            put_u16(p, 6, a.cap);
        }
        Request::ConsoleRead { from, max } => {
            put_u64(p, 0, from);
            put_u32(p, 8, max);
        }
        Request::ConsoleWrite(data) => {
            put_u32(p, 0, data.len() as u32);
            p[8..8 + data.len()].copy_from_slice(data);
        }
    }
    Ok(size)
}

// ---------------------------------------------------------------------------
// Replies.

/// A domain's state as `list` and `getinfo` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum DomainState {
    /// Its vCPUs run or wait.
    Running = 0,
    /// Held off the CPUs until `unpause`.
    Paused = 1,
    /// Ending: its vCPUs are leaving the CPUs.
    Dying = 2,
    /// Ended (`getinfo` of a domain that no longer exists; ids are never reused): how, in
    /// [`info_flags::END_SHIFT`].
    Ended = 3,
}

impl DomainState {
    /// The word `basalt list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Running => "running",
            DomainState::Paused => "paused",
            DomainState::Dying => "dying",
            DomainState::Ended => "ended",
        }
    }
}

/// Flags of [`DomainInfo::flags`].
pub mod info_flags {
    /// The control domain.
    pub const CONTROL: u32 = 1 << 0;
    /// The domain has Xen's interface.
    pub const XEN: u32 = 1 << 1;
    /// Bits 8-10, of a dying or ended domain: how it ended, a [`super::end`] code.
    pub const END_SHIFT: u32 = 8;
}

/// How a domain ended ([`info_flags::END_SHIFT`]); 0: it has not.
pub mod end {
    /// It powered off.
    pub const POWEROFF: u32 = 1;
    /// It asked to reboot (a domain the control domain built is not restarted by ring 0: the
    /// toolstack decides).
    pub const REBOOT: u32 = 2;
    /// It crashed, or Basalt stopped it for a guest error.
    pub const CRASH: u32 = 3;
    /// It was destroyed.
    pub const DESTROYED: u32 = 4;
}

/// One domain, as `list` and `getinfo` return it ([`INFO_SIZE`] bytes).
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | domain id |
/// | 4 | 2 | state ([`DomainState`]) |
/// | 6 | 2 | reserved, 0 |
/// | 8 | 4 | flags ([`info_flags`]) |
/// | 12 | 4 | vCPUs |
/// | 16 | 8 | memory in bytes |
/// | 24 | 8 | CPU time of all its vCPUs, ns |
/// | 32 | 2 | weight |
/// | 34 | 2 | cap (percent of one CPU, 0 = none) |
/// | 36 | 4 | exit code set so far |
/// | 40 | 8 | CPU pinning mask (0 = any) |
/// | 48 | 32 | name, NUL-padded |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub id: u32,
    /// State.
    pub state: DomainState,
    /// [`info_flags`].
    pub flags: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// CPU time in ns.
    pub cpu_time_ns: u64,
    /// Weight.
    pub weight: u16,
    /// Cap.
    pub cap: u16,
    /// Exit code.
    pub exit_code: u32,
    /// Pinning mask.
    pub affinity: u64,
    /// Name.
    pub name: Name,
}

impl DomainInfo {
    /// Writes the record into `out` (at least [`INFO_SIZE`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        let out = &mut out[..INFO_SIZE];
        out.fill(0);
        put_u32(out, 0, self.id);
        put_u16(out, 4, self.state as u16);
        put_u32(out, 8, self.flags);
        put_u32(out, 12, self.vcpus);
        put_u64(out, 16, self.memory);
        put_u64(out, 24, self.cpu_time_ns);
        put_u16(out, 32, self.weight);
        put_u16(out, 34, self.cap);
        put_u32(out, 36, self.exit_code);
        put_u64(out, 40, self.affinity);
        out[48..80].copy_from_slice(&self.name.bytes);
    }

    /// Reads a record; `None` if it is short or malformed (an unknown state, a name without
    /// its terminator).
    pub fn decode(b: &[u8]) -> Option<DomainInfo> {
        let b = b.get(..INFO_SIZE)?;
        let state = match get_u16(b, 4) {
            0 => DomainState::Running,
            1 => DomainState::Paused,
            2 => DomainState::Dying,
            3 => DomainState::Ended,
            _ => return None,
        };
        Some(DomainInfo {
            id: get_u32(b, 0),
            state,
            flags: get_u32(b, 8),
            vcpus: get_u32(b, 12),
            memory: get_u64(b, 16),
            cpu_time_ns: get_u64(b, 24),
            weight: get_u16(b, 32),
            cap: get_u16(b, 34),
            exit_code: get_u32(b, 36),
            affinity: get_u64(b, 40),
            name: Name::from_wire(&b[48..80])?,
        })
    }
}

/// Writes a `list` reply into `reply` (the bytes at offset [`HEADER_SIZE`]): the count, the
/// total, then each record; returns the bytes written. `reply` must hold
/// `8 + records.len() * INFO_SIZE` bytes.
pub fn encode_list(total: u32, records: &[DomainInfo], reply: &mut [u8]) -> usize {
    put_u32(reply, 0, records.len() as u32);
    put_u32(reply, 4, total);
    for (i, r) in records.iter().enumerate() {
        r.encode(&mut reply[8 + i * INFO_SIZE..]);
    }
    8 + records.len() * INFO_SIZE
}

/// Reads the head of a `list` reply: `(count, total)`; `None` if the count is above `max` or
/// the reply too short for its records.
pub fn decode_list(reply: &[u8], max: u32) -> Option<(u32, u32)> {
    if reply.len() < 8 {
        return None;
    }
    let count = get_u32(reply, 0);
    if count > max || reply.len() < 8 + count as usize * INFO_SIZE {
        return None;
    }
    Some((count, get_u32(reply, 4)))
}

/// Record `index` of a `list` reply.
pub fn list_record(reply: &[u8], index: u32) -> Option<DomainInfo> {
    DomainInfo::decode(reply.get(8 + index as usize * INFO_SIZE..)?)
}

/// Writes a `create` reply (the new id).
pub fn encode_created(domain: u32, reply: &mut [u8]) -> usize {
    put_u32(reply, 0, domain);
    put_u32(reply, 4, 0);
    8
}

/// Writes a `sched` reply.
pub fn encode_sched(weight: u16, cap: u16, reply: &mut [u8]) -> usize {
    put_u16(reply, 0, weight);
    put_u16(reply, 2, cap);
    put_u32(reply, 4, 0);
    8
}

/// Reads a `sched` reply: `(weight, cap)`.
pub fn decode_sched(reply: &[u8]) -> Option<(u16, u16)> {
    (reply.len() >= 8).then(|| (get_u16(reply, 0), get_u16(reply, 2)))
}

/// Writes the head of a `console_read` reply (the bytes follow it at offset 16 of `reply`).
pub fn encode_console_read(next: u64, count: u32, skipped: u32, reply: &mut [u8]) -> usize {
    put_u64(reply, 0, next);
    put_u32(reply, 8, count);
    put_u32(reply, 12, skipped);
    CONSOLE_READ_HEAD + count as usize
}

/// Reads a `console_read` reply: `(next, skipped, bytes)`.
pub fn decode_console_read(reply: &[u8]) -> Option<(u64, u32, &[u8])> {
    if reply.len() < CONSOLE_READ_HEAD {
        return None;
    }
    let count = get_u32(reply, 8) as usize;
    let data = reply.get(CONSOLE_READ_HEAD..CONSOLE_READ_HEAD + count)?;
    Some((get_u64(reply, 0), get_u32(reply, 12), data))
}

#[cfg(test)]
mod tests;
