use super::*;

const GOOD: &str = r#"# a guest
name = "web1"
memory = 64
vcpus = 2
weight = 512
cap = 150
cpus = [0, 3]
kernel = "/usr/lib/basalt/hello"
cmdline = "greeting=1"
xen = true
on_poweroff = "restart"
on_crash = "restart"
"#;

#[test]
fn a_full_definition() {
    let d = parse("web1.toml", GOOD).unwrap();
    assert_eq!(
        d,
        VmDef {
            name: "web1".into(),
            memory: 64 << 20,
            vcpus: 2,
            weight: 512,
            cap: 150,
            affinity: 0b1001,
            kernel: ("/usr/lib/basalt/hello".into(), 8),
            initrd: None,
            cmdline: "greeting=1".into(),
            xen: true,
            on_end: [OnEnd::Restart; 3],
            disks: vec![],
            nets: vec![],
        }
    );
}

#[test]
fn defaults() {
    let d = parse("m.toml", "name = \"m\"\nmemory = 16\nkernel = \"/k\"\n").unwrap();
    assert_eq!(
        (d.vcpus, d.weight, d.cap, d.affinity, d.xen),
        (1, 256, 0, 0, false)
    );
    assert_eq!(d.cmdline, "");
    assert_eq!(d.initrd, None);
    // xl's defaults.
    assert_eq!(d.on_end, [OnEnd::Destroy, OnEnd::Restart, OnEnd::Destroy]);
}

#[test]
fn an_initrd_and_its_line() {
    let d = parse(
        "l.toml",
        "name = \"l\"\nmemory = 64\nkernel = \"/bz\"\ninitrd = \"/i.img\"\n",
    )
    .unwrap();
    assert_eq!(d.initrd, Some(("/i.img".into(), 4)));
    let e = err("name = \"l\"\nmemory = 64\nkernel = \"/bz\"\ninitrd = 3\n");
    assert!(e.starts_with("vm.toml:4: "), "{e}");
}

fn err(text: &str) -> String {
    parse("vm.toml", text).unwrap_err()
}

#[test]
fn errors_name_the_line_and_the_key() {
    let base = "name = \"m\"\nmemory = 16\nkernel = \"/k\"\n";
    let e = err("name = \"m\"\nmemroy = 16\nkernel = \"/k\"\n");
    assert!(e.starts_with("vm.toml:2: unknown field `memroy`"), "{e}");
    let e = err("name = \"m\"\nmemory = \"lots\"\nkernel = \"/k\"\n");
    assert!(e.starts_with("vm.toml:2: "), "{e}");
    let e = err("name = \"m\"\nkernel = \"/k\"\n");
    assert!(e.contains("missing field `memory`"), "{e}");
    let e = err("name = \"m\nmemory = 16\n");
    assert!(e.starts_with("vm.toml:1: "), "{e}");
    let e = err(&format!("{base}vcpus = 0\n"));
    assert_eq!(e, "vm.toml:4: vcpus = 0: vCPUs, from 1 to 64");
    let e = err(&format!("{base}weight = 0\n"));
    assert_eq!(
        e,
        "vm.toml:4: weight = 0: a scheduling weight, from 1 to 65535"
    );
    let e = err(&format!("{base}cap = 101\n"));
    assert_eq!(
        e,
        "vm.toml:4: cap = 101: percent of one CPU (0: no cap), from 0 to 100"
    );
    let e = err("name = \"m\"\nmemory = 0\nkernel = \"/k\"\n");
    assert_eq!(
        e,
        "vm.toml:2: memory = 0: memory is in MiB, a multiple of 2 from 2 to 3072"
    );
    assert!(err("name = \"m\"\nmemory = 15\nkernel = \"/k\"\n").contains("memory = 15"));
    assert!(err("name = \"m\"\nmemory = 3074\nkernel = \"/k\"\n").contains("memory = 3074"));
    assert_eq!(
        err("name = \"Domain-0\"\nmemory = 2\nkernel = \"/k\"\n"),
        "vm.toml:1: name = \"Domain-0\": that is the control domain's name; choose another"
    );
    let e = err("name = \"a b\"\nmemory = 2\nkernel = \"/k\"\n");
    assert!(
        e.starts_with("vm.toml:1: name = \"a b\": a name is 1 to 31"),
        "{e}"
    );
    let e = err(&format!("{base}cpus = [64]\n"));
    assert_eq!(e, "vm.toml:4: cpus: CPU 64: host CPUs are numbered 0 to 63");
    let e = err(&format!("{base}cpus = []\n"));
    assert!(e.starts_with("vm.toml:4: cpus = []"), "{e}");
    let e = err(&format!("{base}\n[[disk]]\npath = \"/nope.img\"\n"));
    assert!(
        e.starts_with("vm.toml:6: disk path \"/nope.img\": No such file or directory"),
        "{e}"
    );
    let e = err(&format!("{base}\n[[disk]]\npath = \"/\"\n"));
    assert!(e.contains("not a file or block device"), "{e}");
    let e = err(&format!("{base}\n[[disk]]\npath = \"/d\"\nsize = 3\n"));
    assert!(e.starts_with("vm.toml:7: unknown field `size`"), "{e}");
    let e = err(&format!("{base}on_crash = \"preserve\"\n"));
    assert!(
        e.starts_with("vm.toml:4: on_crash = \"preserve\": \"destroy\" (the VM stays stopped) or"),
        "{e}"
    );
    let e = err(&format!("{base}on_reboot = 1\n"));
    assert!(e.starts_with("vm.toml:4: "), "{e}");
}

