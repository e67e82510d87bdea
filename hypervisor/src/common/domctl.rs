//! Basalt's domain-control hypercall (docs/hypercalls.md, "Domain control"):
//! the toolstack in the control domain lists, pauses, unpauses, shuts down,
//! destroys and reschedules domains, reads and types into their consoles,
//! and builds new ones (create, populate, set vCPU 0's start, unpause). The wire
//! format and its checks are the pure crate `basalt-domctl`; this is the
//! ring-0 side: the privilege check, the one copy of the argument buffer
//! from the caller's linear address, and the same domain and scheduler paths
//! the monitor's `list`, `pause`, `destroy`, `reboot` and `sched` commands
//! use (through [`ControlOps`], which the scheduler implements).

use super::domain::{self, Domain, EndReason, Running, State};
use crate::vcpu::{Long64State, StartState};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use basalt_domctl::{self as dc, Errno, Request, errno};
use basalt_sched::{DomainParams, SchedError};

/// What domain control asks of the scheduler (which passes itself, so that
/// nothing here names it): the operations behind the monitor's commands.
pub trait ControlOps {
    /// Pauses (true) or unpauses `domain`; false if it was not in the state
    /// to do so (`sched::pause`).
    fn pause_domain(&self, domain: &Arc<Domain>, paused: bool) -> bool;
    /// Ends `domain` for `reason` (`sched::end_domain`).
    fn end_domain_for(&self, domain: &Arc<Domain>, reason: EndReason);
    /// The scheduler's weight and cap of domain `id`.
    fn params_of(&self, id: u32) -> Option<DomainParams>;
    /// Sets the weight and cap of domain `id`.
    fn set_params_of(&self, id: u32, params: DomainParams) -> Result<(), SchedError>;
    /// Run time of all vCPUs of domain `id`, in ns.
    fn runtime_of(&self, id: u32) -> u64;
    /// Makes vCPU `vcpu` of `domain` runnable if it waits for an event.
    fn wake(&self, domain: &Domain, vcpu: u32);
    /// What a new domain's interrupt controllers wake its vCPUs through.
    fn waker(&self) -> &'static dyn crate::hvm::irq::VcpuWaker;
}

/// Whether `domain` may use domain control: the control domain
/// (`role=control`), decided once when it was built.
fn is_control(domain: &Domain) -> bool {
    domain.xen.as_ref().is_some_and(|x| x.control)
}

/// `basalt_domctl(buffer, length)` from vCPU `v`: the result for RAX (a
/// non-negative value or a negative Xen errno).
pub fn dispatch(v: &mut Running<'_>, buffer: u64, length: u64, ops: &impl ControlOps) -> u64 {
    match call(v, buffer, length, ops) {
        Ok(value) => value,
        Err(e) => e.result(),
    }
}

fn call(
    v: &mut Running<'_>,
    buffer: u64,
    length: u64,
    ops: &impl ControlOps,
) -> Result<u64, Errno> {
    if !is_control(v.domain) {
        return Err(Errno(errno::EPERM));
    }
    let length = usize::try_from(length)
        .ok()
        .filter(|&n| (dc::HEADER_SIZE..=dc::MAX_BUFFER).contains(&n))
        .ok_or(Errno(errno::EINVAL))?;
    // The one copy: everything below reads `args`, never the guest again.
    let mut args = vec![0u8; length];
    crate::hvm::guestmem::read_virt(&v.arch, &v.domain.ram, buffer, &mut args)
        .map_err(|()| Errno(errno::EFAULT))?;
    let (id, request) = dc::decode(&args)?;
    let mut reply = vec![0u8; dc::reply_size(&request)];
    let caller = v.domain.clone();
    let value = act(v, &caller, id, &request, &mut reply, ops)?;
    if !reply.is_empty() {
        let at = buffer.wrapping_add(dc::HEADER_SIZE as u64);
        crate::hvm::guestmem::write_virt(&v.arch, &v.domain.ram, at, &reply)
            .map_err(|()| Errno(errno::EFAULT))?;
    }
    Ok(value)
}

/// Domain `id`, if it exists and is not dead.
fn target(id: u32) -> Result<Arc<Domain>, Errno> {
    domain::get(id).ok_or(Errno(errno::ESRCH))
}

/// Domain `id` for an operation that changes it: not the caller (it ends
/// or pauses itself with `SCHEDOP_shutdown`, as on Xen, where a domain
/// cannot pause itself through domctl) and not ending.
fn other(caller: &Domain, id: u32) -> Result<Arc<Domain>, Errno> {
    let d = target(id)?;
    if d.generation == caller.generation {
        return Err(Errno(errno::EINVAL));
    }
    Ok(d)
}

