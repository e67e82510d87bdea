use super::*;

/// Offset of the scratch register.
const SCR: u8 = 7;
/// FCR: clear the transmit FIFO.
const FCR_CLEAR_TX: u8 = 0x04;

/// Collects what the guest transmits.
#[derive(Debug, Default, Clone)]
struct Sink(Vec<u8>);

impl SerialOutput for Sink {
    fn write_byte(&mut self, b: u8) {
        self.0.push(b);
    }
}

fn uart() -> Uart16550<Sink> {
    Uart16550::new(Sink::default())
}

/// A UART with the FIFOs on, trigger level 1.
fn fifo_uart() -> Uart16550<Sink> {
    let mut u = uart();
    u.write(IIR_FCR, FCR_ENABLE);
    u
}

// ---------------------------------------------------------------- reset

#[test]
fn reset_state() {
    let mut u = uart();
    assert_eq!(u.read(IER_DLM), 0);
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    assert_eq!(u.read(LCR), 0);
    assert_eq!(u.read(MCR), 0);
    assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(u.read(MSR), DEFAULT_MODEM_INPUTS);
    assert_eq!(u.read(SCR), 0);
    assert_eq!(u.divisor(), DEFAULT_DIVISOR);
    assert!(!u.irq_level());
    assert!(!u.fifo_enabled());
    assert_eq!(u.rx_capacity(), 1);
}

#[test]
fn reset_returns_registers_and_keeps_inputs() {
    let mut u = fifo_uart();
    u.set_modem_inputs(MSR_CTS);
    u.write(IER_DLM, 0x0F);
    u.write(LCR, 0x83);
    u.write(RBR_THR_DLL, 1);
    u.write(SCR, 0x55);
    u.write(MCR, 0x1F);
    u.write(RBR_THR_DLL, b'x');
    u.reset();
    assert_eq!(u.ier(), 0);
    assert_eq!(u.lcr(), 0);
    assert_eq!(u.mcr(), 0);
    assert_eq!(u.read(SCR), 0);
    assert_eq!(u.divisor(), DEFAULT_DIVISOR);
    assert_eq!(u.rx_len(), 0);
    assert!(!u.fifo_enabled());
    assert_eq!(u.read(MSR), MSR_CTS);
    assert!(!u.irq_level());
}

// ------------------------------------------------------------ registers

#[test]
fn scratch_register_holds_any_value() {
    let mut u = uart();
    for v in [0xA5, 0x5A, 0x00, 0xFF] {
        u.write(SCR, v);
        assert_eq!(u.read(SCR), v);
    }
}

#[test]
fn offsets_wrap_modulo_eight() {
    let mut u = uart();
    u.write(SCR + 8, 0x42);
    assert_eq!(u.read(SCR), 0x42);
    assert_eq!(u.read(0xFF), 0x42);
}

#[test]
fn dlab_switches_offsets_zero_and_one_to_the_divisor() {
    let mut u = uart();
    u.write(IER_DLM, IER_RDA);
    u.write(LCR, LCR_DLAB | 0x03);
    assert_eq!(u.read(RBR_THR_DLL), DEFAULT_DIVISOR as u8);
    assert_eq!(u.read(IER_DLM), 0);
    u.write(RBR_THR_DLL, 0x01);
    u.write(IER_DLM, 0x02);
    assert_eq!(u.read(RBR_THR_DLL), 0x01);
    assert_eq!(u.read(IER_DLM), 0x02);
    assert_eq!(u.divisor(), 0x0201);
    // Nothing was transmitted and IER kept its value.
    assert!(u.output().0.is_empty());
    assert_eq!(u.ier(), IER_RDA);
    u.write(LCR, 0x03);
    assert_eq!(u.read(IER_DLM), IER_RDA);
    assert_eq!(u.lcr(), 0x03);
    u.write(RBR_THR_DLL, b'A');
    assert_eq!(u.output().0, b"A");
    assert_eq!(u.divisor(), 0x0201);
}

#[test]
fn dlab_leaves_the_other_registers_alone() {
    let mut u = uart();
    u.write(LCR, LCR_DLAB);
    u.write(SCR, 0x77);
    assert_eq!(u.read(SCR), 0x77);
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(u.read(LCR), LCR_DLAB);
}

