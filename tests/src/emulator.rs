//! Emulator command lines, shared by `cargo xtask run` and the test harness
//! (facts in `../shared/reference/platform-facts.md` §3–4).

use serde::Deserialize;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// Which emulator boots the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Emulator {
    /// QEMU with TCG: fast, no VMX (it emulates AMD SVM).
    Qemu,
    /// Bochs: slow, emulates VMX with EPT.
    Bochs,
    /// QEMU on KVM with nested VMX: Intel hosts only.
    Kvm,
}

impl Emulator {
    /// Parses `qemu`, `bochs` or `kvm`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "qemu" => Ok(Self::Qemu),
            "bochs" => Ok(Self::Bochs),
            "kvm" => Ok(Self::Kvm),
            _ => Err(format!(
                "unknown emulator {text:?}: expected qemu, bochs or kvm"
            )),
        }
    }

    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "qemu",
            Self::Bochs => "bochs",
            Self::Kvm => "kvm",
        }
    }
}

/// The machine's firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// The emulator's BIOS (SeaBIOS under QEMU, Bochs' own BIOS).
    #[default]
    Bios,
    /// UEFI: Debian's OVMF under QEMU ([`OVMF_CODE`]); QEMU and KVM only.
    Ovmf,
}

/// OVMF's code, read-only (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
/// OVMF's variable store template; each run writes to a throw-away copy
/// (QEMU's `snapshot=on`).
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// The virtual machine that boots Basalt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// The emulator.
    pub emulator: Emulator,
    /// The emulator's CPU model; `None` for the default: QEMU `max`, KVM
    /// `host,+vmx` ([`kvm_cpu`] picks the host's vendor), Bochs
    /// [`BOCHS_CPU`] (VT-x). `EPYC` or `qemu64,+svm,+npt` under QEMU and
    /// `ryzen` under Bochs offer AMD SVM.
    pub cpu: Option<&'static str>,
    /// Number of CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Bochs only: instructions per emulated second ([`BOCHS_IPS`] unless
    /// a scenario or `--ips` says otherwise). The guest's TSC counts one
    /// tick per instruction, so this is the CPU speed guests see.
    pub ips: u64,
    /// BIOS or UEFI.
    pub firmware: Firmware,
    /// QEMU: how often the machine may reset and boot again (0: `-no-reboot`,
    /// QEMU ends at a reset; the harness counts the boots, tests/src/runner.rs).
    pub reboots: u32,
}

/// Where the emulated COM1 goes.
#[derive(Debug, Clone, Copy)]
pub enum Serial<'a> {
    /// Into a file (scenarios without steps).
    File(&'a Path),
    /// The terminal, both ways (`xtask run` under QEMU; under Bochs it uses
    /// a pseudo-terminal, [`Serial::Tty`]).
    Stdio,
    /// A TCP server on `127.0.0.1` at this port that waits for one client
    /// before the machine starts; the test harness connects and carries COM1
    /// both ways (QEMU scenarios with `steps`).
    Tcp(u16),
    /// A terminal device, e.g. the slave end of a pseudo-terminal the test
    /// harness holds (Bochs scenarios with `steps`).
    Tty(&'a Path),
}

/// Bochs' default CPU model: VT-x with EPT, VPID, unrestricted guest and the
/// preemption timer (platform facts §3).
pub const BOCHS_CPU: &str = "corei7_skylake_x";

/// Instructions per emulated second under Bochs. Low values boot faster: the
/// BIOS's delays and the serial line run in emulated time (platform facts §3).
pub const BOCHS_IPS: u64 = 4_000_000;

/// QEMU's arguments for `machine`.
pub fn qemu_args(machine: &Machine, iso: &Path, serial: Serial<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-machine".into(),
        "pc".into(),
        "-smp".into(),
        machine.cpus.to_string(),
        "-m".into(),
        format!("{}M", machine.memory_mib),
        "-cdrom".into(),
        iso.display().to_string(),
        "-boot".into(),
        "d".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-device".into(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".into(),
    ];
    if machine.reboots == 0 {
        args.push("-no-reboot".into());
    }
    if machine.firmware == Firmware::Ovmf {
        args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,snapshot=on,file={OVMF_VARS}"),
        ]);
    }
    match serial {
        Serial::File(path) => args.extend(["-serial".into(), format!("file:{}", path.display())]),
        Serial::Stdio => args.extend(["-serial".into(), "stdio".into()]),
        Serial::Tty(path) => args.extend(["-serial".into(), path.display().to_string()]),
        Serial::Tcp(port) => args.extend([
            "-chardev".into(),
            format!("socket,id=com1,host=127.0.0.1,port={port},server=on,wait=on"),
            "-serial".into(),
            "chardev:com1".into(),
        ]),
    }
    let (accel, cpu) = match machine.emulator {
        Emulator::Kvm => ("kvm", machine.cpu.unwrap_or("host,+vmx")),
        _ => ("tcg", machine.cpu.unwrap_or("max")),
    };
    args.extend(["-accel".into(), accel.into(), "-cpu".into(), cpu.into()]);
    args
}

