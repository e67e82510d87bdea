//! Tests of the ACPI table builder: every table read back by hand, as Linux (ACPICA) reads it.

use super::*;
use crate::mem::SliceMemory;

const MEM: usize = 1 << 20;

fn u16_at(b: &[u8], at: u64) -> u16 {
    let at = at as usize;
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: u64) -> u32 {
    let at = at as usize;
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// Checks a table's header and checksum; returns its bytes.
fn table<'a>(mem: &'a [u8], at: u64, signature: &[u8; 4], revision: u8) -> &'a [u8] {
    let start = at as usize;
    assert_eq!(&mem[start..start + 4], signature, "signature at 0x{at:x}");
    let len = u32_at(mem, at + 4) as usize;
    assert!(len >= 36);
    let t = &mem[start..start + len];
    assert_eq!(
        sum(t),
        0,
        "checksum of {}",
        core::str::from_utf8(signature).unwrap()
    );
    assert_eq!(t[8], revision);
    assert_eq!(&t[10..16], OEM_ID);
    assert_eq!(&t[16..24], OEM_TABLE_ID);
    t
}

fn build(vcpus: u32, at: u64) -> (Vec<u8>, AcpiLayout) {
    let mut backing = vec![0xa5u8; MEM];
    let layout = write_acpi_tables(
        &mut SliceMemory::new(&mut backing),
        at,
        &AcpiConfig::new(vcpus),
    )
    .unwrap();
    (backing, layout)
}

#[test]
fn layout_is_aligned_and_contiguous() {
    let (_, l) = build(2, 0xe0001);
    assert_eq!(l.start, 0xe0040);
    assert_eq!(l.rsdp, l.start);
    assert_eq!(l.rsdp % 16, 0);
    assert_eq!(l.facs % 64, 0);
    assert!(l.rsdp < l.xsdt && l.xsdt < l.fadt && l.fadt < l.facs && l.facs < l.madt);
    assert!(l.madt < l.dsdt && l.dsdt < l.end);
    assert_eq!(l.end - l.start, acpi_tables_size(2));
    assert_eq!(l.dsdt + dsdt_size(), l.end);
    assert_eq!(ACPI_MEMMAP_TYPE, 4);
}

#[test]
fn rsdp_has_both_checksums_and_points_at_the_xsdt() {
    let (m, l) = build(1, 0x1000);
    let r = &m[l.rsdp as usize..(l.rsdp + RSDP_SIZE) as usize];
    assert_eq!(&r[0..8], b"RSD PTR ");
    assert_eq!(sum(&r[..20]), 0);
    assert_eq!(sum(r), 0);
    assert_eq!(r[15], 2);
    assert_eq!(u32_at(r, 16), 0, "no RSDT");
    assert_eq!(u32_at(r, 20), 36);
    assert_eq!(u64_at(r, 24), l.xsdt);
}

#[test]
fn xsdt_lists_fadt_and_madt() {
    let (m, l) = build(1, 0x1000);
    let x = table(&m, l.xsdt, b"XSDT", 1);
    assert_eq!(x.len(), 36 + 16);
    assert_eq!(u64_at(x, 36), l.fadt);
    assert_eq!(u64_at(x, 44), l.madt);
    table(&m, l.fadt, b"FACP", 6);
    table(&m, l.madt, b"APIC", 5);
}