#[test]
fn ier_keeps_only_the_low_nibble() {
    let mut u = uart();
    u.write(IER_DLM, 0xFF);
    assert_eq!(u.read(IER_DLM), 0x0F);
    u.write(IER_DLM, 0xF0);
    assert_eq!(u.read(IER_DLM), 0);
}

#[test]
fn mcr_keeps_only_five_bits() {
    let mut u = uart();
    u.write(MCR, 0xFF);
    assert_eq!(u.read(MCR), 0x1F);
}

#[test]
fn lsr_and_msr_ignore_writes() {
    let mut u = uart();
    u.write(LSR, 0xFF);
    u.write(MSR, 0xFF);
    assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(u.read(MSR), DEFAULT_MODEM_INPUTS);
}

#[test]
fn thr_bytes_go_to_the_output_in_order() {
    let mut u = uart();
    for &b in b"hello" {
        u.write(RBR_THR_DLL, b);
    }
    assert_eq!(u.output().0, b"hello");
    assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(u.into_output().0, b"hello");
}

#[test]
fn output_through_a_mutable_reference() {
    let mut sink = Sink::default();
    {
        let mut u = Uart16550::new(&mut sink);
        u.write(RBR_THR_DLL, b'z');
    }
    assert_eq!(sink.0, b"z");
    let mut quiet = Uart16550::new(());
    quiet.write(RBR_THR_DLL, b'z');
    assert_eq!(quiet.read(LSR), LSR_THRE | LSR_TEMT);
}

// -------------------------------------------------------------- receive

#[test]
fn received_bytes_are_read_from_rbr_with_dr() {
    let mut u = fifo_uart();
    assert_eq!(u.receive(b"ab"), 2);
    assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
    assert_eq!(u.read(RBR_THR_DLL), b'a');
    assert_eq!(u.read(LSR) & LSR_DR, LSR_DR);
    assert_eq!(u.read(RBR_THR_DLL), b'b');
    assert_eq!(u.read(LSR) & LSR_DR, 0);
    // An empty RBR reads as 0 and changes nothing.
    assert_eq!(u.read(RBR_THR_DLL), 0);
    assert_eq!(u.read(LSR), LSR_THRE | LSR_TEMT);
}

#[test]
fn without_fifo_the_receiver_holds_one_byte() {
    let mut u = uart();
    assert_eq!(u.receive(b"xyz"), 1);
    assert_eq!(u.receive(b"yz"), 0);
    assert_eq!(u.rx_space(), 0);
    assert_eq!(u.read(RBR_THR_DLL), b'x');
    assert_eq!(u.receive(b"yz"), 1);
    assert_eq!(u.read(RBR_THR_DLL), b'y');
    assert_eq!(u.read(LSR) & LSR_OE, 0);
}

#[test]
fn fifo_overflow_through_receive_takes_what_fits_and_loses_nothing() {
    let mut u = fifo_uart();
    let input: Vec<u8> = (0..20).collect();
    let taken = u.receive(&input);
    assert_eq!(taken, FIFO_SIZE);
    assert_eq!(u.rx_len(), FIFO_SIZE);
    assert_eq!(u.receive(&input[taken..]), 0);
    // Back-pressure, not loss: no overrun.
    assert_eq!(u.read(LSR), LSR_DR | LSR_THRE | LSR_TEMT);
    assert_eq!(u.read(RBR_THR_DLL), 0);
    assert_eq!(u.receive(&input[taken..]), 1);
    let mut got = Vec::new();
    while u.read(LSR) & LSR_DR != 0 {
        got.push(u.read(RBR_THR_DLL));
    }
    assert_eq!(got, (1..=16).collect::<Vec<u8>>());
}

