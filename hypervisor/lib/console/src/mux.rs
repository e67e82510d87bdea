//! Who owns the console input: Basalt's monitor or one domain. Pressing
//! Ctrl-A three times in a row moves the input to the next owner (monitor,
//! then each domain in order, then the monitor again), as Xen's console
//! does. Output of every domain stays visible whatever the focus.

/// Ctrl-A.
pub const CTRL_A: u8 = 0x01;
/// How many Ctrl-A in a row switch the focus.
pub const SWITCH_PRESSES: u8 = 3;

/// The owner of the console input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Basalt's monitor.
    Monitor,
    /// A domain's console (by domain id).
    Domain(u32),
}

/// What to do with one input byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing yet (a Ctrl-A that may start a switch).
    Pending,
    /// The focus moved; tell the operator.
    Switched(Focus),
    /// Bytes for the monitor (a held-back Ctrl-A may come first).
    Monitor {
        /// Ctrl-A bytes that turned out not to be a switch, to deliver first.
        held: u8,
        /// The byte.
        byte: u8,
    },
    /// Bytes for a domain.
    Domain {
        /// The domain.
        id: u32,
        /// Held-back Ctrl-A bytes to deliver first.
        held: u8,
        /// The byte.
        byte: u8,
    },
}

/// The multiplexer's state.
#[derive(Debug, Clone)]
pub struct Mux {
    focus: Focus,
    presses: u8,
}

impl Default for Mux {
    fn default() -> Self {
        Self::new()
    }
}

impl Mux {
    /// Input starts with the monitor.
    pub const fn new() -> Self {
        Self {
            focus: Focus::Monitor,
            presses: 0,
        }
    }

    /// The current owner.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Gives the input to `focus` directly (the monitor's `console N`).
    pub fn set_focus(&mut self, focus: Focus) {
        self.focus = focus;
        self.presses = 0;
    }

    /// The focused domain ended or vanished: back to the monitor.
    pub fn domain_gone(&mut self, id: u32) {
        if self.focus == Focus::Domain(id) {
            self.set_focus(Focus::Monitor);
        }
    }

    /// Handles one input byte; `domains` are the ids of the running domains
    /// in the order the switch cycles through them.
    pub fn input(&mut self, byte: u8, domains: &[u32]) -> Event {
        if byte == CTRL_A {
            self.presses += 1;
            if self.presses < SWITCH_PRESSES {
                return Event::Pending;
            }
            self.presses = 0;
            self.focus = next(self.focus, domains);
            return Event::Switched(self.focus);
        }
        let held = core::mem::take(&mut self.presses);
        match self.focus {
            Focus::Monitor => Event::Monitor { held, byte },
            Focus::Domain(id) => Event::Domain { id, held, byte },
        }
    }
}

fn next(focus: Focus, domains: &[u32]) -> Focus {
    match focus {
        Focus::Monitor => domains
            .first()
            .map_or(Focus::Monitor, |d| Focus::Domain(*d)),
        Focus::Domain(id) => match domains.iter().position(|d| *d == id) {
            Some(i) => domains
                .get(i + 1)
                .map_or(Focus::Monitor, |d| Focus::Domain(*d)),
            // The domain vanished: start again from the first.
            None => domains
                .first()
                .map_or(Focus::Monitor, |d| Focus::Domain(*d)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_ctrl_a_cycle_monitor_and_domains() {
        let mut m = Mux::new();
        let doms = [1, 2];
        assert_eq!(m.input(CTRL_A, &doms), Event::Pending);
        assert_eq!(m.input(CTRL_A, &doms), Event::Pending);
        assert_eq!(m.input(CTRL_A, &doms), Event::Switched(Focus::Domain(1)));
        assert_eq!(
            m.input(b'x', &doms),
            Event::Domain {
                id: 1,
                held: 0,
                byte: b'x'
            }
        );
        for _ in 0..2 {
            m.input(CTRL_A, &doms);
        }
        assert_eq!(m.input(CTRL_A, &doms), Event::Switched(Focus::Domain(2)));
        for _ in 0..2 {
            m.input(CTRL_A, &doms);
        }
        assert_eq!(m.input(CTRL_A, &doms), Event::Switched(Focus::Monitor));
    }

    #[test]
    fn fewer_ctrl_a_are_delivered() {
        let mut m = Mux::new();
        m.set_focus(Focus::Domain(3));
        m.input(CTRL_A, &[3]);
        assert_eq!(
            m.input(b'c', &[3]),
            Event::Domain {
                id: 3,
                held: 1,
                byte: b'c'
            }
        );
    }

    #[test]
    fn no_domains_stays_with_the_monitor_and_gone_domains_return_focus() {
        let mut m = Mux::new();
        for _ in 0..2 {
            m.input(CTRL_A, &[]);
        }
        assert_eq!(m.input(CTRL_A, &[]), Event::Switched(Focus::Monitor));
        m.set_focus(Focus::Domain(5));
        m.domain_gone(5);
        assert_eq!(m.focus(), Focus::Monitor);
        m.set_focus(Focus::Domain(9));
        for _ in 0..2 {
            m.input(CTRL_A, &[1, 2]);
        }
        assert_eq!(m.input(CTRL_A, &[1, 2]), Event::Switched(Focus::Domain(1)));
    }
}
