//! A 16550A UART as a pure register state machine.
//!
//! The guest reaches the eight registers at offsets 0..=7 from the port base
//! (0x3F8 for COM1) through [`Uart16550::read`] and [`Uart16550::write`];
//! the caller feeds input with [`Uart16550::receive`] and turns
//! [`Uart16550::irq_level`] into an interrupt line. Bytes the guest
//! transmits go to a [`SerialOutput`].
//!
//! | offset | read (DLAB = 0) | write (DLAB = 0) | DLAB = 1 |
//! |---|---|---|---|
//! | 0 | RBR: next received byte | THR: transmit a byte | DLL |
//! | 1 | IER | IER (low nibble) | DLM |
//! | 2 | IIR (clears a THRE interrupt) | FCR | (unchanged) |
//! | 3 | LCR | LCR | |
//! | 4 | MCR | MCR (low five bits) | |
//! | 5 | LSR (clears OE) | ignored | |
//! | 6 | MSR (clears the delta bits) | ignored | |
//! | 7 | SCR | SCR | |
//!
//! Simplifications, none visible to a driver that follows the data sheet:
//!
//! * transmission is instantaneous — THRE and TEMT are set unless the
//!   caller says the line behind the UART is busy ([`Uart16550::set_tx_busy`]:
//!   Basalt's console ring of a domain that has the console is full), and
//!   the transmit FIFO is never more than a name. While busy, THRE and TEMT
//!   read clear and no THRE interrupt is raised; when the line frees up,
//!   THR counts as just emptied (a THRE interrupt if enabled);
//! * the line never has parity, framing or break errors; the only line
//!   status error is overrun (OE), and only loopback can cause it, because
//!   [`Uart16550::receive`] applies back-pressure instead of dropping bytes;
//! * the character timeout is immediate: with the FIFOs on, data below the
//!   trigger level is reported at once as a character timeout (IIR 0x0C),
//!   data at or above it as received data available (IIR 0x04). The trigger
//!   level thus chooses the code, never delays the data;
//! * the interrupt line is not gated by MCR OUT2.

/// Offset of RBR (read), THR (write), and DLL (either, with DLAB set).
pub const RBR_THR_DLL: u8 = 0;
/// Offset of IER, and DLM with DLAB set.
pub const IER_DLM: u8 = 1;
/// Offset of IIR (read) and FCR (write).
pub const IIR_FCR: u8 = 2;
/// Offset of the line control register.
pub const LCR: u8 = 3;
/// Offset of the modem control register.
pub const MCR: u8 = 4;
/// Offset of the line status register.
pub const LSR: u8 = 5;
/// Offset of the modem status register.
pub const MSR: u8 = 6;

/// IER: received data available (and character timeout) interrupt.
pub const IER_RDA: u8 = 0x01;
/// IER: transmitter holding register empty interrupt.
pub const IER_THRE: u8 = 0x02;
/// IER: receiver line status interrupt.
pub const IER_RLS: u8 = 0x04;
/// IER: modem status interrupt.
pub const IER_MS: u8 = 0x08;

/// IIR: set when no interrupt is pending.
pub const IIR_NO_INT: u8 = 0x01;
/// IIR identification: modem status.
pub const IIR_MS: u8 = 0x00;
/// IIR identification: transmitter holding register empty.
pub const IIR_THRE: u8 = 0x02;
/// IIR identification: received data available.
pub const IIR_RDA: u8 = 0x04;
/// IIR identification: receiver line status.
pub const IIR_RLS: u8 = 0x06;
/// IIR identification: character timeout.
pub const IIR_TIMEOUT: u8 = 0x0C;
/// IIR bits 6-7: the FIFOs are enabled.
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

/// FCR: enable the FIFOs.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR: clear the receive FIFO.
pub const FCR_CLEAR_RX: u8 = 0x02;

/// LCR: divisor latch access bit.
pub const LCR_DLAB: u8 = 0x80;

/// MCR: data terminal ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR: request to send.
pub const MCR_RTS: u8 = 0x02;
/// MCR: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR: OUT2.
pub const MCR_OUT2: u8 = 0x08;
/// MCR: loopback mode.
pub const MCR_LOOP: u8 = 0x10;

/// LSR: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR: overrun error.
pub const LSR_OE: u8 = 0x02;
/// LSR: transmitter holding register empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR: transmitter empty.
pub const LSR_TEMT: u8 = 0x40;

