//! A VM's device model (docs/toolstack.md, "basalt-dm"): basaltd starts `basalt-dm` for a VM
//! that has disks or network interfaces after its domain is built and before its vCPUs run
//! (each interface's tap `vifD.I` on dom0's bridge first, by `net-up`), and waits until the
//! device model says it serves (its line `basalt-dm: domain ID: …`); a device model that fails
//! to start fails the start (its own message is the error), one that does not answer within
//! [`READY`] is killed. Afterwards a thread passes its lines on to basaltd's output and reports
//! its end: a device model that dies while its guest runs is said at once; the guest's next
//! access to the device then ends it (ring 0's ioreq timeout), and `on_crash` applies.

use crate::vmdef::VmDef;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Where dom0's image installs it.
pub const BASALT_DM: &str = "/usr/sbin/basalt-dm";
/// Makes a tap on dom0's bridge (and the bridge and its DHCP server, once).
pub const NET_UP: &str = "/usr/lib/basalt/net-up";

/// The tap of domain `id`'s interface `index` (Xen's name).
pub fn tap(id: u32, index: usize) -> String {
    format!("vif{id}.{index}")
}
/// How long a device model may take to serve.
const READY: Duration = Duration::from_secs(20);

/// `basalt-dm`'s arguments for `def`'s domain `id`.
pub fn args(def: &VmDef, id: u32) -> Vec<String> {
    let mut a = vec!["--domain".to_string(), id.to_string()];
    for d in &def.disks {
        a.push("--disk".into());
        a.push(if d.readonly {
            format!("{},ro", d.path)
        } else {
            d.path.clone()
        });
    }
    for (i, m) in def.nets.iter().enumerate() {
        let mac: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
        a.push("--net".into());
        a.push(format!("{},mac={}", tap(id, i), mac.join(":")));
    }
    a
}

/// Removes domain `id`'s taps (its device model has ended).
fn remove_taps(id: u32, count: usize) {
    for i in 0..count {
        let _ = Command::new("tunctl")
            .args(["-d", &tap(id, i)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `line` of a device model for domain `id` says it serves.
pub fn says_ready(line: &str, id: u32) -> bool {
    line.starts_with(&format!("basalt-dm: domain {id}: "))
}

/// Starts `def`'s device model for domain `id` (none without disks) and waits until it
/// serves.
pub fn start(def: &VmDef, id: u32) -> Result<(), String> {
    if def.disks.is_empty() && def.nets.is_empty() {
        return Ok(());
    }
    for i in 0..def.nets.len() {
        let out = Command::new(NET_UP)
            .arg(tap(id, i))
            .output()
            .map_err(|e| format!("cannot run {NET_UP}: {e} (dom0's image installs it)"))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("basaltd: VM {}: {line}", def.name);
        }
        if !out.status.success() {
            remove_taps(id, i);
            return Err(format!(
                "{NET_UP} {} failed ({}): {}",
                tap(id, i),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    // Its standard output and error, in one pipe.
    let (reader, writer) = std::io::pipe().map_err(|e| format!("a pipe: {e}"))?;
    let out = writer.try_clone().map_err(|e| format!("a pipe: {e}"))?;
    let mut child = Command::new(BASALT_DM)
        .args(args(def, id))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(writer)
        .spawn()
        .map_err(|e| {
            remove_taps(id, def.nets.len());
            format!("cannot run {BASALT_DM}: {e} (dom0's image installs it)")
        })?;
    let (tx, rx) = mpsc::channel();
    let name = def.name.clone();
    let pid = child.id();
    // Its output, line by line, to the waiting start and then to basaltd's output.
    std::thread::spawn(move || {
        let mut waiting = Some(tx);
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            match &waiting {
                Some(tx) if says_ready(&line, id) => {
                    println!("basaltd: VM {name}: {line}");
                    let _ = tx.send(Ok(()));
                    waiting = None;
                }
                Some(tx) => {
                    let _ = tx.send(Err(line));
                }
                None => println!("basaltd: VM {name}: {line}"),
            }
        }
    });
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(READY) {
            Ok(Ok(())) => break,
            Ok(Err(line)) => said.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_or("?".into(), |s| s.to_string());
                remove_taps(id, def.nets.len());
                return Err(format!(
                    "its device model failed ({status}): {}",
                    said.join("; ")
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                remove_taps(id, def.nets.len());
                return Err(format!(
                    "its device model (pid {pid}) did not serve within {} s; killed",
                    READY.as_secs()
                ));
            }
        }
    }
    let (name, taps) = (def.name.clone(), def.nets.len());
    std::thread::spawn(move || reap(child, name, id, taps));
    Ok(())
}

/// Waits for the device model's end, says how it ended, and removes the domain's taps.
fn reap(mut child: Child, name: String, id: u32, taps: usize) {
    let pid = child.id();
    let status = child.wait();
    remove_taps(id, taps);
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!(
            "basaltd: VM {name}: its device model (pid {pid}) ended ({s}) while domain {id} may \
             still run: the guest's next access to its devices ends it after 5 s"
        ),
        Err(e) => println!("basaltd: VM {name}: waiting for its device model (pid {pid}): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmdef::{Disk, OnEnd};

    #[test]
    fn arguments_and_readiness() {
        let def = VmDef {
            name: "w".into(),
            memory: 64 << 20,
            vcpus: 1,
            weight: 256,
            cap: 0,
            affinity: 0,
            kernel: ("/k".into(), 1),
            initrd: None,
            cmdline: String::new(),
            xen: false,
            on_end: [OnEnd::Destroy; 3],
            disks: vec![
                Disk {
                    path: "/a.img".into(),
                    readonly: false,
                },
                Disk {
                    path: "/b.iso".into(),
                    readonly: true,
                },
            ],
            nets: vec![[2, 0xba, 1, 2, 3, 0]],
        };
        assert_eq!(
            args(&def, 7),
            [
                "--domain",
                "7",
                "--disk",
                "/a.img",
                "--disk",
                "/b.iso,ro",
                "--net",
                "vif7.0,mac=02:ba:01:02:03:00"
            ]
        );
        assert!(says_ready("basalt-dm: domain 7: virtio-blk /a.img", 7));
        assert!(!says_ready("basalt-dm: domain 17: virtio-blk /a.img", 7));
        assert!(!says_ready("basalt-dm: --disk /a.img: No such file", 7));
    }
}