/// A Bochs configuration file for `machine`, COM1 into `serial_log`.
pub fn bochs_config(machine: &Machine, iso: &Path, serial_log: &Path, bochs_log: &Path) -> String {
    bochs_config_serial(machine, iso, Serial::File(serial_log), bochs_log)
}

/// A Bochs configuration file for `machine` with COM1 on `serial`:
/// [`Serial::Tty`] is Bochs' `mode=term` on that device; [`Serial::Stdio`]
/// leaves COM1 unconnected. With [`Serial::Tcp`] Bochs waits for the client
/// before it starts the machine (`com1: waiting for client to connect` on its
/// standard output), but in that mode a byte that arrives while Bochs 2.7 is
/// sending one stops its transmitter for good: the harness uses a
/// pseudo-terminal instead.
pub fn bochs_config_serial(
    machine: &Machine,
    iso: &Path,
    serial: Serial<'_>,
    bochs_log: &Path,
) -> String {
    let mut cfg = String::new();
    // `megs` stops at 2048; larger guests get host memory on demand.
    if machine.memory_mib <= 2048 {
        let _ = writeln!(cfg, "megs: {}", machine.memory_mib);
    } else {
        let _ = writeln!(cfg, "memory: guest={}, host=2048", machine.memory_mib);
    }
    let _ = writeln!(
        cfg,
        "cpu: model={}, count={}, ips={}, reset_on_triple_fault=0",
        machine.cpu.unwrap_or(BOCHS_CPU),
        machine.cpus,
        machine.ips
    );
    cfg.push_str(
        "romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/vgabios/vgabios.bin\n",
    );
    let _ = writeln!(
        cfg,
        "ata0-master: type=cdrom, path={}, status=inserted",
        iso.display()
    );
    cfg.push_str("boot: cdrom\n");
    let _ = match serial {
        Serial::File(path) => writeln!(cfg, "com1: enabled=1, mode=file, dev={}", path.display()),
        Serial::Tcp(port) => writeln!(
            cfg,
            "com1: enabled=1, mode=socket-server, dev=127.0.0.1:{port}"
        ),
        Serial::Tty(path) => writeln!(cfg, "com1: enabled=1, mode=term, dev={}", path.display()),
        Serial::Stdio => writeln!(cfg, "com1: enabled=1, mode=null"),
    };
    let _ = writeln!(cfg, "log: {}", bochs_log.display());
    // Headless without a listener (platform facts §3): SDL2 with the dummy
    // video driver; the dummy sound driver avoids an abort at start.
    cfg.push_str(
        "display_library: sdl2\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         mouse: enabled=0\n\
         clock: sync=none, time0=local\n\
         port_e9_hack: enabled=1\n\
         info: action=report, cpu0=ignore\n\
         debug: action=ignore\n\
         error: action=report\n\
         panic: action=fatal\n",
    );
    cfg
}

/// Devices a scenario adds to the machine (docs/testing.md, "Disk and
/// network").
#[derive(Debug, Clone, Copy, Default)]
pub struct Devices<'a> {
    /// A raw disk image: the first IDE disk (QEMU's primary master, the CD
    /// being the secondary master; Bochs' `ata0-slave` beside the CD), so
    /// `/dev/sda` for Linux.
    pub disk: Option<&'a Path>,
    /// An e1000 network card on the emulator's user-mode network (QEMU
    /// `-netdev user`, Bochs `ethmod=slirp`): DHCP gives 10.0.2.15, the
    /// host's loopback is 10.0.2.2.
    pub network: bool,
}

