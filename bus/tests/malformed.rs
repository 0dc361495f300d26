//! A malformed payload is rejected, counted and logged once; the consumer keeps
//! receiving. (Own test binary: it captures the log of this thread.)

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use common::{WAIT, next, verdict};
use tad_bus::{BusClient, PublishOptions, QoS, testing::TestBroker};
use tad_wire::{Verdict, topic};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// current_thread runtime: the bus tasks run on this thread, under its subscriber.
#[tokio::test]
async fn malformed_payload_is_rejected_counted_logged_once_and_consumer_continues() {
    let log = Captured::default();
    let w = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = TestBroker::start().expect("test broker");
    let mut gw = BusClient::builder(broker.config("gateway-1").unwrap()).unwrap();
    let mut verdicts =
        gw.subscribe::<Verdict>(&topic::verdicts_filter("gateway-1"), QoS::AtLeastOnce);
    let gw = gw.connect().await.unwrap();
    let det = BusClient::connect(broker.config("detector-1").unwrap())
        .await
        .unwrap();
    let t = topic::verdicts("gateway-1", "detector-1");

    let mut future_version = verdict("v-next", "detector-1");
    future_version.v = 2;
    let mut out_of_range = verdict("v-bad", "detector-1");
    out_of_range.confidence = 7.0;
    let garbage: [Vec<u8>; 3] = [
        b"{not json".to_vec(),
        tad_wire::encode(&future_version),
        tad_wire::encode(&out_of_range),
    ];
    for g in &garbage {
        det.publish_bytes(&t, g.clone(), PublishOptions::reliable())
            .await
            .unwrap();
    }
    det.publish(
        &t,
        &verdict("v-ok", "detector-1"),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    // Same publisher, QoS 1: the broker keeps the order, so the three bad payloads
    // were handled before this one is returned.
    assert_eq!(next(&mut verdicts).await.message.id, "v-ok");
    assert_eq!(gw.metrics().malformed, 3);

    // Still running: another bad one, then another good one.
    det.publish_bytes(&t, b"[]".to_vec(), PublishOptions::reliable())
        .await
        .unwrap();
    det.publish(
        &t,
        &verdict("v-ok-2", "detector-1"),
        PublishOptions::reliable(),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut verdicts).await.message.id, "v-ok-2");
    assert_eq!(gw.metrics().malformed, 4);
    assert_eq!(gw.metrics().received, 6);

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text.matches("malformed payload rejected").count();
    assert_eq!(warnings, 1, "log:\n{text}");
    assert!(text.contains("not valid JSON for verdict"), "log:\n{text}");
    gw.shutdown(WAIT).await.unwrap();
    det.shutdown(WAIT).await.unwrap();
}