#[test]
fn fifo_overflow_in_loopback_sets_oe_and_drops_the_byte() {
    let mut u = fifo_uart();
    u.write(MCR, MCR_LOOP);
    for b in 0..17 {
        u.write(RBR_THR_DLL, b);
    }
    assert_eq!(u.rx_len(), FIFO_SIZE);
    assert!(u.output().0.is_empty());
    assert_eq!(u.read(LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
    // Reading LSR cleared OE.
    assert_eq!(u.read(LSR), LSR_DR | LSR_THRE | LSR_TEMT);
    let mut got = Vec::new();
    while u.read(LSR) & LSR_DR != 0 {
        got.push(u.read(RBR_THR_DLL));
    }
    assert_eq!(got, (0..16).collect::<Vec<u8>>());
}

#[test]
fn overrun_without_fifo_overwrites_rbr() {
    let mut u = uart();
    u.write(MCR, MCR_LOOP);
    u.write(RBR_THR_DLL, b'1');
    u.write(RBR_THR_DLL, b'2');
    assert_eq!(u.read(LSR) & LSR_OE, LSR_OE);
    assert_eq!(u.read(RBR_THR_DLL), b'2');
    assert_eq!(u.read(LSR) & (LSR_DR | LSR_OE), 0);
}

// ----------------------------------------------------------------- FIFO

#[test]
fn fcr_enable_shows_in_iir_bits_6_and_7() {
    let mut u = uart();
    assert_eq!(u.read(IIR_FCR) & 0xC0, 0);
    u.write(IIR_FCR, FCR_ENABLE);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INT);
    assert_eq!(u.rx_capacity(), FIFO_SIZE);
    u.write(IIR_FCR, 0);
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    assert_eq!(u.rx_capacity(), 1);
}

#[test]
fn fcr_clears_the_receive_fifo() {
    let mut u = fifo_uart();
    u.receive(b"abcd");
    u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_TX);
    assert_eq!(u.rx_len(), 4);
    u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
    assert_eq!(u.rx_len(), 0);
    assert_eq!(u.read(LSR) & LSR_DR, 0);
    assert!(u.fifo_enabled());
}

#[test]
fn switching_fifo_mode_empties_the_receiver() {
    let mut u = fifo_uart();
    u.receive(b"abcd");
    u.write(IIR_FCR, 0);
    assert_eq!(u.rx_len(), 0);
    u.receive(b"a");
    u.write(IIR_FCR, FCR_ENABLE);
    assert_eq!(u.rx_len(), 0);
    // Rewriting the same mode keeps the data.
    u.receive(b"ab");
    u.write(IIR_FCR, FCR_ENABLE);
    assert_eq!(u.rx_len(), 2);
}

#[test]
fn fcr_bits_are_only_programmed_with_bit_zero() {
    let mut u = uart();
    u.write(IIR_FCR, 0xC0 | FCR_CLEAR_RX);
    assert!(!u.fifo_enabled());
    assert_eq!(u.trigger_level(), 1);
    u.write(IIR_FCR, 0xC0 | FCR_ENABLE);
    assert_eq!(u.trigger_level(), 14);
}

#[test]
fn trigger_levels_choose_timeout_or_data_available() {
    for (bits, level) in [(0x00, 1), (0x40, 4), (0x80, 8), (0xC0, 14)] {
        let mut u = uart();
        u.write(IIR_FCR, bits | FCR_ENABLE);
        assert_eq!(u.trigger_level(), level);
        u.write(IER_DLM, IER_RDA);
        assert!(!u.irq_level());
        let below = vec![b'.'; level - 1];
        assert_eq!(u.receive(&below), level - 1);
        if level > 1 {
            // Below the trigger: the (immediate) character timeout.
            assert_eq!(
                u.read(IIR_FCR),
                IIR_FIFO_ENABLED | IIR_TIMEOUT,
                "level {level}"
            );
            assert!(u.irq_level());
        }
        u.receive(b".");
        assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_RDA, "level {level}");
        // Reading one byte drops below the trigger: timeout, or nothing.
        u.read(RBR_THR_DLL);
        let want = if level > 1 {
            IIR_FIFO_ENABLED | IIR_TIMEOUT
        } else {
            IIR_FIFO_ENABLED | IIR_NO_INT
        };
        assert_eq!(u.read(IIR_FCR), want, "level {level}");
        while u.read(LSR) & LSR_DR != 0 {
            u.read(RBR_THR_DLL);
        }
        assert!(!u.irq_level());
    }
}

#[test]
fn data_available_without_fifo() {
    let mut u = uart();
    u.write(IER_DLM, IER_RDA);
    u.receive(b"k");
    assert_eq!(u.read(IIR_FCR), IIR_RDA);
    assert!(u.irq_level());
    assert_eq!(u.read(RBR_THR_DLL), b'k');
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    assert!(!u.irq_level());
}

// ----------------------------------------------------------- interrupts

