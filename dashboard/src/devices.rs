//! IoT devices (issue 17): ingest of what gateways publish about their devices
//! (`tad_wire::devices`, topics `tad/v1/gw/<gw>/devices/...`) into the store
//! (`store/devices.rs`) and the hash-chained audit log (`audit.rs`).
//!
//! | topic | stored | audited (record kind) |
//! |---|---|---|
//! | `.../devices/telemetry` | the batch and one telemetry sample per record | `telemetry_batch`: gateway, batch number, SHA-256, records per device |
//! | `.../devices/trust` | every trust change | `device_trust`, one record per change: device, old/new trust and level, cause, components |
//! | `.../devices/decisions` | the decision | `device_command` |
//! | `.../devices/refusals` | every listed refusal | `device_refusals`, one record per report with refusals |
//! | `.../devices/vulns` | the scan report | `device_vulns` |
//! | `.../devices/state` (retained) | the snapshot, the device list's only source | no (counters move all the time) |
//!
//! A telemetry batch's SHA-256 (seed 004's ledger; the layout is in
//! `tad_wire::devices::DeviceTelemetryBatch`, FIPS 180-4) is recomputed here
//! from the records' signed payload bytes and signatures ([`batch_sha256`])
//! before it is committed: a batch whose records do not give its hash is not
//! stored but audited as a `refusal` and counted
//! (`tad_dashboard_refused_total{kind="telemetry_batch"}`), so the hash in the
//! log always names the records the dashboard holds.
//!
//! Every report is stored and audited once: a batch is known by (gateway,
//! SHA-256), the other reports by the SHA-256 of their payload (a QoS 1
//! redelivery carries the same bytes). The devices' own topics
//! (`tad/v1/dev/...`) and the dashboards' command requests are not stored: what
//! counts is what the gateway's guard and vetting made of them.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tad_wire::{
    RefusalReason,
    devices::{
        DeviceCommandDecision, DeviceRefusals, DeviceStates, DeviceTelemetryBatch, DeviceTopicKind,
        DeviceTrustChange, DeviceTrustChanges, DeviceVulnReport,
    },
    now_ms,
};

use crate::{
    app::{App, LiveEvent},
    audit::{RecordKind, sha256_hex},
    ingest::{IngestError, Ingested, decode, same},
    store::IotReport,
};

/// Domain prefix of the batch hash (`tad_devices::batch`).
const BATCH_DOMAIN: &[u8] = b"tad/v1/telemetry-batch\0";

/// Recomputes a batch's SHA-256 from its records: `"tad/v1/telemetry-batch\0"
/// || batch_no (u64 BE) || opened_ms (u64 BE) ||` for each record `len(payload)
/// (u32 BE) || payload || signature (64 bytes)`, the payload and signature
/// decoded from base64url without padding (RFC 4648 §5). Returns lowercase hex.
///
/// # Errors
/// A message naming the record (0-based) whose payload or signature is not
/// base64url, or whose signature is not 64 bytes.
pub fn batch_sha256(b: &DeviceTelemetryBatch) -> Result<String, String> {
    let mut h = Sha256::new();
    h.update(BATCH_DOMAIN);
    h.update(b.batch_no.to_be_bytes());
    h.update(b.opened_ms.to_be_bytes());
    for (i, r) in b.records.iter().enumerate() {
        let payload = URL_SAFE_NO_PAD
            .decode(&r.payload)
            .map_err(|e| format!("record {i}: payload is not base64url: {e}"))?;
        let sig = URL_SAFE_NO_PAD
            .decode(&r.sig)
            .map_err(|e| format!("record {i}: sig is not base64url: {e}"))?;
        if sig.len() != 64 {
            return Err(format!(
                "record {i}: sig is {} bytes, an Ed25519 signature is 64",
                sig.len()
            ));
        }
        let len = u32::try_from(payload.len())
            .map_err(|_| format!("record {i}: payload longer than 4 GiB"))?;
        h.update(len.to_be_bytes());
        h.update(&payload);
        h.update(&sig);
    }
    Ok(hex::encode(h.finalize()))
}

/// How many records of one device a batch carried (in the batch's audit record).
#[derive(Serialize)]
struct BatchDevice<'a> {
    device_id: &'a str,
    records: u64,
    first_seq: u64,
    last_seq: u64,
}