fn act(
    v: &mut Running<'_>,
    caller: &Arc<Domain>,
    id: u32,
    request: &Request<'_>,
    reply: &mut [u8],
    ops: &impl ControlOps,
) -> Result<u64, Errno> {
    match *request {
        Request::List { first, max } => {
            let mut all = domain::all();
            all.sort_by_key(|d| d.id);
            let total = all.len() as u32;
            let records: Vec<dc::DomainInfo> = all
                .iter()
                .filter(|d| d.id >= first)
                .take(max as usize)
                .map(|d| info(d, ops))
                .collect();
            dc::encode_list(total, &records, reply);
            Ok(records.len() as u64)
        }
        Request::GetInfo => {
            match target(id) {
                Ok(d) => info(&d, ops).encode(reply),
                Err(e) => {
                    let (name, reason, code) = domain::ended(id).ok_or(e)?;
                    dc::DomainInfo {
                        id,
                        state: dc::DomainState::Ended,
                        flags: end_code(reason) << dc::info_flags::END_SHIFT,
                        vcpus: 0,
                        memory: 0,
                        cpu_time_ns: 0,
                        weight: 0,
                        cap: 0,
                        exit_code: code,
                        affinity: 0,
                        name: wire_name(&name),
                    }
                    .encode(reply)
                }
            }
            Ok(0)
        }
        Request::Pause | Request::Unpause => {
            let pausing = matches!(request, Request::Pause);
            let d = other(caller, id)?;
            let wanted = if pausing {
                State::Paused
            } else {
                State::Running
            };
            if !pausing && d.is_unstarted() && !d.has_start() {
                // Nothing to run yet: set_vcpu_start first.
                return Err(Errno(errno::EINVAL));
            }
            if d.life.state() == wanted || ops.pause_domain(&d, pausing) {
                Ok(0)
            } else {
                // Dying: nothing to pause or let run any more.
                Err(Errno(errno::EBUSY))
            }
        }
        Request::Destroy => {
            let d = other(caller, id)?;
            if !d.life.is_ending() {
                crate::println!("d{} ({}): destroyed by d{}", d.id, d.name, caller.id);
                ops.end_domain_for(&d, EndReason::Destroyed);
            }
            Ok(0)
        }
        Request::Shutdown { reason } => {
            let d = other(caller, id)?;
            if d.life.is_ending() {
                return Err(Errno(errno::EBUSY));
            }
            if reason == dc::shutdown::REBOOT {
                // As the monitor's `reboot`: it starts again from its image.
                crate::println!("d{} ({}): rebooted by d{}", d.id, d.name, caller.id);
                ops.end_domain_for(&d, EndReason::Reboot);
            } else {
                // A clean power-off is the guest's to do: its ACPI power
                // button is pressed (an SCI once it enabled the event).
                crate::hvm::vdev::press_power_button(&d.platform);
                ops.wake(&d, 0);
            }
            Ok(0)
        }
        Request::Sched(args) => {
            let current = ops.params_of(id).ok_or(Errno(errno::ESRCH))?;
            if args.flags != 0 {
                let new = DomainParams {
                    weight: if args.flags & dc::sched_flags::WEIGHT != 0 {
                        args.weight
                    } else {
                        current.weight
                    },
                    cap: if args.flags & dc::sched_flags::CAP != 0 {
                        args.cap
                    } else {
                        current.cap
                    },
                };
                ops.set_params_of(id, new).map_err(|e| match e {
                    SchedError::NoSuchDomain(_) => Errno(errno::ESRCH),
                    _ => Errno(errno::EINVAL),
                })?;
            }
            let p = ops.params_of(id).unwrap_or(current);
            dc::encode_sched(p.weight, p.cap, reply);
            Ok(0)
        }
        Request::ConsoleWrite(bytes) => {
            let d = target(id)?;
            d.platform.console.input.lock().write(bytes);
            // As typed input: into COM1 if its interrupt is on, and vCPU 0
            // wakes if it waits for it.
            crate::hvm::vdev::input_arrived(&d.platform);
            ops.wake(&d, 0);
            Ok(bytes.len() as u64)
        }
        Request::ConsoleRead { from, max } => {
            let d = target(id)?;
            let (head, data) = reply.split_at_mut(dc::CONSOLE_READ_HEAD);
            let (start, count) = d
                .platform
                .console
                .history
                .lock()
                .copy_at(from, &mut data[..max as usize]);
            let skipped = start.saturating_sub(from).min(u64::from(u32::MAX)) as u32;
            dc::encode_console_read(start + count as u64, count as u32, skipped, head);
            Ok(count as u64)
        }
        Request::Create(a) => {
            let new = domain::NewDomain {
                name: a.name.as_str(),
                memory: a.memory,
                vcpus: a.vcpus,
                affinity: a.affinity,
                weight: a.weight,
                cap: a.cap,
                xen: a.flags & dc::create_flags::XEN != 0,
            };
            let d = domain::create(&new, ops.waker()).map_err(|e| match e {
                domain::CreateError::NameTaken => Errno(errno::EEXIST),
                domain::CreateError::NoMemory => Errno(errno::ENOMEM),
                domain::CreateError::Invalid(_) => Errno(errno::EINVAL),
            })?;
            dc::encode_created(d.id, reply);
            Ok(u64::from(d.id))
        }
        Request::Populate {
            gpa,
            source,
            length,
        } => {
            let d = other(caller, id)?;
            if !d.is_unstarted() {
                // Loading is for a domain that has not run yet.
                return Err(Errno(errno::EBUSY));
            }
            if gpa.checked_add(length).is_none_or(|end| end > d.ram.size()) {
                return Err(Errno(errno::EINVAL));
            }
            // Through a bounded buffer: one read of the caller's bytes, one
            // write into the new domain, per chunk.
            const CHUNK: u64 = 64 << 10;
            let mut chunk = vec![0u8; length.min(CHUNK) as usize];
            let mut done = 0;
            while done < length {
                let n = (length - done).min(CHUNK) as usize;
                crate::hvm::guestmem::read_virt(
                    &v.arch,
                    &caller.ram,
                    source.wrapping_add(done),
                    &mut chunk[..n],
                )
                .map_err(|()| Errno(errno::EFAULT))?;
                d.ram
                    .write(gpa + done, &chunk[..n])
                    .map_err(|_| Errno(errno::EINVAL))?;
                done += n as u64;
            }
            Ok(0)
        }
        Request::SetVcpuStart(s) => {
            let d = other(caller, id)?;
            if s.vcpu >= d.vcpu_count {
                return Err(Errno(errno::EINVAL));
            }
            if s.vcpu != 0 {
                // The others start as on any domain: the guest's
                // VCPUOP_initialise and VCPUOP_up, or INIT-SIPI-SIPI.
                return Err(Errno(errno::EOPNOTSUPP));
            }
            let start = match s.mode {
                dc::StartMode::Pvh32 => StartState::Pvh {
                    rip: s.rip,
                    start_info: s.start_info,
                },
                dc::StartMode::Linux64 => {
                    let state = Long64State {
                        rip: s.rip,
                        rsi: s.boot_params,
                        cr3: s.cr3,
                        gdt_base: s.gdt_base,
                        gdt_limit: s.gdt_limit as u16,
                        rflags: 0x2,
                        cr0: basalt_guest::linux::ENTRY_CR0,
                        cr4: 1 << 5,
                        efer: (1 << 8) | (1 << 10),
                        ..Long64State::default()
                    };
                    // As VCPUOP_initialise: a state VM entry accepts (CR3
                    // below the guest's MAXPHYADDR).
                    let cr = basalt_cpu::cr::CrState {
                        cr0: state.cr0,
                        cr3: state.cr3,
                        cr4: state.cr4,
                        efer: state.efer,
                        cs_l: true,
                    };
                    if crate::vcpu::guest_cpu().cr.check_state(&cr).is_err() {
                        return Err(Errno(errno::EINVAL));
                    }
                    StartState::Long64(state)
                }
            };
            if d.set_start(start) {
                Ok(0)
            } else {
                Err(Errno(errno::EBUSY))
            }
        }
    }
}