/// MSR: delta clear to send.
pub const MSR_DCTS: u8 = 0x01;
/// MSR: delta data set ready.
pub const MSR_DDSR: u8 = 0x02;
/// MSR: trailing edge of ring indicator.
pub const MSR_TERI: u8 = 0x04;
/// MSR: delta data carrier detect.
pub const MSR_DDCD: u8 = 0x08;
/// MSR: clear to send.
pub const MSR_CTS: u8 = 0x10;
/// MSR: data set ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR: ring indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR: data carrier detect.
pub const MSR_DCD: u8 = 0x80;

/// Size of the receive FIFO.
pub const FIFO_SIZE: usize = 16;

/// The modem status inputs of a freshly made UART: a terminal is attached
/// (CTS, DSR and DCD asserted, no ring).
pub const DEFAULT_MODEM_INPUTS: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// The divisor after reset: 12, that is 9600 baud from the 1.8432 MHz clock.
pub const DEFAULT_DIVISOR: u16 = 12;

/// Where the bytes a guest transmits go.
pub trait SerialOutput {
    /// Takes one byte the guest wrote to THR (outside loopback mode).
    fn write_byte(&mut self, b: u8);
}

impl<T: SerialOutput + ?Sized> SerialOutput for &mut T {
    fn write_byte(&mut self, b: u8) {
        (**self).write_byte(b);
    }
}

/// The receive FIFO: a ring of [`FIFO_SIZE`] bytes.
#[derive(Debug, Clone)]
struct Fifo {
    buf: [u8; FIFO_SIZE],
    head: usize,
    len: usize,
}

