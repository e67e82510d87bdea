//! The host side of a scenario's `disk` and `network` (docs/testing.md,
//! "Disk and network"): the ext4 image the harness makes, and the TCP
//! listener the guest reaches through the emulator's user-mode network.

use crate::emulator::DISK_CYLINDER;
use crate::scenario::DiskSpec;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where e2fsprogs puts `mke2fs` (Debian: `/usr/sbin`, often not on a
/// user's PATH).
const MKE2FS: [&str; 2] = ["/usr/sbin/mke2fs", "/sbin/mke2fs"];

/// The prefix of the line the listener writes into the serial log for
/// each connection: `harness: TCP port received "TEXT"`.
pub const RECEIVED: &str = "harness: TCP port received ";

/// What the listener answers each client, then it closes the connection.
pub const ACK: &str = "basalt-harness-ack";

/// How long the listener waits for a client's line.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most the listener reads from one client.
const CLIENT_MAX: usize = 4096;

/// Makes the ext4 image `image` that `spec` describes: its files (and
/// assets, copied from the paths xtask resolved) are
/// written under `image` with `.files` added, then `mke2fs -d` copies that
/// tree into an image of the spec's size rounded up to whole Bochs
/// cylinders ([`DISK_CYLINDER`]).
pub fn make_disk(spec: &DiskSpec, image: &Path) -> Result<(), String> {
    let bytes = (spec.size_mib()? << 20).div_ceil(DISK_CYLINDER) * DISK_CYLINDER;
    let tree = PathBuf::from(format!("{}.files", image.display()));
    let io_err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    if tree.exists() {
        std::fs::remove_dir_all(&tree).map_err(|e| io_err(&tree, e))?;
    }
    std::fs::create_dir_all(&tree).map_err(|e| io_err(&tree, e))?;
    for (path, text) in &spec.files {
        let file = tree.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        std::fs::write(&file, text).map_err(|e| io_err(&file, e))?;
    }
    for (path, source) in &spec.assets {
        let file = tree.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
        std::fs::copy(source, &file).map_err(|e| io_err(source, e))?;
    }
    let _ = std::fs::remove_file(image);
    std::fs::File::create(image)
        .and_then(|f| f.set_len(bytes))
        .map_err(|e| io_err(image, e))?;
    let mke2fs = MKE2FS
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mke2fs");
    let out = Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-L", &spec.label, "-d"])
        .arg(&tree)
        .arg(image)
        .output()
        .map_err(|e| {
            format!(
                "cannot run {mke2fs} to make the scenario's disk: {e} (apt-get install e2fsprogs)"
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "{mke2fs} -t ext4 -d {} {} failed ({}): {}",
            tree.display(),
            image.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The serial-log line for what a client sent: [`RECEIVED`] and the text
/// (its line end dropped) quoted with Rust's escapes.
pub fn received_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    format!("{RECEIVED}\"{}\"", text.escape_debug())
}

/// A TCP listener on `127.0.0.1` at a free port. Each client's first line
/// (or what it sent before closing, or before [`CLIENT_TIMEOUT`]) becomes a
/// [`received_line`] in the log, on a line of its own; the client gets
/// [`ACK`] and the connection is closed.
#[derive(Debug)]
pub struct NetListener {
    port: u16,
    stop: Arc<AtomicBool>,
    clients: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl NetListener {
    /// Starts listening; lines go to `log`.
    pub fn start(mut log: impl Write + Send + 'static) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, clients) = (Arc::clone(&stop), Arc::clone(&clients));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            clients.fetch_add(1, Ordering::SeqCst);
                            serve(stream, &mut log);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        };
        Ok(Self {
            port,
            stop,
            clients,
            thread,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening; returns how many clients connected.
    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.clients.load(Ordering::SeqCst)
    }
}

/// One client: read its line, log it, answer, close.
fn serve(mut stream: TcpStream, log: &mut impl Write) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.len() < CLIENT_MAX && !got.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    let _ = log
        .write_all(format!("\n{}\n", received_line(&got)).as_bytes())
        .and_then(|()| log.flush());
    let _ = stream.write_all(format!("{ACK}\n").as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[test]
    fn received_lines_are_quoted_and_escaped() {
        assert_eq!(
            received_line(b"basalt-net-42\n"),
            "harness: TCP port received \"basalt-net-42\""
        );
        assert_eq!(
            received_line(b"a\"b\tc\r\n"),
            "harness: TCP port received \"a\\\"b\\tc\""
        );
        assert_eq!(received_line(b""), "harness: TCP port received \"\"");
    }

    /// A log the test can read while the listener writes it.
    #[derive(Clone, Default)]
    struct SharedLog(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedLog {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_listener_logs_each_clients_line_and_answers() {
        let log = SharedLog::default();
        let listener = NetListener::start(log.clone()).expect("listens");
        for (send, close) in [("hello 1\nignored", false), ("no newline", true)] {
            let mut client =
                TcpStream::connect((Ipv4Addr::LOCALHOST, listener.port())).expect("connects");
            client.write_all(send.as_bytes()).expect("sends");
            if close {
                client.shutdown(Shutdown::Write).expect("half-close");
            }
            let mut answer = String::new();
            client.read_to_string(&mut answer).expect("answer");
            assert_eq!(answer, "basalt-harness-ack\n");
        }
        assert_eq!(listener.finish(), 2);
        let text = String::from_utf8(log.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            text,
            "\nharness: TCP port received \"hello 1\"\n\
             \nharness: TCP port received \"no newline\"\n"
        );
    }

    #[test]
    fn a_disk_image_holds_the_files() {
        if !MKE2FS.iter().any(|p| Path::new(p).exists()) {
            eprintln!("skipped: no mke2fs (apt-get install e2fsprogs)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("basalt-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let image = dir.join("d.img");
        let spec = DiskSpec {
            size: "16M".into(),
            files: BTreeMap::from([
                ("hello.txt".to_string(), "basalt-disk-42\n".to_string()),
                ("sub/b.txt".to_string(), "b".to_string()),
            ]),
            assets: BTreeMap::new(),
            label: "basalt-state".into(),
        };
        make_disk(&spec, &image).expect("made");
        let data = std::fs::read(&image).expect("image");
        assert_eq!(data.len() as u64 % DISK_CYLINDER, 0);
        assert!(data.len() >= 16 << 20);
        // The ext2/3/4 superblock magic at 1024 + 0x38, and the file's text
        // somewhere in the image.
        assert_eq!(&data[1024 + 0x38..1024 + 0x3A], &[0x53, 0xEF]);
        // The label (s_volume_name, 16 bytes at 0x78), what findfs looks for.
        assert_eq!(&data[1024 + 0x78..1024 + 0x88], b"basalt-state\0\0\0\0");
        let needle = b"basalt-disk-42\n";
        assert!(data.windows(needle.len()).any(|w| w == needle));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