#[test]
fn thre_interrupt_raised_on_enable_and_cleared_by_iir_read() {
    let mut u = uart();
    assert!(!u.irq_level());
    u.write(IER_DLM, IER_THRE);
    assert!(u.irq_level());
    assert!(u.interrupt_pending());
    assert_eq!(u.read(IIR_FCR), IIR_THRE);
    assert!(!u.irq_level());
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    // Writing IER again with THRE still enabled does not raise it.
    u.write(IER_DLM, IER_THRE | IER_RDA);
    assert!(!u.irq_level());
    // Transmitting a byte empties THR again: raised.
    u.write(RBR_THR_DLL, b'x');
    assert!(u.irq_level());
    assert_eq!(u.read(IIR_FCR), IIR_THRE);
    assert!(!u.irq_level());
}

#[test]
fn thre_interrupt_masked_by_ier() {
    let mut u = uart();
    u.write(RBR_THR_DLL, b'x');
    assert!(!u.irq_level());
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
    // The condition stayed: enabling shows it.
    u.write(IER_DLM, IER_THRE);
    assert_eq!(u.read(IIR_FCR), IIR_THRE);
}

#[test]
fn linux_thre_retest_at_startup() {
    // serial8250_do_startup: a real 16550 reasserts THRE when the interrupt
    // is re-enabled with the transmitter idle (else UART_BUG_THRE).
    let mut u = fifo_uart();
    assert_ne!(u.read(LSR) & LSR_THRE, 0);
    u.write(IER_DLM, IER_THRE);
    let iir1 = u.read(IIR_FCR);
    u.write(IER_DLM, 0);
    u.write(IER_DLM, IER_THRE);
    let iir = u.read(IIR_FCR);
    u.write(IER_DLM, 0);
    assert_eq!(iir1 & IIR_NO_INT, 0);
    assert_eq!(iir & IIR_NO_INT, 0);
    assert_eq!(iir & 0x0F, IIR_THRE);
}

#[test]
fn interrupts_follow_the_16550_priority_order() {
    let mut u = fifo_uart();
    // Every source at once: an overrun and data (loopback), THRE (the
    // write), a modem status change (entering loopback).
    u.write(MCR, MCR_LOOP);
    for b in 0..17 {
        u.write(RBR_THR_DLL, b);
    }
    u.write(IER_DLM, IER_RDA | IER_THRE | IER_RLS | IER_MS);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_RLS);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_RLS);
    u.read(LSR);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_RDA);
    while u.read(LSR) & LSR_DR != 0 {
        u.read(RBR_THR_DLL);
    }
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_THRE);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_MS);
    assert!(u.irq_level());
    u.read(MSR);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INT);
    assert!(!u.irq_level());
}

#[test]
fn reading_iir_only_clears_thre_when_it_is_reported() {
    let mut u = uart();
    u.receive(b"a");
    u.write(IER_DLM, IER_RDA | IER_THRE);
    assert_eq!(u.read(IIR_FCR), IIR_RDA);
    u.read(RBR_THR_DLL);
    // THRE was hidden behind data; it is still pending.
    assert_eq!(u.read(IIR_FCR), IIR_THRE);
    assert_eq!(u.read(IIR_FCR), IIR_NO_INT);
}

#[test]
fn ier_masks_every_source() {
    let mut u = fifo_uart();
    u.write(MCR, MCR_LOOP | MCR_RTS);
    for b in 0..17 {
        u.write(RBR_THR_DLL, b);
    }
    u.write(IER_DLM, 0);
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INT);
    assert!(!u.irq_level());
    for (ier, id) in [
        (IER_RLS, IIR_RLS),
        (IER_RDA, IIR_RDA),
        (IER_THRE, IIR_THRE),
        (IER_MS, IIR_MS),
    ] {
        u.write(IER_DLM, ier);
        assert_eq!(u.iir(), IIR_FIFO_ENABLED | id, "IER {ier:#x}");
        assert!(u.irq_level());
        u.write(IER_DLM, 0);
        assert!(!u.irq_level());
    }
}

