//! The layer rule of the hypervisor binary (docs/architecture.md,
//! "Layers"): every module of `hypervisor/src` belongs to a layer, and no
//! file names (through `crate::`, `$crate::` or `super::` paths) a module of
//! a higher layer. `cargo xtask lint` runs [`check`]; the tests below run it
//! on the tree, so `cargo test` fails on a violation too.

use std::fmt;
use std::path::{Path, PathBuf};

/// The layers, lowest first. Within `common`, the modules are ordered too
/// (the second number), so that they form no cycle either.
const LAYERS: &[(&str, Rank)] = &[
    // Base: the machine, memory, console, time, faults.
    ("acpi", BASE),
    ("arch", BASE),
    ("console", BASE),
    ("fault", BASE),
    ("fmtbuf", BASE),
    ("mm", BASE),
    ("panic", BASE),
    ("power", BASE),
    ("stats", BASE),
    ("time", BASE),
    ("verdict", BASE),
    // What the crate root re-exports or `#[macro_export]`s from the base.
    ("StackString", BASE),
    ("print", BASE),
    ("println", BASE),
    ("guest_log", BASE),
    // The vendor seam and its backends.
    ("vcpu", VENDOR),
    ("arch::x86_64::hvm", VENDOR),
    ("arch::x86_64::vmx", VENDOR),
    ("arch::x86_64::svm", VENDOR),
    ("arch::x86_64::switch", VENDOR),
    // A domain's virtual machine: devices, emulation, memory map.
    ("hvm", HVM),
    // The vendor-neutral core.
    ("common", Rank(3, 0)),
    ("common::lifecycle", Rank(3, 0)),
    ("common::domain", Rank(3, 1)),
    ("common::domctl", Rank(3, 2)),
    ("common::hypercall", Rank(3, 3)),
    ("common::exit", Rank(3, 4)),
    ("common::sched", Rank(3, 5)),
    ("common::measure", Rank(3, 6)),
    ("common::monitor", Rank(3, 6)),
    // Bring-up: the entry point and the per-CPU start, which wire it all.
    ("main", TOP),
    ("platform", TOP),
];

/// A layer (and, within `common`, a module's place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank(u8, u8);

const BASE: Rank = Rank(0, 0);
const VENDOR: Rank = Rank(1, 0);
const HVM: Rank = Rank(2, 0);
const TOP: Rank = Rank(4, 0);

impl fmt::Display for Rank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "base",
            1 => "vendor",
            2 => "hvm",
            3 => "common",
            _ => "bring-up",
        };
        write!(f, "{name} (layer {}.{})", self.0, self.1)
    }
}

/// The rank of a module path (segments from the crate root): the longest
/// entry of [`LAYERS`] that is a prefix of it.
fn rank(path: &[String]) -> Option<Rank> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            let p: Vec<&str> = prefix.split("::").collect();
            p.len() <= path.len() && p.iter().zip(path).all(|(a, b)| a == b)
        })
        .max_by_key(|(prefix, _)| prefix.split("::").count())
        .map(|(_, r)| *r)
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The file, relative to the source root.
    pub file: PathBuf,
    /// Its line (1-based).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Checks every `.rs` file under `src` (the hypervisor's `src`).
