//! `basalt`: the toolstack command of Basalt's control domain
//! (docs/control-domain.md). It runs as root in dom0 and reaches the
//! hypervisor through Linux's `/dev/xen/privcmd` with Basalt's
//! domain-control hypercall (docs/hypercalls.md, "Domain control"; the wire
//! format is the crate `basalt-domctl`, shared with ring 0).
//!
//! ```text
//! basalt list              every domain: name, id, memory, vCPUs, state, CPU time
//!                          (`--repeat N`: then N more calls, timed: `BASALT-FIGURE: privcmd_list_us=`
//!                          and `privcmd_list_ticks=`, TSC ticks per call)
//! basalt tsc               print this CPU's time stamp counter (`tsc=N`; dom0's /init
//!                          prints it before the shell prompt, for `cargo xtask bench dom0`)
//! basalt info              the host's memory (total, free for domains) and CPUs
//! basalt info NAME|ID      a domain's state and resources, and the VM's stored definition
//! basalt pause NAME|ID     hold a domain's vCPUs off the CPUs
//! basalt unpause NAME|ID   let it run again
//! basalt shutdown ID       press its power button
//! basalt reboot NAME|ID    restart it from its image
//! basalt destroy ID        end it at once
//! basalt console NAME|ID  its console on this terminal (the newest 4 KiB kept, then live;
//!                          what is typed goes to it); Ctrl-] detaches (console.rs)
//! basalt console NAME|ID --history   only print what it wrote (the newest 4 KiB)
//! basalt sched ID [weight W] [cap C]   show or set its scheduling weight and cap
//! basalt create NAME MIB KERNEL [ARGS...]   build and start a guest: a PVH ELF kernel
//!                          (pvh.rs) or a bzImage (bzimage.rs)
//! basalt create FILE       define and start a VM (TOML, docs/toolstack.md; vmdef.rs) through
//!                          basaltd; without the daemon, only start it (said once)
//! basalt define FILE       store a VM definition in basaltd, stopped
//! basalt start NAME        start a stored VM
//! basalt shutdown NAME [--wait S]   press its power button, wait up to S (30) s for it to end
//! basalt destroy NAME      end its domain at once
//! basalt undefine NAME     forget a stopped VM
//! ```
//!
//! `list` prints ring 0's domains, then the stopped VMs basaltd knows.
//! Built statically (`cargo xtask dom0`, xtask/src/dom0.rs) and installed
//! as `/usr/sbin/basalt` in dom0's initramfs; run as `basaltd` (a link to
//! the same file) it is the daemon (daemon.rs).

mod bzimage;
mod console;
mod daemon;
mod devices;
mod privcmd;
mod proto;
mod pvh;
mod store;
mod vmdef;

use basalt_domctl::{self as dc, DomainInfo, Errno, Request};
use basalt_guest::linux;
use basalt_guest::mem::check_range;
use basalt_guest::{GuestMemory, MemoryError};
use std::fmt::Write as _;
use std::io::{self, BufRead as _, Write as _};
use std::process::ExitCode;

const USAGE: &str = "usage: basalt list [--repeat N] | tsc | pause NAME|ID | unpause NAME|ID | shutdown ID | \
                     reboot NAME|ID | info [NAME|ID] | destroy ID | console NAME|ID [--history] (Ctrl-] detaches) | sched ID [weight W] [cap C] | \
                     create NAME MIB KERNEL [ARGS...] | create FILE.toml | define FILE.toml | \
                     start NAME | shutdown NAME [--wait S] | destroy NAME | undefine NAME";

/// How long `basalt shutdown NAME` waits for the guest to end.
const SHUTDOWN_WAIT_S: u32 = 30;

/// A command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// `list`, then `repeat` more calls timed (a measurement).
    List {
        repeat: u32,
    },
    Help,
    /// Print the time stamp counter.
    Tsc,
    /// The host's resources, or one domain's or VM's details.
    Info(Option<String>),
    /// Attach to a domain's console (by name or id), or print its history only.
    Console(String, bool),
    /// Show, or set then show, a domain's weight and cap.
    Sched(u32, dc::SchedArgs),
    /// Build a PVH guest from an ELF kernel and start it.
    Create {
        name: String,
        memory: u64,
        kernel: String,
        cmdline: String,
    },
    /// The same from a VM definition file.
    CreateFile(String),
    /// A sub-op on one domain, and the word for what happened.
    OnDomain(String, Action),
    /// A request to basaltd.
    Daemon(proto::Op),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pause,
    Unpause,
    Shutdown,
    Reboot,
    Destroy,
}

impl Action {
    fn request(self) -> Request<'static> {
        match self {
            Action::Pause => Request::Pause,
            Action::Unpause => Request::Unpause,
            Action::Shutdown => Request::Shutdown {
                reason: dc::shutdown::POWEROFF,
            },
            Action::Reboot => Request::Shutdown {
                reason: dc::shutdown::REBOOT,
            },
            Action::Destroy => Request::Destroy,
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Pause => "paused",
            Action::Unpause => "running",
            Action::Shutdown => "asked to power off (its power button was pressed)",
            Action::Reboot => "rebooting",
            Action::Destroy => "destroyed",
        }
    }
}

