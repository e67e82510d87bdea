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

/// Reads `size` bytes (1, 2 or 4) from `port`.
///
/// # Safety
///
/// As for [`outb`]: the caller vouches that reading the device is harmless
/// to Basalt (a device the control domain owns).
pub unsafe fn read(port: u16, size: u8) -> u32 {
    match size {
        // SAFETY: as the caller vouches.
        1 => u32::from(unsafe { Port::<u8>::new(port).read() }),
        // SAFETY: as the caller vouches.
        2 => u32::from(unsafe { Port::<u16>::new(port).read() }),
        // SAFETY: as the caller vouches.
        _ => unsafe { Port::<u32>::new(port).read() },
    }
}

/// Writes the low `size` bytes (1, 2 or 4) of `value` to `port`.
///
/// # Safety
///
/// As for [`read`].
pub unsafe fn write(port: u16, size: u8, value: u32) {
    match size {
        // SAFETY: as the caller vouches.
        1 => unsafe { Port::<u8>::new(port).write(value as u8) },
        // SAFETY: as the caller vouches.
        2 => unsafe { Port::<u16>::new(port).write(value as u16) },
        // SAFETY: as the caller vouches.
        _ => unsafe { Port::<u32>::new(port).write(value) },
    }
}
