//! Basalt's domain-control hypercall (docs/hypercalls.md, "Domain
//! control") from both sides of the privilege check.
//!
//! `expect=eperm` (an ordinary domain): every call is refused with -EPERM
//! before anything is read or written: a valid `list`, a call with another
//! interface version, a NULL and an unmapped buffer, a length of 2^64-1;
//! the reply area stays untouched.
//!
//! `expect=control` (the control domain, module key `role=control`), with
//! a peer domain `peer=ID` named `peer_name=` of `peer_memory=` bytes and
//! `peer_vcpus=` vCPUs running a busy loop beside it:
//! 1. `list` from 0: itself first (id 0, `Domain-0`, the control flag,
//!    running, its vCPUs and memory), then the peer with the values it was
//!    built with; the count equals the total; `getinfo` of each agrees.
//! 2. Errors: another interface version -EACCES, an unknown sub-op
//!    -ENOSYS, a short buffer -EINVAL, an unmapped one -EFAULT, a `list` of
//!    33 -E2BIG, `getinfo` of a domain that does not exist -ESRCH, pausing
//!    or destroying itself -EINVAL.
//! 3. `pause`: the peer reads paused and its CPU time stands still over
//!    `wait_ms=` (20); `unpause`: running again and its CPU time grows.
//! 4. `sched`: weight 512 and cap 20 are read back, then restored; weight
//!    0 is -EINVAL.
//! 5. `console_write` of 3 bytes to the peer returns 3; `console_read`
//!    of the peer's output holds its greeting (`spin NAME: forever`), and
//!    reading on from the position returned gives nothing new; of its own
//!    output, the `list:` lines it printed; `shutdown` (poweroff: its power
//!    button) returns 0 and leaves it running.
//! 6. `destroy`: the peer is gone (`getinfo` -ESRCH) within a second.
//! 7. `create`, `populate`, `set_vcpu_start`, `unpause`: a domain built
//!    by the control domain runs a 36-byte program (see
//!    [`create_and_start`]).
//!
//! Figure `domctl_list_us`: the mean time of a `list` of every domain
//! (hypercall, copy in, copy out), over 100 calls, in guest microseconds
//! (TSC, CPUID.15h).

#![no_std]
#![no_main]

use basalt_domctl::{self as dc, Errno, Request, errno};
use basalt_test_guests::cpu::{cpuid, rdtsc};
use basalt_test_guests::hypercall::{self as hc, Wait, hypercall2};
use basalt_test_guests::{Checks, arg, arg_u64, fail, println};

basalt_test_guests::entry!(main);

/// The argument buffer, as the toolstack passes one: a page.
#[repr(C, align(4096))]
struct Page([u8; dc::MAX_BUFFER]);

static mut BUF: Page = Page([0; dc::MAX_BUFFER]);

/// The buffer of this single-vCPU guest.
fn buf() -> &'static mut [u8; dc::MAX_BUFFER] {
    // SAFETY: one vCPU, and no reference to BUF outlives a call of `call`.
    unsafe { &mut (*core::ptr::addr_of_mut!(BUF)).0 }
}

/// `basalt_domctl(address, length)`.
fn raw(address: u64, length: u64) -> i64 {
    // SAFETY: the hypervisor reads and writes at most `length` bytes at
    // `address`, which is the page above or one the test expects refused.
    unsafe { hypercall2(dc::HYPERCALL, address, length) }
}

/// Encodes `request` on `domain` into the buffer and calls; the result or
/// the errno, and the reply bytes.
fn call(domain: u32, request: &Request<'_>) -> (Result<u64, Errno>, &'static [u8]) {
    let b = buf();
    let n = match dc::encode(domain, request, b) {
        Ok(n) => n,
        Err(e) => return (Err(e), &[]),
    };
    let r = raw(b.as_ptr() as u64, n as u64);
    let result = match Errno::from_result(r as u64) {
        Some(e) => Err(e),
        None => Ok(r as u64),
    };
    (result, &b[dc::HEADER_SIZE..n])
}

fn getinfo(domain: u32) -> Result<dc::DomainInfo, Errno> {
    let (r, reply) = call(domain, &Request::GetInfo);
    r?;
    dc::DomainInfo::decode(reply).ok_or(Errno(0))
}