fn parse(args: &[String]) -> Result<Command, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["list"] => Ok(Command::List { repeat: 0 }),
        ["list", "--repeat", n] => Ok(Command::List {
            repeat: n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("--repeat {n:?}: a number of calls, at least 1"))?,
        }),
        [] | ["help" | "-h" | "--help"] => Ok(Command::Help),
        ["tsc"] => Ok(Command::Tsc),
        ["info"] => Ok(Command::Info(None)),
        ["info", target] => Ok(Command::Info(Some(target.to_string()))),
        ["console", target] => Ok(Command::Console(target.to_string(), false)),
        ["console", target, "--history"] => Ok(Command::Console(target.to_string(), true)),
        ["create", file] => Ok(Command::CreateFile(file.to_string())),
        ["define", file] => Ok(Command::Daemon(proto::Op::Define {
            file: file.to_string(),
            toml: String::new(),
            start: false,
        })),
        ["start", name] => Ok(Command::Daemon(proto::Op::Start {
            name: name.to_string(),
        })),
        ["undefine", name] => Ok(Command::Daemon(proto::Op::Undefine {
            name: name.to_string(),
        })),
        ["shutdown", name] if name.parse::<u32>().is_err() => {
            Ok(Command::Daemon(proto::Op::Shutdown {
                name: name.to_string(),
                wait_s: SHUTDOWN_WAIT_S,
            }))
        }
        ["shutdown", name, "--wait", s] => Ok(Command::Daemon(proto::Op::Shutdown {
            name: name.to_string(),
            wait_s: s
                .parse()
                .ok()
                .filter(|s| (1..=3600).contains(s))
                .ok_or_else(|| format!("--wait {s:?}: seconds, 1 to 3600"))?,
        })),
        ["destroy", name] if name.parse::<u32>().is_err() => {
            Ok(Command::Daemon(proto::Op::Destroy {
                name: name.to_string(),
            }))
        }
        ["create", name, mib, kernel, args @ ..] => {
            let mib: u64 = mib
                .parse()
                .ok()
                .filter(|m| *m >= 2 && m % 2 == 0)
                .ok_or_else(|| {
                    format!("{mib:?}: the memory is an even number of MiB, at least 2")
                })?;
            Ok(Command::Create {
                name: name.to_string(),
                memory: mib << 20,
                kernel: kernel.to_string(),
                cmdline: args.join(" "),
            })
        }
        ["sched", id, rest @ ..] => {
            let mut args = dc::SchedArgs {
                flags: 0,
                weight: 0,
                cap: 0,
            };
            let mut words = rest.iter();
            while let Some(&key) = words.next() {
                let value = words
                    .next()
                    .ok_or_else(|| format!("{key} needs a value; {USAGE}"))?;
                let number: u16 = value
                    .parse()
                    .map_err(|_| format!("{key} {value:?}: not a number from 0 to 65535"))?;
                match key {
                    "weight" => {
                        args.flags |= dc::sched_flags::WEIGHT;
                        args.weight = number;
                    }
                    "cap" => {
                        args.flags |= dc::sched_flags::CAP;
                        args.cap = number;
                    }
                    _ => return Err(format!("unknown sched setting {key:?}; {USAGE}")),
                }
            }
            Ok(Command::Sched(domain_id(id)?, args))
        }
        [verb, id] => {
            let action = match *verb {
                "pause" => Action::Pause,
                "unpause" => Action::Unpause,
                "shutdown" => Action::Shutdown,
                "reboot" => Action::Reboot,
                "destroy" => Action::Destroy,
                _ => return Err(format!("unknown command {verb:?}; {USAGE}")),
            };
            Ok(Command::OnDomain(id.to_string(), action))
        }
        _ => Err(format!("unknown command {:?}; {USAGE}", words.join(" "))),
    }
}

fn domain_id(text: &str) -> Result<u32, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a domain id (a number; `basalt list` shows them)"))
}

/// What to tell the user when `/dev/xen/privcmd` cannot be opened.
fn open_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => format!(
            "{}: {e}: not running in Basalt's control domain, or module xen-privcmd not loaded \
             (modprobe xen-privcmd; and mount -t devtmpfs devtmpfs /dev)",
            privcmd::DEVICE
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("{}: {e}: run basalt as root", privcmd::DEVICE)
        }
        _ => format!("{}: {e}", privcmd::DEVICE),
    }
}

