//! Shared pieces of the bus integration tests: wire messages and bounded waits
//! (a wait that runs out is a test failure with a message, never a pass).

#![allow(dead_code)]

use std::{future::Future, time::Duration};

use tad_bus::{Inbound, Received, Subscription};
use tad_wire::{
    Action, BlockReason, DirCounters, EndReason, FlowBatch, FlowRecord, SCHEMA_VERSION, Verdict,
};

/// Upper bound for anything that should happen promptly on loopback.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn verdict(id: &str, detector: &str) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: detector.parse().unwrap(),
        issued_at_ms: 1_700_000_000_000,
        action: Action::Quarantine,
        target: "192.0.2.7/32".parse().unwrap(),
        ttl_s: Some(600),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.9,
        alert_id: None,
        observe_only: false,
        port: None,
    }
}

pub fn batch(gw: &str, seq: u64) -> FlowBatch {
    FlowBatch {
        v: SCHEMA_VERSION,
        gateway_id: gw.parse().unwrap(),
        seq,
        partition: 0,
        sent_at_ms: 1_700_000_000_000 + seq,
        dropped_records: 0,
        records: Vec::new(),
    }
}

/// A batch of `n` flow records (about 500 bytes of JSON each).
pub fn big_batch(gw: &str, seq: u64, n: usize) -> FlowBatch {
    let rec = FlowRecord {
        src: "192.0.2.10".parse().unwrap(),
        dst: "198.51.100.20".parse().unwrap(),
        sport: 40_000,
        dport: 443,
        proto: 6,
        vlan: 0,
        start_ms: 1_700_000_000_000,
        duration_us: 1_500_000,
        fwd: DirCounters {
            packets: 12,
            bytes: 3_400,
            syn: 1,
            ..DirCounters::default()
        },
        bwd: DirCounters {
            packets: 10,
            bytes: 9_800,
            syn_ack: 1,
            ..DirCounters::default()
        },
        iat_mean_us: 71_000.5,
        iat_std_us: 12_000.25,
        end_reason: EndReason::EndOfFlow,
    };
    FlowBatch {
        records: vec![rec; n],
        ..batch(gw, seq)
    }
}

/// The next message of `sub`, failing the test if none arrives within [`WAIT`].
pub async fn next<M: Inbound>(sub: &mut Subscription<M>) -> Received<M> {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(r)) => r,
        Ok(None) => panic!("subscription {} ended", sub.filter()),
        Err(_) => panic!("nothing arrived on {} within {WAIT:?}", sub.filter()),
    }
}

/// Polls `cond` every 20 ms until it holds, failing the test with `what` after [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `f` with a deadline of [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