#[test]
fn modem_status_interrupt_from_the_inputs() {
    let mut u = uart();
    u.write(IER_DLM, IER_MS);
    assert!(!u.irq_level());
    u.set_modem_inputs(MSR_DSR | MSR_DCD | MSR_RI);
    assert!(u.irq_level());
    assert_eq!(u.read(IIR_FCR), IIR_MS);
    assert_eq!(u.read(MSR), MSR_DSR | MSR_DCD | MSR_RI | MSR_DCTS);
    assert!(!u.irq_level());
    assert_eq!(u.read(MSR), MSR_DSR | MSR_DCD | MSR_RI);
    // The ring indicator's trailing edge.
    u.set_modem_inputs(MSR_DSR | MSR_DCD);
    assert_eq!(u.read(MSR), MSR_DSR | MSR_DCD | MSR_TERI);
    // Its leading edge sets nothing.
    u.set_modem_inputs(MSR_DSR | MSR_DCD | MSR_RI);
    assert_eq!(u.read(MSR), MSR_DSR | MSR_DCD | MSR_RI);
    assert!(!u.irq_level());
    // Low bits of the argument are ignored.
    u.set_modem_inputs(0x0F | MSR_DSR | MSR_DCD | MSR_RI);
    assert_eq!(u.read(MSR), MSR_DSR | MSR_DCD | MSR_RI);
}

// ------------------------------------------------------------- loopback

#[test]
fn loopback_modem_lines_follow_mcr() {
    let mut u = uart();
    u.write(MCR, MCR_LOOP);
    u.read(MSR);
    for (mcr, msr) in [
        (MCR_RTS, MSR_CTS),
        (MCR_DTR, MSR_DSR),
        (MCR_OUT1, MSR_RI),
        (MCR_OUT2, MSR_DCD),
    ] {
        u.write(MCR, MCR_LOOP | mcr);
        assert_eq!(u.read(MSR) & 0xF0, msr, "MCR {mcr:#x}");
        u.write(MCR, MCR_LOOP);
        u.read(MSR);
    }
    u.write(MCR, MCR_LOOP | MCR_RTS | MCR_DTR);
    assert_eq!(u.read(MSR), MSR_CTS | MSR_DSR | MSR_DCTS | MSR_DDSR);
    u.write(MCR, MCR_LOOP | MCR_OUT1);
    assert_eq!(u.read(MSR), MSR_RI | MSR_DCTS | MSR_DDSR);
    u.write(MCR, MCR_LOOP);
    assert_eq!(u.read(MSR), MSR_TERI);
    // Leaving loopback shows the inputs again.
    u.write(MCR, 0);
    assert_eq!(u.read(MSR) & 0xF0, DEFAULT_MODEM_INPUTS);
}

#[test]
fn loopback_sends_bytes_back_not_out() {
    let mut u = fifo_uart();
    u.write(MCR, MCR_LOOP);
    for &b in b"ping" {
        u.write(RBR_THR_DLL, b);
    }
    assert!(u.output().0.is_empty());
    // The line is disconnected: receive takes nothing, the caller keeps it.
    assert_eq!(u.receive(b"keys"), 0);
    let mut got = Vec::new();
    while u.read(LSR) & LSR_DR != 0 {
        got.push(u.read(RBR_THR_DLL));
    }
    assert_eq!(got, b"ping");
    u.write(MCR, 0);
    u.write(RBR_THR_DLL, b'!');
    assert_eq!(u.output().0, b"!");
    assert_eq!(u.receive(b"keys"), 4);
}

// ------------------------------------------------- Linux 8250 probing

/// Linux's `autoconfig()` (drivers/tty/serial/8250/8250_port.c), replayed
/// step by step for a port at the standard I/O address: the answer is the
/// type Linux would settle on.
fn linux_autoconfig(u: &mut Uart16550<Sink>) -> &'static str {
    // The IER test: writable low nibble, zero upper nibble.
    let scratch = u.read(IER_DLM);
    u.write(IER_DLM, 0);
    let scratch2 = u.read(IER_DLM) & 0x0F;
    u.write(IER_DLM, 0x0F);
    let scratch3 = u.read(IER_DLM) & 0x0F;
    u.write(IER_DLM, scratch);
    if scratch2 != 0 || scratch3 != 0x0F {
        return "no UART (IER test)";
    }
    let save_mcr = u.read(MCR);
    let save_lcr = u.read(LCR);
    // The loopback test: MCR = LOOP | OUT2 | RTS must show DCD | CTS.
    u.write(MCR, MCR_LOOP | 0x0A);
    let status1 = u.read(MSR) & 0xF0;
    u.write(MCR, save_mcr);
    if status1 != 0x90 {
        return "no UART (loopback test)";
    }
    // Clear the EFR of enhanced UARTs (offset 2 under LCR 0xBF), then ask
    // for the FIFOs.
    u.write(LCR, 0xBF);
    u.write(IIR_FCR, 0);
    u.write(LCR, 0);
    u.write(IIR_FCR, FCR_ENABLE);
    let kind = match u.read(IIR_FCR) >> 6 {
        0 => {
            // autoconfig_8250: the scratch register tells 8250 from 16450.
            u.write(SCR, 0xA5);
            let s1 = u.read(SCR);
            u.write(SCR, 0x5A);
            let s2 = u.read(SCR);
            if s1 == 0xA5 && s2 == 0x5A {
                "16450"
            } else {
                "8250"
            }
        }
        1 => "unknown",
        2 => "16550",
        _ => autoconfig_16550a(u),
    };
    // Restore what the probe changed.
    u.write(LCR, save_lcr);
    u.write(IIR_FCR, FCR_ENABLE);
    u.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    u.write(IIR_FCR, 0);
    u.read(RBR_THR_DLL);
    u.write(MCR, save_mcr);
    kind
}

