//! Port I/O.

use x86_64::instructions::port::Port;

/// Writes a byte to an I/O port.
///
/// # Safety
///
/// The port must belong to a device whose reaction to the write cannot
/// corrupt memory Basalt relies on (no DMA set-up, no reset of a device in
/// use): the caller names the device and why the write is harmless.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
///
/// As for [`outb`]: reads can have side effects (e.g. acknowledging an
/// interrupt), so the caller names the device.
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).read() }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).write(value) }
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).read() }
}

/// Writes a 32-bit dword to an I/O port.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).write(value) }
}

/// Reads a 32-bit dword from an I/O port.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: the caller vouches for the device behind the port.
    unsafe { Port::new(port).read() }
}
