//! Small traffic generators for the demo, each a thread moved into its host's
//! network namespace (setns affects only the calling thread):
//! - "internet" services on the WAN host: DNS (UDP 53), NTP (UDP 123), CoAP
//!   (UDP 5683), HTTP (TCP 80), MQTT (TCP 1883, CONNECT/CONNACK then PUBLISHes);
//! - services on each device: SSH (22) and Telnet (23) listeners that send a
//!   banner and close (the brute-force victims), HTTP (80);
//! - each device's benign IoT behaviour: MQTT telemetry every second over one
//!   long-lived connection, DNS every 10 s, CoAP every 5 s, HTTP every 15 s, NTP
//!   every 30 s;
//! - a login guesser: repeated short TCP connections to port 22/23.
//!
//! Everything stops when the shared stop flag is set.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::testbed::{self, netns};

/// Running generators; [`Traffic::stop`] (or drop) ends them.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Benign exchanges completed (requests answered).
    pub exchanges: Arc<AtomicU64>,
}

impl Traffic {
    /// Starts the services and the benign clients of `devices` device hosts.
    pub fn start(devices: u8) -> anyhow::Result<Traffic> {
        let mut t = Traffic {
            stop: Arc::default(),
            threads: Vec::new(),
            exchanges: Arc::default(),
        };
        let wan = testbed::WAN_HOST;
        for port in [53u16, 123, 5683] {
            t.spawn(testbed::NS_WAN, move |stop, _| {
                udp_responder(SocketAddrV4::new(wan, port), stop)
            })?;
        }
        t.spawn(testbed::NS_WAN, move |stop, _| {
            tcp_server(SocketAddrV4::new(wan, 80), stop, http_reply)
        })?;
        t.spawn(testbed::NS_WAN, move |stop, _| {
            tcp_server(SocketAddrV4::new(wan, 1883), stop, mqtt_broker)
        })?;
        for i in 1..=devices {
            let ns = testbed::device_ns(i);
            let me = testbed::device_addr(i);
            for (port, banner) in [
                (22u16, &b"SSH-2.0-dropbear_2019.78\r\n"[..]),
                (23, &b"\xff\xfb\x01login: "[..]),
            ] {
                t.spawn(&ns, move |stop, _| {
                    tcp_server(
                        SocketAddrV4::new(me, port),
                        stop,
                        move |mut s: TcpStream| {
                            let _ = s.write_all(banner);
                            let mut buf = [0u8; 256];
                            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                            let _ = s.read(&mut buf);
                        },
                    )
                })?;
            }
            t.spawn(&ns, move |stop, _| {
                tcp_server(SocketAddrV4::new(me, 80), stop, http_reply)
            })?;
            t.spawn(&ns, move |stop, n| device_client(i, stop, n))?;
        }
        Ok(t)
    }

    fn spawn(
        &mut self,
        ns: &str,
        f: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, n, ns) = (self.stop.clone(), self.exchanges.clone(), ns.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        self.threads.push(std::thread::spawn(move || {
            let r = netns::enter_thread(&ns);
            let ok = r.is_ok();
            let _ = tx.send(r);
            if ok {
                f(stop, n);
            }
        }));
        rx.recv()
            .map_err(|_| anyhow::anyhow!("traffic thread died"))?
    }

    /// Stops every generator and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

fn udp_responder(addr: SocketAddrV4, stop: Arc<AtomicBool>) {
    let Ok(s) = UdpSocket::bind(addr) else { return };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            // Answer with the request, first byte flagged (DNS QR, NTP mode 4, CoAP ACK).
            if n > 2 {
                buf[2] |= 0x80;
            }
            let _ = s.send_to(&buf[..n.max(1)], from);
        }
    }
}

