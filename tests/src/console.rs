//! The interactive serial console of scenarios with `steps`.
//!
//! Under QEMU, COM1 goes through a TCP socket that QEMU serves on
//! `127.0.0.1` (it waits for the harness before the machine starts). Under
//! Bochs it goes through a pseudo-terminal ([`Pty`], Bochs' `mode=term`): in
//! Bochs 2.7's `socket-server` mode, a byte that arrives while a byte is
//! being sent stops the transmitter for good (LSR.THRE never sets again).
//!
//! A reader thread ([`pump`]) appends everything to the serial log and to a
//! [`SerialBuffer`]; the step runner ([`run_steps`]) waits in that buffer for
//! each step's text and types the step's bytes, paced. Both work on any
//! `Read`/`Write`, so they are unit-tested against in-memory streams.
//!
//! `cargo xtask run --emulator bochs` uses the same pieces ([`Pty`],
//! [`PtyStream`], [`pump`], [`make_raw`]) to put COM1 on the operator's
//! terminal.

use crate::scenario::Step;
use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Console::finish`] waits for the emulator's end of the stream
/// before it closes the socket itself.
const DRAIN: Duration = Duration::from_secs(2);

/// The serial output so far (carriage returns removed, as in the judged
/// log), shared by the reader and the step runner.
#[derive(Debug, Default)]
pub struct SerialBuffer {
    state: Mutex<BufferState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct BufferState {
    text: Vec<u8>,
    closed: bool,
}

/// How [`SerialBuffer::wait_for`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The text appeared; the offset just past it.
    Found(usize),
    /// The output ended first (the emulator is gone).
    Closed,
    /// The deadline passed first.
    TimedOut,
}

impl SerialBuffer {
    fn lock(&self) -> MutexGuard<'_, BufferState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends output.
    pub fn push(&self, bytes: &[u8]) {
        let mut state = self.lock();
        state.text.extend(bytes.iter().filter(|&&b| b != b'\r'));
        self.changed.notify_all();
    }

    /// Marks the end of the output.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Whether the output has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The output so far.
    pub fn text(&self) -> Vec<u8> {
        self.lock().text.clone()
    }

    /// Waits until `text` (carriage returns ignored) appears at or after
    /// offset `from`, the output ends or `deadline` passes.
    pub fn wait_for(&self, text: &str, from: usize, deadline: Instant) -> Waited {
        let needle: Vec<u8> = text.bytes().filter(|&b| b != b'\r').collect();
        if needle.is_empty() {
            return Waited::Found(from);
        }
        let mut scan = from;
        let mut state = self.lock();
        loop {
            if let Some(rest) = state.text.get(scan..)
                && let Some(at) = rest.windows(needle.len()).position(|w| w == needle)
            {
                return Waited::Found(scan + at + needle.len());
            }
            // A later match can only start in the last `needle.len() - 1` bytes.
            scan = scan.max(state.text.len().saturating_sub(needle.len() - 1));
            if state.closed {
                return Waited::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the output ends or `deadline` passes; whether it ended.
    pub fn wait_closed(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.closed {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Copies `input` to `log` (unchanged, flushed as it comes) and to `buffer`
/// until the input ends or fails (an emulator that is killed may reset the
/// connection); then closes `buffer`. `Err` only when `log` cannot be
/// written.
pub fn pump(mut input: impl Read, mut log: impl Write, buffer: &SerialBuffer) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let result = loop {
        match input.read(&mut chunk) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = log.write_all(&chunk[..n]).and_then(|()| log.flush()) {
                    break Err(e);
                }
                buffer.push(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break Ok(()),
        }
    };
    buffer.close();
    result
}

/// Why a step did not complete.
#[derive(Debug)]
pub enum StepCause {
    /// Its text had not appeared by the scenario's timeout.
    TimedOut,
    /// The output ended (the emulator stopped) before its text appeared.
    Ended,
    /// Writing to the console failed.
    Send(io::Error),
}

/// A step that did not complete.
#[derive(Debug)]
pub struct StepFailure {
    /// 1-based step number.
    pub step: usize,
    /// Number of steps in the scenario.
    pub of: usize,
    /// The step's `wait` text, if it has one.
    pub wait: Option<String>,
    /// Why.
    pub cause: StepCause,
}

impl StepFailure {
    /// The failure for people, pointing at the serial log.
    pub fn message(&self, serial_log: &Path) -> String {
        let step = format!("step {} of {}", self.step, self.of);
        let after = if self.step > 1 {
            "after the previous step's match"
        } else {
            "in the serial output"
        };
        let what = match (&self.cause, &self.wait) {
            (StepCause::TimedOut, Some(wait)) => {
                format!("waited for {wait:?} {after}; it did not appear before the timeout")
            }
            (StepCause::Ended, Some(wait)) => format!(
                "waited for {wait:?} {after}; the emulator's output ended before it appeared"
            ),
            (StepCause::TimedOut | StepCause::Ended, None) => "it did not complete".into(),
            (StepCause::Send(e), _) => format!("sending its bytes to COM1 failed: {e}"),
        };
        format!("{step}: {what} (serial log {})", serial_log.display())
    }
}

/// Runs `steps` in order: each waits for its text after the end of the
/// previous step's match, then sends its bytes to `out` one at a time with
/// `pace` after each byte.
pub fn run_steps(
    steps: &[Step],
    pace: Duration,
    buffer: &SerialBuffer,
    out: &mut impl Write,
    deadline: Instant,
) -> Result<(), StepFailure> {
    let mut from = 0;
    for (i, step) in steps.iter().enumerate() {
        let fail = |cause| StepFailure {
            step: i + 1,
            of: steps.len(),
            wait: step.wait.clone(),
            cause,
        };
        if let Some(wait) = &step.wait {
            match buffer.wait_for(wait, from, deadline) {
                Waited::Found(end) => from = end,
                Waited::Closed => return Err(fail(StepCause::Ended)),
                Waited::TimedOut => return Err(fail(StepCause::TimedOut)),
            }
        }
        for &byte in step.send.as_deref().unwrap_or("").as_bytes() {
            if buffer.is_closed() {
                let ended =
                    io::Error::new(io::ErrorKind::BrokenPipe, "the emulator's output ended");
                return Err(fail(StepCause::Send(ended)));
            }
            out.write_all(&[byte])
                .and_then(|()| out.flush())
                .map_err(|e| fail(StepCause::Send(e)))?;
            std::thread::sleep(pace);
        }
    }
    Ok(())
}

/// A loopback port that was free a moment ago, for the emulator to listen on.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Why [`connect`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The emulator ended before it accepted the connection.
    Ended,
    /// Nothing accepted the connection before the deadline.
    TimedOut,
}

/// Connects to the emulator's console at `127.0.0.1:port`, retrying until it
/// listens, `ended()` says the emulator is gone, or `deadline` passes.
pub fn connect(
    port: u16,
    deadline: Instant,
    mut ended: impl FnMut() -> bool,
) -> Result<TcpStream, ConnectError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            // With nothing listening, Linux can connect a socket to itself
            // when its own ephemeral port is `port`.
            if stream.local_addr().ok() != stream.peer_addr().ok() {
                return Ok(stream);
            }
        }
        if ended() {
            return Err(ConnectError::Ended);
        }
        if Instant::now() >= deadline {
            return Err(ConnectError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pseudo-terminal for an emulator's serial port: the emulator opens
/// [`Pty::path`] (the slave end), the harness reads and writes the master
/// end. The harness keeps the slave open too, so the master never sees a
/// hang-up and no output is lost when the emulator exits.
#[derive(Debug)]
pub struct Pty {
    master: File,
    _slave: File,
    path: PathBuf,
}

impl Pty {
    /// Opens a new pseudo-terminal in raw mode (no echo, no line editing,
    /// no signals from control characters, bytes passed unchanged).
    pub fn open() -> io::Result<Self> {
        let master = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open("/dev/ptmx")?;
        let fd = master.as_raw_fd();
        // SAFETY: `fd` is an open pseudo-terminal master.
        if unsafe { libc::grantpt(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::unlockpt(fd) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: `name` is writable for `name.len()` bytes; `fd` is a master.
        let err = unsafe { libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        // SAFETY: on success `ptsname_r` wrote a NUL-terminated string into `name`.
        let path = PathBuf::from(
            unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .as_ref(),
        );
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)?;
        make_raw(&slave, false)?;
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    /// The slave end, for the emulator to open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A stream on the master end (see [`PtyStream`] for how `stop` ends it).
    pub fn stream(&self, stop: Arc<AtomicBool>) -> io::Result<PtyStream> {
        Ok(PtyStream {
            master: self.master.try_clone()?,
            stop,
        })
    }
}

/// Puts the terminal `tty` in raw mode: input bytes unchanged (no line
/// editing, no echo, no signals from Ctrl-C, Ctrl-Z or Ctrl-\), and with
/// `keep_output` false no output processing either. Returns the mode it had,
/// for [`set_terminal_mode`].
pub fn make_raw(tty: impl AsFd, keep_output: bool) -> io::Result<libc::termios> {
    let fd = tty.as_fd().as_raw_fd();
    let mut mode = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is open (borrowed); `mode` has room for a termios.
    if unsafe { libc::tcgetattr(fd, mode.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tcgetattr` succeeded, so `mode` is initialised.
    let saved = unsafe { mode.assume_init() };
    let mut raw = saved;
    // SAFETY: `raw` is a valid termios.
    unsafe { libc::cfmakeraw(&mut raw) };
    if keep_output {
        raw.c_oflag = saved.c_oflag;
    }
    set_terminal_mode(tty, &raw)?;
    Ok(saved)
}

