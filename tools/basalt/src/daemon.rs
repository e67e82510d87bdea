//! `basaltd`, the toolstack's daemon (docs/toolstack.md, "Processes"): the
//! same executable as `basalt`, run under the name `basaltd` (dom0's
//! `/usr/sbin/basaltd` links to `basalt`). It owns the VM definitions and
//! their state ([`crate::store`]) and answers [`crate::proto`] requests on
//! [`SOCKET`], one thread per connection; the store is changed under one
//! lock. On start it reads every definition and asks ring 0 which domains
//! exist: a VM whose domain is gone is stopped. A thread looks every
//! [`WATCH`] for VMs whose domain ended and does what their definition's
//! `on_poweroff`, `on_reboot` or `on_crash` says ([`Daemon::settle`]).

use crate::proto::{self, Answer, Op, Reply, Vm};
use crate::store::{self, Store};
use crate::{Hypervisor, vmdef};
use basalt_domctl::{self as dc, DomainInfo, Request};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the daemon listens (mode 0600: root only).
pub const SOCKET: &str = "/run/basalt/basalt.sock";

/// How often the daemon looks for VMs whose domain ended.
const WATCH: Duration = Duration::from_millis(500);
/// A VM that ends again this soon after basaltd restarted it is not restarted (a guest
/// that cannot boot would be started for ever).
const RESTART_SPACING: Duration = Duration::from_secs(10);

struct Daemon {
    store: Store,
    /// Held while the store is read and changed.
    lock: Mutex<()>,
    /// When basaltd last restarted each VM (by name).
    restarted: Mutex<std::collections::HashMap<String, Instant>>,
}

/// What an ended domain's record says: the end code ([`dc::end`]) and the word for it; `None`
/// while it is still ending: dying, or gone from the list but not yet recorded (ring 0 records
/// an end once the domain's memory is back, which waits for the device model's mappings of
/// it to go).
fn end_of(hv: &mut Hypervisor, id: u32) -> Option<(u32, &'static str)> {
    let info = hv
        .call(id, &Request::GetInfo)
        .ok()
        .and_then(|(_, reply)| DomainInfo::decode(&reply))?;
    if info.state != dc::DomainState::Ended {
        return None;
    }
    let code = (info.flags >> dc::info_flags::END_SHIFT) & 7;
    Some(match code {
        dc::end::POWEROFF => (code, "powered off"),
        dc::end::REBOOT => (code, "rebooted"),
        dc::end::CRASH => (code, "crashed"),
        _ => (dc::end::DESTROYED, "was destroyed"),
    })
}

/// Whether VM `name`, last known as domain `id`, still runs: a domain of
/// that id and name exists and is not ending.
fn live(domains: &[DomainInfo], name: &str, id: u32) -> bool {
    domains
        .iter()
        .any(|d| d.id == id && d.name.as_str() == name && d.state != dc::DomainState::Dying)
}

/// `name` if it can be a VM's (and so a file's) name.
fn vm_name(name: &str) -> Result<&str, String> {
    dc::Name::new(name)
        .filter(dc::Name::is_valid_new)
        .map(|_| name)
        .ok_or_else(|| format!("{name:?} is not a VM name (1 to 31 of A-Z a-z 0-9 - _ .)"))
}

