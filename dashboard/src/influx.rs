//! Optional export in InfluxDB line protocol (InfluxDB 2.x docs, "Line protocol"
//! reference: `measurement,tag=v field=v timestamp`, timestamps in ns), for
//! operators who outgrow the embedded store. Lines go to a file (append; e.g.
//! Telegraf's `tail` input) and/or one UDP datagram per batch (InfluxDB 1.x or
//! Telegraf `socket_listener`).
//!
//! Measurements: `tad_traffic` (one per counters snapshot: the series point),
//! `tad_counter` (one per verdict/reason slot), `tad_alert`, `tad_trust`.
//! Export runs on its own task behind a bounded queue; when the queue is full the
//! batch is dropped and counted (`tad_dashboard_influx_dropped_total`), so a slow
//! sink never holds up ingestion.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use tad_wire::{Alert, CountersSnapshot, TrustUpdate};
use tokio::{io::AsyncWriteExt, sync::mpsc};

use crate::{metrics::Metrics, store::SeriesPoint};

/// Escapes a measurement name (commas and spaces).
fn measurement(s: &str) -> String {
    s.replace(',', "\\,").replace(' ', "\\ ")
}

/// Escapes a tag key or value, or a field key (commas, equals signs, spaces).
pub fn tag(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
        .replace(' ', "\\ ")
}