/// Linux's `autoconfig_16550a()`: the checks that would make it something
/// fancier than a 16550A.
fn autoconfig_16550a(u: &mut Uart16550<Sink>) -> &'static str {
    // ST16C650V1: EFR (offset 2) reads as zero under LCR 0x80.
    u.write(LCR, 0x80);
    if u.read(IIR_FCR) == 0 {
        return "ST16650";
    }
    // Other EFR-capable parts: EFR reads as zero under LCR 0xBF.
    u.write(LCR, 0xBF);
    if u.read(IIR_FCR) == 0 {
        return "16650V2 or 16950";
    }
    // National SuperIO: offset 2 under LCR 0xE0 mirroring MCR LOOP.
    u.write(LCR, 0);
    let status1 = u.read(MCR);
    u.write(LCR, 0xE0);
    let status2 = u.read(IIR_FCR);
    if (status1 ^ status2) & MCR_LOOP == 0 {
        u.write(LCR, 0);
        u.write(MCR, status1 ^ MCR_LOOP);
        u.write(LCR, 0xE0);
        let status2 = u.read(IIR_FCR);
        u.write(LCR, 0);
        u.write(MCR, status1);
        if (status1 ^ status2) & MCR_LOOP != 0 {
            return "NS16550A (SuperIO)";
        }
    }
    // 16750: a 64-byte FIFO shows as IIR bit 5 under DLAB.
    u.write(LCR, 0);
    u.write(IIR_FCR, FCR_ENABLE | 0x20);
    let status1 = u.read(IIR_FCR) >> 5;
    u.write(IIR_FCR, FCR_ENABLE);
    u.write(LCR, 0x80);
    u.write(IIR_FCR, FCR_ENABLE | 0x20);
    let status2 = u.read(IIR_FCR) >> 5;
    u.write(IIR_FCR, FCR_ENABLE);
    u.write(LCR, 0);
    if status1 == 6 && status2 == 7 {
        return "16750";
    }
    // XScale: IER bit 6 (UUE) sticks.
    let iersave = u.read(IER_DLM);
    u.write(IER_DLM, iersave & !0x40);
    let mut sticks = false;
    if u.read(IER_DLM) & 0x40 == 0 {
        u.write(IER_DLM, iersave | 0x40);
        sticks = u.read(IER_DLM) & 0x40 != 0;
    }
    u.write(IER_DLM, iersave);
    if sticks {
        return "XScale";
    }
    "16550A"
}

#[test]
fn linux_probes_a_16550a() {
    let mut u = uart();
    // Linux first rejects a port whose LSR reads 0xFF (nothing there).
    assert_ne!(u.read(LSR), 0xFF);
    assert_eq!(linux_autoconfig(&mut u), "16550A");
    // The probe leaves no interrupt and no output behind.
    assert!(!u.irq_level());
    assert!(u.output().0.is_empty());
    assert_eq!(u.mcr(), 0);
    assert_eq!(u.lcr(), 0);
    assert_eq!(u.ier(), 0);
}

