//! ELF64 section headers and symbol tables, for naming code addresses in
//! panic and fault reports.
//!
//! GRUB's Multiboot2 loader passes the hypervisor's ELF section headers
//! (boot information tag 9) and loads the sections that are not part of the
//! program image — `.symtab` and `.strtab` among them — into memory, filling
//! in their addresses. [`find_symbol_tables`] finds them; [`Symbols::lookup`]
//! maps an address to `function+offset`. Everything is bounds-checked: a
//! damaged table yields no name, never a fault.

/// `sh_type` of a symbol table.
pub const SHT_SYMTAB: u32 = 2;
/// Size of an ELF64 section header.
pub const SHDR_SIZE: usize = 64;
/// Size of an ELF64 symbol.
pub const SYM_SIZE: usize = 24;
const STT_FUNC: u8 = 2;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// An ELF64 section header (the fields Basalt uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionHeader {
    /// `sh_type`.
    pub typ: u32,
    /// `sh_addr`: where the section is in memory (physical, for sections
    /// the loader placed; virtual for the program image).
    pub addr: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`: for a symbol table, the index of its string table.
    pub link: u32,
}

impl SectionHeader {
    /// Parses section header `index` of a table of `entsize`-byte entries.
    pub fn parse(headers: &[u8], entsize: usize, index: usize) -> Option<Self> {
        if entsize < SHDR_SIZE {
            return None;
        }
        let h = headers
            .get(index.checked_mul(entsize)?..)?
            .get(..SHDR_SIZE)?;
        Some(Self {
            typ: le32(h, 4)?,
            addr: le64(h, 16)?,
            size: le64(h, 32)?,
            link: le32(h, 40)?,
        })
    }
}

/// Where the symbol table and its string table are, from the section headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SymbolTables {
    /// `.symtab`: address and size.
    pub symtab: (u64, u64),
    /// `.strtab`: address and size.
    pub strtab: (u64, u64),
}

/// Finds the symbol table in ELF section headers (`num` entries of `entsize`
/// bytes). `None` when there is none or the loader did not place it.
pub fn find_symbol_tables(headers: &[u8], num: usize, entsize: usize) -> Option<SymbolTables> {
    (0..num).find_map(|i| {
        let sh = SectionHeader::parse(headers, entsize, i)?;
        if sh.typ != SHT_SYMTAB || sh.addr == 0 || sh.size == 0 {
            return None;
        }
        let strings = SectionHeader::parse(headers, entsize, sh.link as usize)?;
        (strings.addr != 0 && strings.size != 0).then_some(SymbolTables {
            symtab: (sh.addr, sh.size),
            strtab: (strings.addr, strings.size),
        })
    })
}

/// A symbol table and its strings.
#[derive(Clone, Copy, Debug)]
pub struct Symbols<'a> {
    symtab: &'a [u8],
    strtab: &'a [u8],
}

impl<'a> Symbols<'a> {
    /// Wraps the bytes of `.symtab` and `.strtab`.
    pub fn new(symtab: &'a [u8], strtab: &'a [u8]) -> Self {
        Self { symtab, strtab }
    }

    /// The number of symbols.
    pub fn len(&self) -> usize {
        self.symtab.len() / SYM_SIZE
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn name(&self, offset: u32) -> Option<&'a str> {
        let bytes = self.strtab.get(offset as usize..)?;
        let end = bytes.iter().position(|b| *b == 0)?;
        core::str::from_utf8(&bytes[..end]).ok()
    }

    /// The function containing `addr`, as `(name, offset into it)`. Uses the
    /// symbol's size when it has one; a zero-size symbol covers up to the
    /// next symbol. O(n) in the number of symbols: used only in reports.
    pub fn lookup(&self, addr: u64) -> Option<(&'a str, u64)> {
        let mut best: Option<(u64, u64, u32)> = None; // (value, size, name)
        for sym in self.symtab.chunks_exact(SYM_SIZE) {
            let info = sym[4];
            let value = le64(sym, 8)?;
            let size = le64(sym, 16)?;
            if info & 0xf != STT_FUNC || value > addr || value == 0 {
                continue;
            }
            if size != 0 && addr - value >= size {
                continue;
            }
            if best.is_none_or(|(v, _, _)| value > v) {
                best = Some((value, size, le32(sym, 0)?));
            }
        }
        let (value, _, name) = best?;
        Some((self.name(name)?, addr - value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(name: u32, info: u8, value: u64, size: u64) -> Vec<u8> {
        let mut s = name.to_le_bytes().to_vec();
        s.push(info);
        s.push(0);
        s.extend_from_slice(&1u16.to_le_bytes());
        s.extend_from_slice(&value.to_le_bytes());
        s.extend_from_slice(&size.to_le_bytes());
        s
    }

    fn shdr(typ: u32, addr: u64, size: u64, link: u32) -> Vec<u8> {
        let mut h = vec![0u8; SHDR_SIZE];
        h[4..8].copy_from_slice(&typ.to_le_bytes());
        h[16..24].copy_from_slice(&addr.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[40..44].copy_from_slice(&link.to_le_bytes());
        h
    }

    #[test]
    fn finds_tables_and_names_addresses() {
        let strtab = b"\0kmain\0panic\0data\0".to_vec();
        let mut symtab = sym(0, 0, 0, 0);
        symtab.extend(sym(1, STT_FUNC, 0x1000, 0x100));
        symtab.extend(sym(7, STT_FUNC, 0x1100, 0));
        symtab.extend(sym(13, 1, 0x1050, 8)); // an object, never a function name
        let syms = Symbols::new(&symtab, &strtab);
        assert_eq!(syms.lookup(0x1000), Some(("kmain", 0)));
        assert_eq!(syms.lookup(0x1050), Some(("kmain", 0x50)));
        assert_eq!(syms.lookup(0x1234), Some(("panic", 0x134)));
        assert_eq!(syms.lookup(0x10), None);

        let mut headers = shdr(0, 0, 0, 0);
        headers.extend(shdr(SHT_SYMTAB, 0x9000, symtab.len() as u64, 2));
        headers.extend(shdr(3, 0xa000, strtab.len() as u64, 0));
        assert_eq!(
            find_symbol_tables(&headers, 3, SHDR_SIZE),
            Some(SymbolTables {
                symtab: (0x9000, 96),
                strtab: (0xa000, 18)
            })
        );
        // Not loaded (address 0): no tables.
        let mut unloaded = shdr(0, 0, 0, 0);
        unloaded.extend(shdr(SHT_SYMTAB, 0, 96, 2));
        unloaded.extend(shdr(3, 0xa000, 18, 0));
        assert_eq!(find_symbol_tables(&unloaded, 3, SHDR_SIZE), None);
    }

    #[test]
    fn damaged_tables_never_panic() {
        let mut seed = 0x1234_5678u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(rand() % 300)).map(|_| rand() as u8).collect();
            let _ = find_symbol_tables(&bytes, (rand() % 10) as usize, (rand() % 100) as usize);
            let syms = Symbols::new(&bytes, &bytes);
            let _ = syms.lookup(rand());
        }
    }
}
