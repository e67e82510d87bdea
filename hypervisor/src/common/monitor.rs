//! The serial console's input side (docs/console.md): the multiplexer that
//! gives the keyboard to Basalt's monitor or to one domain (Ctrl-A three
//! times switches), and the monitor's line-edited shell. Runs on CPU 0 at
//! its scheduling points and whenever the UART interrupt wakes it.

use crate::common::domain::{self, EndReason};
use crate::common::sched;
use crate::{print, println, time};
use alloc::string::String;
use alloc::vec::Vec;
use basalt_console::command::{Command, HELP, ParseError};
use basalt_console::line::{Edit, LineEditor};
use basalt_console::mux::{CTRL_A, Event, Focus, Mux};
use basalt_sched::{DomainParams, VcpuState};
use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

struct Monitor {
    mux: Mux,
    editor: LineEditor,
}

static MONITOR: Mutex<Monitor> = Mutex::new(Monitor {
    mux: Mux::new(),
    editor: LineEditor::new(),
});
static STARTED: AtomicBool = AtomicBool::new(false);
/// Domains that ended since the monitor last looked (they may end while
/// the monitor itself runs a command, so they are noted, not handled).
static GONE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Set while `GONE` may hold a departure (a cheap check for the idle path).
static DEPARTED: AtomicBool = AtomicBool::new(false);

/// The monitor's prompt.
pub const PROMPT: &str = "basalt> ";

/// Why no guest can start on this machine (no virtualization backend), for
/// the greeting and `info`; `None` while guests can run.
static NO_GUESTS: Mutex<Option<String>> = Mutex::new(None);

/// Greets the operator once guests run.
pub fn start() {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    if let Some(why) = NO_GUESTS.lock().as_deref() {
        println!("monitor: no guest can start: {why}");
    }
    println!(
        "monitor: type `help` for commands; Ctrl-A three times switches the input between the monitor and each domain"
    );
    print!("{PROMPT}");
}

/// The monitor on a machine where no domain runs (none was given, none
/// could be built, or `no_backend` says why no guest can start): CPU 0
/// serves the console between interrupts (the UART's receive interrupt, or
/// a 10 ms timer when its input is polled) until `halt`.
pub fn run_without_guests(no_backend: Option<crate::arch::x86_64::hvm::NoBackend>) -> ! {
    *NO_GUESTS.lock() = no_backend.map(|e| alloc::format!("{e}"));
    start();
    loop {
        service();
        crate::console::pump();
        let poll = if crate::console::output_pending() {
            Some(1_000_000)
        } else if crate::console::input_is_polled() {
            Some(10_000_000)
        } else {
            None
        };
        if let Some(ns) = poll {
            time::arm_at_ns(time::now_ns() + ns);
        }
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
}

/// Reads what the operator typed and acts on it. Never blocks.
pub fn service() {
    if !STARTED.load(Ordering::Relaxed) {
        return;
    }
    crate::console::poll_input();
    let Some(mut m) = MONITOR.try_lock() else {
        return;
    };
    DEPARTED.store(false, Ordering::SeqCst);
    let gone = core::mem::take(&mut *GONE.lock());
    for id in gone {
        if m.mux.focus() == Focus::Domain(id) {
            m.mux.domain_gone(id);
            crate::console::set_raw(None);
            println!("\n[domain d{id} ended: input: monitor]");
            print!("{PROMPT}");
        }
    }
    let mut buf = [0u8; 64];
    loop {
        let n = crate::console::read_input(&mut buf);
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            m.byte(b);
        }
    }
}

/// A domain ended: if it had the console input, the input goes back to the
/// monitor (at the monitor's next look).
pub fn domain_gone(id: u32) {
    GONE.lock().push(id);
    DEPARTED.store(true, Ordering::SeqCst);
}

/// Whether a domain ended since the monitor last looked.
pub fn departures_pending() -> bool {
    DEPARTED.load(Ordering::Relaxed)
}

fn live_domains() -> Vec<u32> {
    domain::all()
        .iter()
        .filter(|d| !d.life.is_ending())
        .map(|d| d.id)
        .collect()
}