/// What to tell the user when the hypercall failed with `errno` (privcmd
/// hands the hypervisor's `-errno` back as the ioctl's errno; Linux and Xen
/// share these numbers).
fn call_error(errno: i32, domain: u32) -> String {
    let what = match i64::from(errno) {
        dc::errno::EPERM => {
            "this domain is not the control domain (boot it with the module key role=control)"
                .to_string()
        }
        dc::errno::ENOSYS => format!(
            "the hypervisor does not answer this (hypercall {}): not Basalt, or a Basalt without \
             this domain-control operation",
            dc::HYPERCALL
        ),
        dc::errno::EACCES => format!(
            "interface version mismatch: this basalt speaks {:#x}; use the basalt command built \
             with the running hypervisor",
            dc::INTERFACE_VERSION
        ),
        dc::errno::ESRCH => format!("no domain {domain}; `basalt list` shows the domains"),
        dc::errno::EINVAL => format!(
            "refused as invalid (a domain cannot pause, shut down or destroy itself; domain \
             {domain} may be the caller)"
        ),
        dc::errno::EBUSY => format!("domain {domain} is dying"),
        dc::errno::EFAULT => {
            "the hypervisor could not read the argument buffer (not mapped in this process)"
                .to_string()
        }
        _ => String::new(),
    };
    let name = Errno(i64::from(errno)).name();
    let os = io::Error::from_raw_os_error(errno);
    if what.is_empty() {
        format!("domain control failed: {os} ({name})")
    } else {
        format!("{what} ({name})")
    }
}

/// The hypervisor, through privcmd, with a locked argument page.
struct Hypervisor {
    privcmd: privcmd::Privcmd,
    page: privcmd::LockedPage,
}

impl Hypervisor {
    fn open() -> Result<Hypervisor, String> {
        let privcmd = privcmd::Privcmd::open().map_err(|e| open_error(&e))?;
        let page = privcmd::LockedPage::new().map_err(|e| {
            format!("cannot lock a page for the hypercall's arguments in memory (mlock): {e}")
        })?;
        Ok(Hypervisor { privcmd, page })
    }

    /// `request` on `domain`: the result and the reply bytes.
    fn call(&mut self, domain: u32, request: &Request<'_>) -> Result<(u64, Vec<u8>), String> {
        self.raw_call(domain, request)?
            .map_err(|errno| call_error(errno, domain))
    }

    /// `request` on `domain`; a refusal as its errno.
    fn raw_call(
        &mut self,
        domain: u32,
        request: &Request<'_>,
    ) -> Result<Result<(u64, Vec<u8>), i32>, String> {
        let n = dc::encode(domain, request, self.page.bytes())
            .map_err(|e| format!("request too large ({})", e.name()))?;
        let address = self.page.address();
        Ok(
            match self
                .privcmd
                .hypercall(dc::HYPERCALL, [address, n as u64, 0, 0, 0])
            {
                Ok(r) => Ok((
                    r as u64,
                    self.page.bytes()[dc::HEADER_SIZE..n.max(dc::HEADER_SIZE)].to_vec(),
                )),
                Err(e) => Err(e.raw_os_error().unwrap_or(0)),
            },
        )
    }

    /// `create`: the new domain's id; a name in use or too little memory
    /// said plainly.
    fn create(&mut self, new: &dc::CreateArgs) -> Result<(u64, Vec<u8>), String> {
        let name = new.name.as_str().to_string();
        let answer = self.raw_call(0, &Request::Create(*new))?;
        // What is free, and who holds memory: for the message of a refusal for memory.
        let free = match answer {
            Err(e) if i64::from(e) == dc::errno::ENOMEM => {
                let free = self.physinfo().map_or(String::new(), |p| {
                    format!(
                        "{} MiB free (of {} MiB for domains); ",
                        p.1 >> 20,
                        p.0 >> 20
                    )
                });
                let held: Vec<String> = self
                    .list()
                    .unwrap_or_default()
                    .iter()
                    .filter(|d| d.flags & dc::info_flags::CONTROL == 0)
                    .map(|d| format!("{} {} MiB", d.name.as_str(), d.memory >> 20))
                    .collect();
                if held.is_empty() {
                    free
                } else {
                    format!("{free}the domains hold: {}; ", held.join(", "))
                }
            }
            _ => String::new(),
        };
        answer.map_err(|errno| match i64::from(errno) {
            dc::errno::EEXIST => format!(
                "a domain named {name:?} exists already (`basalt list`); choose another name"
            ),
            dc::errno::ENOMEM => format!(
                "not enough free memory for {name:?}'s {} MiB: {free}stop one (`basalt \
                     shutdown NAME`) or ask for less",
                new.memory >> 20
            ),
            dc::errno::EINVAL => format!(
                "the hypervisor refused {name:?}: its memory (MiB, a multiple of 2 from 2 to \
                     3072), vCPUs (1 to {}) or CPU pinning (no online CPU named)",
                dc::MAX_VCPUS
            ),
            _ => call_error(errno, 0),
        })
    }

    /// The host's memory, what is free for domains (bytes), and its online CPUs.
    fn physinfo(&mut self) -> Result<(u64, u64, u32), String> {
        let (_, r) = self.call(0, &Request::Physinfo)?;
        dc::decode_physinfo(&r).ok_or_else(|| "the hypervisor's physinfo reply is malformed".into())
    }

