//! Tests of the ELF loader on synthetic images built here.

use super::*;
use crate::mem::SliceMemory;

/// Memory of the test domains: 2 MiB.
const MEMORY: u64 = 2 << 20;

/// A test `GuestMemory` backed by a vector.
struct VecMemory(Vec<u8>);

impl GuestMemory for VecMemory {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        SliceMemory::new(&mut self.0).write(gpa, bytes)
    }
    fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemoryError> {
        SliceMemory::new(&mut self.0).fill(gpa, len, byte)
    }
    fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let start = usize::try_from(gpa).map_err(|_| MemoryError::Unmapped { gpa })?;
        let src = self
            .0
            .get(start..start + out.len())
            .ok_or(MemoryError::Unmapped { gpa })?;
        out.copy_from_slice(src);
        Ok(())
    }
}

#[derive(Clone)]
struct Load {
    paddr: u64,
    data: Vec<u8>,
    memsz: u64,
    kind: u32,
}

#[derive(Clone)]
struct Note {
    name: Vec<u8>,
    kind: u32,
    desc: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum NotesIn {
    Segment,
    Section,
    Nowhere,
}

/// Builds ELF files: header, program headers, notes, segment bytes, section headers.
#[derive(Clone)]
struct Builder {
    class: ElfClass,
    machine: u16,
    kind: u16,
    loads: Vec<Load>,
    notes: Vec<Note>,
    notes_in: NotesIn,
    note_align: u64,
}

fn xen_note(entry: u32) -> Note {
    Note {
        name: b"Xen\0".to_vec(),
        kind: XEN_ELFNOTE_PHYS32_ENTRY,
        desc: entry.to_le_bytes().to_vec(),
    }
}

impl Builder {
    /// A valid PVH kernel: text at 1 MiB (entry at +0x10), data + bss at 1 MiB + 4 KiB.
    fn kernel(class: ElfClass) -> Self {
        let text: Vec<u8> = (0..0x40u8)
            .map(|b| b.wrapping_mul(7).wrapping_add(1))
            .collect();
        let data: Vec<u8> = (0..0x20u8).map(|b| 0x80 | b).collect();
        Self {
            class,
            machine: if class == ElfClass::Elf64 {
                EM_X86_64
            } else {
                EM_386
            },
            kind: ET_EXEC,
            loads: vec![
                Load {
                    paddr: 0x10_0000,
                    data: text,
                    memsz: 0x40,
                    kind: PT_LOAD,
                },
                Load {
                    paddr: 0x10_1000,
                    data,
                    memsz: 0x100,
                    kind: PT_LOAD,
                },
            ],
            notes: vec![
                Note {
                    name: b"GNU\0".to_vec(),
                    kind: 3,
                    desc: vec![0xab; 20],
                },
                Note {
                    name: b"Xen\0".to_vec(),
                    kind: 6,
                    desc: b"linux\0".to_vec(),
                },
                xen_note(0x10_0010),
            ],
            notes_in: NotesIn::Segment,
            note_align: 4,
        }
    }