/// The audit record of a committed batch.
#[derive(Serialize)]
struct BatchRecord<'a> {
    gateway_id: &'a str,
    batch_no: u64,
    sha256: &'a str,
    opened_ms: u64,
    closed_ms: u64,
    sent_at_ms: u64,
    records: usize,
    devices: Vec<BatchDevice<'a>>,
    dropped_batches: u64,
    dropped_records: u64,
}

/// The audit record of one trust change.
#[derive(Serialize)]
struct TrustRecord<'a> {
    gateway_id: &'a str,
    #[serde(flatten)]
    change: &'a DeviceTrustChange,
}

/// The audit record of a batch whose hash does not hold.
#[derive(Serialize)]
struct BatchRefusal<'a> {
    kind: &'static str,
    topic: &'a str,
    gateway_id: &'a str,
    batch_no: u64,
    claimed_sha256: &'a str,
    computed_sha256: Option<&'a str>,
    error: &'a str,
}

fn batch_devices(b: &DeviceTelemetryBatch) -> Vec<BatchDevice<'_>> {
    let mut out: Vec<BatchDevice<'_>> = Vec::new();
    for r in &b.records {
        let t = &r.telemetry;
        match out.iter_mut().find(|d| d.device_id == t.device_id) {
            Some(d) => {
                d.records += 1;
                d.first_seq = d.first_seq.min(t.sequence_no);
                d.last_seq = d.last_seq.max(t.sequence_no);
            }
            None => out.push(BatchDevice {
                device_id: &t.device_id,
                records: 1,
                first_seq: t.sequence_no,
                last_seq: t.sequence_no,
            }),
        }
    }
    out
}

/// The gateway a report topic names; none for the devices' own topics and the
/// command requests.
fn gateway_of(kind: &DeviceTopicKind) -> Option<String> {
    match kind {
        DeviceTopicKind::Telemetry { gateway }
        | DeviceTopicKind::Refusals { gateway }
        | DeviceTopicKind::Trust { gateway }
        | DeviceTopicKind::Decisions { gateway }
        | DeviceTopicKind::Vulns { gateway }
        | DeviceTopicKind::State { gateway } => Some(gateway.clone()),
        DeviceTopicKind::Requests { .. }
        | DeviceTopicKind::DeviceTelemetry { .. }
        | DeviceTopicKind::DeviceCommands { .. } => None,
    }
}

