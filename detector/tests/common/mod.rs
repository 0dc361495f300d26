//! Helpers of the detector's broker tests (evidence_service.rs, fleet.rs): a
//! gateway's evidence records, a publisher that repeats a batch, the next signed
//! verdict.

#![allow(dead_code)] // each test file uses its own subset

use std::{net::IpAddr, time::Duration};

use fw_common::evidence::{host_bit, port_bit};
use tad_bus::{BusClient, PublishOptions, RawPayload, Signed, Subscription, Verifier};
use tad_wire::{EpochEvidence, EvidenceBatch, EvidenceRole, Verdict, now_ms, topic};

pub const GW: &str = "gateway-1";

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = Option<T>>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("{what}: subscription ended"))
}

pub fn set(bits: &mut [u64; 4], bit: u32) {
    bits[(bit / 64) as usize] |= 1 << (bit % 64);
}

pub fn key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// `src` opened one flow to each of `ports` on `dst` (this epoch), `replies` of
/// them answered, the rest refused.
pub fn record(src: &str, dst: &str, ports: std::ops::Range<u16>, replies: u32) -> EpochEvidence {
    let dst: IpAddr = dst.parse().unwrap();
    let mut r = EpochEvidence {
        addr: src.parse().unwrap(),
        role: EvidenceRole::Source,
        epoch_start_ms: now_ms() / 1000 * 1000,
        hosts: [0; 4],
        ports: [0; 4],
        new_flows: 0,
        syn: 0,
        tcp_other: 0,
        udp: 0,
        icmp: 0,
        bytes: 0,
        replies,
        refused: 0,
        icmp_errors: 0,
        unsolicited_rsts: 0,
    };
    set(&mut r.hosts, host_bit(&key(dst)));
    for p in ports {
        r.new_flows += 1;
        r.syn += 1;
        r.bytes += 44;
        set(&mut r.ports, port_bit(p));
    }
    r.refused = r.new_flows - replies;
    r
}

/// The next verdict for the gateway, verified against the bus CA, with the
/// detector that signed it (checked to be the one its topic names).
pub async fn next_verdict(
    sub: &mut Subscription<RawPayload>,
    verifier: &Verifier,
) -> (Verdict, String) {
    let r = within("verdict", sub.recv()).await;
    let Signed { message, signer } = verifier
        .verify::<Verdict>(&r.message.0)
        .unwrap_or_else(|e| panic!("the verdict does not verify: {e}"));
    assert_eq!(r.topic, topic::verdicts(GW, signer.as_str()));
    (message, signer.to_string())
}

/// Publishes `b` (QoS 0, as a gateway does) every 200 ms, with a fresh sequence
/// number, until `stop` is dropped: the first copies may reach the broker before
/// the detector's subscription does.
pub fn keep_publishing(
    gw: BusClient,
    mut b: EvidenceBatch,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let h = tokio::spawn(async move {
        loop {
            b.sent_at_ms = now_ms();
            gw.publish(
                &topic::evidence(GW, b.partition),
                &b,
                PublishOptions::best_effort(),
            )
            .await
            .unwrap();
            b.seq += 1;
            tokio::select! {
                _ = &mut rx => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    (tx, h)
}