    fn note_bytes(&self) -> Vec<u8> {
        let align = self.note_align as usize;
        let mut out = Vec::new();
        for note in &self.notes {
            out.extend_from_slice(&(note.name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(note.desc.len() as u32).to_le_bytes());
            out.extend_from_slice(&note.kind.to_le_bytes());
            out.extend_from_slice(&note.name);
            while !out.len().is_multiple_of(align) {
                out.push(0);
            }
            out.extend_from_slice(&note.desc);
            while !out.len().is_multiple_of(align) {
                out.push(0);
            }
        }
        out
    }

    fn build(&self) -> Vec<u8> {
        let is64 = self.class == ElfClass::Elf64;
        let (ehsize, phentsize, shentsize) = if is64 { (64, 56, 64) } else { (52, 32, 40) };
        let notes = self.note_bytes();
        let note_phdr = self.notes_in == NotesIn::Segment;
        let phnum = self.loads.len() + usize::from(note_phdr);
        let mut out = vec![0u8; ehsize + phnum * phentsize];

        let pad = |out: &mut Vec<u8>, align: usize| {
            while !out.len().is_multiple_of(align) {
                out.push(0);
            }
        };
        pad(&mut out, 8);
        let note_offset = out.len();
        out.extend_from_slice(&notes);
        let mut load_offsets = Vec::new();
        for load in &self.loads {
            pad(&mut out, 16);
            load_offsets.push(out.len());
            out.extend_from_slice(&load.data);
        }
        pad(&mut out, 8);
        let shoff = out.len();
        let shnum = if self.notes_in == NotesIn::Section {
            2
        } else {
            0
        };
        out.resize(shoff + shnum * shentsize, 0);

        // ELF header.
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if is64 { 2 } else { 1 };
        out[5] = 1;
        out[6] = 1;
        put16(&mut out, 16, self.kind);
        put16(&mut out, 18, self.machine);
        put32(&mut out, 20, 1);
        if is64 {
            put64(&mut out, 32, ehsize as u64);
            put64(&mut out, 40, if shnum > 0 { shoff as u64 } else { 0 });
            put16(&mut out, 52, ehsize as u16);
            put16(&mut out, 54, phentsize as u16);
            put16(&mut out, 56, phnum as u16);
            put16(&mut out, 58, shentsize as u16);
            put16(&mut out, 60, shnum as u16);
        } else {
            put32(&mut out, 28, ehsize as u32);
            put32(&mut out, 32, if shnum > 0 { shoff as u32 } else { 0 });
            put16(&mut out, 40, ehsize as u16);
            put16(&mut out, 42, phentsize as u16);
            put16(&mut out, 44, phnum as u16);
            put16(&mut out, 46, shentsize as u16);
            put16(&mut out, 48, shnum as u16);
        }

        // Program headers: loads, then the notes.
        let mut phdrs: Vec<(u32, u64, u64, u64, u64, u64)> = self
            .loads
            .iter()
            .zip(&load_offsets)
            .map(|(l, &off)| {
                (
                    l.kind,
                    off as u64,
                    l.paddr,
                    l.data.len() as u64,
                    l.memsz,
                    0x1000,
                )
            })
            .collect();
        if note_phdr {
            let n = notes.len() as u64;
            phdrs.push((PT_NOTE, note_offset as u64, 0, n, n, self.note_align));
        }
        for (i, (kind, offset, paddr, filesz, memsz, align)) in phdrs.into_iter().enumerate() {
            let base = ehsize + i * phentsize;
            put32(&mut out, base, kind);
            if is64 {
                put32(&mut out, base + 4, 5);
                put64(&mut out, base + 8, offset);
                put64(&mut out, base + 16, paddr | 0xffff_ffff_8000_0000);
                put64(&mut out, base + 24, paddr);
                put64(&mut out, base + 32, filesz);
                put64(&mut out, base + 40, memsz);
                put64(&mut out, base + 48, align);
            } else {
                put32(&mut out, base + 4, offset as u32);
                put32(&mut out, base + 8, paddr as u32 | 0xc000_0000);
                put32(&mut out, base + 12, paddr as u32);
                put32(&mut out, base + 16, filesz as u32);
                put32(&mut out, base + 20, memsz as u32);
                put32(&mut out, base + 24, 5);
                put32(&mut out, base + 28, align as u32);
            }
        }

        // Section headers: a null one and the notes.
        if shnum > 0 {
            let base = shoff + shentsize;
            put32(&mut out, base + 4, SHT_NOTE);
            if is64 {
                put64(&mut out, base + 24, note_offset as u64);
                put64(&mut out, base + 32, notes.len() as u64);
                put64(&mut out, base + 48, self.note_align);
            } else {
                put32(&mut out, base + 16, note_offset as u32);
                put32(&mut out, base + 20, notes.len() as u32);
                put32(&mut out, base + 32, self.note_align as u32);
            }
        }
        out
    }
}

fn put16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn parse_err(builder: &Builder) -> ImageError {
    parse(&builder.build(), MEMORY).expect_err("the image should be refused")
}

#[test]
fn parses_elf64() {
    let image = parse(&Builder::kernel(ElfClass::Elf64).build(), MEMORY).unwrap();
    assert_eq!(image.entry, 0x10_0010);
    assert_eq!(image.class, ElfClass::Elf64);
    assert_eq!(image.segment_count, 2);
    assert_eq!(image.segments().len(), 2);
    assert_eq!(image.segments()[0].paddr, 0x10_0000);
    assert_eq!(image.segments()[0].filesz, 0x40);
    assert_eq!(image.segments()[1].memsz, 0x100);
    assert_eq!(image.segments()[1].flags, 5);
    assert_eq!(image.lowest, 0x10_0000);
    assert_eq!(image.highest, 0x10_1100);
}

#[test]
fn parses_elf32() {
    let image = parse(&Builder::kernel(ElfClass::Elf32).build(), MEMORY).unwrap();
    assert_eq!(image.entry, 0x10_0010);
    assert_eq!(image.class, ElfClass::Elf32);
    assert_eq!(image.segments()[1].paddr, 0x10_1000);
    assert_eq!((image.lowest, image.highest), (0x10_0000, 0x10_1100));
}

#[test]
fn either_machine_with_either_class() {
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        for machine in [EM_386, EM_X86_64] {
            let mut b = Builder::kernel(class);
            b.machine = machine;
            assert!(parse(&b.build(), MEMORY).is_ok());
        }
    }
}

#[test]
fn eight_byte_entry_note_uses_low_half() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.notes = vec![Note {
        name: b"Xen\0".to_vec(),
        kind: XEN_ELFNOTE_PHYS32_ENTRY,
        desc: 0xffff_ffff_0010_0020u64.to_le_bytes().to_vec(),
    }];
    assert_eq!(parse(&b.build(), MEMORY).unwrap().entry, 0x10_0020);
}

