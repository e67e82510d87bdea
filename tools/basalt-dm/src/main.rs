//! `basalt-dm --domain ID [--disk PATH[,ro]]... [--net TAP[,mac=MAC]]...
//! [--slot N]`: the device model of one Basalt guest, in dom0
//! (docs/toolstack.md, "basalt-dm"). It registers an ioreq server for the
//! guest (Xen's `dm_op`), claims a PCI function `0000:00:N.0` and its BAR
//! per device (slots N, N+1, ... in the order given), and serves the
//! guest's accesses to them (virtio-blk over a file, virtio-net over a tap)
//! until the guest is gone.

mod block;
mod ioreq;
mod net;
mod pci;
#[path = "../../basalt/src/privcmd.rs"]
#[allow(dead_code)]
mod privcmd;
mod virtio_pci;
mod xen;

use basalt_domctl::{self as dc, DomainState, Request};
use ioreq::{Access, Handler};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use virtio_pci::{BAR_SIZE, Device, Mem, Msi, VirtioPci};

/// The BAR of slot N, preset as firmware would, in the guest's hole
/// between its RAM (at most 3 GiB) and the I/O APIC at 0xFEC0_0000.
fn default_bar(slot: u8) -> u64 {
    0xe000_0000 + u64::from(slot) * 0x10_0000
}

/// A device on the command line.
#[derive(Debug, PartialEq, Eq)]
enum DevArg {
    Disk { path: String, readonly: bool },
    Net { tap: String, mac: Option<[u8; 6]> },
}

/// The command line.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    domain: u16,
    devices: Vec<DevArg>,
    /// The first device's slot.
    slot: u8,
}

const USAGE: &str =
    "usage: basalt-dm --domain ID [--disk PATH[,ro]]... [--net TAP[,mac=MAC]]... [--slot N]";

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut domain, mut devices, mut slot) = (None, Vec::new(), 4u8);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--domain" => {
                let v = value()?;
                domain = Some(match v.parse::<u16>() {
                    Ok(d) if d > 0 && d < 0x7ff0 => d,
                    _ => {
                        return Err(format!(
                            "--domain {v}: not a guest's domain id (`basalt list` shows them)"
                        ));
                    }
                });
            }
            "--disk" => {
                let v = value()?;
                let (path, readonly) = match v.strip_suffix(",ro") {
                    Some(p) => (p, true),
                    None => (v.as_str(), false),
                };
                if path.is_empty() {
                    return Err(format!("--disk names no file\n{USAGE}"));
                }
                devices.push(DevArg::Disk {
                    path: path.to_string(),
                    readonly,
                });
            }
            "--net" => {
                let v = value()?;
                let (tap, mac) = match v.split_once(",mac=") {
                    Some((t, m)) => (
                        t,
                        Some(net::parse_mac(m).ok_or_else(|| {
                            format!("--net {v}: {m} is not a unicast MAC (like 02:12:34:56:78:9a)")
                        })?),
                    ),
                    None => (v.as_str(), None),
                };
                if tap.is_empty() || tap.contains(',') {
                    return Err(format!(
                        "--net {v}: name a tap (TAP or TAP,mac=MAC)\n{USAGE}"
                    ));
                }
                devices.push(DevArg::Net {
                    tap: tap.to_string(),
                    mac,
                });
            }
            "--slot" => {
                let v = value()?;
                slot = match v.parse::<u8>() {
                    Ok(s) if (1..32).contains(&s) => s,
                    _ => {
                        return Err(format!(
                            "--slot {v}: a PCI device number from 1 to 31 (0 is the host bridge)"
                        ));
                    }
                };
            }
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    let domain = domain.ok_or_else(|| format!("--domain is missing\n{USAGE}"))?;
    if devices.is_empty() {
        return Err(format!(
            "no device: give --disk PATH or --net TAP (or both)\n{USAGE}"
        ));
    }
    if usize::from(slot) + devices.len() > 32 {
        return Err(format!(
            "--slot {slot}: {} devices from slot {slot} go past slot 31",
            devices.len()
        ));
    }
    Ok(Args {
        domain,
        devices,
        slot,
    })
}

