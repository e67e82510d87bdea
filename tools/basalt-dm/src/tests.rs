use super::*;

fn args(words: &str) -> Vec<String> {
    words.split_whitespace().map(String::from).collect()
}

#[test]
fn parses_the_command_line() {
    assert_eq!(
        parse(&args("--domain 3 --disk /tmp/d.img")),
        Ok(Args {
            domain: 3,
            disk: "/tmp/d.img".into(),
            readonly: false,
            slot: 4
        })
    );
    assert_eq!(
        parse(&args("--slot 7 --disk /dev/sdb,ro --domain 12")),
        Ok(Args {
            domain: 12,
            disk: "/dev/sdb".into(),
            readonly: true,
            slot: 7
        })
    );
}

#[test]
fn refusals_name_the_cause_and_the_fix() {
    let e = |w: &str| parse(&args(w)).expect_err(w);
    assert!(e("--disk a").contains("--domain is missing"));
    assert!(e("--domain 3").contains("--disk is missing"));
    assert!(e("--domain 0 --disk a").contains("basalt list"));
    assert!(e("--domain x --disk a").contains("not a guest's domain id"));
    assert!(e("--domain 3 --disk a --slot 0").contains("1 to 31"));
    assert!(e("--domain 3 --disk a --slot 32").contains("1 to 31"));
    assert!(e("--domain 3 --disk ,ro").contains("names no file"));
    assert!(e("--domain 3 --disk").contains("needs a value"));
    assert!(e("--domain 3 --disk a --net b").contains("unknown argument"));
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
