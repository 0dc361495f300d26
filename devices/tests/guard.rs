//! The telemetry guard and the station without a broker: every refusal reason,
//! the counters and alerts, replay protection across a restart, the
//! persist-before-accept rule, and the station's trust, batch and anomaly wiring.

use std::path::Path;

use ed25519_dalek::SigningKey;
use tad_devices::{
    Arrival, Guard, GuardConfig, RefusalReason as R, Registry, Station, StationConfig,
    anomaly::ForestConfig,
    batch::BatchConfig,
    sim::SimDevice,
    telemetry::{Telemetry, seal, topic},
    trust::{TrustConfig, TrustLevel},
};

const T0: u64 = 1_764_768_000_000;

fn registry(devs: &[&SimDevice], rate_per_min: u32, burst: u32) -> Registry {
    let mut r = Registry::default();
    for d in devs {
        let mut e = d.enrollment();
        e.rate_per_min = rate_per_min;
        e.burst = burst;
        r.enroll(d.id.clone(), e).unwrap();
    }
    r
}

fn guard(dir: &Path, reg: &Registry) -> Guard {
    Guard::new(
        reg,
        GuardConfig {
            replay_state: dir.join("replay.json"),
            ..GuardConfig::default()
        },
    )
    .unwrap()
}

fn one(g: &mut Guard, topic: &str, payload: &[u8], at: u64) -> Result<Telemetry, (R, String)> {
    let round = g.process(&[Arrival {
        topic,
        payload,
        arrival_ms: at,
    }]);
    match (round.accepted.len(), round.alerts.len()) {
        (1, 0) => Ok(round.accepted[0].record.telemetry.clone()),
        (0, 1) => {
            let a = &round.alerts[0];
            Err((a.reason, a.device_id.clone()))
        }
        other => panic!("one message gave {other:?}"),
    }
}