/// What happened to the guest.
enum Guest {
    Alive { memory: u64, vcpus: u32 },
    Gone,
}

/// The guest's state, through Basalt's domain control (`getinfo`).
fn guest(
    privcmd: &privcmd::Privcmd,
    page: &mut privcmd::LockedPage,
    dom: u16,
) -> Result<Guest, String> {
    let n = dc::encode(u32::from(dom), &Request::GetInfo, page.bytes())
        .map_err(|e| format!("getinfo: {}", e.name()))?;
    match privcmd.hypercall(dc::HYPERCALL, [page.address(), n as u64, 0, 0, 0]) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(Guest::Gone),
        Err(e) => {
            return Err(format!(
                "domain control refused getinfo of domain {dom}: {e}"
            ));
        }
    }
    let info = dc::DomainInfo::decode(&page.bytes()[dc::HEADER_SIZE..])
        .ok_or("the hypervisor's getinfo reply is malformed")?;
    Ok(match info.state {
        DomainState::Dying | DomainState::Ended => Guest::Gone,
        _ => Guest::Alive {
            memory: info.memory,
            vcpus: info.vcpus,
        },
    })
}

/// MSIs through Xen's `inject_msi`.
struct XenMsi<'a> {
    privcmd: &'a privcmd::Privcmd,
    dom: u16,
}

impl Msi for XenMsi<'_> {
    fn inject(&mut self, addr: u64, data: u32) {
        let mut op = ioreq::inject_msi(addr, data);
        if let Err(e) = xen::dm_op(self.privcmd, self.dom, &mut op) {
            eprintln!("basalt-dm: inject_msi {addr:#x}/{data:#x}: {e}");
        }
    }
}

/// One PCI function.
struct Function {
    pci: VirtioPci<Box<dyn Device>>,
    sbdf: u32,
    /// The BAR range registered with the ioreq server.
    mapped: u64,
}

/// The guest's accesses, routed to the functions.
struct Server<'a> {
    fns: Vec<Function>,
    mem: &'a Mem,
    msi: XenMsi<'a>,
    id: u16,
}

impl Server<'_> {
    /// `[bar, bar + BAR_SIZE)` to or from the server.
    fn map_bar(&self, map: bool, bar: u64) -> std::io::Result<()> {
        let mut op = ioreq::io_range(map, self.id, ioreq::range::MEMORY, bar, bar + BAR_SIZE - 1);
        xen::dm_op(self.msi.privcmd, self.msi.dom, &mut op)
    }

    /// Follows function `i`'s BAR programming once the guest enables
    /// decoding.
    fn follow_bar(&mut self, i: usize) {
        let f = &self.fns[i];
        let (bar, old) = (f.pci.bar(), f.mapped);
        if bar == old || f.pci.config_read(4, 2) & 2 == 0 {
            return;
        }
        if let Err(e) = self
            .map_bar(false, old)
            .and_then(|()| self.map_bar(true, bar))
        {
            eprintln!("basalt-dm: moving the BAR from {old:#x} to {bar:#x}: {e}");
        }
        self.fns[i].mapped = bar;
    }
}

impl Handler for Server<'_> {
    fn access(&mut self, at: Access, size: u32, write: Option<u64>) -> u64 {
        match at {
            Access::PciConfig { sbdf, reg } => {
                let Some(i) = self.fns.iter().position(|f| f.sbdf == sbdf) else {
                    return u64::MAX;
                };
                match write {
                    None => u64::from(self.fns[i].pci.config_read(reg, size)),
                    Some(v) => {
                        self.fns[i]
                            .pci
                            .config_write(reg, size, v as u32, &mut self.msi);
                        self.follow_bar(i);
                        0
                    }
                }
            }
            Access::Mmio(a) => {
                let mem = self.mem;
                match self
                    .fns
                    .iter_mut()
                    .find(|f| a.wrapping_sub(f.pci.bar()) < BAR_SIZE)
                {
                    Some(f) => f.pci.mmio(a, size, write, mem, &mut self.msi),
                    None => u64::MAX,
                }
            }
            Access::Port(_) => u64::MAX,
        }
    }
}