#[test]
fn entry_note_in_a_section_only() {
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        let mut b = Builder::kernel(class);
        b.notes_in = NotesIn::Section;
        assert_eq!(parse(&b.build(), MEMORY).unwrap().entry, 0x10_0010);
    }
}

#[test]
fn notes_aligned_to_eight() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.note_align = 8;
    // A 5-byte name puts the descriptor at 12 + 5 -> 24 with 8-byte padding (20 with 4).
    b.notes.insert(
        0,
        Note {
            name: b"Linux\0".to_vec(),
            kind: 1,
            desc: vec![1, 2, 3],
        },
    );
    assert_eq!(parse(&b.build(), MEMORY).unwrap().entry, 0x10_0010);
}

#[test]
fn name_without_nul_accepted_and_other_names_ignored() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.notes = vec![
        Note {
            name: b"XEN\0".to_vec(),
            kind: 18,
            desc: 0x10_0004u32.to_le_bytes().to_vec(),
        },
        Note {
            name: b"Xe\0".to_vec(),
            kind: 18,
            desc: 0x10_0004u32.to_le_bytes().to_vec(),
        },
        Note {
            name: b"Xen".to_vec(),
            kind: 18,
            desc: 0x10_0008u32.to_le_bytes().to_vec(),
        },
    ];
    assert_eq!(parse(&b.build(), MEMORY).unwrap().entry, 0x10_0008);
}

#[test]
fn empty_segments_are_ignored() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads.push(Load {
        paddr: 0x10_0000,
        data: vec![],
        memsz: 0,
        kind: PT_LOAD,
    });
    let image = parse(&b.build(), MEMORY).unwrap();
    assert_eq!(image.segment_count, 2);
}

#[test]
fn segment_may_end_exactly_at_memory_end() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads[1].memsz = MEMORY - 0x10_1000;
    let image = parse(&b.build(), MEMORY).unwrap();
    assert_eq!(image.highest, MEMORY);
    b.loads[1].memsz += 1;
    assert!(matches!(
        parse_err(&b),
        ImageError::SegmentOutsideMemory { .. }
    ));
}

#[test]
fn not_elf() {
    assert_eq!(
        parse(b"MZ\x90\x00 this is a PE file", MEMORY),
        Err(ImageError::NotElf)
    );
    assert_eq!(
        parse(b"", MEMORY).unwrap_err(),
        ImageError::Truncated {
            what: "ELF header",
            offset: 0,
            size: 16,
            file_size: 0
        }
    );
    assert!(
        parse(b"\x7fEL", MEMORY)
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );
    assert_eq!(parse(b"\x7fEX", MEMORY), Err(ImageError::NotElf));
    assert!(parse(b"\x7f", MEMORY).is_err());
}

#[test]
fn unsupported_class_byte_order_machine_type() {
    let good = Builder::kernel(ElfClass::Elf64).build();
    let mut bytes = good.clone();
    bytes[4] = 3;
    assert_eq!(parse(&bytes, MEMORY), Err(ImageError::UnsupportedClass(3)));
    let mut bytes = good.clone();
    bytes[5] = 2;
    assert_eq!(
        parse(&bytes, MEMORY),
        Err(ImageError::UnsupportedByteOrder(2))
    );

    let mut b = Builder::kernel(ElfClass::Elf64);
    b.machine = 183; // EM_AARCH64
    assert_eq!(parse_err(&b), ImageError::UnsupportedMachine(183));
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.kind = ET_DYN;
    assert_eq!(parse_err(&b), ImageError::NotExecutable(ET_DYN));
    assert!(parse_err(&b).to_string().contains("ET_DYN"));
    b.kind = 1;
    assert_eq!(parse_err(&b), ImageError::NotExecutable(1));
}