impl Daemon {
    fn locked(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// VM `name`'s domain when it runs. A VM whose domain ended is settled
    /// ([`Self::settle`]): stopped, or running again as a new domain.
    fn status(&self, domains: &[DomainInfo], name: &str) -> Result<Option<u32>, String> {
        match self.store.state(name) {
            Some(id) if live(domains, name, id) => Ok(Some(id)),
            Some(id) => self.settle(name, id),
            None => Ok(None),
        }
    }

    /// VM `name`'s domain `id` ended (or is ending: then nothing yet): what its definition's
    /// `on_*` key for how it ended says is done, and said on basaltd's output. Called with
    /// the store's lock held.
    fn settle(&self, name: &str, id: u32) -> Result<Option<u32>, String> {
        let mut hv = Hypervisor::open()?;
        let Some((code, how)) = end_of(&mut hv, id) else {
            return Ok(None);
        };
        self.store.set_state(name, None)?;
        let (def, file) = self.definition(name)?;
        let action = match code {
            dc::end::POWEROFF => def.on_end[0],
            dc::end::REBOOT => def.on_end[1],
            dc::end::CRASH => def.on_end[2],
            _ => vmdef::OnEnd::Destroy,
        };
        let mut restarted = self.restarted.lock().unwrap_or_else(|p| p.into_inner());
        let recent = restarted
            .get(name)
            .is_some_and(|t| t.elapsed() < RESTART_SPACING);
        if action == vmdef::OnEnd::Destroy || recent {
            let why = if recent {
                format!(
                    "; not restarted: it ended within {} s of its last restart (`basalt start \
                     {name}` runs it)",
                    RESTART_SPACING.as_secs()
                )
            } else {
                String::new()
            };
            println!("basaltd: VM {name} (domain {id}) {how}: stopped{why}");
            return Ok(None);
        }
        match self.start(&def, &file) {
            Ok(_) => {
                restarted.insert(name.to_string(), Instant::now());
                let new = self.store.state(name);
                println!(
                    "basaltd: VM {name} (domain {id}) {how}: started again as domain {}",
                    new.map_or("?".into(), |n| n.to_string())
                );
                Ok(new)
            }
            Err(e) => {
                println!("basaltd: VM {name} (domain {id}) {how}: it could not start again: {e}");
                Ok(None)
            }
        }
    }

    /// Settles every VM whose domain ended (the watcher thread's turn).
    fn watch(&self) -> Result<(), String> {
        let _held = self.locked();
        let domains = Hypervisor::open()?.list()?;
        for name in self.store.names()? {
            self.status(&domains, &name)?;
        }
        Ok(())
    }

    /// The stored definition of `name`, parsed, and the file it is in.
    fn definition(&self, name: &str) -> Result<(vmdef::VmDef, String), String> {
        let text = self.store.definition(vm_name(name)?)?.ok_or_else(|| {
            format!(
                "no VM named {name:?} (`basalt list` shows them; `basalt create FILE` defines \
                 and starts one)"
            )
        })?;
        let file = self.store.definition_path(name).display().to_string();
        Ok((vmdef::parse(&file, &text)?, file))
    }

    /// Builds and starts `def`'s domain and records it; a domain that
    /// cannot be recorded is destroyed again.
    fn start(&self, def: &vmdef::VmDef, file: &str) -> Result<Answer, String> {
        let (id, message) =
            crate::create_with(def, Some(file), |id| crate::devices::start(def, id))?;
        if let Err(e) = self.store.set_state(&def.name, Some(id)) {
            let _ = Hypervisor::open().and_then(|mut hv| hv.call(id, &Request::Destroy));
            return Err(format!("{e}; domain {id} destroyed again"));
        }
        Ok(Answer {
            message,
            vms: vec![],
        })
    }

    fn handle(&self, op: Op) -> Result<Answer, String> {
        let said = |message: String| Answer {
            message,
            vms: vec![],
        };
        match op {
            Op::Define { file, toml, start } => {
                let _held = self.locked();
                let def = vmdef::parse(&file, &toml)?;
                if self.store.definition(&def.name)?.is_some() {
                    return Err(format!(
                        "a VM named {:?} is defined already (`basalt list`): choose another \
                         name, or `basalt undefine {}` first",
                        def.name, def.name
                    ));
                }
                self.store.define(&def.name, &toml)?;
                if !start {
                    return Ok(said(format!(
                        "VM {} defined, stopped (`basalt start {}` runs it)",
                        def.name, def.name
                    )));
                }
                // A create that fails leaves nothing behind (invariant 2).
                self.start(&def, &file).inspect_err(|_| {
                    let _ = self.store.remove(&def.name);
                })
            }
            Op::Start { name } => {
                let _held = self.locked();
                let (def, file) = self.definition(&name)?;
                if let Some(id) = self.status(&Hypervisor::open()?.list()?, &name)? {
                    return Err(format!(
                        "VM {name} runs already as domain {id} (`basalt shutdown {name}` stops it)"
                    ));
                }
                self.start(&def, &file)
            }
            Op::Shutdown { name, wait_s } => {
                let mut hv = Hypervisor::open()?;
                let id = {
                    let _held = self.locked();
                    self.definition(&name)?;
                    let id = self
                        .status(&hv.list()?, &name)?
                        .ok_or_else(|| format!("VM {name} is stopped already"))?;
                    hv.call(
                        id,
                        &Request::Shutdown {
                            reason: dc::shutdown::POWEROFF,
                        },
                    )?;
                    id
                };
                // Waiting holds no lock: other commands go on meanwhile.
                let until = Instant::now() + Duration::from_secs(wait_s.into());
                loop {
                    if !live(&hv.list()?, &name, id) {
                        let _held = self.locked();
                        self.status(&hv.list()?, &name)?;
                        return Ok(said(format!("VM {name} (domain {id}) powered off")));
                    }
                    if Instant::now() >= until {
                        return Err(format!(
                            "VM {name} (domain {id}): its power button was pressed but it has \
                             not ended after {wait_s} s (its guest may ignore the button): \
                             `basalt destroy {name}` ends it at once"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Op::Destroy { name } => {
                let _held = self.locked();
                self.definition(&name)?;
                let mut hv = Hypervisor::open()?;
                let id = self
                    .status(&hv.list()?, &name)?
                    .ok_or_else(|| format!("VM {name} is stopped already"))?;
                hv.call(id, &Request::Destroy)?;
                self.store.set_state(&name, None)?;
                Ok(said(format!("VM {name} (domain {id}) destroyed")))
            }
            Op::Info { name } => {
                let _held = self.locked();
                self.definition(&name)?;
                let text = self.store.definition(&name)?.unwrap_or_default();
                let domain = self.status(&Hypervisor::open()?.list()?, &name)?;
                Ok(Answer {
                    message: text,
                    vms: vec![Vm { name, domain }],
                })
            }
            Op::List => {
                let _held = self.locked();
                let domains = Hypervisor::open()?.list()?;
                let mut vms = Vec::new();
                for name in self.store.names()? {
                    let domain = self.status(&domains, &name)?;
                    vms.push(Vm { name, domain });
                }
                Ok(Answer {
                    message: String::new(),
                    vms,
                })
            }
            Op::Undefine { name } => {
                let _held = self.locked();
                self.definition(&name)?;
                if let Some(id) = self.status(&Hypervisor::open()?.list()?, &name)? {
                    return Err(format!(
                        "VM {name} runs as domain {id}: `basalt shutdown {name}` (or destroy) \
                         first"
                    ));
                }
                self.store.remove(&name)?;
                Ok(said(format!("VM {name} undefined")))
            }
        }
    }

    /// Answers one connection's requests, a line each, until it closes.
    fn serve(&self, stream: UnixStream) {
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let reply = Reply::new(proto::decode_request(&line).and_then(|r| self.handle(r.op)));
            if out.write_all(proto::encode(&reply).as_bytes()).is_err() {
                return;
            }
        }
    }
}

/// `basaltd`: rebuilds its view from the store and ring 0, then serves.
pub fn run() -> Result<(), String> {
    let daemon = Arc::new(Daemon {
        store: Store::open(Path::new(store::DIR))?,
        lock: Mutex::new(()),
        restarted: Mutex::new(Default::default()),
    });
    let domains = Hypervisor::open()?.list()?;
    let mut seen = Vec::new();
    for name in daemon.store.names()? {
        seen.push(match daemon.status(&domains, &name)? {
            Some(id) => format!("{name} running as domain {id}"),
            None => format!("{name} stopped"),
        });
    }
    let socket = Path::new(SOCKET);
    if UnixStream::connect(socket).is_ok() {
        return Err(format!("another basaltd answers on {SOCKET}"));
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // A killed daemon leaves its socket behind.
    let _ = std::fs::remove_file(socket);
    // SAFETY: umask only sets this process's file-creation mask: the socket
    // is made root-only (then 0600), with no window of a wider mode.
    unsafe { libc::umask(0o077) };
    let listener = UnixListener::bind(socket).map_err(|e| format!("{SOCKET}: {e}"))?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{SOCKET}: {e}"))?;
    if seen.is_empty() {
        seen.push("none".into());
    }
    println!(
        "basaltd: listening on {SOCKET}; stored VMs: {}",
        seen.join(", ")
    );
    let watcher = Arc::clone(&daemon);
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(WATCH);
            if let Err(e) = watcher.watch() {
                println!("basaltd: looking for ended VMs: {e}");
            }
        }
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let daemon = Arc::clone(&daemon);
        std::thread::spawn(move || daemon.serve(stream));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