/// How domain `domain` ended (a `dc::end` code), once `getinfo` answers state Ended (it
/// waits up to 50 turns of `wait_ms`); a domain that ended is no longer listed.
fn ended(domain: u32, wait_ms: u64) -> Option<u32> {
    for _ in 0..50 {
        if let Ok(i) = getinfo(domain)
            && i.state == dc::DomainState::Ended
        {
            let (r, reply) = call(
                0,
                &Request::List {
                    first: domain,
                    max: 1,
                },
            );
            let listed =
                r.is_ok_and(|n| n > 0) && dc::list_record(reply, 0).is_some_and(|d| d.id == domain);
            return (!listed && i.memory == 0)
                .then_some((i.flags >> dc::info_flags::END_SHIFT) & 7);
        }
        sleep_ms(wait_ms);
    }
    None
}

/// A short text in a fixed buffer (no allocator here).
struct Text {
    buf: [u8; 64],
    len: usize,
}

impl Text {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `spin NAME: forever`, the busy loop's first line.
fn alloc_free_greeting(name: &str) -> Text {
    let mut t = Text {
        buf: [0; 64],
        len: 0,
    };
    let _ = core::fmt::Write::write_fmt(&mut t, format_args!("spin {name}: forever"));
    t
}

/// TSC ticks per microsecond, from CPUID.15h (0 if not reported).
fn ticks_per_us() -> u64 {
    let (den, num, crystal, _) = cpuid(0x15, 0);
    if den == 0 {
        return 0;
    }
    (u64::from(crystal) * u64::from(num) / u64::from(den)) / 1_000_000
}

fn sleep_ms(ms: u64) {
    let now = hc::system_time_ns().max(0) as u64;
    hc::sleep_until(now + ms * 1_000_000, Wait::Block);
}

fn main(cmdline: &str) -> u32 {
    match arg(cmdline, "expect") {
        Some("eperm") => eperm(cmdline),
        Some("control") => control(cmdline),
        other => fail!("expect= must be eperm or control, not {other:?}"),
    }
}

fn eperm(cmdline: &str) -> u32 {
    let mut c = Checks::new();
    let eperm = -errno::EPERM;
    let (r, _) = call(0, &Request::List { first: 0, max: 8 });
    c.check(
        r == Err(Errno(errno::EPERM)),
        format_args!("list from an ordinary domain: {r:?} (want EPERM)"),
    );
    // The reply area is as the request left it: nothing was written.
    let n = Request::List { first: 0, max: 8 }.buffer_size();
    let untouched = buf()[dc::HEADER_SIZE + 8..n].iter().all(|&b| b == 0);
    c.check(untouched, format_args!("the reply area is untouched"));
    let b = buf();
    b[0] ^= 0xff;
    let r = raw(b.as_ptr() as u64, n as u64);
    c.check(
        r == eperm,
        format_args!("another interface version: {r} (want -EPERM, not -EACCES)"),
    );
    for (what, address, length) in [
        ("a NULL buffer", 0u64, 16u64),
        ("an unmapped buffer", 0x7_0000_0000, 16),
        ("a length of 2^64-1", b.as_ptr() as u64, u64::MAX),
        ("a length of 0", b.as_ptr() as u64, 0),
    ] {
        let r = raw(address, length);
        c.check(r == eperm, format_args!("{what}: {r} (want -EPERM)"));
    }
    // Xen's dm_op (41) is the control domain's too: create_ioreq_server for
    // the control domain and for itself is refused (-EPERM with Xen's
    // interface, `dm_op=eperm`; -ENOSYS without it).
    let want = if arg(cmdline, "dm_op") == Some("eperm") {
        eperm
    } else {
        -errno::ENOSYS
    };
    let op = [1u64, 0, 0, 0, 0];
    let buf = [op.as_ptr() as u64, 40];
    for domid in [0u64, 1, 2] {
        // SAFETY: the buffers above are valid for the hypervisor to read.
        let r = unsafe { hc::hypercall3(41, domid, 1, buf.as_ptr() as u64) };
        c.check(
            r == want,
            format_args!(
                "dm_op create_ioreq_server for d{domid} from an ordinary domain: {r} (want {want})"
            ),
        );
    }
    c.finish()
}

fn control(cmdline: &str) -> u32 {
    let mut c = Checks::new();
    let peer = arg_u64(cmdline, "peer", 1) as u32;
    let peer_name = arg(cmdline, "peer_name").unwrap_or("peer");
    let peer_memory = arg_u64(cmdline, "peer_memory", 16 << 20);
    let peer_vcpus = arg_u64(cmdline, "peer_vcpus", 1) as u32;
    let wait_ms = arg_u64(cmdline, "wait_ms", 20);

    // 1. list and getinfo.
    let (r, reply) = call(0, &Request::List { first: 0, max: 32 });
    let mut me = None;
    let mut them = None;
    match r {
        Ok(count) => match dc::decode_list(reply, 32) {
            Some((n, total)) => {
                c.check(
                    u64::from(n) == count && n == total && n >= 2,
                    format_args!("list: {n} records, {total} domains, result {count}"),
                );
                for i in 0..n {
                    let Some(d) = dc::list_record(reply, i) else {
                        c.check(false, format_args!("list record {i} decodes"));
                        continue;
                    };
                    println!(
                        "list: d{} {} {} vcpus {} memory {} cpu {} ns weight {} cap {} flags {:#x}",
                        d.id,
                        d.name.as_str(),
                        d.state.as_str(),
                        d.vcpus,
                        d.memory,
                        d.cpu_time_ns,
                        d.weight,
                        d.cap,
                        d.flags
                    );
                    if i == 0 {
                        me = Some(d);
                    }
                    if d.id == peer {
                        them = Some(d);
                    }
                }
            }
            None => {
                c.check(false, format_args!("the list reply decodes"));
            }
        },
        Err(e) => {
            c.check(false, format_args!("list: {e:?}"));
        }
    }
    match me {
        Some(d) => {
            c.check(
                d.id == 0
                    && d.name.as_str() == "Domain-0"
                    && d.flags & dc::info_flags::CONTROL != 0
                    && d.state == dc::DomainState::Running
                    && d.vcpus == 1
                    && d.memory > 0,
                format_args!("the first record is this control domain: {d:?}"),
            );
            let info = getinfo(0);
            c.check(
                info.is_ok_and(|i| i.name == d.name && i.memory == d.memory),
                format_args!("getinfo(0) agrees with list: {info:?}"),
            );
        }
        None => {
            c.check(false, format_args!("list has a first record"));
        }
    }
    match them {
        Some(d) => {
            c.check(
                d.name.as_str() == peer_name
                    && d.flags & dc::info_flags::CONTROL == 0
                    && d.state == dc::DomainState::Running
                    && d.vcpus == peer_vcpus
                    && d.memory == peer_memory,
                format_args!("the peer's record: {d:?}"),
            );
        }
        None => {
            c.check(false, format_args!("list has the peer d{peer}"));
        }
    }

    // The cost of a list, while both domains exist.
    let tpu = ticks_per_us();
    if tpu > 0 {
        let start = rdtsc();
        for _ in 0..100 {
            let _ = call(0, &Request::List { first: 0, max: 32 });
        }
        let us = (rdtsc() - start) / tpu / 100;
        println!("BASALT-FIGURE: domctl_list_us={us}");
    }

    // 2. Errors.
    let b = buf();
    let n = dc::encode(0, &Request::GetInfo, b).unwrap_or(0);
    b[0] ^= 1;
    let r = raw(b.as_ptr() as u64, n as u64);
    c.check(
        r == -errno::EACCES,
        format_args!("another interface version: {r} (want -EACCES)"),
    );
    b[0] ^= 1;
    b[4..8].copy_from_slice(&99u32.to_le_bytes());
    let r = raw(b.as_ptr() as u64, n as u64);
    c.check(
        r == -errno::ENOSYS,
        format_args!("sub-op 99: {r} (want -ENOSYS)"),
    );
    let r = raw(b.as_ptr() as u64, 8);
    c.check(
        r == -errno::EINVAL,
        format_args!("8 bytes: {r} (want -EINVAL)"),
    );
    let r = raw(b.as_ptr() as u64, dc::MAX_BUFFER as u64 + 1);
    c.check(
        r == -errno::EINVAL,
        format_args!("one byte more than a page: {r} (want -EINVAL)"),
    );
    let r = raw(0x7_0000_0000, 16);
    c.check(
        r == -errno::EFAULT,
        format_args!("unmapped: {r} (want -EFAULT)"),
    );
    let (r, _) = call(0, &Request::List { first: 0, max: 33 });
    c.check(
        r == Err(Errno(errno::E2BIG)),
        format_args!("list of 33: {r:?} (want E2BIG)"),
    );
    let r = getinfo(4242);
    c.check(
        r == Err(Errno(errno::ESRCH)),
        format_args!("getinfo(4242): {r:?} (want ESRCH)"),
    );
    for (what, request) in [("pause", Request::Pause), ("destroy", Request::Destroy)] {
        let (r, _) = call(0, &request);
        c.check(
            r == Err(Errno(errno::EINVAL)),
            format_args!("{what} itself: {r:?} (want EINVAL)"),
        );
    }

    // 3. pause and unpause.
    let (r, _) = call(peer, &Request::Pause);
    c.check(r == Ok(0), format_args!("pause d{peer}: {r:?}"));
    // Its vCPU leaves the CPU at its next scheduling point.
    sleep_ms(wait_ms);
    let before = getinfo(peer);
    sleep_ms(wait_ms);
    let after = getinfo(peer);
    c.check(
        matches!((before, after), (Ok(a), Ok(b)) if a.state == dc::DomainState::Paused
            && b.state == dc::DomainState::Paused && a.cpu_time_ns == b.cpu_time_ns),
        format_args!("paused, CPU time stands still: {before:?} then {after:?}"),
    );
    let (r, _) = call(peer, &Request::Pause);
    c.check(r == Ok(0), format_args!("pause again: {r:?}"));
    let (r, _) = call(peer, &Request::Unpause);
    c.check(r == Ok(0), format_args!("unpause d{peer}: {r:?}"));
    // Its CPU time is counted at its scheduling points: looked at for up to 50 turns (a busy
    // host may hold the emulated CPU longer than one turn).
    let grows = |later: &Result<dc::DomainInfo, Errno>| {
        matches!((after, later), (Ok(a), Ok(b)) if b.state == dc::DomainState::Running
            && b.cpu_time_ns > a.cpu_time_ns)
    };
    let mut later = getinfo(peer);
    for _ in 0..50 {
        sleep_ms(wait_ms);
        later = getinfo(peer);
        if grows(&later) {
            break;
        }
    }
    c.check(
        grows(&later),
        format_args!("running again, CPU time grows: {later:?}"),
    );

    // 4. sched.
    let set = dc::SchedArgs {
        flags: dc::sched_flags::ALL,
        weight: 512,
        cap: 20,
    };
    let (r, reply) = call(peer, &Request::Sched(set));
    let got = dc::decode_sched(reply);
    c.check(
        r == Ok(0) && got == Some((512, 20)),
        format_args!("sched d{peer} weight 512 cap 20: {r:?} {got:?}"),
    );
    let (r, reply) = call(
        peer,
        &Request::Sched(dc::SchedArgs {
            flags: 0,
            weight: 0,
            cap: 0,
        }),
    );
    let got = dc::decode_sched(reply);
    c.check(
        r == Ok(0) && got == Some((512, 20)),
        format_args!("sched read back: {got:?}"),
    );
    let (r, _) = call(
        peer,
        &Request::Sched(dc::SchedArgs {
            flags: dc::sched_flags::WEIGHT,
            weight: 0,
            cap: 0,
        }),
    );
    c.check(
        r == Err(Errno(errno::EINVAL)),
        format_args!("weight 0: {r:?} (want EINVAL)"),
    );
    let info = getinfo(peer);
    c.check(
        info.is_ok_and(|i| i.weight == 512 && i.cap == 20),
        format_args!("getinfo shows the new weight and cap: {info:?}"),
    );
    let (r, _) = call(
        peer,
        &Request::Sched(dc::SchedArgs {
            flags: dc::sched_flags::ALL,
            weight: 256,
            cap: 0,
        }),
    );
    c.check(r == Ok(0), format_args!("sched restored: {r:?}"));

    // 5. console_write and shutdown (its power button).
    let (r, _) = call(peer, &Request::ConsoleWrite(b"hi\n"));
    c.check(r == Ok(3), format_args!("console_write 3 bytes: {r:?}"));
    let read = |domain: u32, from: u64| -> Option<(u64, u32, &'static [u8])> {
        let (r, reply) = call(
            domain,
            &Request::ConsoleRead {
                from,
                max: dc::MAX_CONSOLE_READ,
            },
        );
        let (next, skipped, data) = dc::decode_console_read(reply)?;
        (r == Ok(data.len() as u64)).then_some((next, skipped, data))
    };
    let contains = |data: &[u8], text: &str| data.windows(text.len()).any(|w| w == text.as_bytes());
    let greeting = alloc_free_greeting(peer_name);
    match read(peer, 0) {
        Some((next, skipped, data)) => {
            c.check(
                contains(data, greeting.as_str()) && skipped == 0 && next == data.len() as u64,
                format_args!(
                    "console_read of d{peer}: {} bytes, next {next}, skipped {skipped}, has {:?}: {:?}",
                    data.len(),
                    greeting.as_str(),
                    core::str::from_utf8(&data[..data.len().min(60)])
                ),
            );
            let again = read(peer, next);
            c.check(
                matches!(again, Some((n, 0, d)) if n == next && d.is_empty()),
                format_args!("console_read from {next}: nothing new"),
            );
        }
        None => {
            c.check(false, format_args!("console_read of d{peer}"));
        }
    }
    let own = read(0, 0);
    c.check(
        own.is_some_and(|(_, _, data)| contains(data, "list: d0 Domain-0")),
        format_args!("console_read of itself holds its list lines"),
    );
    let (r, _) = call(
        peer,
        &Request::Shutdown {
            reason: dc::shutdown::POWEROFF,
        },
    );
    c.check(r == Ok(0), format_args!("shutdown (power button): {r:?}"));
    let info = getinfo(peer);
    c.check(
        info.is_ok_and(|i| i.state == dc::DomainState::Running),
        format_args!("a busy loop ignores its power button: {info:?}"),
    );

    // 6. destroy.
    let (r, _) = call(peer, &Request::Destroy);
    c.check(r == Ok(0), format_args!("destroy d{peer}: {r:?}"));
    c.check(
        ended(peer, wait_ms) == Some(dc::end::DESTROYED),
        format_args!("d{peer} is gone after destroy: getinfo says it ended, destroyed"),
    );

    create_and_start(&mut c, wait_ms);
    c.finish()
}

/// A 32-bit program for the PVH entry (protected mode, paging off) at
/// 0x1000: prints `hi` on port 0xE9, then `SCHEDOP_shutdown(poweroff)`
/// with its reason (0) at 0x2000.
const PROGRAM: [u8; 36] = [
    0xBA, 0xE9, 0x00, 0x00, 0x00, // mov edx, 0xE9
    0xB0, b'h', 0xEE, // mov al, 'h'; out dx, al
    0xB0, b'i', 0xEE, // mov al, 'i'; out dx, al
    0xB0, b'\n', 0xEE, // mov al, '\n'; out dx, al
    0xB8, 29, 0x00, 0x00, 0x00, // mov eax, __HYPERVISOR_sched_op
    0xBB, 2, 0x00, 0x00, 0x00, // mov ebx, SCHEDOP_shutdown
    0xB9, 0x00, 0x20, 0x00, 0x00, // mov ecx, 0x2000 (struct sched_shutdown)
    0x0F, 0x01, 0xC1, // vmcall
    0xF4, // hlt
    0xEB, 0xFD, // jmp hlt
    0x90, // (padding)
];

/// 7. A domain built by the control domain: `create` (2 MiB, 1 vCPU; its
/// name again -EEXIST, 3 GiB + 2 MiB -EINVAL), paused without vCPUs;
/// `unpause` before a start state -EINVAL; `populate` with [`PROGRAM`] and
/// its reason (beyond its RAM -EINVAL, from an unmapped buffer -EFAULT);
/// `set_vcpu_start` (vCPU 1 of a 1-vCPU domain -EINVAL; PVH 32-bit entry
/// at 0x1000); `unpause`: it prints `hi` and powers off, and is gone. A
/// second one destroyed before it ever ran is gone at once.
fn create_and_start(c: &mut Checks, wait_ms: u64) {
    let args = |name: &str, memory: u64| dc::CreateArgs {
        memory,
        affinity: 0,
        vcpus: 1,
        flags: 0,
        weight: 256,
        cap: 0,
        name: dc::Name::new(name).unwrap_or(dc::Name::EMPTY),
    };
    let (r, reply) = call(0, &Request::Create(args("made", 2 << 20)));
    let id = reply
        .get(..4)
        .map_or(u32::MAX, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if !c.check(
        r == Ok(u64::from(id)) && id != 0,
        format_args!("create made: {r:?}, id {id}"),
    ) {
        return;
    }
    let info = getinfo(id);
    c.check(
        info.is_ok_and(|i| {
            i.state == dc::DomainState::Paused
                && i.memory == 2 << 20
                && i.vcpus == 1
                && i.cpu_time_ns == 0
                && i.name.as_str() == "made"
        }),
        format_args!("the new domain is paused, 2 MiB, 1 vCPU: {info:?}"),
    );
    let (r, _) = call(0, &Request::Create(args("made", 2 << 20)));
    c.check(
        r == Err(Errno(errno::EEXIST)),
        format_args!("create made again: {r:?} (want EEXIST)"),
    );
    let (r, _) = call(0, &Request::Create(args("huge", (3 << 30) + (2 << 20))));
    c.check(
        r == Err(Errno(errno::EINVAL)),
        format_args!("create 3 GiB + 2 MiB: {r:?} (want EINVAL)"),
    );
    let (r, _) = call(id, &Request::Unpause);
    c.check(
        r == Err(Errno(errno::EINVAL)),
        format_args!("unpause before a start state: {r:?} (want EINVAL)"),
    );
    let populate = |gpa: u64, source: u64, length: u64| {
        call(
            id,
            &Request::Populate {
                gpa,
                source,
                length,
            },
        )
        .0
    };
    let zero = [0u8; 4];
    let r1 = populate(0x1000, PROGRAM.as_ptr() as u64, PROGRAM.len() as u64);
    let r2 = populate(0x2000, zero.as_ptr() as u64, 4);
    c.check(
        r1 == Ok(0) && r2 == Ok(0),
        format_args!("populate the program and its reason: {r1:?} {r2:?}"),
    );
    let r = populate((2 << 20) - 2, zero.as_ptr() as u64, 4);
    c.check(
        r == Err(Errno(errno::EINVAL)),
        format_args!("populate across the end of its RAM: {r:?} (want EINVAL)"),
    );
    let r = populate(0x3000, 0x7_0000_0000, 16);
    c.check(
        r == Err(Errno(errno::EFAULT)),
        format_args!("populate from an unmapped buffer: {r:?} (want EFAULT)"),
    );
    let start = |vcpu: u32| dc::VcpuStart {
        vcpu,
        mode: dc::StartMode::Pvh32,
        rip: 0x1000,
        start_info: 0,
        boot_params: 0,
        cr3: 0,
        gdt_base: 0,
        gdt_limit: 0,
    };
    let (r, _) = call(id, &Request::SetVcpuStart(start(1)));
    c.check(
        r == Err(Errno(errno::EINVAL)),
        format_args!("start state of vCPU 1 of a 1-vCPU domain: {r:?} (want EINVAL)"),
    );
    let (r, _) = call(id, &Request::SetVcpuStart(start(0)));
    c.check(
        r == Ok(0),
        format_args!("set_vcpu_start PVH at 0x1000: {r:?}"),
    );
    let (r, _) = call(id, &Request::Unpause);
    c.check(r == Ok(0), format_args!("unpause made: {r:?}"));
    c.check(
        ended(id, wait_ms) == Some(dc::end::POWEROFF),
        format_args!("made ran and powered off: getinfo says it ended, powered off"),
    );

    let (r, reply) = call(0, &Request::Create(args("unborn", 2 << 20)));
    let id = reply
        .get(..4)
        .map_or(u32::MAX, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    c.check(r.is_ok(), format_args!("create unborn: {r:?}"));
    let (r, _) = call(id, &Request::Destroy);
    // Recorded as ended (getinfo says ESRCH until then) once its memory is back, which the
    // scheduler does at its next turn: then no longer listed, no memory, destroyed.
    let end = ended(id, wait_ms);
    c.check(
        r == Ok(0) && end == Some(dc::end::DESTROYED),
        format_args!("destroy before it ran: {r:?}, then {end:?} (want ended: destroyed)"),
    );
}