#[test]
fn truncated_structures() {
    let good = Builder::kernel(ElfClass::Elf64).build();
    // The header itself.
    assert!(matches!(
        parse(&good[..40], MEMORY),
        Err(ImageError::Truncated {
            what: "ELF header",
            size: 64,
            file_size: 40,
            ..
        })
    ));
    // The program header table.
    assert!(matches!(
        parse(&good[..100], MEMORY),
        Err(ImageError::Truncated {
            what: "program header table",
            ..
        })
    ));
    // A segment's bytes: point the first PT_LOAD past the end.
    let mut bytes = good.clone();
    put64(&mut bytes, 64 + 8, good.len() as u64 - 8);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Truncated {
            what: "PT_LOAD segment",
            ..
        })
    ));
    // An offset that overflows.
    put64(&mut bytes, 64 + 8, u64::MAX);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Truncated { .. })
    ));
    // The note segment (the third program header).
    let mut bytes = good.clone();
    put64(&mut bytes, 64 + 2 * 56 + 32, 1 << 20);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Truncated {
            what: "PT_NOTE segment",
            ..
        })
    ));
    // The section header table.
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.notes_in = NotesIn::Section;
    let bytes = b.build();
    assert!(matches!(
        parse(&bytes[..bytes.len() - 1], MEMORY),
        Err(ImageError::Truncated {
            what: "section header table",
            ..
        })
    ));
}

#[test]
fn malformed_headers() {
    let mut bytes = Builder::kernel(ElfClass::Elf64).build();
    put16(&mut bytes, 54, 55);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Malformed(_))
    ));
    let mut bytes = Builder::kernel(ElfClass::Elf64).build();
    put16(&mut bytes, 56, 0xffff);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Malformed(_))
    ));
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.notes_in = NotesIn::Section;
    let mut bytes = b.build();
    put16(&mut bytes, 46, 39);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Malformed(_))
    ));
    // Program header entries smaller than the standard one.
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.loads.truncate(1);
    b.notes_in = NotesIn::Section;
    let mut bytes = b.build();
    put16(&mut bytes, 42, 16); // too small
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::Malformed(_))
    ));
}

#[test]
fn no_loadable_segments() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads.clear();
    assert_eq!(parse_err(&b), ImageError::NoLoadableSegments);
    // Only empty or non-load segments.
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads = vec![
        Load {
            paddr: 0x10_0000,
            data: vec![],
            memsz: 0,
            kind: PT_LOAD,
        },
        Load {
            paddr: 0x10_0000,
            data: vec![1; 8],
            memsz: 8,
            kind: 0x6474_e551,
        },
    ];
    assert_eq!(parse_err(&b), ImageError::NoLoadableSegments);
    // No program headers at all.
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.loads.clear();
    b.notes_in = NotesIn::Section;
    assert_eq!(parse_err(&b), ImageError::NoLoadableSegments);
}

#[test]
fn too_many_segments() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads = (0..17u64)
        .map(|i| Load {
            paddr: 0x10_0000 + i * 0x1000,
            data: vec![0x90; 0x20],
            memsz: 0x20,
            kind: PT_LOAD,
        })
        .collect();
    assert_eq!(parse_err(&b), ImageError::TooManySegments { count: 17 });
    b.loads.pop();
    assert_eq!(parse(&b.build(), MEMORY).unwrap().segment_count, 16);
}

#[test]
fn file_size_above_mem_size() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.loads[1].memsz = 0x10;
    assert_eq!(
        parse_err(&b),
        ImageError::FileSizeAboveMemSize {
            index: 1,
            filesz: 0x20,
            memsz: 0x10
        }
    );
}

#[test]
fn segment_outside_memory() {
    let b = Builder::kernel(ElfClass::Elf64);
    assert_eq!(
        parse(&b.build(), 0x10_1080),
        Err(ImageError::SegmentOutsideMemory {
            paddr: 0x10_1000,
            size: 0x100,
            memory: 0x10_1080
        })
    );
    // An end that overflows.
    let mut bytes = b.build();
    put64(&mut bytes, 64 + 56 + 24, u64::MAX - 0x10);
    assert!(matches!(
        parse(&bytes, MEMORY),
        Err(ImageError::SegmentOutsideMemory {
            paddr: 0xffff_ffff_ffff_ffef,
            ..
        })
    ));
    assert!(parse(&b.build(), 0).is_err());
}