    /// Every domain, by increasing id.
    fn list(&mut self) -> Result<Vec<DomainInfo>, String> {
        let mut all = Vec::new();
        let mut first = 0u32;
        loop {
            let (_, reply) = self.call(
                0,
                &Request::List {
                    first,
                    max: dc::MAX_LIST,
                },
            )?;
            let (count, _total) = dc::decode_list(&reply, dc::MAX_LIST)
                .ok_or("the hypervisor's list reply is malformed")?;
            for i in 0..count {
                all.push(dc::list_record(&reply, i).ok_or("a malformed domain record")?);
            }
            match all.last() {
                Some(last) if count == dc::MAX_LIST && last.id < u32::MAX => first = last.id + 1,
                _ => break,
            }
        }
        Ok(all)
    }
}

/// `basalt info NAME|ID`: the domain as ring 0 sees it (when it exists), then the VM's
/// stored definition (when basaltd knows it).
fn info(target: &str) -> Result<(), String> {
    let mut hv = Hypervisor::open()?;
    let domain = console::resolve(&mut hv, target).ok();
    let vm = match ask_daemon(&proto::Op::Info {
        name: domain.as_ref().map_or(target, |d| d.1.as_str()).to_string(),
    }) {
        Some(Ok(answer)) => Some(answer),
        Some(Err(e)) if domain.is_none() => return Err(e),
        _ => None,
    };
    if let Some((id, _)) = &domain {
        let d = hv
            .list()?
            .into_iter()
            .find(|d| d.id == *id)
            .ok_or_else(|| format!("domain {id} ended meanwhile"))?;
        let pinned = if d.affinity == 0 {
            "any".to_string()
        } else {
            (0..64)
                .filter(|c| d.affinity >> c & 1 == 1)
                .map(|c: u32| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "domain {} ({}): {}, {} MiB, {} vCPU(s), CPU time {:.1} s, weight {} cap {}, CPUs {pinned}{}",
            d.id,
            d.name.as_str(),
            d.state.as_str(),
            d.memory >> 20,
            d.vcpus,
            d.cpu_time_ns as f64 / 1e9,
            d.weight,
            d.cap,
            if d.flags & dc::info_flags::XEN != 0 {
                ", Xen's interface"
            } else {
                ""
            },
        );
    }
    match vm {
        Some(a) => {
            let state = match a.vms.first().and_then(|v| v.domain) {
                Some(id) => format!("running as domain {id}"),
                None => "stopped".into(),
            };
            println!(
                "VM {} ({state}), defined as:\n{}",
                a.vms.first().map_or(target, |v| &v.name),
                a.message.trim_end()
            );
        }
        None if domain.is_none() => {
            return Err(format!(
                "no domain or VM named {target:?} (`basalt list` shows them)"
            ));
        }
        None => {}
    }
    Ok(())
}

/// `basalt list`'s table: the control domain first, then by id; memory in
/// MiB, CPU time in seconds (as `xl list`).
fn format_list(domains: &[DomainInfo]) -> String {
    let mut sorted: Vec<&DomainInfo> = domains.iter().collect();
    sorted.sort_by_key(|d| (d.flags & dc::info_flags::CONTROL == 0, d.id));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>5} {:>8} {:>5} {:<8} {:>10}",
        "Name", "ID", "Mem(MiB)", "VCPUs", "State", "Time(s)"
    );
    for d in sorted {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>8} {:>5} {:<8} {:>10.1}",
            d.name.as_str(),
            d.id,
            d.memory >> 20,
            d.vcpus,
            d.state.as_str(),
            d.cpu_time_ns as f64 / 1e9
        );
    }
    out
}

