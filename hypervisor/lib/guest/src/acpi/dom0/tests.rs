//! Tests of dom0's ACPI tables (read back byte by byte, as ACPICA reads them) and e820 map.

use super::*;
use crate::acpi::{
    IO_APIC_ADDRESS, LOCAL_APIC_ADDRESS, MADT_PCAT_COMPAT, MAX_VCPUS, MPS_INTI_EDGE_HIGH, RSDP_SIZE,
};
use crate::mem::SliceMemory;
use crate::start_info::MEMMAP_TYPE_NVS;

const MEM: usize = 1 << 20;
const G: u64 = 1 << 30;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// The table at `at` with signature `sig`, its checksum checked.
fn table<'a>(mem: &'a [u8], at: u64, sig: &[u8; 4]) -> &'a [u8] {
    let at = at as usize;
    assert_eq!(&mem[at..at + 4], sig);
    let t = &mem[at..at + u32_at(mem, at + 4) as usize];
    assert_eq!(
        sum(t),
        0,
        "checksum of {}",
        core::str::from_utf8(sig).unwrap()
    );
    t
}

fn host_table(signature: &[u8; 4], address: u64) -> HostTable {
    HostTable {
        signature: *signature,
        address,
    }
}

fn ovr(irq: u8, gsi: u32, flags: u16) -> SourceOverride {
    SourceOverride { irq, gsi, flags }
}

/// QEMU's q35-like root table and overrides (IRQ 0 → GSI 2 with conforming flags).
fn qemu_tables() -> [HostTable; 7] {
    [
        host_table(b"FACP", 0x7ffe_2000),
        host_table(b"APIC", 0x7ffe_2100),
        host_table(b"HPET", 0x7ffe_2200),
        host_table(b"MCFG", 0x7ffe_2300),
        host_table(b"SSDT", 0x7ffe_2400),
        host_table(b"DMAR", 0x7ffe_2500),
        host_table(b"WAET", 0x7ffe_2600),
    ]
}

const QEMU_OVERRIDES: [SourceOverride; 5] = [
    SourceOverride {
        irq: 0,
        gsi: 2,
        flags: 0,
    },
    SourceOverride {
        irq: 5,
        gsi: 5,
        flags: 0xd,
    },
    SourceOverride {
        irq: 9,
        gsi: 9,
        flags: 0xd,
    },
    SourceOverride {
        irq: 10,
        gsi: 10,
        flags: 0xd,
    },
    SourceOverride {
        irq: 11,
        gsi: 11,
        flags: 0xd,
    },
];

fn build(vcpus: u32, at: u64, host: &HostAcpi<'_>) -> (Vec<u8>, Dom0AcpiLayout) {
    let mut backing = vec![0xa5u8; MEM];
    let layout = write_dom0_acpi_tables(
        &mut SliceMemory::new(&mut backing),
        at,
        &AcpiConfig::new(vcpus),
        host,
    )
    .unwrap();
    (backing, layout)
}