#[test]
fn overlapping_segments() {
    let mut b = Builder::kernel(ElfClass::Elf32);
    b.loads[1].paddr = 0x10_0020;
    assert_eq!(
        parse_err(&b),
        ImageError::OverlappingSegments {
            first_start: 0x10_0000,
            first_end: 0x10_0040,
            second_start: 0x10_0020,
            second_end: 0x10_0120,
        }
    );
    // Touching is fine.
    b.loads[1].paddr = 0x10_0040;
    assert!(parse(&b.build(), MEMORY).is_ok());
}

#[test]
fn no_pvh_entry() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.notes.pop();
    assert_eq!(parse_err(&b), ImageError::NoPvhEntry);
    assert!(parse_err(&b).to_string().contains("CONFIG_PVH=y"));
    b.notes_in = NotesIn::Nowhere;
    assert_eq!(parse_err(&b), ImageError::NoPvhEntry);
    // A malformed note earlier in the area hides the entry.
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.notes.insert(
        0,
        Note {
            name: b"GNU\0".to_vec(),
            kind: 1,
            desc: vec![],
        },
    );
    let mut bytes = b.build();
    let notes_at = 64 + 3 * 56;
    put32(&mut bytes, notes_at + 4, 0x7fff_ffff); // descsz past the area
    assert_eq!(parse(&bytes, MEMORY), Err(ImageError::NoPvhEntry));
}

#[test]
fn bad_pvh_note() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    b.notes = vec![Note {
        name: b"Xen\0".to_vec(),
        kind: 18,
        desc: vec![0x10, 0, 0x10, 0, 0, 0],
    }];
    assert_eq!(parse_err(&b), ImageError::BadPvhNote { descsz: 6 });
}

#[test]
fn entry_outside_image() {
    let mut b = Builder::kernel(ElfClass::Elf64);
    for entry in [0, 0x10_0040, 0x10_1020, 0x10_10ff, 0xffff_ffff] {
        *b.notes.last_mut().unwrap() = xen_note(entry);
        assert_eq!(
            parse_err(&b),
            ImageError::EntryOutsideImage { entry },
            "{entry:#x}"
        );
    }
    *b.notes.last_mut().unwrap() = xen_note(0x10_101f);
    assert!(parse(&b.build(), MEMORY).is_ok());
}

#[test]
fn load_copies_and_zero_fills() {
    for class in [ElfClass::Elf32, ElfClass::Elf64] {
        let b = Builder::kernel(class);
        let bytes = b.build();
        let image = parse(&bytes, MEMORY).unwrap();
        let mut mem = VecMemory(vec![0xcc; MEMORY as usize]);
        load(&image, &bytes, &mut mem).unwrap();
        let mem = mem.0;
        assert_eq!(&mem[0x10_0000..0x10_0040], &b.loads[0].data[..]);
        assert_eq!(&mem[0x10_1000..0x10_1020], &b.loads[1].data[..]);
        assert!(
            mem[0x10_1020..0x10_1100].iter().all(|&x| x == 0),
            "bss zeroed"
        );
        // Nothing else touched.
        assert_eq!(mem[0x10_0040], 0xcc);
        assert_eq!(mem[0x10_1100], 0xcc);
        assert_eq!(mem[0x0f_ffff], 0xcc);
        // Read back through the trait.
        let mut first = [0u8; 4];
        SliceMemory::new(&mut mem.clone())
            .read(0x10_0000, &mut first)
            .unwrap();
        assert_eq!(first, [1, 8, 15, 22]);
    }
}

#[test]
fn load_reports_memory_and_file_errors() {
    let bytes = Builder::kernel(ElfClass::Elf64).build();
    let image = parse(&bytes, MEMORY).unwrap();
    let mut small = VecMemory(vec![0; 0x10_1010]);
    let err = load(&image, &bytes, &mut small).unwrap_err();
    assert!(matches!(
        err,
        ImageError::GuestMemory(MemoryError::OutOfRange { .. })
    ));
    assert!(
        err.to_string()
            .starts_with("copying the image into the domain's memory failed")
    );
    // The wrong file for the image.
    let mut mem = VecMemory(vec![0; MEMORY as usize]);
    assert!(matches!(
        load(&image, &bytes[..64], &mut mem),
        Err(ImageError::Truncated {
            what: "PT_LOAD segment",
            ..
        })
    ));
}