#[test]
fn linux_probe_tolerates_earlier_state() {
    // A probe after a boot loader or earlier kernel used the port.
    let mut u = uart();
    u.write(LCR, 0x83);
    u.write(RBR_THR_DLL, 1);
    u.write(LCR, 0x03);
    u.write(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    u.write(IER_DLM, IER_RDA);
    u.write(IIR_FCR, 0xC7);
    u.receive(b"stale");
    assert_eq!(linux_autoconfig(&mut u), "16550A");
    assert_eq!(u.lcr(), 0x03);
    assert_eq!(u.mcr(), MCR_DTR | MCR_RTS | MCR_OUT2);
    assert_eq!(u.ier(), IER_RDA);
}

#[test]
fn linux_scratch_register_test() {
    let mut u = uart();
    u.write(SCR, 0xA5);
    let s1 = u.read(SCR);
    u.write(SCR, 0x5A);
    let s2 = u.read(SCR);
    assert_eq!((s1, s2), (0xA5, 0x5A));
}

#[test]
fn linux_loopback_msr_test() {
    let mut u = uart();
    u.write(MCR, 0x1A);
    assert_eq!(u.read(MSR) & 0xF0, 0x90);
    u.write(MCR, 0);
    assert_eq!(u.read(MSR) & 0xF0, DEFAULT_MODEM_INPUTS);
}

#[test]
fn linux_fifo_detection() {
    let mut u = uart();
    u.write(IIR_FCR, FCR_ENABLE);
    assert_eq!(u.read(IIR_FCR) >> 6, 0b11);
}

#[test]
fn linux_console_setup_and_use() {
    // What an 8250 console driver does: 115200 8N1, FIFOs with trigger 14,
    // DTR | RTS | OUT2, receive interrupts; then type and print.
    let mut u = uart();
    u.write(LCR, LCR_DLAB | 0x03);
    u.write(RBR_THR_DLL, 1);
    u.write(IER_DLM, 0);
    u.write(LCR, 0x03);
    u.write(IIR_FCR, 0xC0 | FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    u.write(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    u.write(IER_DLM, IER_RDA | IER_RLS);
    assert_eq!(u.divisor(), 1);
    assert!(!u.irq_level());
    assert_eq!(u.receive(b"ls\r"), 3);
    assert!(u.irq_level());
    assert_eq!(u.read(IIR_FCR), IIR_FIFO_ENABLED | IIR_TIMEOUT);
    let mut got = Vec::new();
    while u.read(LSR) & LSR_DR != 0 {
        got.push(u.read(RBR_THR_DLL));
    }
    assert_eq!(got, b"ls\r");
    assert!(!u.irq_level());
    for &b in b"ok\n" {
        assert_ne!(u.read(LSR) & LSR_THRE, 0);
        u.write(RBR_THR_DLL, b);
    }
    assert_eq!(u.output().0, b"ok\n");
}

// ------------------------------------------------------------ randomized

use crate::test_rng::Rng;

/// The invariants that hold after any sequence of operations.
fn check_invariants(u: &Uart16550<Sink>) {
    assert!(u.rx.len <= u.rx_capacity());
    assert!(u.rx_capacity() <= FIFO_SIZE);
    assert_eq!(u.rx_capacity(), if u.fifo_enabled { FIFO_SIZE } else { 1 });
    assert!(matches!(u.trigger, 1 | 4 | 8 | 14));
    assert_eq!(u.ier & 0xF0, 0);
    assert_eq!(u.mcr & 0xE0, 0);
    assert_eq!(u.lsr_errors & !LSR_OE, 0);
    assert_eq!(u.msr_deltas & 0xF0, 0);

    let iir = u.iir();
    assert_eq!(u.irq_level(), iir & IIR_NO_INT == 0);
    assert_eq!(u.interrupt_pending(), u.irq_level());
    assert_eq!(iir & 0x30, 0);
    assert_eq!(iir & 0xC0, if u.fifo_enabled { 0xC0 } else { 0 });

    let rls = u.ier & IER_RLS != 0 && u.lsr_errors != 0;
    let rda = u.ier & IER_RDA != 0 && u.rx.len > 0;
    let thre = u.ier & IER_THRE != 0 && u.thre_pending;
    let ms = u.ier & IER_MS != 0 && u.msr_deltas != 0;
    match iir & 0x0F {
        IIR_RLS => assert!(rls),
        IIR_RDA => {
            assert!(!rls && rda);
            assert!(!u.fifo_enabled || u.rx.len >= u.trigger);
        }
        IIR_TIMEOUT => {
            assert!(!rls && rda && u.fifo_enabled);
            assert!(u.rx.len < u.trigger);
        }
        IIR_THRE => assert!(!rls && !rda && thre),
        IIR_MS => assert!(!rls && !rda && !thre && ms),
        IIR_NO_INT => assert!(!rls && !rda && !thre && !ms),
        other => panic!("bad IIR id {other:#x}"),
    }

    let lsr = u.lsr();
    assert_eq!(lsr & LSR_DR != 0, u.rx.len > 0);
    assert_eq!(lsr & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    assert_eq!(lsr & 0x9C, 0);
    if u.loopback() {
        assert_eq!(u.msr() & 0xF0, u.modem_lines());
    } else {
        assert_eq!(u.msr() & 0xF0, u.modem_inputs);
    }
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut u = uart();
    let mut sent = 0usize;
    // What the run reached, so that it is known to cover the model.
    let mut seen_ids = [false; 16];
    let mut seen_full = false;
    let mut seen_overrun = false;
    for _ in 0..100_000 {
        match rng.below(10) {
            0..=3 => {
                let offset = rng.below(8) as u8;
                let before = u.clone();
                let v = u.read(offset);
                match offset {
                    IIR_FCR => assert_eq!(v, before.iir()),
                    LSR => {
                        assert_eq!(v, before.lsr());
                        assert_eq!(u.lsr_errors, 0);
                    }
                    MSR => {
                        assert_eq!(v, before.msr());
                        assert_eq!(u.msr_deltas, 0);
                    }
                    RBR_THR_DLL if !before.dlab() => {
                        assert_eq!(u.rx.len, before.rx.len.saturating_sub(1));
                    }
                    _ => {}
                }
            }
            4..=7 => {
                let offset = rng.below(8) as u8;
                // Keep DLAB and loopback off most of the time so that the
                // data path gets exercised.
                let value = match offset {
                    LCR | MCR if rng.below(4) != 0 => rng.byte() & 0x7F & !MCR_LOOP,
                    _ => rng.byte(),
                };
                let transmits = offset == RBR_THR_DLL && !u.dlab() && !u.loopback();
                u.write(offset, value);
                if transmits {
                    sent += 1;
                }
                assert_eq!(u.output().0.len(), sent);
            }
            8 => {
                let len = rng.below(20) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
                let space = if u.loopback() { 0 } else { u.rx_space() };
                let taken = u.receive(&bytes);
                assert_eq!(taken, len.min(space));
            }
            _ => u.set_modem_inputs(rng.byte()),
        }
        check_invariants(&u);
        seen_ids[usize::from(u.iir() & 0x0F)] = true;
        seen_full |= u.fifo_enabled && u.rx.len == FIFO_SIZE;
        seen_overrun |= u.lsr_errors != 0;
    }
    for id in [IIR_RLS, IIR_RDA, IIR_TIMEOUT, IIR_THRE, IIR_MS, IIR_NO_INT] {
        assert!(seen_ids[usize::from(id)], "IIR id {id:#x} never reached");
    }
    assert!(seen_full && seen_overrun);
}

// ---------------------------------------------------------------- busy line

#[test]
fn busy_line_clears_thre_and_temt_and_holds_the_thre_interrupt() {
    let mut u = uart();
    u.write(IER_DLM, IER_THRE);
    assert_eq!(u.read(IIR_FCR) & 0x0F, IIR_THRE);
    u.write(RBR_THR_DLL, b'a');
    u.set_tx_busy(true);
    assert_eq!(u.read(LSR) & (LSR_THRE | LSR_TEMT), 0);
    assert!(!u.irq_level(), "no THRE interrupt while the line is busy");
    // A byte written anyway still reaches the output (the caller decides
    // what to do with it) and raises nothing while busy.
    u.write(RBR_THR_DLL, b'b');
    assert!(!u.irq_level());
    assert_eq!(u.output().0, b"ab");
    u.set_tx_busy(false);
    assert_eq!(u.read(LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    assert!(
        u.irq_level(),
        "freeing the line empties THR: THRE interrupt"
    );
    assert_eq!(u.read(IIR_FCR) & 0x0F, IIR_THRE);
    assert!(!u.irq_level());
}

#[test]
fn enabling_the_thre_interrupt_while_busy_waits_for_the_line() {
    let mut u = uart();
    u.set_tx_busy(true);
    u.write(IER_DLM, IER_THRE);
    assert!(!u.irq_level());
    // Staying busy changes nothing; freeing raises it.
    u.set_tx_busy(true);
    assert!(!u.irq_level());
    u.set_tx_busy(false);
    assert!(u.irq_level());
    u.reset();
    assert!(!u.tx_busy());
}