/// The bytes of a Bochs disk cylinder with its default 16 heads and 63
/// sectors: a flat image Bochs sizes by itself is a whole number of them.
pub const DISK_CYLINDER: u64 = 16 * 63 * 512;

/// QEMU's arguments for `devices` (after [`qemu_args`]).
pub fn qemu_device_args(devices: &Devices<'_>) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(disk) = devices.disk {
        args.extend([
            "-drive".into(),
            format!("file={},if=ide,index=0,format=raw", disk.display()),
        ]);
    }
    if devices.network {
        args.extend([
            "-netdev".into(),
            "user,id=n0".into(),
            "-device".into(),
            "e1000,netdev=n0".into(),
        ]);
    }
    args
}

/// Bochs configuration lines for `devices` (after [`bochs_config_serial`]).
pub fn bochs_device_config(devices: &Devices<'_>) -> String {
    let mut cfg = String::new();
    if let Some(disk) = devices.disk {
        let _ = writeln!(
            cfg,
            "ata0-slave: type=disk, path={}, mode=flat",
            disk.display()
        );
    }
    if devices.network {
        cfg.push_str(
            "pci: enabled=1, chipset=i440fx, slot1=e1000\n\
             e1000: enabled=1, mac=52:54:00:12:34:56, ethmod=slirp\n",
        );
    }
    cfg
}

/// The debugger script that makes Bochs run without stopping at its prompt.
pub const BOCHS_RC: &str = "continue\nquit\n";

/// The `-cpu` of `--emulator kvm` on this host: `host,+vmx` on an Intel
/// host with nested VT-x, `host,+svm` on an AMD host with nested SVM; or why
/// KVM cannot give Basalt either (naming the cause and the fix).
pub fn kvm_cpu() -> Result<&'static str, String> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let kvm_rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    kvm_check(&KvmHost {
        cpuinfo: &read("/proc/cpuinfo").unwrap_or_default(),
        kvm_rw,
        nested_intel: read("/sys/module/kvm_intel/parameters/nested").as_deref(),
        nested_amd: read("/sys/module/kvm_amd/parameters/nested").as_deref(),
    })
}

/// What [`kvm_check`] looks at on the host.
#[derive(Debug, Clone, Copy)]
pub struct KvmHost<'a> {
    /// `/proc/cpuinfo`.
    pub cpuinfo: &'a str,
    /// Whether `/dev/kvm` opens read-write.
    pub kvm_rw: bool,
    /// `/sys/module/kvm_intel/parameters/nested`, if that module is loaded.
    pub nested_intel: Option<&'a str>,
    /// `/sys/module/kvm_amd/parameters/nested`, if that module is loaded.
    pub nested_amd: Option<&'a str>,
}

/// [`kvm_cpu`] on given host facts (pure). The vendor comes from the CPU
/// flags, not from `/dev/kvm` (which exists on hosts where it cannot run
/// ordinary guests, platform facts §1).
pub fn kvm_check(host: &KvmHost<'_>) -> Result<&'static str, String> {
    let has_flag = |flag: &str| {
        host.cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|w| w == flag))
    };
    let (cpu, module, nested) = if has_flag("vmx") {
        ("host,+vmx", "kvm_intel", host.nested_intel)
    } else if has_flag("svm") {
        ("host,+svm", "kvm_amd", host.nested_amd)
    } else {
        return Err(
            "this host's CPU shows neither `vmx` nor `svm` in /proc/cpuinfo, so KVM cannot \
             give Basalt VT-x or AMD-V (virtualization disabled in firmware, or a VM without \
             nested virtualization). Enable it in the firmware or the outer hypervisor, or use \
             `--emulator bochs` (VT-x) or `--emulator qemu` (AMD SVM under TCG)"
                .into(),
        );
    };
    if !host.kvm_rw {
        return Err(format!(
            "/dev/kvm cannot be opened read-write: load {module} and add yourself to the \
             `kvm` group"
        ));
    }
    if !matches!(nested.map(str::trim), Some("Y" | "y" | "1")) {
        return Err(format!(
            "{module}'s nested virtualization is off: run \
             `sudo modprobe -r {module} && sudo modprobe {module} nested=1` \
             (and add `options {module} nested=1` to /etc/modprobe.d/ to keep it)"
        ));
    }
    Ok(cpu)
}

