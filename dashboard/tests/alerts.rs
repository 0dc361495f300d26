//! Merged alerts (one attack, one alert): a detector publishes an alert again
//! under its id while the attack goes on; the dashboard keeps the latest
//! version, audits each, shows it once with its count and first/last seen, and
//! ignores redeliveries and late older versions.

mod common;

use common::*;
use dashboard::{
    app::LiveEvent,
    audit::verify_file,
    ingest::{IngestError, Ingested},
};
use tad_wire::{AlertKind, topic};

#[tokio::test]
async fn updates_of_one_alert_id_are_merged_and_shown_once() {
    let f = fixture();
    let mut live = f.app.events.subscribe();
    let t = tad_wire::now_ms() - 60_000;
    let mut first = alert("a-1", t, "192.0.2.66");
    first.kind = AlertKind::HostSweep;
    first.target = None;
    first.first_seen_ms = Some(t);
    first
        .explanation
        .observed
        .insert("targets".to_string(), 25.0);
    let mut update = first.clone();
    update.count = 3;
    update.at_ms = t + 4_000;
    update
        .explanation
        .observed
        .insert("targets".to_string(), 256.0);
    let mut stale = first.clone();
    stale.count = 2;
    stale.at_ms = t + 2_000;
    let other = alert("a-2", t + 1_000, "192.0.2.67");

    let topic = topic::alerts(DET);
    let ingest = |a: &tad_wire::Alert| f.app.ingest(&topic, &tad_wire::encode(a)).unwrap();
    assert_eq!(ingest(&first), Ingested::Stored("alert"));
    assert_eq!(ingest(&other), Ingested::Stored("alert"));
    assert_eq!(ingest(&first), Ingested::Duplicate("alert"), "redelivery");
    assert_eq!(ingest(&update), Ingested::Stored("alert"), "later version");
    assert_eq!(
        ingest(&stale),
        Ingested::Duplicate("alert"),
        "older version, late"
    );

    // One row for the attack, its latest version, first in the newest-first list
    // (last seen after the other alert).
    let stored = f.app.store.alerts(10, None).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].alert, update);
    assert_eq!(stored[1].alert.id, "a-2");
    let (_, api) = get(&f.app, "/api/v1/alerts").await;
    assert_eq!(api[0]["id"], "a-1");
    assert_eq!(api[0]["kind"], "host_sweep");
    assert_eq!(api[0]["count"], 3);
    assert_eq!(api[0]["first_seen_ms"], t);
    assert_eq!(api[0]["at_ms"], t + 4_000);
    assert_eq!(api[0]["explanation"]["observed"]["targets"], 256.0);
    // The list's "since" filter goes by last seen: the attack is still in it.
    let recent = f.app.store.alerts(10, Some(t + 3_000)).unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].alert.id, "a-1");

    // Each stored version is audited; the row carries the latest version's hash.
    let audit = verify_file(&f.dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(audit.records, 3);
    assert_ne!(stored[0].audit_hash, stored[1].audit_hash);

    // Live: the first version, the other alert, then the update (same id) for
    // the pages to replace in place.
    let mut ids = Vec::new();
    while let Ok(ev) = live.try_recv() {
        if let LiveEvent::Alert(v) = ev {
            ids.push((v.alert.id.clone(), v.alert.count));
        }
    }
    assert_eq!(
        ids,
        [("a-1".into(), 1), ("a-2".into(), 1), ("a-1".into(), 3)]
    );
}

#[test]
fn another_detector_cannot_update_an_alert_it_did_not_raise() {
    let f = fixture();
    let a = alert("a-1", tad_wire::now_ms(), "192.0.2.66");
    f.app
        .ingest(&topic::alerts(DET), &tad_wire::encode(&a))
        .unwrap();
    let mut forged = a.clone();
    forged.detector_id = "detector-2".parse().unwrap();
    forged.count = 9;
    let err = f
        .app
        .ingest(&topic::alerts("detector-2"), &tad_wire::encode(&forged))
        .unwrap_err();
    assert!(matches!(err, IngestError::AlertOwner { .. }), "{err}");
    assert_eq!(f.app.store.alerts(10, None).unwrap()[0].alert, a);
}