fn run(args: &[String]) -> Result<(), String> {
    match parse(args)? {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Info(None) => {
            let (total, free, cpus) = Hypervisor::open()?.physinfo()?;
            println!(
                "host: {} MiB of memory for domains, {} MiB of it free; {cpus} CPUs online",
                total >> 20,
                free >> 20
            );
            Ok(())
        }
        Command::Info(Some(target)) => info(&target),
        Command::List { repeat } => {
            let mut hv = Hypervisor::open()?;
            print!("{}", format_list(&hv.list()?));
            match ask_daemon(&proto::Op::List) {
                Some(answer) => print!("{}", format_stopped(&answer?.vms)),
                None => println!("({}: stopped VMs are not shown)", no_daemon()),
            }
            if repeat > 0 {
                let start = std::time::Instant::now();
                let first = rdtsc();
                for _ in 0..repeat {
                    hv.list()?;
                }
                let ticks = rdtsc().wrapping_sub(first) / u64::from(repeat);
                let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(repeat);
                println!("{repeat} more list calls through privcmd: {us:.1} us each");
                println!("BASALT-FIGURE: privcmd_list_us={us:.1}");
                println!("BASALT-FIGURE: privcmd_list_ticks={ticks}");
            }
            Ok(())
        }
        Command::Tsc => {
            println!("tsc={}", rdtsc());
            Ok(())
        }
        Command::Console(target, only_history) => {
            let mut hv = Hypervisor::open()?;
            let (id, name) = console::resolve(&mut hv, &target)?;
            if only_history {
                console::history(&mut hv, id)
            } else {
                console::attach(&mut hv, id, &name)
            }
        }
        Command::Sched(id, args) => {
            let mut hv = Hypervisor::open()?;
            let (_, reply) = hv.call(id, &Request::Sched(args))?;
            let (weight, cap) =
                dc::decode_sched(&reply).ok_or("the hypervisor's sched reply is malformed")?;
            println!("domain {id}: weight {weight} cap {cap}");
            Ok(())
        }
        Command::Create {
            name,
            memory,
            kernel,
            cmdline,
        } => {
            let def = vmdef::VmDef {
                name,
                memory,
                vcpus: 1,
                weight: 256,
                cap: 0,
                affinity: 0,
                kernel: (kernel, 0),
                initrd: None,
                cmdline,
                xen: false,
                on_end: [vmdef::OnEnd::Destroy; 3],
                disks: Vec::new(),
                nets: Vec::new(),
            };
            println!("{}", create(&def, None)?.1);
            Ok(())
        }
        Command::CreateFile(file) => {
            let toml = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
            let op = proto::Op::Define {
                file: file.clone(),
                toml: toml.clone(),
                start: true,
            };
            match ask_daemon(&op) {
                Some(answer) => println!("{}", answer?.message),
                None => {
                    eprintln!(
                        "basalt: {}; creating the domain directly, not stored",
                        no_daemon()
                    );
                    let def = vmdef::parse(&file, &toml)?;
                    if !def.disks.is_empty() || !def.nets.is_empty() {
                        return Err(format!(
                            "{file}: its devices need basaltd, which runs their device model: \
                             start it (basaltd &) and create again"
                        ));
                    }
                    println!("{}", create(&def, Some(&file))?.1);
                }
            }
            Ok(())
        }
        Command::Daemon(mut op) => {
            if let proto::Op::Define { file, toml, .. } = &mut op {
                *toml = std::fs::read_to_string(&*file).map_err(|e| format!("{file}: {e}"))?;
            }
            let answer = ask_daemon(&op).ok_or_else(no_daemon)??;
            println!("{}", answer.message);
            Ok(())
        }
        Command::OnDomain(target, action) => {
            let mut hv = Hypervisor::open()?;
            let (id, name) = console::resolve(&mut hv, &target)?;
            hv.call(id, &action.request())?;
            println!("domain {id} ({name}): {}", action.done());
            Ok(())
        }
    }
}

/// A new domain's memory as `basalt-guest`'s builders see it: every write
/// is domain control's `populate`, from locked memory, [`dc::MAX_POPULATE`]
/// bytes a call; a write of more than [`PROGRESS_OVER`] bytes prints a line
/// per tenth on stderr, named by `labels` (guest-physical address → what).
struct DomainMemory<'a> {
    hv: &'a mut Hypervisor,
    id: u32,
    size: u64,
    labels: Vec<(u64, String)>,
    /// The hypervisor's refusal, which `MemoryError` cannot carry.
    error: Option<String>,
}

/// Writes larger than this show progress.
const PROGRESS_OVER: usize = 4 << 20;

impl DomainMemory<'_> {
    fn populate(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), String> {
        let label = self
            .labels
            .iter()
            .find(|l| l.0 == gpa)
            .map(|l| l.1.as_str());
        let label = label.unwrap_or("data");
        let mut shown = 0;
        let step = dc::MAX_POPULATE as usize;
        for (i, chunk) in bytes.chunks(step).enumerate() {
            let locked = privcmd::Locked::new(chunk)
                .map_err(|e| format!("cannot lock {label} in memory (mlock): {e}"))?;
            self.hv.call(
                self.id,
                &Request::Populate {
                    gpa: gpa + (i * step) as u64,
                    source: locked.address(0),
                    length: chunk.len() as u64,
                },
            )?;
            let tenths = (i * step + chunk.len()) * 10 / bytes.len();
            if bytes.len() > PROGRESS_OVER && tenths > shown {
                shown = tenths;
                eprintln!(
                    "loading {label}: {}% of {:.1} MiB",
                    tenths * 10,
                    bytes.len() as f64 / f64::from(1 << 20)
                );
            }
        }
        Ok(())
    }
}

impl GuestMemory for DomainMemory<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        check_range(self.size, gpa, bytes.len() as u64)?;
        self.populate(gpa, bytes).map_err(|e| {
            self.error.get_or_insert(e);
            MemoryError::Unmapped { gpa }
        })
    }

    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        check_range(self.size, gpa, len)?;
        self.write(gpa, &vec![byte; len as usize])
    }

    fn read(&self, gpa: u64, _: &mut [u8]) -> Result<(), MemoryError> {
        // Populate only writes; no builder reads what it wrote.
        Err(MemoryError::Unmapped { gpa })
    }
}