#[test]
fn each_attack_is_refused_with_its_reason_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let other = SimDevice::from_seed("esp32-2", 2);
    let stranger = SimDevice::from_seed("esp32-9", 9);
    let reg = registry(&[&dev, &other], 0, 1);
    let mut g = guard(d.path(), &reg);
    let tp = topic(&dev.id);
    let mut expect = vec![];
    let mut check = |g: &mut Guard, topic: &str, bytes: &[u8], at: u64, want: Option<R>| {
        let got = one(g, topic, bytes, at);
        match want {
            None => assert!(got.is_ok(), "expected accept, got {got:?}"),
            Some(r) => {
                let (reason, device) = got.expect_err("expected a refusal");
                assert_eq!(reason, r);
                if topic.starts_with("tad/v1/dev/") {
                    assert!(topic.contains(&device), "alert names the topic's device");
                }
                expect.push(r);
            }
        }
    };

    // A good message, then the same bytes again: a replay.
    let (_, good) = dev.publish(T0);
    check(&mut g, &tp, &good, T0, None);
    check(&mut g, &tp, &good, T0 + 5, Some(R::Replay));
    // Not a device topic, not JSON, unknown envelope field, bad base64, short sig.
    check(
        &mut g,
        "tad/v1/dev/esp32-1/status",
        &good,
        T0,
        Some(R::Malformed),
    );
    check(&mut g, &tp, b"{\"v\":1,", T0, Some(R::Malformed));
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["x"] = 1.into();
    check(
        &mut g,
        &tp,
        v.to_string().as_bytes(),
        T0,
        Some(R::Malformed),
    );
    let bad_b64 = br#"{"v":1,"payload":"***","sig":"AAAA"}"#;
    check(&mut g, &tp, bad_b64, T0, Some(R::Malformed));
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["sig"] = "AAAA".into();
    check(
        &mut g,
        &tp,
        v.to_string().as_bytes(),
        T0,
        Some(R::Malformed),
    );
    // Unenrolled device (valid signature by its own key).
    let (stp, sbytes) = SimDevice::from_seed("esp32-9", 9).publish(T0);
    check(&mut g, &stp, &sbytes, T0, Some(R::Unenrolled));
    let _ = stranger;
    // Forged signature: right payload, someone else's key; and a tampered payload.
    let t = dev.reading(T0 + 10);
    check(
        &mut g,
        &tp,
        &seal(&t.to_bytes(), &SigningKey::from_bytes(&[9; 32])),
        T0 + 10,
        Some(R::BadSignature),
    );
    let mut v: serde_json::Value = serde_json::from_slice(&t.sign(dev.key())).unwrap();
    let sig_of_other = serde_json::from_slice::<serde_json::Value>(&dev.publish(T0 + 11).1)
        .unwrap()["sig"]
        .clone();
    v["sig"] = sig_of_other;
    check(
        &mut g,
        &tp,
        v.to_string().as_bytes(),
        T0 + 10,
        Some(R::BadSignature),
    );
    // Signed by esp32-1 but naming esp32-2.
    let mut t = dev.reading(T0 + 20);
    t.device_id = other.id.clone();
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 20,
        Some(R::IdMismatch),
    );
    // Clock skew beyond 30 s either way.
    let t = dev.reading(T0 + 100);
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 100 + 30_001,
        Some(R::Skew),
    );
    let t = dev.reading(T0 + 100);
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 100 - 30_001,
        Some(R::Skew),
    );
    // Out of range: CPU 150 %, a sensor outside its range, a sensor missing.
    let mut t = dev.reading(T0 + 200);
    t.cpu_usage = 150.0;
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 200,
        Some(R::OutOfRange),
    );
    let mut t = dev.reading(T0 + 201);
    t.sensors.insert("temperature".into(), 95.0);
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 201,
        Some(R::OutOfRange),
    );
    let mut t = dev.reading(T0 + 202);
    t.sensors.remove("humidity");
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 202,
        Some(R::OutOfRange),
    );
    // Oversized envelope (over max_payload_bytes, 4096 by default).
    let mut t = dev.reading(T0 + 203);
    t.sensors.insert("x".repeat(3000), 1.0);
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 203,
        Some(R::Malformed),
    );
    let mut t = dev.reading(T0 + 203);
    t.sensors.insert("door".into(), 1.0);
    check(
        &mut g,
        &tp,
        &t.sign(dev.key()),
        T0 + 203,
        Some(R::UnexpectedSensor),
    );
    // Signed but not the schema (unknown field): malformed.
    let mut v = serde_json::to_value(dev.reading(T0 + 204)).unwrap();
    v["debug"] = true.into();
    check(
        &mut g,
        &tp,
        &seal(v.to_string().as_bytes(), dev.key()),
        T0 + 204,
        Some(R::Malformed),
    );
    // Reordering inside the window is fine; below the window is stale.
    let late = dev.reading(T0 + 300);
    let early_seq = late.sequence_no;
    let newer = dev.reading(T0 + 301);
    check(&mut g, &tp, &newer.sign(dev.key()), T0 + 301, None);
    check(&mut g, &tp, &late.sign(dev.key()), T0 + 302, None);
    dev.next_seq = early_seq + 200;
    let (_, far) = dev.publish(T0 + 400);
    check(&mut g, &tp, &far, T0 + 400, None);
    let mut old = dev.reading(T0 + 401);
    old.sequence_no = early_seq + 200 - 64;
    check(&mut g, &tp, &old.sign(dev.key()), T0 + 401, Some(R::Stale));

    let c = g.counts();
    for r in R::ALL {
        let n = expect.iter().filter(|x| **x == r).count() as u64;
        assert_eq!(c.get(r), n, "{r}");
    }
    assert_eq!(g.accepted(), 4);
    assert_eq!(g.received(), g.accepted() + c.total());
}

#[test]
fn out_of_range_and_bad_messages_consume_no_window_slot_before_the_signature() {
    // A forged message with a future sequence number must not move the window:
    // the genuine message with that number is still accepted.
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let mut g = guard(d.path(), &reg);
    let t = dev.reading(T0);
    let forged = seal(&t.to_bytes(), &SigningKey::from_bytes(&[5; 32]));
    assert_eq!(
        one(&mut g, &topic(&dev.id), &forged, T0).unwrap_err().0,
        R::BadSignature
    );
    assert!(one(&mut g, &topic(&dev.id), &t.sign(dev.key()), T0).is_ok());
}