#[test]
fn random_text_never_panics() {
    // A small xorshift: the same cases every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let pieces = [
        "name",
        "=",
        "\"",
        "memory",
        "16",
        "[",
        "]",
        "\n",
        "kernel",
        "#",
        "cpus",
        ",",
        "9999999999",
        "-1",
        "{",
        "}",
        ".",
    ];
    for _ in 0..20_000 {
        let mut text = String::new();
        for _ in 0..(x % 24) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(pieces[(x % pieces.len() as u64) as usize]);
            text.push(' ');
        }
        let _ = parse("r.toml", &text);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
}

#[test]
fn disks_in_order() {
    let dir = std::env::temp_dir().join(format!("basalt-vmdef-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    std::fs::write(&a, b"").unwrap();
    std::fs::write(&b, b"").unwrap();
    let text = format!(
        "name = \"d\"\nmemory = 16\nkernel = \"/k\"\n[[disk]]\npath = {a:?}\n[[disk]]\npath = {b:?}\nreadonly = true\n"
    );
    let d = parse("d.toml", &text).unwrap();
    assert_eq!(
        d.disks,
        [
            Disk {
                path: a.display().to_string(),
                readonly: false
            },
            Disk {
                path: b.display().to_string(),
                readonly: true
            }
        ]
    );
    let nine = (0..9).fold(
        String::from("name = \"d\"\nmemory = 16\nkernel = \"/k\"\n"),
        |t, _| format!("{t}[[disk]]\npath = {a:?}\n"),
    );
    assert!(err(&nine).contains("9 disks and 0 network interfaces, at most 8 devices"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn network_interfaces() {
    let base = "name = \"n\"\nmemory = 16\nkernel = \"/k\"\n";
    let d = parse(
        "n.toml",
        &format!(
            "{base}[[network]]\n[[network]]\nbridge = \"basalt0\"\nmac = \"02:11:22:33:44:55\"\n"
        ),
    )
    .unwrap();
    assert_eq!(
        d.nets,
        [default_mac("n", 0), [2, 0x11, 0x22, 0x33, 0x44, 0x55]]
    );
    // Stable per name, locally administered and unicast, one per index.
    assert_eq!(default_mac("n", 0), default_mac("n", 0));
    assert_ne!(default_mac("n", 0), default_mac("m", 0));
    assert_eq!(default_mac("n", 1)[5], 1);
    assert_eq!(default_mac("n", 0)[0], 2);
    let e = err(&format!("{base}[[network]]\nbridge = \"br0\"\n"));
    assert!(
        e.starts_with("vm.toml:5: network bridge = \"br0\": dom0 has one bridge"),
        "{e}"
    );
    let e = err(&format!("{base}[[network]]\nmac = \"03:00:00:00:00:01\"\n"));
    assert!(
        e.starts_with("vm.toml:5: network mac = \"03:00:00:00:00:01\""),
        "{e}"
    );
    let e = err(&format!("{base}[[network]]\nmac = \"02:00:00:00:00\"\n"));
    assert!(e.contains("six hex bytes"), "{e}");
    let nine = (0..9).fold(String::from(base), |t, _| format!("{t}[[network]]\n"));
    assert!(err(&nine).contains("9 network interfaces, at most 8 devices"));
}