/// What `basalt create` starts: a PVH ELF kernel or a bzImage.
enum Boot {
    Pvh(Box<pvh::Plan>),
    Linux(Box<bzimage::Plan>),
}

/// `basalt create`: every file read and checked, the domain created paused,
/// its kernel and boot information written (`populate`), vCPU 0 given the
/// kernel's entry state (PVH, or Linux's 64-bit entry), then unpaused; on a
/// failure after `create` it is destroyed again. The new domain's id and
/// the line that says so.
fn create(def: &vmdef::VmDef, file: Option<&str>) -> Result<(u32, String), String> {
    create_with(def, file, |_| Ok(()))
}

/// [`create`], with `devices` run on the new domain's id after it is built and before its
/// vCPUs run (basaltd starts its device model there).
fn create_with(
    def: &vmdef::VmDef,
    file: Option<&str>,
    devices: impl FnOnce(u32) -> Result<(), String>,
) -> Result<(u32, String), String> {
    let (name, memory, cmdline) = (def.name.as_str(), def.memory, def.cmdline.as_str());
    // Where a file was named: the definition's line, or the argument.
    let named = |key: &str, (path, line): &(String, usize)| match file {
        Some(f) => format!("{f}:{line}: {key} {path:?}"),
        None => path.clone(),
    };
    let read = |key: &str, at: &(String, usize)| {
        std::fs::read(&at.0).map_err(|e| {
            format!(
                "{}: {e} (the path is dom0's: copy the file into dom0, or correct it)",
                named(key, at)
            )
        })
    };
    let kernel = named("kernel", &def.kernel);
    let image = read("kernel", &def.kernel)?;
    let initrd = match &def.initrd {
        Some(at) => Some((read("initrd", at)?, named("initrd", at))),
        None => None,
    };
    let boot = if linux::is_bzimage(&image) {
        let size = initrd.as_ref().map_or(0, |i| i.0.len() as u64);
        Boot::Linux(Box::new(
            bzimage::plan(&image, memory, cmdline, size).map_err(|e| match (e, &initrd) {
                (
                    linux::LinuxError::InitrdDoesNotFit { .. }
                    | linux::LinuxError::InitrdTooHigh { .. },
                    Some((_, at)),
                ) => format!("{at}: {e}"),
                _ => format!("{kernel}: {e}"),
            })?,
        ))
    } else if image.starts_with(b"\x7fELF") {
        let size = initrd.as_ref().map_or(0, |i| i.0.len() as u64);
        Boot::Pvh(Box::new(pvh::plan(&image, memory, cmdline, size).map_err(
            |e| match &initrd {
                // The kernel alone fits: the initrd is what does not.
                Some((_, at)) if pvh::plan(&image, memory, cmdline, 0).is_ok() => {
                    format!("{at}: {e}")
                }
                _ => format!("{kernel}: {e}"),
            },
        )?))
    } else {
        return Err(format!(
            "{kernel}: neither a PVH ELF kernel nor a Linux bzImage (no ELF magic, no boot flag \
             0xAA55 with \"HdrS\"): name a vmlinux with Xen's PVH entry note, or a bzImage \
             (Debian's /boot/vmlinuz-*)"
        ));
    };
    let mut hv = Hypervisor::open()?;
    let new = dc::CreateArgs {
        memory,
        affinity: def.affinity,
        vcpus: def.vcpus,
        flags: if def.xen { dc::create_flags::XEN } else { 0 },
        weight: def.weight,
        cap: def.cap,
        name: dc::Name::new(name)
            .filter(dc::Name::is_valid_new)
            .ok_or_else(|| format!("{name:?}: a name is 1 to 31 of A-Z a-z 0-9 - _ ."))?,
    };
    let (id, _) = hv.create(&new)?;
    let id = id as u32;
    let load = || -> Result<dc::VcpuStart, String> {
        let mut mem = DomainMemory {
            hv: &mut hv,
            id,
            size: memory,
            labels: Vec::new(),
            error: None,
        };
        let mut start = dc::VcpuStart {
            vcpu: 0,
            mode: dc::StartMode::Pvh32,
            rip: 0,
            start_info: 0,
            boot_params: 0,
            cr3: 0,
            gdt_base: 0,
            gdt_limit: 0,
        };
        let written = match &boot {
            Boot::Pvh(plan) => {
                let segments = plan.image.segments().iter();
                mem.labels = segments.map(|s| (s.paddr, kernel.clone())).collect();
                if let (Some((_, at)), Some(r)) = (&initrd, plan.layout.initrds().first()) {
                    mem.labels.push((r.gpa, at.clone()));
                }
                let bytes = initrd.as_ref().map_or(&[][..], |i| &i.0[..]);
                pvh::load(&mut mem, plan, &image, cmdline, def.vcpus, bytes).map(|(rip, at)| {
                    start.rip = rip;
                    start.start_info = at;
                })
            }
            Boot::Linux(plan) => {
                mem.labels = vec![(plan.layout.load_address, kernel.clone())];
                if let Some((_, at)) = &initrd {
                    mem.labels.push((plan.layout.initrd_gpa, at.clone()));
                }
                let bytes = initrd.as_ref().map_or(&[][..], |i| &i.0[..]);
                bzimage::load(&mut mem, plan, &image, cmdline, def.vcpus, bytes).map(|e| {
                    start.mode = dc::StartMode::Linux64;
                    start.rip = e.rip;
                    start.boot_params = e.rsi;
                    start.cr3 = e.cr3;
                    start.gdt_base = e.gdt_base;
                    start.gdt_limit = u32::from(e.gdt_limit);
                })
            }
        };
        if let Err(e) = written {
            return Err(mem.error.take().unwrap_or(e));
        }
        hv.call(id, &Request::SetVcpuStart(start))?;
        devices(id)?;
        hv.call(id, &Request::Unpause)?;
        Ok(start)
    };
    match load() {
        Ok(start) => Ok((
            id,
            format!(
                "domain {id} ({name}): {} MiB, started at {:#x}",
                memory >> 20,
                start.rip
            ),
        )),
        Err(e) => {
            let _ = hv.call(id, &Request::Destroy);
            Err(format!(
                "domain {id} ({name}) could not be started, destroyed again: {e}"
            ))
        }
    }
}