#[test]
fn fadt_fields() {
    let (m, l) = build(1, 0x1000);
    let f = table(&m, l.fadt, b"FACP", FADT_REVISION);
    assert_eq!(f.len(), 276);
    assert_eq!(u32_at(f, 36), l.facs as u32);
    assert_eq!(u32_at(f, 40), l.dsdt as u32);
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD: always ACPI mode");
    assert_eq!(u32_at(f, 56), 0x600);
    assert_eq!(u32_at(f, 60), 0);
    assert_eq!(u32_at(f, 64), 0x604);
    assert_eq!(u32_at(f, 76), 0x608);
    assert_eq!(u32_at(f, 80), 0, "no GPE0");
    assert_eq!(&f[88..92], &[4, 2, 0, 4]);
    assert!(u16_at(f, 96) > 100 && u16_at(f, 98) > 1000);
    assert_eq!(u16_at(f, 109), IAPC_VGA_NOT_PRESENT);
    let flags = u32_at(f, 112);
    assert_ne!(flags & FADT_RESET_REG_SUP, 0);
    assert_eq!(flags & FADT_HW_REDUCED_ACPI, 0);
    assert_eq!(flags & FADT_TMR_VAL_EXT, 0, "24-bit PM timer");
    assert_ne!(flags & FADT_WBINVD, 0);
    // RESET_REG: system I/O, 8 bits, byte access, port 0xCF9; value 6.
    assert_eq!(&f[116..120], &[1, 8, 0, 1]);
    assert_eq!(u64_at(f, 120), 0xcf9);
    assert_eq!(f[128], 6);
    assert_eq!(f[131], 0, "minor version");
    assert_eq!(
        u64_at(f, 132),
        0,
        "X_FIRMWARE_CTRL 0 as FIRMWARE_CTRL is set"
    );
    assert_eq!(u64_at(f, 140), l.dsdt);
    // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK agree with the 32-bit blocks.
    assert_eq!(&f[148..152], &[1, 32, 0, 2]);
    assert_eq!(u64_at(f, 152), 0x600);
    assert_eq!(&f[160..172], &[0; 12]);
    assert_eq!(&f[172..176], &[1, 16, 0, 2]);
    assert_eq!(u64_at(f, 176), 0x604);
    assert_eq!(&f[208..212], &[1, 32, 0, 3]);
    assert_eq!(u64_at(f, 212), 0x608);
    assert_eq!(&f[220..268], &[0; 48]);
    assert_eq!(&f[268..276], b"BASALTHV");
}

#[test]
fn facs() {
    let (m, l) = build(1, 0x1000);
    let f = &m[l.facs as usize..(l.facs + 64) as usize];
    assert_eq!(&f[0..4], b"FACS");
    assert_eq!(u32_at(f, 4), 64);
    assert_eq!(u32_at(f, 8), 0, "hardware signature");
    assert_eq!(u32_at(f, 16), 0, "global lock free");
    assert_eq!(f[32], 2);
}

/// One MADT entry: type and bytes.
fn madt_entries(t: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 44;
    while at < t.len() {
        let (kind, len) = (t[at], t[at + 1] as usize);
        assert!(
            len >= 2 && at + len <= t.len(),
            "entry at {at} overruns the MADT"
        );
        out.push((kind, t[at..at + len].to_vec()));
        at += len;
    }
    assert_eq!(at, t.len());
    out
}

#[test]
fn madt_entries_as_linux_expects() {
    let (m, l) = build(4, 0x1000);
    let t = table(&m, l.madt, b"APIC", 5);
    assert_eq!(t.len() as u64, madt_size(4));
    assert_eq!(u32_at(t, 36), 0xfee0_0000);
    assert_eq!(u32_at(t, 40), 1, "PCAT_COMPAT");
    let e = madt_entries(t);
    assert_eq!(e.len(), 4 + 1 + 2 + 1);
    for (i, (kind, b)) in e[..4].iter().enumerate() {
        assert_eq!(*kind, 0);
        assert_eq!(b.len(), 8);
        assert_eq!(b[2] as usize, i, "processor UID");
        assert_eq!(b[3] as usize, i, "APIC ID");
        assert_eq!(u32_at(b, 4), 1, "enabled");
    }
    assert_eq!(e[4].0, 1);
    assert_eq!(e[4].1, [1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]);
    // IRQ0 -> GSI 2, edge/high; IRQ9 -> GSI 9, level/low.
    assert_eq!(e[5].1, [2, 10, 0, 0, 2, 0, 0, 0, 0x05, 0]);
    assert_eq!(e[6].1, [2, 10, 0, 9, 9, 0, 0, 0, 0x0f, 0]);
    // NMI on LINT1 of all processors.
    assert_eq!(e[7].1, [4, 6, 0xff, 0, 0, 1]);
}

#[test]
fn madt_ioapic_id_and_many_vcpus() {
    let mut backing = vec![0u8; MEM];
    let config = AcpiConfig {
        ioapic_id: 200,
        ..AcpiConfig::new(MAX_VCPUS)
    };
    let l = write_acpi_tables(&mut SliceMemory::new(&mut backing), 0x2000, &config).unwrap();
    let t = table(&backing, l.madt, b"APIC", 5);
    let e = madt_entries(t);
    assert_eq!(e.iter().filter(|(k, _)| *k == 0).count(), 255);
    assert_eq!(e[254].1[3], 254);
    assert_eq!(e[255].1[2], 200);
    table(&backing, l.dsdt, b"DSDT", 2);
}