fn dm_op(privcmd: &privcmd::Privcmd, dom: u16, what: &str, op: &mut [u8]) -> Result<(), String> {
    xen::dm_op(privcmd, dom, op).map_err(|e| {
        let fix = match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => {
                ": this hypervisor has no ioreq servers (docs/toolstack.md, slice 4)"
            }
            Some(libc::EPERM) => ": only the control domain may serve a guest's devices",
            _ => "",
        };
        format!("dm_op {what} for domain {dom}: {e}{fix}")
    })
}

/// The devices, each with a line describing it.
type Devices = Vec<(Box<dyn Device>, String)>;

/// Opens the backends.
fn open_devices(a: &Args) -> Result<Devices, String> {
    let mut out: Devices = Vec::new();
    for (i, d) in a.devices.iter().enumerate() {
        let slot = a.slot + i as u8;
        match d {
            DevArg::Disk { path, readonly } => {
                let file = block::open(path, *readonly).map_err(|e| {
                    format!(
                        "--disk {path}: {e}: name an existing file or block device{}",
                        if *readonly {
                            ""
                        } else {
                            " (add ,ro for a read-only one)"
                        }
                    )
                })?;
                let name = path.rsplit('/').next().unwrap_or("disk");
                let dev = block::Block::new(file, *readonly, name)
                    .map_err(|e| format!("--disk {path}: {e}"))?;
                let line = format!(
                    "virtio-blk {path}{} ({} sectors)",
                    if *readonly { " read-only" } else { "" },
                    dev.sectors()
                );
                out.push((Box::new(dev), line));
            }
            DevArg::Net { tap, mac } => {
                let file = xen::open_tap(tap).map_err(|e| format!("--net {tap}: {e}"))?;
                let mac = mac.unwrap_or_else(|| net::default_mac(a.domain, slot));
                let line = format!("virtio-net tap {tap} mac {}", net::mac_string(&mac));
                out.push((Box::new(net::Net::new(file, mac)), line));
            }
        }
    }
    Ok(out)
}

/// Serves until the guest is gone: `Ok(message)` then.
fn run(a: &Args) -> Result<String, String> {
    let privcmd = privcmd::Privcmd::open().map_err(|e| {
        format!(
            "cannot open {}: {e}: run basalt-dm as root in Basalt's dom0, with xen-privcmd loaded",
            privcmd::DEVICE
        )
    })?;
    let mut page = privcmd::LockedPage::new().map_err(|e| format!("mlock: {e}"))?;
    let dom = a.domain;
    let gone = || format!("domain {dom} is gone; basalt-dm ends");
    let Guest::Alive { memory, vcpus } = guest(&privcmd, &mut page, dom)? else {
        return Err(format!(
            "domain {dom} does not exist or is ending (`basalt list` shows the domains)"
        ));
    };
    let devs = open_devices(a)?;

    let mut op = ioreq::nr_vcpus();
    dm_op(&privcmd, dom, "nr_vcpus", &mut op)?;
    let nr = u32::from_le_bytes([op[8], op[9], op[10], op[11]]).min(vcpus.max(1));
    if nr as usize > ioreq::SLOTS {
        return Err(format!(
            "domain {dom} has {nr} vCPUs; one ioreq page serves {}",
            ioreq::SLOTS
        ));
    }
    let mut op = ioreq::create_server();
    dm_op(&privcmd, dom, "create_ioreq_server", &mut op)?;
    let id = ioreq::created_id(&op);
    let result = serve(a, &privcmd, &mut page, id, nr as usize, memory, devs);
    // The server goes with the domain anyway; a live guest loses it here.
    let _ = xen::dm_op(&privcmd, dom, &mut ioreq::destroy(id));
    match result {
        Ok(()) => Ok(gone()),
        Err(e) => match guest(&privcmd, &mut page, dom) {
            Ok(Guest::Gone) => Ok(gone()),
            _ => Err(e),
        },
    }
}