/// What to say when basaltd does not answer.
fn no_daemon() -> String {
    format!(
        "basaltd is not running (nothing listens on {}): dom0's init starts it; by hand: \
         basaltd &",
        daemon::SOCKET
    )
}

/// `op` sent to basaltd and its answer; `None` when no daemon listens.
fn ask_daemon(op: &proto::Op) -> Option<Result<proto::Answer, String>> {
    let stream = match std::os::unix::net::UnixStream::connect(daemon::SOCKET) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return None;
        }
        Err(e) => return Some(Err(format!("{}: {e}: run basalt as root", daemon::SOCKET))),
    };
    let request = proto::Request {
        v: proto::VERSION,
        op: op.clone(),
    };
    let talk = || -> Result<proto::Answer, String> {
        let lost = |e: io::Error| format!("basaltd on {}: {e}", daemon::SOCKET);
        (&stream)
            .write_all(proto::encode(&request).as_bytes())
            .map_err(lost)?;
        let mut line = String::new();
        io::BufReader::new(&stream)
            .read_line(&mut line)
            .map_err(lost)?;
        if line.is_empty() {
            return Err(
                "basaltd closed the connection without an answer (did it die? dom0's \
                        init restarts it: try again)"
                    .into(),
            );
        }
        proto::decode_reply(&line)?.result()
    };
    Some(talk())
}

/// The rows `basalt list` adds for the VMs basaltd knows that are stopped.
fn format_stopped(vms: &[proto::Vm]) -> String {
    let mut out = String::new();
    for vm in vms.iter().filter(|vm| vm.domain.is_none()) {
        let _ = writeln!(
            out,
            "{:<24} {:>5} {:>8} {:>5} {:<8} {:>10}",
            vm.name, "-", "-", "-", "stopped", "-"
        );
    }
    out
}