#[test]
fn every_error_displays() {
    let errors = [
        ImageError::NotElf,
        ImageError::Truncated {
            what: "ELF header",
            offset: 0,
            size: 64,
            file_size: 3,
        },
        ImageError::UnsupportedClass(9),
        ImageError::UnsupportedByteOrder(2),
        ImageError::UnsupportedMachine(40),
        ImageError::NotExecutable(ET_DYN),
        ImageError::NotExecutable(1),
        ImageError::Malformed("x"),
        ImageError::NoLoadableSegments,
        ImageError::TooManySegments { count: 20 },
        ImageError::FileSizeAboveMemSize {
            index: 0,
            filesz: 2,
            memsz: 1,
        },
        ImageError::SegmentOutsideMemory {
            paddr: 0x100000,
            size: 1,
            memory: 0x100000,
        },
        ImageError::OverlappingSegments {
            first_start: 0,
            first_end: 2,
            second_start: 1,
            second_end: 3,
        },
        ImageError::NoPvhEntry,
        ImageError::BadPvhNote { descsz: 3 },
        ImageError::EntryOutsideImage { entry: 5 },
        ImageError::GuestMemory(MemoryError::Unmapped { gpa: 0 }),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.len() > 20, "{text}");
    }
    assert_eq!(
        ImageError::NoPvhEntry.to_string(),
        "no XEN_ELFNOTE_PHYS32_ENTRY note: the kernel was not built with PVH support \
         (CONFIG_PVH=y for Linux)"
    );
    assert!(
        ImageError::SegmentOutsideMemory {
            paddr: 0x100000,
            size: 1,
            memory: 0x100000
        }
        .to_string()
        .contains("raise memory=")
    );
}

/// Every prefix of valid images is refused without a panic.
#[test]
fn every_truncation_is_refused() {
    let mut builders = vec![
        Builder::kernel(ElfClass::Elf64),
        Builder::kernel(ElfClass::Elf32),
    ];
    let mut section = Builder::kernel(ElfClass::Elf64);
    section.notes_in = NotesIn::Section;
    builders.push(section);
    for b in builders {
        let bytes = b.build();
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            match parse(prefix, MEMORY) {
                Err(e) => assert!(!e.to_string().is_empty()),
                // Cutting padding after the last structure used is harmless.
                Ok(image) => {
                    let mut mem = VecMemory(vec![0; MEMORY as usize]);
                    load(&image, prefix, &mut mem).unwrap();
                }
            }
        }
        assert!(parse(&bytes, MEMORY).is_ok());
    }
}

/// xorshift64*: a seeded PRNG without crates.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Random mutations of valid images never panic, and whatever still parses loads.
#[test]
fn random_mutations_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut section = Builder::kernel(ElfClass::Elf32);
    section.notes_in = NotesIn::Section;
    let originals = [
        Builder::kernel(ElfClass::Elf64).build(),
        Builder::kernel(ElfClass::Elf32).build(),
        section.build(),
    ];
    let mut mem = VecMemory(vec![0; MEMORY as usize]);
    let mut accepted = 0;
    for round in 0..6_000 {
        let mut bytes = originals[round % originals.len()].clone();
        let edits = 1 + next(&mut state) % 6;
        for _ in 0..edits {
            let at = (next(&mut state) % bytes.len() as u64) as usize;
            match next(&mut state) % 4 {
                0 => bytes[at] = next(&mut state) as u8,
                1 => bytes[at] ^= 1 << (next(&mut state) % 8),
                // An interesting 32-bit value at an aligned offset.
                2 => {
                    let at = at & !3;
                    let values = [0, 1, 0xffff_ffff, 0x8000_0000, 0x10_0000, 0x20_0000, 18, 4];
                    let v: u32 = values[(next(&mut state) % values.len() as u64) as usize];
                    if at + 4 <= bytes.len() {
                        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
                _ => bytes.truncate(at.max(1)),
            }
        }
        let memory = if round % 7 == 0 {
            next(&mut state)
        } else {
            MEMORY
        };
        if let Ok(image) = parse(&bytes, memory) {
            assert!(image.segment_count >= 1 && image.segment_count <= MAX_SEGMENTS);
            assert!(image.highest <= memory);
            if memory <= MEMORY {
                accepted += 1;
                load(&image, &bytes, &mut mem).unwrap();
            }
        }
    }
    assert!(accepted > 0, "some mutations should leave a valid image");
}