fn serve(
    a: &Args,
    privcmd: &privcmd::Privcmd,
    page: &mut privcmd::LockedPage,
    id: u16,
    nr: usize,
    memory: u64,
    devs: Devices,
) -> Result<(), String> {
    let dom = a.domain;
    let ioreq_page = xen::map_resource(privcmd, dom, 0, u32::from(id), 1, 1)
        .map_err(|e| format!("mapping ioreq server {id}'s page (MMAP_RESOURCE): {e}"))?;
    let slots = ioreq::Page::new(ioreq_page.words());
    let ram =
        xen::GuestRam::map(privcmd, dom, (memory / xen::PAGE as u64) as usize).map_err(|e| {
            format!(
                "mapping domain {dom}'s {} MiB of RAM (MMAPBATCH_V2): {e}",
                memory >> 20
            )
        })?;
    let mut evtchn = xen::Evtchn::open().map_err(|e| {
        format!("cannot open /dev/xen/evtchn: {e}: load xen-evtchn (modprobe xen-evtchn)")
    })?;
    let mut ports = Vec::with_capacity(nr);
    for v in 0..nr {
        let remote = slots.vp_eport(v);
        ports.push(
            evtchn
                .bind_interdomain(u32::from(dom), remote)
                .map_err(|e| {
                    format!("binding vCPU {v}'s event channel (domain {dom} port {remote}): {e}")
                })?,
        );
    }
    let mut server = Server {
        fns: Vec::new(),
        mem: ram.mem(),
        msi: XenMsi { privcmd, dom },
        id,
    };
    let mut lines = Vec::new();
    for (i, (dev, line)) in devs.into_iter().enumerate() {
        let slot = a.slot + i as u8;
        let (bar, sbdf) = (default_bar(slot), ioreq::sbdf(slot));
        let pci = format!("PCI 0000:00:{slot:02x}.0");
        dm_op(
            privcmd,
            dom,
            &format!("map {pci}"),
            &mut ioreq::io_range(
                true,
                id,
                ioreq::range::PCI,
                u64::from(sbdf),
                u64::from(sbdf),
            ),
        )?;
        server
            .map_bar(true, bar)
            .map_err(|e| format!("dm_op map of BAR {bar:#x}: {e}"))?;
        server.fns.push(Function {
            pci: VirtioPci::new(dev, bar),
            sbdf,
            mapped: bar,
        });
        lines.push(format!(
            "basalt-dm: domain {dom}: {line} at {pci}, BAR {bar:#x}, {nr} vCPU(s)"
        ));
    }
    dm_op(
        privcmd,
        dom,
        "set_ioreq_server_state",
        &mut ioreq::set_state(id, true),
    )?;
    for l in lines {
        eprintln!("{l}");
    }
    let mut checked = Instant::now();
    loop {
        // The event channels, and the backends that take input now (a tap
        // whose guest has receive buffers).
        let mut fds = vec![evtchn.fd()];
        let mut inputs = Vec::new();
        for (i, f) in server.fns.iter().enumerate() {
            if let Some(fd) = f.pci.input_fd(ram.mem()) {
                fds.push(fd);
                inputs.push(i);
            }
        }
        let ready = xen::poll(&fds, 1000).map_err(|e| format!("poll: {e}"))?;
        let fired = if ready[0] {
            evtchn
                .fired()
                .map_err(|e| format!("/dev/xen/evtchn: {e}"))?
        } else {
            Vec::new()
        };
        // Every slot is looked at on every wake-up: a lost event costs at
        // most the one-second timeout.
        for (v, &port) in ports.iter().enumerate() {
            if slots.serve(v, ram.mem(), &mut server) {
                evtchn
                    .notify(port)
                    .map_err(|e| format!("notify port {port}: {e}"))?;
            }
        }
        for (k, &i) in inputs.iter().enumerate() {
            if ready[k + 1] {
                server.fns[i].pci.input(ram.mem(), &mut server.msi);
            }
        }
        if !fired.is_empty() {
            evtchn
                .unmask(&fired)
                .map_err(|e| format!("/dev/xen/evtchn unmask: {e}"))?;
        }
        // Once a second, busy or not: is the guest still there?
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            if let Guest::Gone = guest(privcmd, page, dom)? {
                return Ok(());
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|a| run(&a));
    match result {
        Ok(msg) => {
            println!("basalt-dm: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("basalt-dm: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
