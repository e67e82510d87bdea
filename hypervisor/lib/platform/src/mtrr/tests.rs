use super::*;

/// A typical firmware setup: MTRRs and fixed ranges on, default UC, RAM
/// below 2 GiB write-back, a write-combining framebuffer at 3 GiB, legacy
/// VGA UC, the BIOS ROM write-protected.
fn server() -> Mtrrs {
    let mut variable = [(0, 0); MAX_VARIABLE];
    variable[0] = (u64::from(WB), 0xf_8000_0000 | 1 << 11); // 0-2 GiB
    variable[1] = (0xc000_0000 | u64::from(WC), 0xf_f000_0000 | 1 << 11); // 3 GiB + 256 MiB
    let mut fixed = [0x0606_0606_0606_0606u64; 11];
    fixed[2] = 0; // 0xA0000-0xBFFFF: UC
    fixed[10] = 0x0505_0505_0505_0505; // 0xF8000-0xFFFFF: WP
    fixed[3] = 0x0000_0000_0000_0005; // 0xC0000 WP, 0xC1000.. UC
    Mtrrs {
        def_type: 1 << 11 | 1 << 10 | u64::from(UC),
        fixed: Some(fixed),
        variable,
        count: 8,
    }
}

#[test]
fn variable_and_default() {
    let m = server();
    assert_eq!(m.type_of(0x1000_0000), WB);
    assert_eq!(m.type_of(0x7fff_f000), WB);
    assert_eq!(
        m.type_of(0x8000_0000),
        UC,
        "past the RAM range: the default"
    );
    assert_eq!(m.type_of(0xc000_0000), WC);
    assert_eq!(m.type_of(0xcfff_f000), WC);
    assert_eq!(m.type_of(0xfec0_0000), UC);
    assert_eq!(m.type_of(0x1_0000_0000), UC);
    assert_eq!(
        m.type_of(1 << 36),
        WB,
        "bits above the mask (MAXPHYADDR 36) do not count"
    );
}

#[test]
fn fixed_ranges() {
    let m = server();
    assert_eq!(m.type_of(0x9_f000), WB);
    assert_eq!(m.type_of(0xa_0000), UC);
    assert_eq!(m.type_of(0xb_8000), UC);
    assert_eq!(m.type_of(0xc_0000), WP);
    assert_eq!(m.type_of(0xc_1000), UC);
    assert_eq!(m.type_of(0xf_f000), WP);
    // FE clear: the variable ranges decide below 1 MiB too.
    let no_fixed = Mtrrs {
        def_type: 1 << 11 | u64::from(UC),
        ..m
    };
    assert_eq!(no_fixed.type_of(0xa_0000), WB);
}

#[test]
fn disabled_and_overlaps() {
    let mut m = server();
    m.def_type = u64::from(WB);
    assert_eq!(m.type_of(0x1000), UC, "E clear: everything UC");
    let mut m = server();
    m.variable[2] = (u64::from(WT), 0xf_f000_0000 | 1 << 11); // 0-256 MiB WT over WB
    m.variable[3] = (0x1000_0000 | u64::from(UC), 0xf_f000_0000 | 1 << 11);
    m.variable[4] = (0x1000_0000 | u64::from(WB), 0xf_f000_0000 | 1 << 11);
    m.variable[5] = (0x2000_0000 | u64::from(WC), 0xf_f000_0000 | 1 << 11);
    m.variable[6] = (0x2000_0000 | u64::from(WP), 0xf_f000_0000); // not valid
    assert_eq!(m.type_of(0x100_0000), WT);
    assert_eq!(m.type_of(0x1000_0000), UC);
    assert_eq!(m.type_of(0x2000_0000), UC, "WC over WB is undefined: UC");
    // A count beyond the array is bounded.
    m.count = 1000;
    assert_eq!(m.type_of(0x1000_0000), UC);
}