impl Monitor {
    fn byte(&mut self, b: u8) {
        match self.mux.input(b, &live_domains()) {
            Event::Pending => {}
            Event::Switched(Focus::Monitor) => {
                crate::console::set_raw(None);
                println!("\n[input: monitor]");
                print!("{PROMPT}");
            }
            Event::Switched(Focus::Domain(id)) => {
                println!("\n[input: domain d{id}; Ctrl-A three times switches to the next owner]");
                // Its output now goes out as it is, starting with the line
                // it had begun (a prompt).
                crate::console::set_raw(Some(id));
                if let Some(d) = domain::get(id) {
                    d.platform.console.focus_gained();
                }
            }
            Event::Monitor { held, byte } => {
                for _ in 0..held {
                    self.key(CTRL_A);
                }
                self.key(byte);
            }
            Event::Domain { id, held, byte } => {
                let Some(d) = domain::get(id) else {
                    return;
                };
                {
                    let mut input = d.platform.console.input.lock();
                    for _ in 0..held {
                        input.write(&[CTRL_A]);
                    }
                    input.write(&[byte]);
                }
                // Console input is an event: into COM1 if its interrupt is
                // on; vCPU 0 waiting in HLT or SCHEDOP_block wakes up.
                crate::hvm::vdev::input_arrived(&d.platform);
                // A domain with Xen's interface reads it with console_io
                // when its VIRQ_CONSOLE fires (dom0's hvc0).
                if let Some(x) = &d.xen {
                    x.send_virq(&d.ram, &d.platform, basalt_xen::evtchn::VIRQ_CONSOLE, 0);
                }
                sched::wake_vcpu(&d, 0);
            }
        }
    }

    fn key(&mut self, b: u8) {
        match self.editor.key(b) {
            Edit::Echo(c) => print!("{}", c as char),
            Edit::Erase => print!("\x08 \x08"),
            Edit::EraseLine(n) => {
                for _ in 0..n {
                    print!("\x08 \x08");
                }
            }
            Edit::Line => {
                println!();
                let line = String::from(self.editor.line());
                self.execute(&line);
                if self.mux.focus() == Focus::Monitor {
                    print!("{PROMPT}");
                }
            }
            Edit::Nothing => {}
        }
    }

    fn execute(&mut self, line: &str) {
        let command = match Command::parse(line) {
            Ok(c) => c,
            Err(ParseError::Empty) => return,
            Err(e) => {
                println!("{e}");
                return;
            }
        };
        match command {
            Command::Help => {
                for (usage, what) in HELP {
                    println!("  {usage:<28} {what}");
                }
            }
            Command::List => list(),
            Command::Vcpus => vcpus(),
            Command::Info => info(),
            Command::Stats => stats(),
            Command::Pause(id) | Command::Unpause(id) => {
                let pausing = matches!(command, Command::Pause(_));
                match domain::get(id) {
                    None => no_domain(id),
                    Some(d) if sched::pause(&d, pausing) => {
                        println!("d{id} {}", if pausing { "paused" } else { "running" });
                    }
                    Some(d) => println!("d{id} is {}", d.life.state().as_str()),
                }
            }
            Command::Destroy(id) | Command::Reboot(id) => {
                let reason = match command {
                    Command::Destroy(_) => EndReason::Destroyed,
                    _ => EndReason::Reboot,
                };
                match domain::get(id).filter(|d| !d.life.is_ending()) {
                    None => no_domain(id),
                    Some(d) => {
                        println!(
                            "d{id} ({}): {}",
                            d.name,
                            if reason == EndReason::Reboot {
                                "rebooting"
                            } else {
                                "destroying"
                            }
                        );
                        sched::end_domain(&d, reason);
                    }
                }
            }
            Command::Sched {
                domain: id,
                weight,
                cap,
            } => sched_command(id, weight, cap),
            Command::Console(id) => {
                if live_domains().contains(&id) {
                    self.mux.set_focus(Focus::Domain(id));
                    println!(
                        "[input: domain d{id}; Ctrl-A three times switches to the next owner]"
                    );
                    crate::console::set_raw(Some(id));
                    if let Some(d) = domain::get(id) {
                        d.platform.console.focus_gained();
                    }
                } else {
                    no_domain(id);
                }
            }
            Command::Halt => {
                let live = live_domains();
                if live.is_empty() {
                    println!("halting: every CPU stops");
                    crate::verdict::finish(crate::verdict::Verdict::Pass, "");
                }
                let mut ids = crate::StackString::<160>::new();
                for id in live {
                    let _ = write!(ids, " d{id}");
                }
                println!(
                    "domains still live:{}; `destroy N` each first",
                    ids.as_str()
                );
            }
            Command::Loglvl(level) => match basalt_boot::cmdline::LogLevel::parse(level) {
                Some(l) => {
                    crate::console::set_level(l);
                    println!("log level: {level}");
                }
                None => println!("usage: loglvl none|error|warning|info|debug|all"),
            },
        }
    }
}

fn no_domain(id: u32) {
    println!("no domain d{id}; `list` shows the domains");
}

fn seconds(ns: u64) -> (u64, u64) {
    (ns / 1_000_000_000, ns % 1_000_000_000 / 1_000_000)
}