fn tcp_server(
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static,
) {
    let Ok(l) = TcpListener::bind(addr) else {
        return;
    };
    let _ = l.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let h = handle.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    if !stop.load(Ordering::SeqCst) {
                        h(s);
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn http_reply(mut s: TcpStream) {
    let mut buf = [0u8; 2048];
    let _ = s.read(&mut buf);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// A minimal MQTT 3.1.1 endpoint: CONNACK for the CONNECT, then swallows
/// PUBLISHes until the client goes away.
fn mqtt_broker(mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = [0u8; 1024];
    if !matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[0] == 0x10) {
        return;
    }
    let _ = s.write_all(&[0x20, 0x02, 0x00, 0x00]);
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

fn mqtt_connect(client_id: &str) -> Vec<u8> {
    let mut v = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    v.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    v.extend_from_slice(client_id.as_bytes());
    let mut p = vec![0x10, v.len() as u8];
    p.extend_from_slice(&v);
    p
}

fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = (topic.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(topic.as_bytes());
    v.extend_from_slice(payload);
    let mut p = vec![0x30, v.len() as u8];
    p.extend_from_slice(&v);
    p
}

/// One device's benign behaviour, until `stop`.
fn device_client(i: u8, stop: Arc<AtomicBool>, n: Arc<AtomicU64>) {
    let wan = testbed::WAN_HOST;
    let me = testbed::device_addr(i);
    let mut mqtt: Option<TcpStream> = None;
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(1)))
        .timeout_global(Some(Duration::from_secs(2)))
        .proxy(None)
        .build()
        .into();
    let start = Instant::now();
    let mut tick: u64 = 0;
    // Devices do not start in lockstep.
    std::thread::sleep(Duration::from_millis(137 * u64::from(i)));
    while !stop.load(Ordering::SeqCst) {
        // MQTT telemetry every second on one long-lived connection.
        if mqtt.is_none() {
            mqtt =
                TcpStream::connect_timeout(&SocketAddr::from((wan, 1883)), Duration::from_secs(1))
                    .ok()
                    .and_then(|mut s| {
                        s.write_all(&mqtt_connect(&format!("dev{i}"))).ok()?;
                        let mut ack = [0u8; 4];
                        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                        s.read_exact(&mut ack).ok()?;
                        Some(s)
                    });
        }
        if let Some(s) = &mut mqtt {
            let msg = format!(
                "{{\"dev\":{i},\"temp\":{:.1}}}",
                20.0 + (tick % 7) as f64 * 0.3
            );
            if s.write_all(&mqtt_publish(
                &format!("sensors/dev{i}/temp"),
                msg.as_bytes(),
            ))
            .is_ok()
            {
                n.fetch_add(1, Ordering::Relaxed);
            } else {
                mqtt = None;
            }
        }
        let udp = |port: u16, req: &[u8]| {
            if let Ok(s) = UdpSocket::bind(SocketAddrV4::new(me, 0)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = s.send_to(req, SocketAddrV4::new(wan, port));
                let mut b = [0u8; 512];
                if s.recv_from(&mut b).is_ok() {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        if tick % 10 == 3 {
            udp(53, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x06vendor\x03iot\x00\x00\x01\x00\x01");
        }
        if tick % 5 == 1 {
            udp(5683, b"\x40\x01\x12\x34\xb4temp");
        }
        if tick % 30 == 7 {
            let mut ntp = [0u8; 48];
            ntp[0] = 0x23;
            udp(123, &ntp);
        }
        // A firmware check over HTTP (ureq connects from this thread, inside the
        // device's namespace).
        if tick % 15 == 9
            && http
                .get(format!("http://{wan}/fw/dev{i}/latest"))
                .header("Host", "vendor.example")
                .call()
                .is_ok()
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
        tick += 1;
        let next = start + Duration::from_secs(tick);
        while Instant::now() < next && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Repeated short logins from `src` to `dst:port` (connect, read the banner,
/// send a guess, close), every `every`, until `until()` says stop or `max`
/// attempts. Runs in the calling thread's namespace. Returns attempts made.
pub fn guess_logins(
    src: Ipv4Addr,
    dst: SocketAddrV4,
    every: Duration,
    max: u32,
    mut until: impl FnMut() -> bool,
) -> u32 {
    let mut attempts = 0;
    while attempts < max && !until() && !netns::interrupted() {
        attempts += 1;
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        if let Ok(sock) = sock
            && sock.bind(&SocketAddr::from((src, 0)).into()).is_ok()
            && sock
                .connect_timeout(&SocketAddr::from(dst).into(), Duration::from_millis(400))
                .is_ok()
        {
            let mut s: TcpStream = sock.into();
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut b = [0u8; 128];
            let _ = s.read(&mut b);
            let _ = s.write_all(format!("root\r\nadmin{attempts}\r\n").as_bytes());
        }
        std::thread::sleep(every);
    }
    attempts
}