impl App {
    /// Ingests one message on a device topic (module docs).
    pub(crate) fn ingest_device(
        &self,
        topic: &str,
        kind: DeviceTopicKind,
        payload: &[u8],
    ) -> Result<Ingested, IngestError> {
        let now = now_ms();
        let digest = || sha256_hex(payload);
        // The devices' own traffic and the dashboards' requests are not stored:
        // the gateway's reports about them are what counts.
        let Some(gw) = gateway_of(&kind) else {
            return Ok(Ingested::Ignored);
        };
        let stored = match kind {
            DeviceTopicKind::Telemetry { .. } => {
                let b: DeviceTelemetryBatch = decode(topic, payload)?;
                same(topic, &gw, &b.gateway_id)?;
                if self.store.has_iot_batch(&gw, &b.sha256)? {
                    return Ok(Ingested::Duplicate("device_batch"));
                }
                self.commit_batch(topic, &b, now)?;
                "device_batch"
            }
            DeviceTopicKind::Trust { .. } => {
                let t: DeviceTrustChanges = decode(topic, payload)?;
                same(topic, &gw, &t.gateway_id)?;
                let d = digest();
                if self.store.iot_seen(IotReport::Trust, &gw, &d)? {
                    return Ok(Ingested::Duplicate("device_trust"));
                }
                let mut rows = Vec::with_capacity(t.changes.len());
                for c in &t.changes {
                    let hash = self.audit(
                        RecordKind::DeviceTrust,
                        &TrustRecord {
                            gateway_id: &gw,
                            change: c,
                        },
                    )?;
                    tracing::info!(gateway = %gw, device = %c.device_id, old = c.old, new = c.new,
                        level = ?c.new_level, audit_hash = %hash, "device trust change");
                    rows.push((c, hash));
                }
                self.store.insert_iot_trust(&gw, &rows, &d, now)?;
                "device_trust"
            }
            DeviceTopicKind::Refusals { .. } => {
                let r: DeviceRefusals = decode(topic, payload)?;
                same(topic, &gw, &r.gateway_id)?;
                let d = digest();
                if self.store.iot_seen(IotReport::Refusals, &gw, &d)? {
                    return Ok(Ingested::Duplicate("device_refusals"));
                }
                // A report listing nothing (only totals) is no event.
                let hash = if r.refusals.is_empty() && r.suppressed == 0 {
                    String::new()
                } else {
                    self.audit(RecordKind::DeviceRefusals, &r)?
                };
                self.store.insert_iot_refusals(&r, &hash, &d, now)?;
                "device_refusals"
            }
            DeviceTopicKind::Decisions { .. } => {
                let c: DeviceCommandDecision = decode(topic, payload)?;
                same(topic, &gw, &c.gateway_id)?;
                let d = digest();
                if self.store.iot_seen(IotReport::Decision, &gw, &d)? {
                    return Ok(Ingested::Duplicate("device_decision"));
                }
                let hash = self.audit(RecordKind::DeviceCommand, &c)?;
                tracing::info!(gateway = %gw, device = %c.device_id, command = %c.command,
                    decision = ?c.decision, reason = ?c.reason, audit_hash = %hash,
                    "device command decision");
                self.store.insert_iot_decision(&c, &hash, &d, now)?;
                "device_decision"
            }
            DeviceTopicKind::Vulns { .. } => {
                let v: DeviceVulnReport = decode(topic, payload)?;
                same(topic, &gw, &v.gateway_id)?;
                let d = digest();
                if self.store.iot_seen(IotReport::Vulns, &gw, &d)? {
                    return Ok(Ingested::Duplicate("device_vulns"));
                }
                let hash = self.audit(RecordKind::DeviceVulns, &v)?;
                self.store.insert_iot_vulns(&v, &hash, &d, now)?;
                "device_vulns"
            }
            DeviceTopicKind::State { .. } => {
                let s: DeviceStates = decode(topic, payload)?;
                same(topic, &gw, &s.gateway_id)?;
                if !self.store.put_iot_state(&s, now)? {
                    // Older than the snapshot held (a late redelivery).
                    return Ok(Ingested::Duplicate("device_state"));
                }
                "device_state"
            }
            DeviceTopicKind::Requests { .. }
            | DeviceTopicKind::DeviceTelemetry { .. }
            | DeviceTopicKind::DeviceCommands { .. } => return Ok(Ingested::Ignored),
        };
        self.emit(LiveEvent::Devices { gateway_id: gw });
        Ok(Ingested::Stored(stored))
    }

    /// Recomputes a new batch's hash; commits it to the audit log and stores it
    /// when it holds, audits and refuses it when not.
    fn commit_batch(
        &self,
        topic: &str,
        b: &DeviceTelemetryBatch,
        now: u64,
    ) -> Result<(), IngestError> {
        let gw = b.gateway_id.as_str();
        let (computed, why) = match batch_sha256(b) {
            Ok(h) if h == b.sha256 => (h, None),
            Ok(h) => {
                let why = format!(
                    "sha256 {} does not match its records (they give {h})",
                    b.sha256
                );
                (h, Some(why))
            }
            Err(e) => (String::new(), Some(e)),
        };
        if let Some(why) = why {
            let hash = self.audit(
                RecordKind::Refusal,
                &BatchRefusal {
                    kind: "telemetry_batch",
                    topic,
                    gateway_id: gw,
                    batch_no: b.batch_no,
                    claimed_sha256: &b.sha256,
                    computed_sha256: (!computed.is_empty()).then_some(computed.as_str()),
                    error: &why,
                },
            )?;
            tracing::debug!(topic, gateway = gw, batch_no = b.batch_no, error = %why,
                audit_hash = %hash, "telemetry batch refused");
            return Err(IngestError::Refused {
                topic: topic.to_owned(),
                kind: "telemetry_batch",
                reason: RefusalReason::Malformed,
                why,
            });
        }
        let hash = self.audit(
            RecordKind::TelemetryBatch,
            &BatchRecord {
                gateway_id: gw,
                batch_no: b.batch_no,
                sha256: &b.sha256,
                opened_ms: b.opened_ms,
                closed_ms: b.closed_ms,
                sent_at_ms: b.sent_at_ms,
                records: b.records.len(),
                devices: batch_devices(b),
                dropped_batches: b.dropped_batches,
                dropped_records: b.dropped_records,
            },
        )?;
        self.store.insert_iot_batch(b, &hash, now)?;
        Ok(())
    }
}