/// The command that boots `iso` on `machine`. For Bochs, `config` is the path
/// of the configuration file written from [`bochs_config`] and `rc` the path
/// of a file holding [`BOCHS_RC`].
pub fn command(
    machine: &Machine,
    iso: &Path,
    serial: Serial<'_>,
    bochs_files: Option<(&Path, &Path)>,
) -> Command {
    match (machine.emulator, bochs_files) {
        (Emulator::Bochs, Some((config, rc))) => {
            let mut cmd = Command::new("bochs-bin");
            cmd.arg("-q").arg("-f").arg(config).arg("-rc").arg(rc);
            cmd.env("SDL_VIDEODRIVER", "dummy");
            cmd
        }
        _ => {
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(qemu_args(machine, iso, serial));
            cmd
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_args_carry_the_machine() {
        let m = Machine {
            emulator: Emulator::Qemu,
            cpu: None,
            cpus: 4,
            memory_mib: 4096,
            ips: BOCHS_IPS,
            firmware: Firmware::Bios,
            reboots: 0,
        };
        let args = qemu_args(&m, Path::new("/x.iso"), Serial::File(Path::new("/s.log")));
        let joined = args.join(" ");
        assert!(joined.contains("-smp 4 -m 4096M -cdrom /x.iso"));
        assert!(joined.contains("-serial file:/s.log"));
        assert!(joined.contains("isa-debug-exit,iobase=0xf4"));
        assert_eq!(args.iter().filter(|a| *a == "-no-reboot").count(), 1);
        // A scenario with `reboots`: QEMU resets the machine and goes on.
        let rebooting = Machine { reboots: 1, ..m };
        let again = qemu_args(&rebooting, Path::new("/x.iso"), Serial::Tcp(4321));
        assert!(!again.iter().any(|a| a == "-no-reboot"));
        assert_eq!(again.len(), args.len() - 1 + 2, "only -no-reboot goes");
        assert!(joined.contains("-accel tcg"));
        assert!(!joined.contains("-chardev"));
        let tcp = qemu_args(&m, Path::new("/x.iso"), Serial::Tcp(4321)).join(" ");
        assert!(tcp.contains(
            "-chardev socket,id=com1,host=127.0.0.1,port=4321,server=on,wait=on \
             -serial chardev:com1"
        ));
        assert_eq!(tcp.matches("-serial").count(), 1);
        assert!(!joined.contains("pflash"));
        let uefi = Machine {
            firmware: Firmware::Ovmf,
            ..m
        };
        let uefi = qemu_args(&uefi, Path::new("/x.iso"), Serial::Stdio).join(" ");
        assert!(uefi.contains(&format!("unit=0,readonly=on,file={OVMF_CODE}")));
        assert!(uefi.contains(&format!("unit=1,snapshot=on,file={OVMF_VARS}")));
        let kvm = Machine {
            emulator: Emulator::Kvm,
            ..m
        };
        assert!(
            qemu_args(&kvm, Path::new("/x.iso"), Serial::Stdio)
                .join(" ")
                .contains("-accel kvm -cpu host,+vmx")
        );
        assert!(joined.ends_with("-accel tcg -cpu max"));
        let epyc = Machine {
            cpu: Some("EPYC"),
            ..m
        };
        let args = qemu_args(&epyc, Path::new("/x.iso"), Serial::Stdio);
        assert!(args.join(" ").ends_with("-accel tcg -cpu EPYC"));
        assert_eq!(args.iter().filter(|a| *a == "-cpu").count(), 1);
        let amd = Machine {
            cpu: Some("host,+svm"),
            ..kvm
        };
        assert!(
            qemu_args(&amd, Path::new("/x.iso"), Serial::Stdio)
                .join(" ")
                .ends_with("-accel kvm -cpu host,+svm")
        );
    }

    #[test]
    fn kvm_picks_the_hosts_vendor_or_says_why_not() {
        let intel = "processor : 0\nflags : fpu vme vmx ept\n";
        let amd = "processor : 0\nflags : fpu svm npt\n";
        let host = |cpuinfo, kvm_rw, nested_intel, nested_amd| KvmHost {
            cpuinfo,
            kvm_rw,
            nested_intel,
            nested_amd,
        };
        assert_eq!(
            kvm_check(&host(intel, true, Some("Y\n"), None)),
            Ok("host,+vmx")
        );
        assert_eq!(
            kvm_check(&host(amd, true, None, Some("1\n"))),
            Ok("host,+svm")
        );
        let err = kvm_check(&host(amd, true, Some("Y"), Some("0\n"))).unwrap_err();
        assert!(err.contains("modprobe kvm_amd nested=1"), "{err}");
        let err = kvm_check(&host(intel, true, None, Some("1"))).unwrap_err();
        assert!(err.contains("modprobe kvm_intel nested=1"), "{err}");
        let err = kvm_check(&host(amd, false, None, Some("1"))).unwrap_err();
        assert!(err.contains("load kvm_amd"), "{err}");
        let err = kvm_check(&host("flags : fpu sse\n", true, Some("Y"), Some("1"))).unwrap_err();
        assert!(err.contains("neither `vmx` nor `svm`"), "{err}");
    }

    #[test]
    fn bochs_config_is_headless_and_logs_serial() {
        let m = Machine {
            emulator: Emulator::Bochs,
            cpu: None,
            cpus: 2,
            memory_mib: 512,
            ips: BOCHS_IPS,
            firmware: Firmware::Bios,
            reboots: 0,
        };
        let cfg = bochs_config(
            &m,
            Path::new("/x.iso"),
            Path::new("/s.log"),
            Path::new("/b.log"),
        );
        assert!(cfg.contains("megs: 512\n"));
        assert!(cfg.contains("cpu: model=corei7_skylake_x, count=2,"));
        let ryzen = Machine {
            cpu: Some("ryzen"),
            ..m
        };
        let ryzen_cfg = bochs_config(
            &ryzen,
            Path::new("/x.iso"),
            Path::new("/s.log"),
            Path::new("/b.log"),
        );
        assert_eq!(
            ryzen_cfg.replace("model=ryzen,", "model=corei7_skylake_x,"),
            cfg
        );
        assert!(cfg.contains("com1: enabled=1, mode=file, dev=/s.log"));
        assert!(cfg.contains("display_library: sdl2"));
        assert!(cfg.contains("sound: driver=dummy"));
        let tcp = bochs_config_serial(
            &m,
            Path::new("/x.iso"),
            Serial::Tcp(4321),
            Path::new("/b.log"),
        );
        assert!(tcp.contains("com1: enabled=1, mode=socket-server, dev=127.0.0.1:4321\n"));
        assert_eq!(tcp.matches("com1:").count(), 1);
        let tty = bochs_config_serial(
            &m,
            Path::new("/x.iso"),
            Serial::Tty(Path::new("/dev/pts/7")),
            Path::new("/b.log"),
        );
        assert!(tty.contains("com1: enabled=1, mode=term, dev=/dev/pts/7\n"));
        assert_eq!(
            tcp.replace("mode=socket-server, dev=127.0.0.1:4321", ""),
            cfg.replace("mode=file, dev=/s.log", "")
        );
    }

    #[test]
    fn devices_become_emulator_options() {
        let none = Devices::default();
        assert!(qemu_device_args(&none).is_empty());
        assert!(bochs_device_config(&none).is_empty());
        let both = Devices {
            disk: Some(Path::new("/d.img")),
            network: true,
        };
        assert_eq!(
            qemu_device_args(&both).join(" "),
            "-drive file=/d.img,if=ide,index=0,format=raw \
             -netdev user,id=n0 -device e1000,netdev=n0"
        );
        let cfg = bochs_device_config(&both);
        assert!(cfg.contains("ata0-slave: type=disk, path=/d.img, mode=flat\n"));
        assert!(cfg.contains("slot1=e1000") && cfg.contains("ethmod=slirp"));
        let disk_only = Devices {
            network: false,
            ..both
        };
        assert!(!qemu_device_args(&disk_only).join(" ").contains("netdev"));
        assert!(!bochs_device_config(&disk_only).contains("e1000"));
    }

    #[test]
    fn emulator_names_round_trip() {
        for e in [Emulator::Qemu, Emulator::Bochs, Emulator::Kvm] {
            assert_eq!(Emulator::parse(e.name()), Ok(e));
        }
        assert!(Emulator::parse("vmware").is_err());
    }
}
