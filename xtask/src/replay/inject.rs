//! Step 4 of a replay: the rewritten frames sent through an AF_PACKET raw socket
//! on one interface (inside a namespace when given) at the original timing, a fixed
//! rate or top speed; or written to a pcap file instead.
use std::{
    fs::File,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, ensure};
use pcap_file::DataLink;

use super::{Frame, Prepared, Timing};
use crate::testbed::netns;

/// Writes the rewritten frames as an Ethernet pcap (nanosecond timestamps).
pub fn write_pcap(path: &Path, p: &Prepared) -> anyhow::Result<()> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(f), header)?;
    for fr in &p.frames {
        w.write_packet(&PcapPacket::new(
            Duration::from_nanos(fr.ts_ns),
            fr.data.len() as u32,
            &fr.data,
        ))?;
    }
    Ok(())
}

/// Outcome of an injection.
#[derive(Clone, Debug, Default)]
pub struct InjectReport {
    /// Frames sent.
    pub sent: u64,
    /// Bytes sent (Ethernet frames).
    pub bytes: u64,
    /// Frames the socket refused (after retries).
    pub send_errors: u64,
    /// Wall-clock time from the first to the last frame.
    pub elapsed: Duration,
    /// When the first frame went out.
    pub started: Option<SystemTime>,
}

/// Send offsets (from the first frame) of each frame under `timing`.
pub fn schedule(frames: &[Frame], timing: Timing) -> Vec<Duration> {
    let mut out = Vec::with_capacity(frames.len());
    let mut t = Duration::ZERO;
    for (i, f) in frames.iter().enumerate() {
        match timing {
            Timing::Original(cap) => {
                if i > 0 {
                    let gap = Duration::from_nanos(f.ts_ns.saturating_sub(frames[i - 1].ts_ns));
                    t += gap.min(cap);
                }
                out.push(t);
            }
            Timing::Rate(pps) => out.push(Duration::from_secs_f64(i as f64 / pps)),
            Timing::TopSpeed => out.push(Duration::ZERO),
        }
    }
    out
}

/// An AF_PACKET raw socket bound to one interface (send only).
struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    fn open(iface: &str) -> anyhow::Result<PacketSocket> {
        let name = std::ffi::CString::new(iface).context("interface name has a NUL byte")?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned by the result.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            ensure!(ifindex != 0, "no interface {iface:?} here");
            // Protocol 0: this socket receives nothing.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            ensure!(
                fd >= 0,
                "AF_PACKET socket: {} (needs root/CAP_NET_RAW)",
                std::io::Error::last_os_error()
            );
            let s = PacketSocket { fd };
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            );
            ensure!(
                rc == 0,
                "binding to {iface:?}: {}",
                std::io::Error::last_os_error()
            );
            Ok(s)
        }
    }

    /// Sends one frame, retrying briefly while the device queue is full.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut tries = 0;
        loop {
            // SAFETY: the buffer is valid for its length; fd is an open socket.
            let rc = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
            if rc >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) && tries < 100 {
                tries += 1;
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            return Err(e);
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closing our own fd once.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// Injects the frames on `iface` (inside `ns` when given) with `timing`. Calls
/// `on_sent(index, wall_clock)` after each frame. Runs on a helper thread that
/// enters the namespace, so the caller's namespace is untouched. Stops early on
/// Ctrl-C.
pub fn inject(
    p: &Prepared,
    ns: Option<&str>,
    iface: &str,
    timing: Timing,
    mut on_sent: impl FnMut(usize, SystemTime) + Send,
) -> anyhow::Result<InjectReport> {
    let offsets = schedule(&p.frames, timing);
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> anyhow::Result<InjectReport> {
                if let Some(ns) = ns {
                    netns::enter_thread(ns)?;
                }
                let sock = PacketSocket::open(iface)?;
                let mut r = InjectReport::default();
                let start = Instant::now();
                r.started = Some(SystemTime::now());
                let mut first_err = None;
                for (i, (f, off)) in p.frames.iter().zip(&offsets).enumerate() {
                    let due = start + *off;
                    loop {
                        let now = Instant::now();
                        if now >= due {
                            break;
                        }
                        netns::check_interrupt()?;
                        std::thread::sleep((due - now).min(Duration::from_millis(100)));
                    }
                    match sock.send(&f.data) {
                        Ok(()) => {
                            r.sent += 1;
                            r.bytes += f.data.len() as u64;
                            on_sent(i, SystemTime::now());
                        }
                        Err(e) => {
                            r.send_errors += 1;
                            first_err.get_or_insert(e);
                        }
                    }
                }
                r.elapsed = start.elapsed();
                if let Some(e) = first_err {
                    eprintln!(
                        "replay: {} frames not sent, first error: {e}",
                        r.send_errors
                    );
                }
                Ok(r)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the injecting thread panicked"))?
    })
}