pub fn check(src: &Path) -> Result<(), Vec<Violation>> {
    let mut files = Vec::new();
    collect(src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(src).unwrap_or(file).to_path_buf();
        match std::fs::read_to_string(file) {
            Ok(text) => violations.extend(check_file(&rel, &text)),
            Err(e) => violations.push(Violation {
                file: rel,
                line: 0,
                message: format!("cannot be read: {e}"),
            }),
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file relative to the source root
/// (`common/sched.rs` → `common::sched`, `mm/mod.rs` → `mm`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
    }
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The violations in one file's text.
pub fn check_file(rel: &Path, text: &str) -> Vec<Violation> {
    let module = module_of(rel);
    let violation = |line, message| Violation {
        file: rel.to_path_buf(),
        line,
        message,
    };
    let Some(own) = rank(&module) else {
        return vec![violation(
            1,
            format!(
                "module `{}` has no layer: give it one in xtask/src/layers.rs (LAYERS) and in \
                 docs/architecture.md (\"Layers\")",
                module.join("::")
            ),
        )];
    };
    let code = strip_comments_and_strings(text);
    let mut out = Vec::new();
    for (offset, path) in paths(&code, &module) {
        let line = code[..offset].matches('\n').count() + 1;
        let shown = format!("crate::{}", path.join("::"));
        match rank(&path) {
            None => out.push(violation(
                line,
                format!(
                    "`{shown}` is in no layer: give its module one in xtask/src/layers.rs \
                     (LAYERS) and in docs/architecture.md (\"Layers\")"
                ),
            )),
            Some(theirs) if theirs > own => out.push(violation(
                line,
                format!(
                    "`{shown}` is {theirs}, above this file's {own}: a lower layer must not \
                     name a higher one; hand the lower one a trait object or a function instead \
                     (docs/architecture.md, \"Layers\")"
                ),
            )),
            Some(_) => {}
        }
    }
    out
}

/// `text` with comments and the contents of string and character literals
/// replaced by spaces (newlines kept, so offsets keep their lines).
fn strip_comments_and_strings(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &b[i..j.min(b.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < b.len() {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime.
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for _ in i..=e {
                        out.push(' ');
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every crate-relative module path the code names, with its offset:
/// `crate::a::b`, `$crate::a`, `super::x` (resolved against `module`),
/// `crate::{a, b::{c, d}}` (each item).
fn paths(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let b: Vec<char> = code.chars().collect();
    // Char offsets to byte offsets, for line numbers.
    let byte_at: Vec<usize> = code.char_indices().map(|(i, _)| i).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = |word: &str| {
            let w: Vec<char> = word.chars().collect();
            b[i..].starts_with(&w) && (i == 0 || !is_ident(b[i - 1]))
        };
        let base: Option<(usize, Vec<String>)> = if starts("crate::") {
            Some((7, Vec::new()))
        } else if starts("super::") {
            // `super::super::x` climbs once per `super`.
            let mut parent = module.to_vec();
            parent.pop();
            let mut len = 7;
            while b[i + len..].starts_with(&['s', 'u', 'p', 'e', 'r', ':', ':']) {
                parent.pop();
                len += 7;
            }
            Some((len, parent))
        } else if starts("self::") && !module.is_empty() {
            Some((6, module.to_vec()))
        } else {
            None
        };
        let Some((len, prefix)) = base else {
            i += 1;
            continue;
        };
        let at = byte_at.get(i).copied().unwrap_or(code.len());
        let mut items = Vec::new();
        let end = parse_tree(&b, i + len, prefix, &mut items);
        out.extend(items.into_iter().map(|p| (at, p)));
        i = end.max(i + 1);
    }
    out
}

/// Parses a use-tree at `i` (`a::b::c`, `a::{b, c::d}`, `*`, `self`) under
/// `prefix`; pushes each path it names and returns where it ended.
fn parse_tree(
    b: &[char],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_ws(i);
        if b.get(i) == Some(&'{') {
            i += 1;
            loop {
                i = skip_ws(i);
                match b.get(i) {
                    None => return i,
                    Some('}') => return i + 1,
                    Some(',') => i += 1,
                    Some(_) => {
                        let before = i;
                        i = parse_tree(b, i, prefix.clone(), out);
                        // Skip `as name` and anything else up to `,` or `}`.
                        while i < b.len() && b[i] != ',' && b[i] != '}' {
                            if b[i] == '{' {
                                break;
                            }
                            i += 1;
                        }
                        if i == before {
                            i += 1;
                        }
                    }
                }
            }
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        if i == start {
            // `*` or something that is not a path: the prefix is named.
            if !prefix.is_empty() {
                out.push(prefix);
            }
            return i;
        }
        let word: String = b[start..i].iter().collect();
        if word != "self" {
            prefix.push(word);
        }
        if b.get(i) == Some(&':') && b.get(i + 1) == Some(&':') {
            i += 2;
            continue;
        }
        out.push(prefix);
        return i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, text: &str) -> Vec<String> {
        check_file(Path::new(rel), text)
            .into_iter()
            .map(|v| v.message)
            .collect()
    }

    #[test]
    fn the_hypervisor_keeps_its_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("hypervisor")
            .join("src");
        if let Err(v) = check(&src) {
            let lines: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!("layer violations:\n{}", lines.join("\n"));
        }
    }

    #[test]
    fn a_device_naming_the_scheduler_is_refused() {
        let v = file(
            "hvm/vapic.rs",
            "fn apply() {\n    crate::common::sched::kick_vcpu(d, 1);\n}\n",
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("`crate::common::sched::kick_vcpu` is common"),
            "{v:?}"
        );
        let v = check_file(
            Path::new("hvm/vapic.rs"),
            "\n\nuse crate::common::domain::Domain;",
        );
        assert_eq!(v[0].line, 3);
    }

    #[test]
    fn grouped_and_relative_paths_are_resolved() {
        // `super::sched` from common/exit.rs is common::sched: above exit.
        let v = file("common/exit.rs", "use super::{domain::Running, sched};");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("crate::common::sched"), "{v:?}");
        // The base naming the vendor layer through a group.
        let v = file(
            "mm/mod.rs",
            "use crate::arch::x86_64::{self as x86, cpu, hvm};",
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("crate::arch::x86_64::hvm"), "{v:?}");
        // A macro in the base naming a domain.
        let v = file(
            "console.rs",
            "let d: &$crate::common::domain::Domain = &$x;",
        );
        assert_eq!(v.len(), 1, "{v:?}");
        // Downwards and sideways is fine.
        assert!(
            file(
                "common/sched.rs",
                "use super::exit::{self, Next};\nuse crate::hvm::irq;"
            )
            .is_empty()
        );
        assert!(
            file(
                "hvm/vdev.rs",
                "use super::platform::Platform;\nuse crate::time;"
            )
            .is_empty()
        );
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        let text = "// crate::common::sched\n/// [`crate::platform`]\n/* crate::main */\n\
                    let s = \"crate::common::sched\"; let c = '\"'; let r = r#\"crate::platform\"#;\n";
        assert!(file("hvm/vdev.rs", text).is_empty());
    }

    #[test]
    fn a_module_without_a_layer_is_refused() {
        let v = file("newthing.rs", "fn f() {}");
        assert!(v[0].contains("has no layer"), "{v:?}");
        let v = file("hvm/vdev.rs", "use crate::newthing::X;");
        assert!(v[0].contains("in no layer"), "{v:?}");
    }
}