/// The time stamp counter (Linux leaves RDTSC to user space). Under Bochs
/// with one CPU it counts executed instructions (docs/platform.md).
fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter; no memory is touched.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    let args: Vec<String> = args.collect();
    let result = if program.rsplit('/').next() == Some("basaltd") {
        daemon::run()
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn info(id: u32, name: &str, control: bool) -> DomainInfo {
        DomainInfo {
            id,
            state: dc::DomainState::Running,
            flags: if control { dc::info_flags::CONTROL } else { 0 },
            vcpus: 1,
            memory: 64 << 20,
            cpu_time_ns: 1_250_000_000,
            weight: 256,
            cap: 0,
            exit_code: 0,
            affinity: 0,
            name: dc::Name::new(name).expect("short"),
        }
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args(&["list"])), Ok(Command::List { repeat: 0 }));
        assert_eq!(parse(&args(&["tsc"])), Ok(Command::Tsc));
        assert!(parse(&args(&["tsc", "1"])).is_err());
        assert_eq!(
            parse(&args(&["list", "--repeat", "100"])),
            Ok(Command::List { repeat: 100 })
        );
        assert!(parse(&args(&["list", "--repeat", "0"])).is_err());
        assert_eq!(parse(&args(&[])), Ok(Command::Help));
        assert_eq!(
            parse(&args(&["pause", "3"])),
            Ok(Command::OnDomain("3".into(), Action::Pause))
        );
        assert_eq!(
            parse(&args(&["destroy", "12"])),
            Ok(Command::OnDomain("12".into(), Action::Destroy))
        );
        assert_eq!(
            parse(&args(&["pause", "web"])),
            Ok(Command::OnDomain("web".into(), Action::Pause))
        );
        assert_eq!(
            parse(&args(&["console", "2"])),
            Ok(Command::Console("2".into(), false))
        );
        assert_eq!(
            parse(&args(&["console", "web", "--history"])),
            Ok(Command::Console("web".into(), true))
        );
        assert_eq!(
            parse(&args(&["sched", "2", "cap", "20", "weight", "512"])),
            Ok(Command::Sched(
                2,
                dc::SchedArgs {
                    flags: dc::sched_flags::ALL,
                    weight: 512,
                    cap: 20
                }
            ))
        );
        assert!(parse(&args(&["sched", "2", "cap"])).is_err());
        assert_eq!(
            parse(&args(&["create", "t9", "16", "/k", "a=1", "b"])),
            Ok(Command::Create {
                name: "t9".into(),
                memory: 16 << 20,
                kernel: "/k".into(),
                cmdline: "a=1 b".into()
            })
        );
        assert!(parse(&args(&["create", "t9", "3", "/k"])).is_err());
        assert!(parse(&args(&["sched", "2", "speed", "3"])).is_err());
        assert_eq!(
            parse(&args(&["shutdown", "web1"])),
            Ok(Command::Daemon(proto::Op::Shutdown {
                name: "web1".into(),
                wait_s: SHUTDOWN_WAIT_S
            }))
        );
        assert_eq!(
            parse(&args(&["shutdown", "4"])),
            Ok(Command::OnDomain("4".into(), Action::Shutdown))
        );
        assert_eq!(
            parse(&args(&["destroy", "web1"])),
            Ok(Command::Daemon(proto::Op::Destroy {
                name: "web1".into()
            }))
        );
        assert_eq!(
            parse(&args(&["start", "web1"])),
            Ok(Command::Daemon(proto::Op::Start {
                name: "web1".into()
            }))
        );
        assert!(parse(&args(&["pause", "web1", "now"])).is_err());
        assert_eq!(
            parse(&args(&["shutdown", "web1", "--wait", "2"])),
            Ok(Command::Daemon(proto::Op::Shutdown {
                name: "web1".into(),
                wait_s: 2
            }))
        );
        assert!(parse(&args(&["shutdown", "web1", "--wait", "0"])).is_err());
        let e = parse(&args(&["frobnicate"])).expect_err("unknown");
        assert!(e.contains("usage: basalt list"), "{e}");
    }

    #[test]
    fn list_puts_the_control_domain_first() {
        let table = format_list(&[
            info(2, "b", false),
            info(0, "Domain-0", true),
            info(1, "a", false),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("Name"), "{table}");
        assert!(lines[1].starts_with("Domain-0"), "{table}");
        assert!(lines[2].starts_with("a "), "{table}");
        assert!(lines[3].starts_with("b "), "{table}");
        let fields: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(fields, ["Domain-0", "0", "64", "1", "running", "1.2"]);
    }

    #[test]
    fn list_adds_the_stopped_vms_only() {
        let rows = format_stopped(&[
            proto::Vm {
                name: "hello".into(),
                domain: None,
            },
            proto::Vm {
                name: "web1".into(),
                domain: Some(1),
            },
        ]);
        let fields: Vec<&str> = rows.split_whitespace().collect();
        assert_eq!(fields, ["hello", "-", "-", "-", "stopped", "-"]);
    }

    #[test]
    fn errors_name_the_cause_and_the_fix() {
        let missing = io::Error::from_raw_os_error(libc::ENOENT);
        let e = open_error(&missing);
        assert!(
            e.contains("not running in Basalt's control domain, or module xen-privcmd not loaded"),
            "{e}"
        );
        let e = call_error(libc::EPERM, 0);
        assert!(e.contains("this domain is not the control domain"), "{e}");
        assert!(e.contains("EPERM"), "{e}");
        let e = call_error(libc::EACCES, 0);
        assert!(e.contains("interface version mismatch"), "{e}");
        let e = call_error(libc::ESRCH, 7);
        assert!(e.contains("no domain 7"), "{e}");
        let e = call_error(libc::EIO, 7);
        assert!(e.contains("domain control failed"), "{e}");
    }

    #[test]
    fn linux_and_xen_errnos_agree() {
        // privcmd hands Xen's errno over as Linux's; the messages rely on it.
        for (linux, xen) in [
            (libc::EPERM, dc::errno::EPERM),
            (libc::ESRCH, dc::errno::ESRCH),
            (libc::EACCES, dc::errno::EACCES),
            (libc::EFAULT, dc::errno::EFAULT),
            (libc::EBUSY, dc::errno::EBUSY),
            (libc::EINVAL, dc::errno::EINVAL),
            (libc::ENOSYS, dc::errno::ENOSYS),
            (libc::E2BIG, dc::errno::E2BIG),
        ] {
            assert_eq!(i64::from(linux), xen);
        }
    }
}