#[test]
fn errors_and_nothing_written() {
    let mut backing = vec![0u8; 0x1000];
    let mut mem = SliceMemory::new(&mut backing);
    assert_eq!(
        write_acpi_tables(&mut mem, 0, &AcpiConfig::new(0)),
        Err(AcpiError::BadVcpuCount { vcpus: 0 })
    );
    assert_eq!(
        write_acpi_tables(&mut mem, 0, &AcpiConfig::new(256)),
        Err(AcpiError::BadVcpuCount { vcpus: 256 })
    );
    let e = write_acpi_tables(&mut mem, 0xe00, &AcpiConfig::new(1)).unwrap_err();
    assert!(matches!(e, AcpiError::Memory(_)));
    assert!(e.to_string().contains("more memory"));
    assert!(mem.bytes().iter().all(|b| *b == 0));
    let e = write_acpi_tables(&mut mem, 0xffff_ff00, &AcpiConfig::new(1)).unwrap_err();
    assert!(matches!(e, AcpiError::Above4G { .. }));
    assert!(e.to_string().contains("4 GiB"));
    assert!(matches!(
        write_acpi_tables(&mut mem, u64::MAX - 10, &AcpiConfig::new(1)),
        Err(AcpiError::Memory(_))
    ));
    assert!(
        AcpiError::BadVcpuCount { vcpus: 300 }
            .to_string()
            .contains("lower vcpus=")
    );
}

#[test]
fn pkg_length_encoding() {
    // One byte up to 63 in total.
    assert_eq!(aml_pkg_length(0), Some(([1, 0, 0, 0], 1)));
    assert_eq!(aml_pkg_length(62), Some(([0x3f, 0, 0, 0], 1)));
    // 63 bytes of body + 2 = 65 = 0x41: lead 0x40 | 1, then 0x04.
    assert_eq!(aml_pkg_length(63), Some(([0x41, 0x04, 0, 0], 2)));
    // The ACPI spec's limits: 2 bytes up to 0xFFF, 3 up to 0xFFFFF, 4 up to 0xFFFFFFF.
    assert_eq!(aml_pkg_length(0xffd), Some(([0x4f, 0xff, 0, 0], 2)));
    assert_eq!(aml_pkg_length(0xffe), Some(([0x81, 0x00, 0x01, 0], 3)));
    assert_eq!(
        aml_pkg_length(0x0fff_fffb),
        Some(([0xcf, 0xff, 0xff, 0xff], 4))
    );
    assert_eq!(aml_pkg_length(0x0fff_fffc), None);
    for body in [0usize, 10, 61, 62, 63, 64, 300, 4093, 4094, 70_000] {
        let (b, n) = aml_pkg_length(body).unwrap();
        assert_eq!(decode_pkg_length(&b[..n]), (body + n, n));
    }
}

#[test]
fn eisa_ids() {
    assert_eq!(eisa_id(b"PNP0A03"), 0x030a_d041);
    assert_eq!(eisa_id(b"PNP0A08"), 0x080a_d041);
    assert_eq!(eisa_id(b"PNP0C0F"), 0x0f0c_d041);
}

