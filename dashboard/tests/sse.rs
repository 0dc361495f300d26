//! Live events over a real socket: an ingested alert reaches a connected SSE
//! client, and shutting the server down ends open streams.

mod common;

use std::time::Duration;

use common::*;
use dashboard::server;
use tad_wire::{now_ms, topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn alert_reaches_an_sse_client_and_shutdown_ends_the_stream() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let srv = tokio::spawn(server::serve(listener, f.app.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        b"GET /api/v1/events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    // Read the response head so the subscription exists before the alert.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("text/event-stream"));
    // The server subscribes when it starts streaming the body; give it a moment
    // by retrying the alert until it shows up (each id is new).
    let mut i = 0;
    let text = loop {
        i += 1;
        let a = alert(&format!("a-sse-{i}"), now_ms(), "192.0.2.5");
        f.app
            .ingest(&topic::alerts(DET), &tad_wire::encode(&a))
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if text.contains("event:alert") {
                    break text;
                }
            }
            Ok(_) => panic!("stream closed"),
            Err(_) => assert!(i < 40, "no alert event after {i} alerts"),
        }
    };
    assert!(text.contains("\"audit_hash\""), "{text}");
    assert!(text.contains("a-sse-"), "{text}");
    let clients = || {
        f.app
            .metrics
            .sse_clients
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(clients(), 1);

    // Shutdown: the open stream ends and the server returns.
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .expect("server stops with an SSE client connected")
        .unwrap();
    assert_eq!(clients(), 0, "the client gauge went back down");
}