fn list() {
    println!("  id  name             state    vcpus  memory     cpu time   weight  cap");
    for d in domain::all() {
        let (s, ms) = seconds(sched::domain_runtime(d.id));
        let p = sched::domain_params(d.id).unwrap_or(DomainParams {
            weight: d.weight,
            cap: d.cap,
        });
        println!(
            "  d{:<3}{:<17}{:<9}{:<7}{:<11}{s}.{ms:03} s{:>9}{:>5}",
            d.id,
            d.name,
            d.life.state().as_str(),
            d.vcpu_count,
            alloc::format!("{}", basalt_boot::memmap::ByteSize(d.ram.size())),
            p.weight,
            p.cap
        );
    }
}

fn vcpus() {
    println!("  vcpu      state      cpu   runtime");
    for v in sched::vcpus() {
        let state = match (v.up, v.state, v.halted) {
            (false, _, _) => "down",
            (_, _, true) => "blocked",
            (_, Some(VcpuState::Running { .. }), _) => "running",
            (_, Some(VcpuState::Runnable { .. }), _) => "runnable",
            (_, Some(VcpuState::Parked), _) => "capped",
            (_, Some(VcpuState::Blocked) | None, _) => "blocked",
        };
        let (s, ms) = seconds(v.runtime);
        println!(
            "  d{}v{:<6}{state:<11}cpu{:<3}{s}.{ms:03} s",
            v.id.domain, v.id.vcpu, v.cpu
        );
    }
}

fn info() {
    let (s, ms) = seconds(time::now_ns());
    println!(
        "  CPUs: {} online; TSC {} kHz; uptime {s}.{ms:03} s",
        crate::arch::x86_64::percpu::online_count(),
        time::tsc_hz() / 1000
    );
    if let Some(st) = crate::mm::stats() {
        println!(
            "  memory: {} KiB free, {} KiB used, {} KiB managed",
            st.free_frames * 4,
            st.used_frames * 4,
            st.total_frames * 4
        );
    }
    if let Some(p) = sched::params() {
        println!(
            "  scheduler: credit2 class, time slice {} us, rate limit {} us, cap period {} us",
            p.timeslice / 1000,
            p.ratelimit / 1000,
            p.cap_period / 1000
        );
    }
    let input = crate::console::input_stats();
    println!(
        "  console input: {} bytes received, {} dropped, {} UART overruns, {}",
        input.received,
        input.dropped,
        input.overruns,
        if crate::console::input_is_polled() {
            "polled"
        } else {
            "interrupt-driven"
        }
    );
    println!("  domains: {} live", domain::live_count());
    if let Some(why) = NO_GUESTS.lock().as_deref() {
        println!("  guests: none can start: {why}");
    }
}

fn stats() {
    for d in domain::all() {
        let mut line = crate::StackString::<2048>::new();
        crate::stats::format_counts(
            &d.exits.snapshot(),
            crate::arch::x86_64::hvm::exit_name,
            &mut line,
        );
        println!("  d{} ({}): {}", d.id, d.name, line.as_str());
        let out = d.platform.console.out.stats();
        let suppressed = d.platform.console.out.log_suppressed();
        let mut dropped = crate::StackString::<80>::new();
        if out.dropped_units == 0 {
            let _ = write!(dropped, "nothing dropped");
        } else {
            let _ = write!(
                dropped,
                "{} lines ({} bytes) dropped unread",
                out.dropped_units, out.dropped_bytes
            );
        }
        println!(
            "  d{} console: {} bytes queued, {}, {} waiting; {suppressed} log lines suppressed",
            d.id,
            out.queued,
            dropped.as_str(),
            out.pending
        );
    }
    let (log, waits) = crate::console::log_stats();
    println!(
        "  basalt console: {} bytes queued, {} waiting, {} waits for room, {} lines dropped; {} UART interrupts",
        log.queued,
        log.pending,
        waits,
        log.dropped_units,
        crate::console::input_stats().interrupts
    );
}

fn sched_command(id: u32, weight: Option<u16>, cap: Option<u16>) {
    let Some(current) = sched::domain_params(id) else {
        no_domain(id);
        return;
    };
    if weight.is_some() || cap.is_some() {
        let new = DomainParams {
            weight: weight.unwrap_or(current.weight),
            cap: cap.unwrap_or(current.cap),
        };
        if let Err(e) = sched::set_params(id, new) {
            println!("d{id}: {e}");
            return;
        }
    }
    let p = sched::domain_params(id).unwrap_or(current);
    println!("d{id}: weight {} cap {}", p.weight, p.cap);
}