/// Decodes a PkgLength: (the length it encodes, the bytes it uses).
fn decode_pkg_length(b: &[u8]) -> (usize, usize) {
    let extra = (b[0] >> 6) as usize;
    if extra == 0 {
        return ((b[0] & 0x3f) as usize, 1);
    }
    assert_eq!(
        b[0] & 0x30,
        0,
        "bits 4-5 of a multi-byte PkgLength are reserved"
    );
    let mut len = (b[0] & 0xf) as usize;
    for i in 0..extra {
        len |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (len, extra + 1)
}

/// An AML object found by the test walker.
#[derive(Debug, PartialEq)]
enum Obj {
    Name(String, Value),
    Scope(String, Vec<Obj>),
    Device(String, Vec<Obj>),
}

#[derive(Debug, PartialEq)]
enum Value {
    Int(u64),
    Package(Vec<u64>),
}

fn name_string(b: &[u8], at: &mut usize) -> String {
    let mut s = String::new();
    while b[*at] == b'\\' || b[*at] == b'^' {
        s.push(b[*at] as char);
        *at += 1;
    }
    let seg = &b[*at..*at + 4];
    assert!(
        seg.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
    );
    assert!(!seg[0].is_ascii_digit());
    s.push_str(core::str::from_utf8(seg).unwrap());
    *at += 4;
    s
}

fn integer(b: &[u8], at: &mut usize) -> u64 {
    let op = b[*at];
    *at += 1;
    let size = match op {
        0x00 => return 0,
        0x01 => return 1,
        0xff => return u64::MAX,
        0x0a => 1,
        0x0b => 2,
        0x0c => 4,
        0x0e => 8,
        _ => panic!("not an integer opcode 0x{op:x} at {}", *at - 1),
    };
    let mut v = [0u8; 8];
    v[..size].copy_from_slice(&b[*at..*at + size]);
    *at += size;
    u64::from_le_bytes(v)
}

/// Walks a TermList of the opcodes the DSDT uses; every PkgLength must end exactly at the end
/// of its contents.
fn term_list(b: &[u8]) -> Vec<Obj> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        match b[at] {
            0x08 => {
                at += 1;
                let name = name_string(b, &mut at);
                let value = if b[at] == 0x12 {
                    at += 1;
                    let (len, n) = decode_pkg_length(&b[at..]);
                    let end = at + len;
                    at += n;
                    let count = b[at] as usize;
                    at += 1;
                    let mut items = Vec::new();
                    while at < end {
                        items.push(integer(b, &mut at));
                    }
                    assert_eq!(at, end, "package length");
                    assert_eq!(items.len(), count, "NumElements");
                    Value::Package(items)
                } else {
                    Value::Int(integer(b, &mut at))
                };
                out.push(Obj::Name(name, value));
            }
            0x10 => {
                at += 1;
                let (len, n) = decode_pkg_length(&b[at..]);
                let end = at + len;
                at += n;
                let name = name_string(b, &mut at);
                out.push(Obj::Scope(name, term_list(&b[at..end])));
                at = end;
            }
            0x5b if b[at + 1] == 0x82 => {
                at += 2;
                let (len, n) = decode_pkg_length(&b[at..]);
                let end = at + len;
                at += n;
                let name = name_string(b, &mut at);
                out.push(Obj::Device(name, term_list(&b[at..end])));
                at = end;
            }
            op => panic!("unexpected AML opcode 0x{op:x} at {at}"),
        }
        assert!(at <= b.len(), "object overruns its container");
    }
    out
}

#[test]
fn dsdt_aml_is_well_formed() {
    let (m, l) = build(1, 0x1000);
    let t = table(&m, l.dsdt, b"DSDT", 2);
    let (_, len) = dsdt_aml();
    assert!(len < AML_CAPACITY, "AML buffer too small");
    assert_eq!(t.len(), 36 + len);
    let objs = term_list(&t[36..]);
    assert_eq!(
        objs,
        vec![
            Obj::Name("\\_S5_".into(), Value::Package(vec![5, 5, 0, 0])),
            Obj::Scope(
                "\\_SB_".into(),
                vec![Obj::Device(
                    "PCI0".into(),
                    vec![
                        Obj::Name("_HID".into(), Value::Int(0x030a_d041)),
                        Obj::Name("_UID".into(), Value::Int(0)),
                        Obj::Name("_BBN".into(), Value::Int(0)),
                    ]
                )]
            ),
        ]
    );
    // Linux writes SLP_TYP << 10 | SLP_EN to PM1a_CNT to power off.
    assert_eq!((u16::from(S5_SLP_TYP) << 10) | (1 << 13), 0x3400);
}

#[test]
fn dsdt_aml_bytes() {
    // Hand-assembled reference, as `iasl` emits it for:
    //   Name (\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })
    //   Scope (\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03"))
    //                                  Name (_UID, Zero) Name (_BBN, Zero) } }
    let expected: &[u8] = &[
        0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00,
        0x00, //
        0x10, 0x23, b'\\', b'_', b'S', b'B', b'_', //
        0x5b, 0x82, 0x1b, b'P', b'C', b'I', b'0', //
        0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03, //
        0x08, b'_', b'U', b'I', b'D', 0x00, //
        0x08, b'_', b'B', b'B', b'N', 0x00,
    ];
    let (aml, len) = dsdt_aml();
    assert_eq!(&aml[..len], expected);
}