impl Fifo {
    const fn new() -> Self {
        Self {
            buf: [0; FIFO_SIZE],
            head: 0,
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Appends `b`; the caller has checked there is room.
    fn push(&mut self, b: u8) {
        debug_assert!(self.len < FIFO_SIZE);
        self.buf[(self.head + self.len) % FIFO_SIZE] = b;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let b = self.buf[self.head];
        self.head = (self.head + 1) % FIFO_SIZE;
        self.len -= 1;
        Some(b)
    }

    /// Replaces the newest byte (a 16450-mode overrun).
    fn replace_last(&mut self, b: u8) {
        if self.len > 0 {
            self.buf[(self.head + self.len - 1) % FIFO_SIZE] = b;
        }
    }
}

/// A 16550A UART: registers, receive FIFO, interrupt state and modem lines.
#[derive(Debug, Clone)]
pub struct Uart16550<O> {
    out: O,
    rx: Fifo,
    dll: u8,
    dlm: u8,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    /// Line status error bits (only OE) waiting to be read from LSR.
    lsr_errors: u8,
    /// MSR delta bits waiting to be read.
    msr_deltas: u8,
    /// The modem status inputs outside loopback (MSR bits 4-7).
    modem_inputs: u8,
    fifo_enabled: bool,
    /// Receive trigger level in bytes: 1, 4, 8 or 14.
    trigger: usize,
    /// The THRE interrupt condition, cleared by reading IIR while it is
    /// the reported source and set again when THR empties.
    thre_pending: bool,
    /// The line behind the UART cannot take more now (see `set_tx_busy`).
    tx_busy: bool,
}

impl<O: SerialOutput> Uart16550<O> {
    /// A UART in its reset state, sending what the guest transmits to `out`.
    pub fn new(out: O) -> Self {
        Self {
            out,
            rx: Fifo::new(),
            dll: DEFAULT_DIVISOR as u8,
            dlm: (DEFAULT_DIVISOR >> 8) as u8,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            lsr_errors: 0,
            msr_deltas: 0,
            modem_inputs: DEFAULT_MODEM_INPUTS,
            fifo_enabled: false,
            trigger: 1,
            thre_pending: false,
            tx_busy: false,
        }
    }

    /// Returns every register to its reset state (as the MR pin does),
    /// keeping the output and the modem status inputs.
    pub fn reset(&mut self) {
        self.rx.clear();
        self.dll = DEFAULT_DIVISOR as u8;
        self.dlm = (DEFAULT_DIVISOR >> 8) as u8;
        self.ier = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.scr = 0;
        self.lsr_errors = 0;
        self.msr_deltas = 0;
        self.fifo_enabled = false;
        self.trigger = 1;
        self.thre_pending = false;
        self.tx_busy = false;
    }

    /// Says whether the line behind the transmitter can take more bytes.
    /// While busy, LSR reads with THRE and TEMT clear (a polling driver
    /// waits) and no THRE interrupt is pending; the change from busy to free
    /// empties THR as far as the guest can tell, so a THRE interrupt is
    /// raised if enabled (an interrupt-driven driver resumes).
    pub fn set_tx_busy(&mut self, busy: bool) {
        if self.tx_busy && !busy {
            self.thre_pending = true;
        }
        if busy {
            self.thre_pending = false;
        }
        self.tx_busy = busy;
    }

    /// Whether the transmitter reports busy ([`Self::set_tx_busy`]).
    pub fn tx_busy(&self) -> bool {
        self.tx_busy
    }

    /// The guest reads the register at `offset` (taken modulo 8). Reads of
    /// RBR, IIR, LSR and MSR have the side effects the 16550 gives them.
    pub fn read(&mut self, offset: u8) -> u8 {
        match offset & 7 {
            RBR_THR_DLL if self.dlab() => self.dll,
            RBR_THR_DLL => self.rx.pop().unwrap_or(0),
            IER_DLM if self.dlab() => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => {
                let iir = self.iir();
                if iir & 0x0F == IIR_THRE {
                    self.thre_pending = false;
                }
                iir
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                lsr
            }
            MSR => {
                let msr = self.msr();
                self.msr_deltas = 0;
                msr
            }
            _ => self.scr,
        }
    }

    /// The guest writes `value` to the register at `offset` (taken
    /// modulo 8).
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset & 7 {
            RBR_THR_DLL if self.dlab() => self.dll = value,
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if self.dlab() => self.dlm = value,
            IER_DLM => {
                let old = self.ier;
                self.ier = value & 0x0F;
                // Enabling the THRE interrupt while THR is empty (it is
                // unless the line is busy) raises it at once.
                if old & IER_THRE == 0 && self.ier & IER_THRE != 0 && !self.tx_busy {
                    self.thre_pending = true;
                }
            }
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => {
                let before = self.modem_lines();
                self.mcr = value & 0x1F;
                self.note_modem_change(before);
            }
            LSR | MSR => {} // factory test registers: writes ignored
            _ => self.scr = value,
        }
    }

    /// Input from the outside world: appends as many of `bytes` as the
    /// receive FIFO has room for (16 with the FIFOs on, 1 without) and
    /// returns how many it took; the caller keeps the rest for later, so no
    /// byte is lost. In loopback mode the receiver is disconnected from the
    /// line and nothing is taken.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        if self.loopback() {
            return 0;
        }
        let n = bytes.len().min(self.rx_space());
        for &b in &bytes[..n] {
            self.rx.push(b);
        }
        n
    }

    /// Sets the modem status inputs the guest sees outside loopback: the
    /// MSR bits 4-7 ([`MSR_CTS`], [`MSR_DSR`], [`MSR_RI`], [`MSR_DCD`]);
    /// other bits are ignored. Changes set the MSR delta bits.
    #[cfg(test)]
    pub fn set_modem_inputs(&mut self, lines: u8) {
        let before = self.modem_lines();
        self.modem_inputs = lines & 0xF0;
        self.note_modem_change(before);
    }

    /// Whether the UART asks for an interrupt: IIR bit 0 is clear.
    pub fn interrupt_pending(&self) -> bool {
        self.iir() & IIR_NO_INT == 0
    }

    /// The level of the interrupt line (high while an interrupt is pending).
    /// Turning a change of level into an edge, or a level into an IRQ, is
    /// the caller's job.
    pub fn irq_level(&self) -> bool {
        self.interrupt_pending()
    }

    /// IIR as the guest would read it now, without the read's side effect.
    pub fn iir(&self) -> u8 {
        let fifo = if self.fifo_enabled {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        let id = if self.ier & IER_RLS != 0 && self.lsr_errors != 0 {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && self.rx.len > 0 {
            if self.fifo_enabled && self.rx.len < self.trigger {
                IIR_TIMEOUT
            } else {
                IIR_RDA
            }
        } else if self.ier & IER_THRE != 0 && self.thre_pending && !self.tx_busy {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_deltas != 0 {
            IIR_MS
        } else {
            IIR_NO_INT
        };
        fifo | id
    }

    /// LSR as the guest would read it now, without the read's side effect.
    pub fn lsr(&self) -> u8 {
        let dr = if self.rx.len > 0 { LSR_DR } else { 0 };
        let tx = if self.tx_busy { 0 } else { LSR_THRE | LSR_TEMT };
        dr | self.lsr_errors | tx
    }

    /// MSR as the guest would read it now, without the read's side effect.
    pub fn msr(&self) -> u8 {
        self.modem_lines() | self.msr_deltas
    }

    /// The interrupt enable register.
    pub fn ier(&self) -> u8 {
        self.ier
    }

    /// The line control register.
    pub fn lcr(&self) -> u8 {
        self.lcr
    }

    /// The modem control register.
    #[cfg(test)]
    pub fn mcr(&self) -> u8 {
        self.mcr
    }

    /// The baud rate divisor (DLM:DLL).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }

    /// Whether the FIFOs are enabled (FCR bit 0).
    pub fn fifo_enabled(&self) -> bool {
        self.fifo_enabled
    }

    /// The receive trigger level in bytes (1, 4, 8 or 14).
    #[cfg(test)]
    pub fn trigger_level(&self) -> usize {
        self.trigger
    }

    /// Whether MCR loopback mode is on.
    pub fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// How many received bytes wait for the guest.
    #[cfg(test)]
    pub fn rx_len(&self) -> usize {
        self.rx.len
    }

    /// How many more bytes [`Self::receive`] would take now.
    pub fn rx_space(&self) -> usize {
        self.rx_capacity() - self.rx.len
    }

    /// The receive capacity: [`FIFO_SIZE`] with the FIFOs on, else 1 (RBR).
    pub fn rx_capacity(&self) -> usize {
        if self.fifo_enabled { FIFO_SIZE } else { 1 }
    }

    /// The output.
    pub fn output(&self) -> &O {
        &self.out
    }

    /// The output, mutably.
    pub fn output_mut(&mut self) -> &mut O {
        &mut self.out
    }

    /// Gives the output back.
    #[cfg(test)]
    pub fn into_output(self) -> O {
        self.out
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn transmit(&mut self, b: u8) {
        if self.loopback() {
            self.loop_back(b);
        } else {
            self.out.write_byte(b);
        }
        // The byte left at once: THR is empty again (unless the line is
        // busy: then it empties when the caller says so).
        self.thre_pending = !self.tx_busy;
    }

    /// A looped-back byte reaches the receiver like one from the line: a
    /// full receiver means an overrun. With the FIFOs on the new byte is
    /// lost; without them it overwrites RBR.
    fn loop_back(&mut self, b: u8) {
        if self.rx_space() > 0 {
            self.rx.push(b);
        } else {
            self.lsr_errors |= LSR_OE;
            if !self.fifo_enabled {
                self.rx.replace_last(b);
            }
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            // Switching between 16450 and FIFO mode empties the FIFOs.
            self.rx.clear();
            self.fifo_enabled = enable;
        }
        // The other bits are only programmed together with FCR bit 0.
        if !enable {
            return;
        }
        if value & FCR_CLEAR_RX != 0 {
            self.rx.clear();
        }
        // FCR_CLEAR_TX: the transmitter is always empty.
        self.trigger = match value >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        };
    }

    /// MSR bits 4-7 as the guest sees them: in loopback they follow MCR
    /// (RTS → CTS, DTR → DSR, OUT1 → RI, OUT2 → DCD), else the inputs.
    fn modem_lines(&self) -> u8 {
        if self.loopback() {
            let m = self.mcr;
            let mut lines = 0;
            if m & MCR_RTS != 0 {
                lines |= MSR_CTS;
            }
            if m & MCR_DTR != 0 {
                lines |= MSR_DSR;
            }
            if m & MCR_OUT1 != 0 {
                lines |= MSR_RI;
            }
            if m & MCR_OUT2 != 0 {
                lines |= MSR_DCD;
            }
            lines
        } else {
            self.modem_inputs
        }
    }

    /// Sets the delta bits for the lines that changed since `before`.
    fn note_modem_change(&mut self, before: u8) {
        let now = self.modem_lines();
        let changed = before ^ now;
        if changed & MSR_CTS != 0 {
            self.msr_deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_deltas |= MSR_DDSR;
        }
        // TERI: RI went from on to off.
        if before & MSR_RI != 0 && now & MSR_RI == 0 {
            self.msr_deltas |= MSR_TERI;
        }
        if changed & MSR_DCD != 0 {
            self.msr_deltas |= MSR_DDCD;
        }
    }
}

/// `()` discards what the guest sends.
impl SerialOutput for () {
    fn write_byte(&mut self, _b: u8) {}
}

#[cfg(test)]
mod tests;