/// Domain `d` as `list` and `getinfo` report it.
/// The wire code of how a domain ended ([`dc::end`]).
fn end_code(reason: EndReason) -> u32 {
    match reason {
        EndReason::Poweroff => dc::end::POWEROFF,
        EndReason::Reboot => dc::end::REBOOT,
        EndReason::Crash => dc::end::CRASH,
        EndReason::Destroyed => dc::end::DESTROYED,
    }
}

fn info(d: &Domain, ops: &impl ControlOps) -> dc::DomainInfo {
    let (state, end) = match d.life.state() {
        State::Running => (dc::DomainState::Running, 0),
        State::Paused => (dc::DomainState::Paused, 0),
        State::Dying(r) | State::Dead(r) => (dc::DomainState::Dying, end_code(r)),
    };
    let p = ops.params_of(d.id).unwrap_or(DomainParams {
        weight: d.weight,
        cap: d.cap,
    });
    let mut flags = end << dc::info_flags::END_SHIFT;
    if is_control(d) {
        flags |= dc::info_flags::CONTROL;
    }
    if d.xen.is_some() {
        flags |= dc::info_flags::XEN;
    }
    dc::DomainInfo {
        id: d.id,
        state,
        flags,
        vcpus: d.vcpu_count,
        memory: d.ram.size(),
        cpu_time_ns: ops.runtime_of(d.id),
        weight: p.weight,
        cap: p.cap,
        exit_code: d.life.exit_code.load(core::sync::atomic::Ordering::Relaxed),
        affinity: d.affinity,
        name: wire_name(&d.name),
    }
}

/// A domain name as the wire carries it: its first 31 bytes, cut at a
/// character boundary.
fn wire_name(name: &str) -> dc::Name {
    let mut end = name.len().min(dc::NAME_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    dc::Name::new(&name[..end]).unwrap_or(dc::Name::EMPTY)
}
