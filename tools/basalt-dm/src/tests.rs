use super::*;

fn args(words: &str) -> Vec<String> {
    words.split_whitespace().map(String::from).collect()
}

fn disk(path: &str, readonly: bool) -> DevArg {
    DevArg::Disk {
        path: path.into(),
        readonly,
    }
}

#[test]
fn parses_the_command_line() {
    assert_eq!(
        parse(&args("--domain 3 --disk /tmp/d.img")),
        Ok(Args {
            domain: 3,
            devices: vec![disk("/tmp/d.img", false)],
            slot: 4
        })
    );
    assert_eq!(
        parse(&args("--slot 7 --disk /dev/sdb,ro --domain 12")),
        Ok(Args {
            domain: 12,
            devices: vec![disk("/dev/sdb", true)],
            slot: 7
        })
    );
    // Devices in the order given; a MAC or the default.
    assert_eq!(
        parse(&args(
            "--domain 5 --net vif5.0 --disk a --net t1,mac=02:AB:cd:00:01:ff --disk b,ro"
        )),
        Ok(Args {
            domain: 5,
            devices: vec![
                DevArg::Net {
                    tap: "vif5.0".into(),
                    mac: None
                },
                disk("a", false),
                DevArg::Net {
                    tap: "t1".into(),
                    mac: Some([2, 0xab, 0xcd, 0, 1, 0xff])
                },
                disk("b", true),
            ],
            slot: 4
        })
    );
    assert!(parse(&args("--domain 5 --net t --slot 31")).is_ok());
}

#[test]
fn refusals_name_the_cause_and_the_fix() {
    let e = |w: &str| parse(&args(w)).expect_err(w);
    assert!(e("--disk a").contains("--domain is missing"));
    assert!(e("--domain 3").contains("no device: give --disk PATH or --net TAP"));
    assert!(e("--domain 0 --disk a").contains("basalt list"));
    assert!(e("--domain x --disk a").contains("not a guest's domain id"));
    assert!(e("--domain 3 --disk a --slot 0").contains("1 to 31"));
    assert!(e("--domain 3 --disk a --slot 32").contains("1 to 31"));
    assert!(e("--domain 3 --disk a --net t --slot 31").contains("past slot 31"));
    assert!(e("--domain 3 --disk ,ro").contains("names no file"));
    assert!(e("--domain 3 --disk").contains("needs a value"));
    assert!(e("--domain 3 --net").contains("needs a value"));
    assert!(e("--domain 3 --net ,mac=02:00:00:00:00:01").contains("name a tap"));
    assert!(e("--domain 3 --net t,ro").contains("name a tap"));
    for bad in [
        "01:00:00:00:00:01",
        "02:00:00:00:00",
        "02:00:00:00:00:01:02",
        "2:0:0:0:0:1",
        "zz:00:00:00:00:01",
    ] {
        assert!(
            e(&format!("--domain 3 --net t,mac={bad}")).contains("not a unicast MAC"),
            "{bad}"
        );
    }
    assert!(e("--domain 3 --disk a --cdrom b").contains("unknown argument"));
}

#[test]
fn default_macs_are_local_and_unique_per_domain_and_slot() {
    let m = net::default_mac(0x1234, 5);
    assert_eq!(net::mac_string(&m), "02:ba:5a:12:34:05");
    assert_eq!(m[0] & 3, 2, "locally administered, unicast");
    assert_ne!(net::default_mac(1, 5), net::default_mac(2, 5));
    assert_ne!(net::default_mac(1, 5), net::default_mac(1, 6));
    assert_eq!(net::parse_mac(&net::mac_string(&m)), Some(m));
}

#[test]
fn bars_sit_in_the_hole_below_the_io_apic() {
    for slot in 1..32 {
        let b = default_bar(slot);
        assert!(
            b >= 0xe000_0000 && b + BAR_SIZE <= 0xfec0_0000,
            "slot {slot}"
        );
        assert_eq!(b % BAR_SIZE, 0);
    }
}