/// Quotes a string field value (double quotes and backslashes escaped).
pub fn string_field(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A float field value; non-finite values (not representable) become 0.
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

fn ns(ms: u64) -> u128 {
    u128::from(ms) * 1_000_000
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Lines for one counters snapshot and its derived series point.
pub fn counters_lines(snap: &CountersSnapshot, p: &SeriesPoint) -> Vec<String> {
    let gw = tag(&snap.gateway_id);
    let mut lines = vec![format!(
        "{},gateway={gw},mode={} pass_pps={},drop_blocklist_pps={},drop_syn_rate_pps={},\
         drop_pkt_rate_pps={},would_drop_pps={},flows_per_s={},alerts_per_min={},\
         flows_exported={}i,records_dropped_total={}i {}",
        measurement("tad_traffic"),
        snake(&snap.mode),
        float(p.pass_pps),
        float(p.drop_blocklist_pps),
        float(p.drop_syn_rate_pps),
        float(p.drop_pkt_rate_pps),
        float(p.would_drop_pps),
        float(p.flows_per_s),
        float(p.alerts_per_min),
        snap.flows_exported,
        snap.records_dropped_total,
        ns(snap.at_ms)
    )];
    for c in &snap.counters {
        lines.push(format!(
            "tad_counter,gateway={gw},verdict={},reason={} packets={}i,bytes={}i,pps={} {}",
            snake(&c.verdict),
            snake(&c.reason),
            c.packets,
            c.bytes,
            float(c.pps),
            ns(snap.at_ms)
        ));
    }
    lines
}

/// The line for one alert.
pub fn alert_line(a: &Alert) -> String {
    let mut fields = vec![
        format!("id={}", string_field(&a.id)),
        format!("rule={}", string_field(&a.explanation.rule)),
        format!("text={}", string_field(&a.explanation.text)),
    ];
    if let Some(s) = a.source {
        fields.push(format!("source={}", string_field(&s.to_string())));
    }
    if let Some(t) = a.target {
        fields.push(format!("target={}", string_field(&t.to_string())));
    }
    // An update of a merged alert (same id): how many detections it holds so far.
    if a.count > 1 {
        fields.push(format!("count={}i", a.count));
    }
    format!(
        "tad_alert,gateway={},detector={},kind={},severity={} {} {}",
        tag(&a.gateway_id),
        tag(&a.detector_id),
        snake(&a.kind),
        snake(&a.severity),
        fields.join(","),
        ns(a.at_ms)
    )
}

/// The line for one trust update.
pub fn trust_line(t: &TrustUpdate) -> String {
    format!(
        "tad_trust,device={},level={} score={},behavioural={},vulnerability={},reputation={} {}",
        tag(&t.device.to_string()),
        snake(&t.level),
        float(t.score),
        float(t.behavioural),
        float(t.vulnerability),
        float(t.reputation),
        ns(t.at_ms)
    )
}

/// Where lines go.
#[derive(Clone, Debug)]
pub struct InfluxTargets {
    pub file: Option<PathBuf>,
    pub udp: Option<SocketAddr>,
}

/// The sending side of the export queue.
#[derive(Clone, Debug)]
pub struct InfluxSink {
    tx: mpsc::Sender<Vec<String>>,
    metrics: Arc<Metrics>,
}

impl InfluxSink {
    /// Starts the writer task (queue of `capacity` batches); it ends when every
    /// sink clone is dropped.
    pub fn spawn(targets: InfluxTargets, capacity: usize, metrics: Arc<Metrics>) -> InfluxSink {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_loop(targets, rx, metrics.clone()));
        InfluxSink { tx, metrics }
    }

    /// Queues a batch of lines; drops (and counts) it when the queue is full.
    pub fn send(&self, lines: Vec<String>) {
        let n = lines.len() as u64;
        if self.tx.try_send(lines).is_err() {
            self.metrics
                .influx_dropped
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

async fn write_loop(
    targets: InfluxTargets,
    mut rx: mpsc::Receiver<Vec<String>>,
    metrics: Arc<Metrics>,
) {
    let udp = match targets.udp {
        Some(addr) => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            match tokio::net::UdpSocket::bind(bind).await {
                Ok(s) => Some((s, addr)),
                Err(error) => {
                    tracing::error!(%error, "influx export: cannot open a UDP socket");
                    None
                }
            }
        }
        None => None,
    };
    while let Some(lines) = rx.recv().await {
        let mut text = lines.join("\n");
        text.push('\n');
        let mut ok = true;
        if let Some(path) = &targets.file {
            let res = async {
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?;
                f.write_all(text.as_bytes()).await?;
                f.flush().await
            }
            .await;
            if let Err(error) = res {
                tracing::warn!(%error, path = %path.display(), "influx export: file write failed");
                ok = false;
            }
        }
        if let Some((sock, addr)) = &udp
            && let Err(error) = sock.send_to(text.as_bytes(), addr).await
        {
            tracing::warn!(%error, %addr, "influx export: UDP send failed");
            ok = false;
        }
        let counter = if ok {
            &metrics.influx_lines
        } else {
            &metrics.influx_errors
        };
        counter.fetch_add(lines.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fw_common::counters::CounterSlot;
    use tad_wire::{AlertKind, CounterEntry, Explanation, Mode, Severity, TrustLevel};

    use super::*;

    #[test]
    fn counters_become_one_traffic_line_and_one_per_slot() {
        let snap = CountersSnapshot {
            v: 1,
            gateway_id: "gw-1".parse().unwrap(),
            at_ms: 1_700_000_000_123,
            mode: Mode::Enforce,
            counters: vec![CounterEntry::new(CounterSlot::DropSynRate, 10, 600, 2.5)],
            maps: vec![],
            flows_exported: 4,
            records_dropped_total: 0,
        };
        let p = SeriesPoint {
            pass_pps: 100.0,
            drop_syn_rate_pps: 2.5,
            ..Default::default()
        };
        let lines = counters_lines(&snap, &p);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("tad_traffic,gateway=gw-1,mode=enforce pass_pps=100,"));
        assert!(lines[0].contains("flows_exported=4i"));
        assert!(lines[0].ends_with(" 1700000000123000000"));
        assert_eq!(
            lines[1],
            "tad_counter,gateway=gw-1,verdict=drop,reason=syn_rate packets=10i,bytes=600i,pps=2.5 1700000000123000000"
        );
    }

    /// A gateway id can no longer carry a space, comma or equals sign (it is a
    /// `tad_wire::NodeId`), so the escaping every tag goes through is checked on
    /// `tag` itself, with the value this test used to put in the snapshot.
    #[test]
    fn tags_escape_spaces_commas_and_equals_signs() {
        assert_eq!(tag("gw 1,a=b"), "gw\\ 1\\,a\\=b");
        assert_eq!(tag("a\\b"), "a\\\\b");
    }

    #[test]
    fn alert_and_trust_lines_quote_strings() {
        let a = Alert {
            v: 1,
            id: "a-1".into(),
            detector_id: "det-1".parse().unwrap(),
            gateway_id: "gw-1".parse().unwrap(),
            at_ms: 5,
            first_seen_ms: None,
            count: 1,
            kind: AlertKind::PortScan,
            severity: Severity::High,
            source: Some("192.0.2.7".parse().unwrap()),
            target: None,
            explanation: Explanation {
                rule: "portscan.vertical".into(),
                window_s: 10.0,
                observed: BTreeMap::new(),
                thresholds: BTreeMap::new(),
                text: "22 \"ports\" in 10 s".into(),
            },
            flows: vec![],
            verdict_id: None,
        };
        assert_eq!(
            alert_line(&a),
            "tad_alert,gateway=gw-1,detector=det-1,kind=port_scan,severity=high \
             id=\"a-1\",rule=\"portscan.vertical\",text=\"22 \\\"ports\\\" in 10 s\",\
             source=\"192.0.2.7\" 5000000"
        );
        let t = TrustUpdate {
            v: 1,
            detector_id: "d".parse().unwrap(),
            at_ms: 1,
            device: "2001:db8::1".parse().unwrap(),
            score: 42.5,
            level: TrustLevel::Alert,
            behavioural: f64::NAN,
            vulnerability: 50.0,
            reputation: 60.0,
            reason: "x".into(),
        };
        assert_eq!(
            trust_line(&t),
            "tad_trust,device=2001:db8::1,level=alert score=42.5,behavioural=0,vulnerability=50,reputation=60 1000000"
        );
    }

    #[tokio::test]
    async fn writes_to_file_and_udp() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lines.txt");
        let rx_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let sink = InfluxSink::spawn(
            InfluxTargets {
                file: Some(file.clone()),
                udp: Some(rx_sock.local_addr().unwrap()),
            },
            4,
            metrics.clone(),
        );
        sink.send(vec!["m a=1i 1".into(), "m a=2i 2".into()]);
        let mut buf = [0u8; 256];
        let n = rx_sock.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"m a=1i 1\nm a=2i 2\n");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "m a=1i 1\nm a=2i 2\n"
        );
    }
}