/// Sets the mode of the terminal `tty`, e.g. back to what [`make_raw`]
/// returned.
pub fn set_terminal_mode(tty: impl AsFd, mode: &libc::termios) -> io::Result<()> {
    // SAFETY: the descriptor is open (borrowed) and `mode` a valid termios.
    if unsafe { libc::tcsetattr(tty.as_fd().as_raw_fd(), libc::TCSANOW, mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` for `file` to become readable (or to reach its end
/// or an error); whether it is.
pub fn readable(file: impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = libc::pollfd {
        fd: file.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is one valid pollfd.
    match unsafe { libc::poll(&mut fds, 1, millis) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        n => Ok(n > 0),
    }
}

/// The master end of a [`Pty`] as a byte stream ([`Pty::stream`]). Reading
/// ends (returns 0) once `stop` is set and no byte came for a poll interval;
/// writing waits while the terminal's input queue is full, and fails once
/// `stop` is set.
#[derive(Debug)]
pub struct PtyStream {
    master: File,
    stop: Arc<AtomicBool>,
}

/// How long a [`PtyStream`] read waits before it looks at `stop` again; also
/// the quiet time after which a stopped stream ends.
const PTY_POLL: Duration = Duration::from_millis(50);

impl Read for PtyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if readable(&self.master, PTY_POLL)? {
                match self.master.read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // EIO: no slave open (cannot happen while the Pty lives).
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                    other => return other,
                }
            } else if stopping {
                return Ok(0);
            }
        }
    }
}

impl Write for PtyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.master.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stop.load(Ordering::SeqCst) {
                        return Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "the emulator stopped reading its console",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How the console reaches the emulator, for ending it.
#[derive(Debug)]
enum Link {
    Tcp(TcpStream),
    Pty { _pty: Pty, stop: Arc<AtomicBool> },
}

/// A connected console: the reader thread and the step runner thread.
#[derive(Debug)]
pub struct Console {
    link: Link,
    buffer: Arc<SerialBuffer>,
    reader: JoinHandle<io::Result<()>>,
    runner: JoinHandle<Result<(), StepFailure>>,
}

impl Console {
    /// Starts reading `stream` into `log` and running `steps` on it.
    pub fn start_tcp(
        stream: TcpStream,
        log: File,
        steps: Vec<Step>,
        pace: Duration,
        deadline: Instant,
    ) -> io::Result<Self> {
        let input = stream.try_clone()?;
        let output = stream.try_clone()?;
        Ok(Self::start(
            Link::Tcp(stream),
            input,
            output,
            log,
            steps,
            pace,
            deadline,
        ))
    }

    /// Starts reading `pty` into `log` and running `steps` on it.
    pub fn start_pty(
        pty: Pty,
        log: File,
        steps: Vec<Step>,
        pace: Duration,
        deadline: Instant,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let input = pty.stream(Arc::clone(&stop))?;
        let output = pty.stream(Arc::clone(&stop))?;
        let link = Link::Pty { _pty: pty, stop };
        Ok(Self::start(link, input, output, log, steps, pace, deadline))
    }

    fn start(
        link: Link,
        input: impl Read + Send + 'static,
        mut output: impl Write + Send + 'static,
        log: File,
        steps: Vec<Step>,
        pace: Duration,
        deadline: Instant,
    ) -> Self {
        let buffer = Arc::new(SerialBuffer::default());
        let reader = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || pump(input, log, &buffer))
        };
        let runner = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || run_steps(&steps, pace, &buffer, &mut output, deadline))
        };
        Self {
            link,
            buffer,
            reader,
            runner,
        }
    }

    /// Once the emulator has ended: reads the rest of its output (closing
    /// the socket if it does not end), then reports the steps' outcome.
    pub fn finish(self, serial_log: &Path) -> Result<(), String> {
        match &self.link {
            // The pty stays open on our side: end once its output is drained.
            Link::Pty { stop, .. } => stop.store(true, Ordering::SeqCst),
            Link::Tcp(stream) => {
                if !self.buffer.wait_closed(Instant::now() + DRAIN) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
        match self.reader.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("writing {}: {e}", serial_log.display())),
            Err(_) => return Err("the serial reader thread panicked".into()),
        }
        match self.runner.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(failure.message(serial_log)),
            Err(_) => Err("the step runner thread panicked".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// The reading end of an in-memory byte stream; ends when every sender
    /// is gone.
    struct PipeReader {
        rx: Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    impl Read for PipeReader {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(bytes) => self.pending = bytes,
                    Err(_) => return Ok(0),
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    /// The writing end; remembers when each write happened.
    struct PipeWriter {
        tx: Sender<Vec<u8>>,
        times: Arc<Mutex<Vec<Instant>>>,
    }

    impl Write for PipeWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.times.lock().expect("lock").push(Instant::now());
            self.tx
                .send(buf.to_vec())
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pipe() -> (PipeWriter, PipeReader, Arc<Mutex<Vec<Instant>>>) {
        let (tx, rx) = channel();
        let times = Arc::new(Mutex::new(Vec::new()));
        (
            PipeWriter {
                tx,
                times: Arc::clone(&times),
            },
            PipeReader {
                rx,
                pending: Vec::new(),
            },
            times,
        )
    }

    fn step(wait: Option<&str>, send: Option<&str>) -> Step {
        Step {
            wait: wait.map(Into::into),
            send: send.map(Into::into),
        }
    }

    /// A fake guest console: a prompt; `list` answers with domains, three
    /// Ctrl-A switch and prompt again, `quit` says bye and ends the output.
    /// Returns every byte it received.
    fn fake_guest(mut input: PipeReader, output: Sender<Vec<u8>>) -> Vec<u8> {
        let say = |text: &str| {
            // Byte by byte, to split the text over reads.
            for b in text.bytes() {
                let _ = output.send(vec![b]);
            }
        };
        say("Basalt 0.1\r\nbasalt> ");
        let mut got = Vec::new();
        let mut line = Vec::new();
        let mut byte = [0u8];
        while input.read(&mut byte).is_ok_and(|n| n == 1) {
            got.push(byte[0]);
            line.push(byte[0]);
            if line.ends_with(b"\x01\x01\x01") {
                say("switched to d1\r\nbasalt> ");
                line.clear();
            } else if byte[0] == b'\r' {
                match &line[..] {
                    b"list\r" => say("d0 d1\r\nbasalt> "),
                    b"quit\r" => {
                        say("bye\r\n");
                        break;
                    }
                    _ => say("?\r\nbasalt> "),
                }
                line.clear();
            }
        }
        got
    }

    #[test]
    fn steps_drive_a_fake_console_and_everything_is_logged() {
        let (to_guest, guest_in, send_times) = pipe();
        let (guest_out_tx, guest_out_rx) = channel();
        let from_guest = PipeReader {
            rx: guest_out_rx,
            pending: Vec::new(),
        };
        let guest = std::thread::spawn(move || fake_guest(guest_in, guest_out_tx));
        let buffer = Arc::new(SerialBuffer::default());
        let reader = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || {
                let mut log = Vec::new();
                pump(from_guest, &mut log, &buffer).map(|()| log)
            })
        };
        let steps = [
            step(Some("basalt> "), Some("list\r")),
            step(Some("d1"), Some("\u{1}\u{1}\u{1}")),
            // The same prompt again: only the one after "switched" counts.
            step(Some("switched to d1\n"), None),
            step(Some("basalt> "), None),
            step(None, Some("quit\r")),
            step(Some("bye"), None),
        ];
        let pace = Duration::from_millis(3);
        let mut out = to_guest;
        let deadline = Instant::now() + Duration::from_secs(10);
        run_steps(&steps, pace, &buffer, &mut out, deadline).expect("steps complete");
        drop(out);
        let received = guest.join().expect("guest");
        assert_eq!(received, b"list\r\x01\x01\x01quit\r");
        let log = reader.join().expect("reader").expect("log written");
        assert_eq!(
            String::from_utf8_lossy(&log),
            "Basalt 0.1\r\nbasalt> d0 d1\r\nbasalt> switched to d1\r\nbasalt> bye\r\n"
        );
        assert!(buffer.is_closed());
        assert_eq!(
            buffer.text(),
            b"Basalt 0.1\nbasalt> d0 d1\nbasalt> switched to d1\nbasalt> bye\n"
        );
        let times = send_times.lock().expect("lock");
        assert_eq!(times.len(), 13, "one write per byte");
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= pace, "{:?}", pair[1] - pair[0]);
        }
    }

    #[test]
    fn a_repeated_wait_needs_a_new_occurrence() {
        let buffer = SerialBuffer::default();
        buffer.push(b"basalt> ");
        let steps = [
            step(Some("basalt> "), Some("x")),
            step(Some("basalt> "), Some("y")),
        ];
        let mut sent = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(150);
        let failure =
            run_steps(&steps, Duration::ZERO, &buffer, &mut sent, deadline).expect_err("times out");
        assert_eq!(sent, b"x");
        assert_eq!((failure.step, failure.of), (2, 2));
        assert!(matches!(failure.cause, StepCause::TimedOut));
        let message = failure.message(Path::new("target/test-logs/t.serial.log"));
        assert_eq!(
            message,
            "step 2 of 2: waited for \"basalt> \" after the previous step's match; it did not \
             appear before the timeout (serial log target/test-logs/t.serial.log)"
        );
    }

    #[test]
    fn a_wait_sees_text_split_over_pushes_and_carriage_returns() {
        let buffer = Arc::new(SerialBuffer::default());
        let writer = {
            let buffer = Arc::clone(&buffer);
            std::thread::spawn(move || {
                for part in [&b"boot ok\r"[..], b"\nbas", b"al", b"t> "] {
                    std::thread::sleep(Duration::from_millis(10));
                    buffer.push(part);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            buffer.wait_for("ok\r\nbasalt> ", 0, deadline),
            Waited::Found(16)
        );
        writer.join().expect("writer");
        assert_eq!(buffer.wait_for("ok", 5, deadline), Waited::Found(7));
        assert_eq!(buffer.wait_for("ok", 6, Instant::now()), Waited::TimedOut);
        buffer.close();
        assert_eq!(buffer.wait_for("never", 0, deadline), Waited::Closed);
    }

    #[test]
    fn the_output_ending_fails_the_waiting_step() {
        let buffer = SerialBuffer::default();
        buffer.push(b"BASALT-VERDICT: FAIL: panic\n");
        buffer.close();
        let steps = [step(Some("basalt> "), Some("list\r"))];
        let mut sent = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let failure =
            run_steps(&steps, Duration::ZERO, &buffer, &mut sent, deadline).expect_err("ended");
        assert!(sent.is_empty());
        assert!(matches!(failure.cause, StepCause::Ended));
        let message = failure.message(Path::new("x.log"));
        assert!(message.starts_with("step 1 of 1: waited for \"basalt> \" in the serial output"));
        assert!(message.contains("output ended"));
        assert!(message.ends_with("(serial log x.log)"));
    }

    #[test]
    fn send_only_steps_go_at_once_and_write_errors_are_reported() {
        let buffer = SerialBuffer::default();
        let steps = [step(None, Some("ab")), step(None, Some("\u{1b}"))];
        let mut sent = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        run_steps(&steps, Duration::ZERO, &buffer, &mut sent, deadline).expect("sent");
        assert_eq!(sent, b"ab\x1b");

        let (to_guest, guest_in, _) = pipe();
        drop(guest_in);
        let mut out = to_guest;
        let failure =
            run_steps(&steps, Duration::ZERO, &buffer, &mut out, deadline).expect_err("broken");
        assert_eq!(failure.step, 1);
        assert!(
            failure
                .message(Path::new("x"))
                .contains("sending its bytes to COM1 failed")
        );
    }

    #[test]
    fn a_pty_carries_both_ways_raw_and_ends_after_its_output() {
        let pty = Pty::open().expect("a pseudo-terminal");
        // The emulator's side.
        let mut slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(pty.path())
            .expect("open the slave");
        let log_path = std::env::temp_dir().join(format!("basalt-pty-{}.log", std::process::id()));
        let log = File::create(&log_path).expect("log");
        let steps = vec![
            step(Some("basalt> "), Some("list\r\u{1}\u{3}")),
            step(Some("d1\n"), None),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let console =
            Console::start_pty(pty, log, steps, Duration::from_millis(1), deadline).expect("start");
        slave.write_all(b"boot\r\nbasalt> ").expect("write");
        let mut typed = [0u8; 7];
        slave.read_exact(&mut typed).expect("read what was typed");
        assert_eq!(
            &typed, b"list\r\x01\x03",
            "raw: no echo, no CR mapping, no signals"
        );
        slave.write_all(b"d0 d1\r\n").expect("write");
        std::thread::sleep(Duration::from_millis(100));
        drop(slave);
        console.finish(&log_path).expect("steps complete");
        let logged = std::fs::read(&log_path).expect("log");
        let _ = std::fs::remove_file(&log_path);
        assert_eq!(logged, b"boot\r\nbasalt> d0 d1\r\n");
    }

    #[test]
    fn connects_once_the_emulator_listens_and_gives_up_when_it_ends() {
        let port = free_port().expect("a free port");
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("bind");
            let (mut client, _) = listener.accept().expect("accept");
            client.write_all(b"hello\r\n").expect("write");
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = connect(port, deadline, || false).expect("connected");
        let buffer = SerialBuffer::default();
        let mut log = Vec::new();
        pump(stream, &mut log, &buffer).expect("pumped");
        server.join().expect("server");
        assert_eq!(log, b"hello\r\n");
        assert!(buffer.is_closed());

        let port = free_port().expect("a free port");
        assert_eq!(
            connect(port, deadline, || true).expect_err("ended"),
            ConnectError::Ended
        );
        assert_eq!(
            connect(port, Instant::now(), || false).expect_err("timed out"),
            ConnectError::TimedOut
        );
    }
}