#[test]
fn the_rate_limit_admits_the_burst_then_the_rate() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 60, 3);
    let mut g = guard(d.path(), &reg);
    let tp = topic(&dev.id);
    let verdicts: Vec<bool> = (0..5)
        .map(|_| one(&mut g, &tp, &dev.publish(T0).1, T0).is_ok())
        .collect();
    assert_eq!(verdicts, [true, true, true, false, false]);
    assert_eq!(g.counts().get(R::RateLimited), 2);
    // 60/min: one more per second.
    assert!(one(&mut g, &tp, &dev.publish(T0 + 1000).1, T0 + 1000).is_ok());
    assert_eq!(
        one(&mut g, &tp, &dev.publish(T0 + 1000).1, T0 + 1000)
            .unwrap_err()
            .0,
        R::RateLimited
    );
}

#[test]
fn replays_stay_refused_across_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let tp = topic(&dev.id);
    let sent: Vec<Vec<u8>> = (0..5).map(|i| dev.publish(T0 + i).1).collect();
    {
        let mut g = guard(d.path(), &reg);
        let round = g.process(
            &sent
                .iter()
                .enumerate()
                .map(|(i, p)| Arrival {
                    topic: &tp,
                    payload: p,
                    arrival_ms: T0 + i as u64,
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(round.accepted.len(), 5);
    }
    let mut g = guard(d.path(), &reg);
    for (i, p) in sent.iter().enumerate() {
        assert_eq!(
            one(&mut g, &tp, p, T0 + 10 + i as u64).unwrap_err().0,
            R::Replay
        );
    }
    assert!(one(&mut g, &tp, &dev.publish(T0 + 20).1, T0 + 20).is_ok());
}

#[test]
fn nothing_is_accepted_when_the_replay_state_cannot_be_written() {
    let d = tempfile::tempdir().unwrap();
    let state_dir = d.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let mut g = guard(&state_dir, &reg);
    let tp = topic(&dev.id);
    let (_, first) = dev.publish(T0);
    assert!(one(&mut g, &tp, &first, T0).is_ok());
    let (_, m1) = dev.publish(T0 + 1);
    let (_, m2) = dev.publish(T0 + 2);
    std::fs::remove_dir_all(&state_dir).unwrap();
    let round = g.process(&[
        Arrival {
            topic: &tp,
            payload: &m1,
            arrival_ms: T0 + 1,
        },
        Arrival {
            topic: &tp,
            payload: &m2,
            arrival_ms: T0 + 2,
        },
    ]);
    assert!(round.accepted.is_empty());
    let reasons: Vec<_> = round
        .alerts
        .iter()
        .map(|a| (a.reason, a.device_id.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [(R::Unavailable, "esp32-1"), (R::Unavailable, "esp32-1")]
    );
    // Rolled back: once the state can be written, the same messages are accepted,
    // and the one accepted before is still a replay.
    std::fs::create_dir(&state_dir).unwrap();
    assert!(one(&mut g, &tp, &m2, T0 + 3).is_ok());
    assert!(one(&mut g, &tp, &m1, T0 + 3).is_ok());
    assert_eq!(one(&mut g, &tp, &first, T0 + 3).unwrap_err().0, R::Replay);
    assert_eq!(g.received(), g.accepted() + g.counts().total());
}

fn station(dir: &Path, reg: &Registry, anomaly: Option<ForestConfig>, outbox: usize) -> Station {
    Station::open(
        reg,
        StationConfig {
            guard: GuardConfig {
                replay_state: dir.join("replay.json"),
                ..GuardConfig::default()
            },
            batch: BatchConfig {
                max_records: 10,
                max_age_ms: 1000,
            },
            outbox_batches: outbox,
            trust: TrustConfig {
                state_file: dir.join("trust.json"),
                ..TrustConfig::default()
            },
            anomaly,
        },
    )
    .unwrap()
}

#[test]
fn station_turns_repeated_forgeries_into_critical_trust_and_heartbeats_back() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let tp = topic(&dev.id);
    let mut s = station(d.path(), &reg, None, 100);
    let mut entries = vec![];
    for k in 0..5u64 {
        let at = T0 + k * 10_000;
        let t = dev.reading(at);
        let forged = seal(&t.to_bytes(), &SigningKey::from_bytes(&[9; 32]));
        let out = s.handle(&[Arrival {
            topic: &tp,
            payload: &forged,
            arrival_ms: at,
        }]);
        assert_eq!(out.alerts.len(), 1);
        entries.extend(out.trust);
    }
    assert_eq!(entries.len(), 5);
    assert_eq!(entries.last().unwrap().new_level, TrustLevel::Critical);
    drop(s);
    // Trust survives the restart; a minute of valid telemetry closes batches whose
    // hashes come with heartbeat entries.
    let mut s = station(d.path(), &reg, None, 100);
    assert_eq!(
        TrustLevel::of(s.ledger().trust("esp32-1", T0 + 50_000)),
        TrustLevel::Critical
    );
    let mut heartbeats = vec![];
    let mut closed = vec![];
    for i in 0..130u64 {
        let at = T0 + 60_000 + i * 1000;
        let (_, m) = dev.publish(at);
        let out = s.handle(&[Arrival {
            topic: &tp,
            payload: &m,
            arrival_ms: at,
        }]);
        assert!(out.alerts.is_empty());
        heartbeats.extend(out.trust);
        closed.extend(out.closed);
    }
    assert_eq!(closed.len(), 13);
    assert_eq!(heartbeats.len(), 3, "one heartbeat per 60 s");
    for h in &heartbeats {
        let hash = h.batch_sha256.as_ref().expect("heartbeat names its batch");
        assert!(closed.iter().any(|(_, c)| c == hash));
    }
    assert_eq!(s.ledger().components("esp32-1").behaviour, 3.0);
    assert_eq!(s.outbox().metrics().queued_batches, 13);
}

#[test]
fn a_full_outbox_drops_oldest_batches_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let tp = topic(&dev.id);
    let mut s = station(d.path(), &reg, None, 2);
    let mut dropped = vec![];
    for i in 0..50u64 {
        let (_, m) = dev.publish(T0 + i);
        dropped.extend(
            s.handle(&[Arrival {
                topic: &tp,
                payload: &m,
                arrival_ms: T0 + i,
            }])
            .dropped,
        );
    }
    // 5 batches of 10 closed, 2 fit: batches 1..=3 dropped, in that order.
    let nos: Vec<u64> = dropped.iter().map(|b| b.batch_no).collect();
    assert_eq!(nos, [1, 2, 3]);
    let m = s.outbox().metrics();
    assert_eq!(
        (m.dropped_batches, m.dropped_records, m.queued_batches),
        (3, 30, 2)
    );
    let kept = s.outbox().delivered().unwrap();
    assert_eq!(kept.batch_no, 4);
    assert!(kept.verify_hash());
}

#[test]
fn station_flags_a_cpu_spike_after_learning_the_device() {
    let d = tempfile::tempdir().unwrap();
    let mut dev = SimDevice::from_seed("esp32-1", 1);
    let reg = registry(&[&dev], 0, 1);
    let tp = topic(&dev.id);
    let cfg = ForestConfig {
        train_after: 128,
        ..ForestConfig::default()
    };
    let mut s = station(d.path(), &reg, Some(cfg), 1000);
    let mut at = T0;
    let mut flags = 0;
    for _ in 0..128 + 200 {
        at += 1000;
        let (_, m) = dev.publish(at);
        let o = s.handle(&[Arrival {
            topic: &tp,
            payload: &m,
            arrival_ms: at,
        }]);
        flags += o.anomalies.len();
    }
    assert!(flags <= 2, "{flags} of 200 normal readings flagged");
    at += 1000;
    let mut spike = dev.reading(at);
    spike.cpu_usage = 99.0;
    let out = s.handle(&[Arrival {
        topic: &tp,
        payload: &spike.sign(dev.key()),
        arrival_ms: at,
    }]);
    assert_eq!(
        out.accepted, 1,
        "anomalous but authentic and in range: accepted, flagged"
    );
    assert_eq!(out.anomalies.len(), 1);
    assert!(out.anomalies[0].score >= cfg.threshold);
    assert_eq!(out.trust.len(), 1, "weak trust evidence");
}