/// The MADT's entries after its 44-byte head: (type, bytes including type and length).
fn madt_entries(t: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 44;
    while at < t.len() {
        let len = t[at + 1] as usize;
        assert!(len >= 2 && at + len <= t.len(), "entry at {at} overruns");
        out.push((t[at], t[at..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn rsdp_is_acpi2_with_the_hosts_oem_id() {
    let tables = qemu_tables();
    let host = HostAcpi {
        oem_id: *b"BOCHS ",
        tables: &tables,
        overrides: &QEMU_OVERRIDES,
    };
    let (m, l) = build(2, 0x9e001, &host);
    assert_eq!((l.start, l.rsdp), (0x9e040, 0x9e040));
    assert_eq!(l.end - l.start, dom0_acpi_size(&AcpiConfig::new(2), &host));
    let r = &m[l.rsdp as usize..(l.rsdp + RSDP_SIZE) as usize];
    assert_eq!(&r[0..8], b"RSD PTR ");
    assert_eq!(sum(&r[..20]), 0);
    assert_eq!(sum(r), 0);
    assert_eq!(&r[9..15], b"BOCHS ");
    assert_eq!(r[15], 2);
    assert_eq!(u32_at(r, 16), 0, "no RSDT");
    assert_eq!(u32_at(r, 20), 36);
    assert_eq!(u64_at(r, 24), l.xsdt);
    assert_eq!(m[l.end as usize], 0xa5, "nothing written past the end");
    assert_eq!(
        m[l.start as usize - 1],
        0xa5,
        "nothing written before the start"
    );
}

#[test]
fn xsdt_lists_the_hosts_tables_but_the_dropped_ones_then_the_madt() {
    let tables = qemu_tables();
    let host = HostAcpi {
        oem_id: *b"BOCHS ",
        tables: &tables,
        overrides: &QEMU_OVERRIDES,
    };
    let (m, l) = build(1, 0x1000, &host);
    let x = table(&m, l.xsdt, b"XSDT");
    let entries: Vec<u64> = x[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(entries, [0x7ffe_2000, 0x7ffe_2400, 0x7ffe_2600, l.madt]);
    assert_eq!(l.madt % 16, 0);
}

#[test]
fn every_dropped_signature_is_dropped() {
    let mut tables: Vec<HostTable> = DROPPED_TABLES
        .iter()
        .enumerate()
        .map(|(i, s)| host_table(s, 0x1000 * i as u64))
        .collect();
    tables.push(host_table(b"SSDT", 0xdead_0000));
    let host = HostAcpi {
        oem_id: *b"OEMOEM",
        tables: &tables,
        overrides: &[],
    };
    let (m, l) = build(1, 0, &host);
    let x = table(&m, l.xsdt, b"XSDT");
    assert_eq!(x.len(), 36 + 16);
    assert_eq!(u64_at(x, 36), 0xdead_0000);
    assert_eq!(u64_at(x, 44), l.madt);
}

#[test]
fn madt_has_the_vcpus_basalts_ioapic_the_hosts_overrides_and_lint1_nmi() {
    let tables = qemu_tables();
    let host = HostAcpi {
        oem_id: *b"BOCHS ",
        tables: &tables,
        overrides: &QEMU_OVERRIDES,
    };
    let (m, l) = build(3, 0x2000, &host);
    let t = table(&m, l.madt, b"APIC");
    assert_eq!(l.madt + t.len() as u64, l.end);
    assert_eq!(u32_at(t, 36), LOCAL_APIC_ADDRESS);
    assert_eq!(u32_at(t, 40), MADT_PCAT_COMPAT);
    let e = madt_entries(t);
    assert_eq!(e.len(), 3 + 1 + 5 + 1);
    for (i, (kind, bytes)) in e[..3].iter().enumerate() {
        assert_eq!(*kind, 0);
        assert_eq!(
            bytes[..4],
            [0, 8, i as u8, i as u8],
            "UID = APIC id = vCPU id"
        );
        assert_eq!(u32_at(bytes, 4), 1, "enabled");
    }
    let (kind, io) = &e[3];
    assert_eq!((*kind, io[2]), (1, AcpiConfig::new(3).ioapic_id));
    assert_eq!(u32_at(io, 4), IO_APIC_ADDRESS);
    assert_eq!(u32_at(io, 8), 0, "GSI base");
    let isos: Vec<(u8, u8, u32, u16)> = e[4..9]
        .iter()
        .map(|(k, b)| {
            assert_eq!(*k, 2);
            (b[2], b[3], u32_at(b, 4), u16::from_le_bytes([b[8], b[9]]))
        })
        .collect();
    assert_eq!(
        isos,
        [
            (0, 0, 2, MPS_INTI_EDGE_HIGH),
            (0, 5, 5, 0xd),
            (0, 9, 9, 0xd),
            (0, 10, 10, 0xd),
            (0, 11, 11, 0xd)
        ]
    );
    assert_eq!(e[9], (4, vec![4, 6, 0xff, 0, 0, 1]));
}

#[test]
fn irq0_goes_to_gsi2_whatever_the_host_says() {
    for overrides in [
        &[][..],
        &[ovr(0, 0, 0), ovr(9, 9, 0xf)][..],
        &[ovr(2, 2, 0), ovr(9, 20, 0xf)][..],
    ] {
        let host = HostAcpi {
            oem_id: *b"OEMOEM",
            tables: &[],
            overrides,
        };
        let (m, l) = build(1, 0, &host);
        let t = table(&m, l.madt, b"APIC");
        let isos: Vec<(u8, u32)> = madt_entries(t)
            .into_iter()
            .filter(|(k, _)| *k == 2)
            .map(|(_, b)| (b[3], u32_at(&b, 4)))
            .collect();
        let rest: Vec<(u8, u32)> = overrides
            .iter()
            .filter(|o| o.irq != 0 && o.gsi != 2)
            .map(|o| (o.irq, o.gsi))
            .collect();
        assert_eq!(isos[0], (0, 2));
        assert_eq!(isos[1..], rest[..], "{overrides:?}");
        assert_eq!(isos.iter().filter(|i| i.1 == 2).count(), 1);
    }
}

#[test]
fn bad_vcpu_counts_and_small_memory_are_refused_before_writing() {
    let host = HostAcpi {
        oem_id: *b"OEMOEM",
        tables: &[],
        overrides: &[],
    };
    let mut backing = vec![0xa5u8; 4096];
    let mut mem = SliceMemory::new(&mut backing);
    for vcpus in [0, MAX_VCPUS + 1] {
        let config = AcpiConfig::new(vcpus);
        assert_eq!(
            write_dom0_acpi_tables(&mut mem, 0, &config, &host),
            Err(AcpiError::BadVcpuCount { vcpus })
        );
    }
    let config = AcpiConfig::new(4);
    let err = write_dom0_acpi_tables(&mut mem, 4096 - 128, &config, &host).unwrap_err();
    assert!(matches!(err, AcpiError::Memory(_)), "{err:?}");
    assert!(err.to_string().contains("do not fit"));
    assert!(write_dom0_acpi_tables(&mut mem, u64::MAX - 8, &config, &host).is_err());
    assert!(backing.iter().all(|&b| b == 0xa5), "nothing written");
}

#[test]
fn many_vcpus_and_tables_fill_more_than_a_page() {
    let tables: Vec<HostTable> = (0..300).map(|i| host_table(b"SSDT", i << 12)).collect();
    let host = HostAcpi {
        oem_id: *b"OEMOEM",
        tables: &tables,
        overrides: &QEMU_OVERRIDES,
    };
    let (m, l) = build(MAX_VCPUS, 0x4000, &host);
    assert!(l.end - l.start > 4096);
    assert_eq!(table(&m, l.xsdt, b"XSDT").len(), 36 + 8 * 301);
    let e = madt_entries(table(&m, l.madt, b"APIC"));
    assert_eq!(e.iter().filter(|(k, _)| *k == 0).count(), 255);
    assert_eq!(e[254].1[2..4], [254, 254]);
}

// ---- e820 ----

type Entry = (u64, u64, u32);

fn memmap(host: &[Entry], ram: &[(u64, u64)], tables: (u64, u64)) -> Vec<Entry> {
    let mut out = [MemmapEntry::default(); 32];
    let n = dom0_memmap(host.iter().copied(), ram, tables, &mut out).unwrap();
    let v: Vec<Entry> = out[..n]
        .iter()
        .map(|e| (e.addr, e.addr + e.size, e.kind))
        .collect();
    for w in v.windows(2) {
        assert!(w[0].1 <= w[1].0, "sorted, disjoint: {w:?}");
        assert!(w[0].1 < w[1].0 || w[0].2 != w[1].2, "merged: {w:?}");
    }
    v
}

const RAM: u32 = MEMMAP_TYPE_RAM;
const RES: u32 = MEMMAP_TYPE_RESERVED;
const ACPI: u32 = MEMMAP_TYPE_ACPI;

/// QEMU (SeaBIOS) with 5 GiB: the PCI hole pushes 1 GiB above 4 GiB.
const QEMU: [Entry; 8] = [
    (0, 0x9fc00, 1),
    (0x9fc00, 0xa0000, 2),
    (0xf0000, 0x10_0000, 2),
    (0x10_0000, 0xbffe_0000, 1),
    (0xbffe_0000, 0xc000_0000, 2),
    (0xfeff_c000, 0xff00_0000, 2),
    (0xfffc_0000, 4 * G, 2),
    (4 * G, 6 * G, 1),
];

/// Bochs (its BIOS) with 512 MiB, the ACPI tables at the top of RAM.
const BOCHS: [Entry; 6] = [
    (0, 0x9f000, 1),
    (0x9f000, 0xa0000, 2),
    (0xe8000, 0x10_0000, 2),
    (0x10_0000, 0x1fff_0000, 1),
    (0x1fff_0000, 0x2000_0000, 3),
    (0xfffc_0000, 4 * G, 2),
];

/// dom0's RAM: the low 636 KiB, 1-2 MiB, then from 3.25 MiB (Basalt's image in between).
const DOM0_RAM: [(u64, u64); 3] = [
    (0, 0x9f000),
    (0x10_0000, 0x20_0000),
    (0x34_0000, 0x2000_0000),
];

#[test]
fn qemu_map_with_a_hole_for_basalt() {
    let tables = (0x1fff_f000, 0x2000_0000);
    assert_eq!(
        memmap(&QEMU, &DOM0_RAM, tables),
        [
            (0, 0x9f000, RAM),
            (0x9f000, 0xa0000, RES),
            (0xf0000, 0x10_0000, RES),
            (0x10_0000, 0x20_0000, RAM),
            (0x20_0000, 0x34_0000, RES),
            (0x34_0000, 0x1fff_f000, RAM),
            (0x1fff_f000, 0x2000_0000, ACPI),
            (0x2000_0000, 0xc000_0000, RES),
            (0xfeff_c000, 0xff00_0000, RES),
            (0xfffc_0000, 6 * G, RES),
        ]
    );
}

#[test]
fn bochs_map_keeps_the_hosts_acpi_data() {
    let ram = [
        (0, 0x9f000),
        (0x10_0000, 0x20_0000),
        (0x34_0000, 0x1000_0000),
    ];
    assert_eq!(
        memmap(&BOCHS, &ram, (0x9d000, 0x9f000)),
        [
            (0, 0x9d000, RAM),
            (0x9d000, 0x9f000, ACPI),
            (0x9f000, 0xa0000, RES),
            (0xe8000, 0x10_0000, RES),
            (0x10_0000, 0x20_0000, RAM),
            (0x20_0000, 0x34_0000, RES),
            (0x34_0000, 0x1000_0000, RAM),
            (0x1000_0000, 0x1fff_0000, RES),
            (0x1fff_0000, 0x2000_0000, ACPI),
            (0xfffc_0000, 4 * G, RES),
        ]
    );
}

#[test]
fn tables_in_the_middle_of_a_range_split_it() {
    let ram = [(0x10_0000, 0x20_0000)];
    let host = [(0x10_0000, 0x40_0000, 1)];
    assert_eq!(
        memmap(&host, &ram, (0x15_0000, 0x15_2000)),
        [
            (0x10_0000, 0x15_0000, RAM),
            (0x15_0000, 0x15_2000, ACPI),
            (0x15_2000, 0x20_0000, RAM),
            (0x20_0000, 0x40_0000, RES),
        ]
    );
}

#[test]
fn host_types_map_to_dom0s() {
    let host = [
        (0, 0x1000, 1),
        (0x1000, 0x2000, 3),
        (0x2000, 0x3000, MEMMAP_TYPE_NVS),
        (0x3000, 0x4000, 5),
        (0x4000, 0x5000, 7),
        (0x5000, 0x6000, 12),
        (0x6000, 0x7000, 4),
        (0x7000, 0x9000, 1),
    ];
    assert_eq!(
        memmap(&host, &[(0, 0x1000), (0x7000, 0x9000)], (0x8000, 0x9000)),
        [
            (0, 0x1000, RAM),
            (0x1000, 0x2000, ACPI),
            (0x2000, 0x3000, MEMMAP_TYPE_NVS),
            (0x3000, 0x4000, 5),
            (0x4000, 0x6000, RES),
            (0x6000, 0x7000, MEMMAP_TYPE_NVS),
            (0x7000, 0x8000, RAM),
            (0x8000, 0x9000, ACPI),
        ]
    );
}

#[test]
fn adjacent_usable_host_regions_cover_dom0_ram() {
    let host = [(0, 0x4000, 1), (0x4000, 0x8000, 1)];
    assert_eq!(
        memmap(&host, &[(0x2000, 0x6000)], (0x5000, 0x6000)),
        [
            (0, 0x2000, RES),
            (0x2000, 0x5000, RAM),
            (0x5000, 0x6000, ACPI),
            (0x6000, 0x8000, RES)
        ]
    );
}

fn memmap_err(host: &[Entry], ram: &[(u64, u64)], tables: (u64, u64)) -> Dom0MemmapError {
    let mut out = [MemmapEntry::default(); 32];
    let err = dom0_memmap(host.iter().copied(), ram, tables, &mut out).unwrap_err();
    assert!(err.to_string().len() > 40, "{err}");
    err
}

#[test]
fn dom0_ram_outside_host_usable_ram_is_refused() {
    let t = (0x1000, 0x2000);
    assert_eq!(
        memmap_err(&QEMU, &[(0, 0xa0000)], t),
        Dom0MemmapError::RamNotUsable(0x9fc00, 0xa0000)
    );
    assert_eq!(
        memmap_err(&BOCHS, &[(0, 0x1000), (0x1fff_0000, 0x2000_0000)], t),
        Dom0MemmapError::RamNotUsable(0x1fff_0000, 0x2000_0000)
    );
    assert_eq!(
        memmap_err(&QEMU, &[(0, 0x1000), (0xc000_0000, 0xc000_1000)], t),
        Dom0MemmapError::RamNotUsable(0xc000_0000, 0xc000_1000)
    );
}

#[test]
fn bad_inputs_are_refused() {
    let t = (0x1000, 0x2000);
    for ram in [
        &[(0, 0x1800)][..],
        &[(0, 0x2000), (0x1000, 0x3000)][..],
        &[(0x4000, 0x5000), (0, 0x2000)][..],
        &[(0, 0x2000), (0x3000, 0x3000)][..],
    ] {
        assert!(
            matches!(memmap_err(&QEMU, ram, t), Dom0MemmapError::BadRam(..)),
            "{ram:x?}"
        );
    }
    let unsorted = [(0x10_0000, 0x20_0000, 1), (0, 0x9f000, 1)];
    assert_eq!(
        memmap_err(&unsorted, &[(0, 0x1000)], t),
        Dom0MemmapError::HostMapUnsorted(0)
    );
    let overlapping = [(0, 0x9f000, 1), (0x9e000, 0xa0000, 2)];
    assert_eq!(
        memmap_err(&overlapping, &[(0, 0x1000)], t),
        Dom0MemmapError::HostMapUnsorted(0x9e000)
    );
    for tables in [
        (0x20_0000, 0x20_1000),
        (0x9e000, 0xa0000),
        (0x1800, 0x2000),
        (0x2000, 0x2000),
    ] {
        assert_eq!(
            memmap_err(&QEMU, &DOM0_RAM, tables),
            Dom0MemmapError::TablesOutsideRam(tables.0, tables.1)
        );
    }
}

#[test]
fn a_small_output_is_refused() {
    let mut out = [MemmapEntry::default(); 9];
    assert_eq!(
        dom0_memmap(QEMU.iter().copied(), &DOM0_RAM, (0x1000, 0x2000), &mut out),
        Err(Dom0MemmapError::TooManyEntries(9))
    );
    let mut out = [MemmapEntry::default(); 11];
    assert_eq!(
        dom0_memmap(QEMU.iter().copied(), &DOM0_RAM, (0x1000, 0x2000), &mut out),
        Ok(11)
    );
}
