//! The monitor's line editor: printable characters, backspace/delete,
//! Ctrl-U (erase the line), Enter (CR or LF; CR LF counts once).

/// Longest line the monitor takes.
pub const MAX_LINE: usize = 120;

/// What a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Echo this byte.
    Echo(u8),
    /// Erase one character on the terminal (`\x08 \x08`).
    Erase,
    /// Erase `n` characters.
    EraseLine(usize),
    /// A complete line is ready ([`LineEditor::line`]).
    Line,
    /// Nothing to show (ignored key, or the line is full).
    Nothing,
}

/// A line being typed.
#[derive(Debug, Clone)]
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
    last_cr: bool,
    ready: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_LINE],
            len: 0,
            last_cr: false,
            ready: false,
        }
    }

    /// Handles one byte.
    pub fn key(&mut self, byte: u8) -> Edit {
        if self.ready {
            self.len = 0;
            self.ready = false;
        }
        let after_cr = core::mem::replace(&mut self.last_cr, byte == b'\r');
        match byte {
            b'\n' if after_cr => Edit::Nothing,
            b'\r' | b'\n' => {
                self.ready = true;
                Edit::Line
            }
            0x08 | 0x7f => {
                if self.len > 0 {
                    self.len -= 1;
                    Edit::Erase
                } else {
                    Edit::Nothing
                }
            }
            0x15 => Edit::EraseLine(core::mem::take(&mut self.len)),
            0x20..=0x7e if self.len < MAX_LINE => {
                self.buf[self.len] = byte;
                self.len += 1;
                Edit::Echo(byte)
            }
            _ => Edit::Nothing,
        }
    }

    /// The completed line (after [`Edit::Line`]).
    pub fn line(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(e: &mut LineEditor, s: &[u8]) -> Vec<Edit> {
        s.iter().map(|b| e.key(*b)).collect()
    }

    #[test]
    fn edits_and_completes_lines() {
        let mut e = LineEditor::new();
        feed(&mut e, b"lisx\x08t");
        assert_eq!(e.key(b'\r'), Edit::Line);
        assert_eq!(e.line(), "list");
        assert_eq!(e.key(b'\n'), Edit::Nothing, "CR LF is one line");
        feed(&mut e, b"junk\x15info");
        assert_eq!(e.key(b'\n'), Edit::Line);
        assert_eq!(e.line(), "info");
    }

    #[test]
    fn backspace_on_empty_and_full_lines() {
        let mut e = LineEditor::new();
        assert_eq!(e.key(0x7f), Edit::Nothing);
        for _ in 0..MAX_LINE + 5 {
            e.key(b'a');
        }
        assert_eq!(e.key(b'a'), Edit::Nothing);
        assert_eq!(e.key(b'\r'), Edit::Line);
        assert_eq!(e.line().len(), MAX_LINE);
        assert_eq!(e.key(0x1b), Edit::Nothing);
    }
}
