//! End-to-end signatures on verdicts and commands: a JWS (RFC 7515) in compact
//! serialisation, algorithm ES256 (ECDSA P-256 with SHA-256, RFC 7518 §3.4), made
//! with the sender's own mutual-TLS key, with the sender's certificate in the
//! `x5c` header (RFC 7515 §4.1.6). The JWS payload is the message's JSON
//! (`tad_wire::encode`).
//!
//! [`Verifier::verify`] checks, in order: the JWS shape and `alg`; that the `x5c`
//! certificate chains to the bus CA and is valid now for client authentication
//! (rustls-webpki, the same path validation the broker's TLS does); the signature
//! with that certificate's key; and the message itself (`tad_wire::decode`). The
//! signer's identity is the certificate's CN, never a field of the payload: the
//! caller compares it with the topic's identity level and with `[trust]`. So a
//! broker that forwards, alters or invents a message cannot make it verify as any
//! node's.
//!
//! JWS encoding and ES256 come from `jsonwebtoken` (ring); certificate parsing from
//! `x509-parser`; chain validation from `rustls-webpki`.

use std::{fmt, marker::PhantomData, path::Path};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rustls::pki_types::{CertificateDer, UnixTime, pem::PemObject};
use tad_wire::{Message, NodeId, RefusalReason, WireError};

use crate::BusConfig;

/// Errors loading signing material or verifying a signed payload.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key or certificate file could not be read or parsed.
    #[error("{what}")]
    Material { what: String },
    /// The payload is not a compact JWS with `alg` ES256 and an `x5c` certificate.
    #[error("not a signed message (ES256 JWS with x5c): {what}")]
    NotJws { what: String },
    /// The `x5c` certificate does not chain to the bus CA, has expired, or is not a
    /// client certificate.
    #[error("signing certificate is not trusted: {why}")]
    Untrusted { why: String },
    /// The certificate has no CN that is a valid node id.
    #[error("signing certificate names no valid node id: {why}")]
    NoIdentity { why: String },
    /// The signature does not verify with the certificate's key.
    #[error("signature does not verify: {why}")]
    BadSignature { why: String },
    /// Signed correctly, but the message inside is invalid.
    #[error(transparent)]
    Payload(#[from] WireError),
}

impl SignError {
    /// The gateway's refusal counter for this error.
    pub fn refusal(&self) -> RefusalReason {
        match self {
            SignError::Payload(_) => RefusalReason::Malformed,
            _ => RefusalReason::BadSignature,
        }
    }
}

fn material(what: impl fmt::Display) -> SignError {
    SignError::Material {
        what: what.to_string(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|e| material(format!("reading {}: {e}", path.display())))
}

/// The CN of a DER certificate as a node id.
fn identity_of(der: &[u8]) -> Result<NodeId, SignError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| SignError::NoIdentity {
            why: format!("unparsable certificate: {e}"),
        })?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| SignError::NoIdentity {
            why: "no UTF-8 CN in the subject".into(),
        })?;
    NodeId::parse(cn).map_err(|e| SignError::NoIdentity { why: e.to_string() })
}

/// Signs messages with this node's certificate key.
pub struct Signer {
    id: NodeId,
    key: EncodingKey,
    /// Base64 (standard, padded) DER of the node's certificate.
    x5c: Vec<String>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PEM certificate and its PKCS#8 PEM P-256 key (what
    /// `cargo xtask certs` / `tad_bus::pki` write). The identity is the
    /// certificate's CN.
    ///
    /// # Errors
    /// [`SignError::Material`] for an unparsable certificate or key,
    /// [`SignError::NoIdentity`] for a CN that is not a node id.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Signer, SignError> {
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| material(format!("client certificate: {e}")))?;
        let id = identity_of(&cert)?;
        let key = EncodingKey::from_ec_pem(key_pem)
            .map_err(|e| material(format!("private key (PKCS#8 P-256 expected): {e}")))?;
        let x5c = vec![base64::engine::general_purpose::STANDARD.encode(cert.as_ref())];
        let s = Signer { id, key, x5c };
        // A key that does not belong to the certificate would sign messages nobody
        // can verify: find out now, not at the first verdict.
        let probe = tad_wire::ThresholdSettings {
            v: tad_wire::SCHEMA_VERSION,
            id: "probe".into(),
            operator: "probe".into(),
            issued_at_ms: 0,
            values: Default::default(),
        };
        let der = cert.as_ref().to_vec();
        verify_with_cert(&der, &s.sign(&probe))
            .map_err(|_| material("the private key does not belong to the client certificate"))?;
        Ok(s)
    }

    /// A signer from certificate and key files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Signer, SignError> {
        Signer::from_pem(&read(cert)?, &read(key)?)
    }

    /// The signer of a node's bus configuration (its `cert_file` and `key_file`).
    pub fn from_bus_config(cfg: &BusConfig) -> Result<Signer, SignError> {
        Signer::from_files(&cfg.cert_file, &cfg.key_file)
    }

    /// The identity every signature names (the certificate's CN).
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The compact JWS of `m`: ASCII bytes, the MQTT payload (content type
    /// `tad_wire::SIGNED_CONTENT_TYPE`).
    pub fn sign<M: Message>(&self, m: &M) -> Vec<u8> {
        let mut h = Header::new(Algorithm::ES256);
        h.x5c = Some(self.x5c.clone());
        jsonwebtoken::encode(
            &h,
            &serde_json::to_value(m).expect("wire types serialise"),
            &self.key,
        )
        .expect("ES256 signing with a validated key does not fail")
        .into_bytes()
    }
}

/// A verified message and the identity that signed it.
#[derive(Clone, Debug, PartialEq)]
pub struct Signed<M> {
    pub message: M,
    /// CN of the signing certificate, which chains to the bus CA.
    pub signer: NodeId,
}

/// Verifies signed payloads against the bus CA.
#[derive(Clone)]
pub struct Verifier {
    roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("roots", &self.roots.len())
            .finish()
    }
}

/// Splits a compact JWS and checks its header: `alg` ES256 and an `x5c` list.
/// Returns the token text and the DER certificates.
fn parse(payload: &[u8]) -> Result<(&str, Vec<Vec<u8>>), SignError> {
    let not = |what: &str| SignError::NotJws { what: what.into() };
    let token = std::str::from_utf8(payload).map_err(|_| not("payload is not UTF-8"))?;
    if token.split('.').count() != 3 {
        return Err(not("a compact JWS has three dot-separated parts"));
    }
    let h = jsonwebtoken::decode_header(token).map_err(|e| SignError::NotJws {
        what: format!("header: {e}"),
    })?;
    if h.alg != Algorithm::ES256 {
        return Err(SignError::NotJws {
            what: format!("alg {:?}, only ES256 is accepted", h.alg),
        });
    }
    let certs = h
        .x5c
        .filter(|c| !c.is_empty())
        .ok_or_else(|| not("no x5c certificate in the header"))?
        .iter()
        .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SignError::NotJws {
            what: format!("x5c is not base64: {e}"),
        })?;
    Ok((token, certs))
}

/// Checks the signature of `payload` with the key of `cert_der` and returns the
/// JWS payload's bytes (the message JSON).
fn verify_with_cert(cert_der: &[u8], payload: &[u8]) -> Result<Vec<u8>, SignError> {
    let (token, _) = parse(payload)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| SignError::Untrusted {
            why: format!("unparsable certificate: {e}"),
        })?;
    let key = DecodingKey::from_ec_der(&cert.public_key().subject_public_key.data);
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|e| SignError::BadSignature { why: e.to_string() })?;
    Ok(serde_json::to_vec(&data.claims).expect("a JSON value serialises"))
}

impl Verifier {
    /// A verifier trusting the CA certificates of a PEM bundle.
    ///
    /// # Errors
    /// [`SignError::Material`] when the bundle holds no certificate.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Verifier, SignError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| material(format!("CA bundle: {e}")))?;
        if roots.is_empty() {
            return Err(material("CA bundle holds no certificate"));
        }
        Ok(Verifier { roots })
    }

    /// A verifier from a CA file.
    pub fn from_file(path: &Path) -> Result<Verifier, SignError> {
        Verifier::from_ca_pem(&read(path)?)
            .map_err(|e| material(format!("{}: {e}", path.display())))
    }

    /// The verifier of a node's bus configuration (its `ca_file`).
    pub fn from_bus_config(cfg: &BusConfig) -> Result<Verifier, SignError> {
        Verifier::from_file(&cfg.ca_file)
    }

    /// Verifies a signed payload and decodes the message in it (see the module
    /// docs for the checks). The caller still compares `signer` with the topic
    /// and with its trust list.
    pub fn verify<M: Message>(&self, payload: &[u8]) -> Result<Signed<M>, SignError> {
        let (_, certs) = parse(payload)?;
        let ee_der = CertificateDer::from(certs[0].as_slice());
        let intermediates: Vec<CertificateDer<'_>> = certs[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let anchors = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| material(format!("CA certificate: {e}")))?;
        let ee = webpki::EndEntityCert::try_from(&ee_der).map_err(|e| SignError::Untrusted {
            why: format!("{e}"),
        })?;
        ee.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &anchors,
            &intermediates,
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| SignError::Untrusted {
            why: format!("{e}"),
        })?;
        let signer = identity_of(&certs[0])?;
        let json = verify_with_cert(&certs[0], payload)?;
        let message = tad_wire::decode::<M>(&json)?;
        Ok(Signed { message, signer })
    }
}

/// A signed payload as received, decoded but **not verified**: what a viewer that
/// subscribes to many kinds at once (`AnyMessage`) gets. Call [`Self::verify`]
/// before believing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unverified<M> {
    /// The message inside, decoded without checking the signature.
    pub message: M,
    /// The CN of the `x5c` certificate, unchecked (`None` if it has none).
    pub claimed_signer: Option<String>,
    raw: Vec<u8>,
    _m: PhantomData<M>,
}

impl<M: Message> Unverified<M> {
    /// Parses a signed payload without verifying it.
    ///
    /// # Errors
    /// [`WireError::Invalid`] when it is not a JWS, and the message's own decode
    /// errors.
    pub fn parse(payload: &[u8]) -> Result<Unverified<M>, WireError> {
        let invalid = |what: String| WireError::Invalid {
            kind: M::KIND,
            what,
        };
        let (token, certs) = parse(payload).map_err(|e| invalid(e.to_string()))?;
        let body = token.split('.').nth(1).unwrap_or_default();
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| invalid(format!("JWS payload is not base64url: {e}")))?;
        let message = tad_wire::decode::<M>(&json)?;
        Ok(Unverified {
            message,
            claimed_signer: identity_of(&certs[0]).ok().map(|id| id.to_string()),
            raw: payload.to_vec(),
            _m: PhantomData,
        })
    }

    /// Verifies the payload it was parsed from.
    pub fn verify(&self, v: &Verifier) -> Result<Signed<M>, SignError> {
        v.verify(&self.raw)
    }

    /// The payload bytes as received.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use tad_wire::{Action, BlockReason, SCHEMA_VERSION, Verdict};

    use super::*;
    use crate::pki::{CertificateAuthority, Validity};

    fn verdict(det: &str) -> Verdict {
        Verdict {
            v: SCHEMA_VERSION,
            id: "v-1".into(),
            detector_id: det.parse().unwrap(),
            issued_at_ms: 1,
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

    fn signer(ca: &CertificateAuthority, id: &str) -> Signer {
        let c = ca.issue_client(id, Validity::days(1)).unwrap();
        Signer::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_signed_verdict_verifies_and_names_its_certificate() {
        let ca = CertificateAuthority::generate("tad test CA", Validity::days(1)).unwrap();
        let s = signer(&ca, "detector-1");
        assert_eq!(s.id().as_str(), "detector-1");
        let v = Verifier::from_ca_pem(ca.cert_pem().as_bytes()).unwrap();
        let signed = v
            .verify::<Verdict>(&s.sign(&verdict("detector-1")))
            .unwrap();
        assert_eq!(signed.signer.as_str(), "detector-1");
        assert_eq!(signed.message, verdict("detector-1"));
        // The payload's own name is not the identity: detector-2 can write
        // "detector-1" inside, but the signature still names detector-2.
        let s2 = signer(&ca, "detector-2");
        let forged = v
            .verify::<Verdict>(&s2.sign(&verdict("detector-1")))
            .unwrap();
        assert_eq!(forged.signer.as_str(), "detector-2");
    }

    #[test]
    fn unsigned_altered_and_foreign_payloads_are_refused() {
        let ca = CertificateAuthority::generate("tad test CA", Validity::days(1)).unwrap();
        let v = Verifier::from_ca_pem(ca.cert_pem().as_bytes()).unwrap();
        let s = signer(&ca, "detector-1");
        // Plain JSON, the old format.
        let e = v
            .verify::<Verdict>(&tad_wire::encode(&verdict("detector-1")))
            .unwrap_err();
        assert!(matches!(e, SignError::NotJws { .. }), "{e}");
        assert_eq!(e.refusal(), RefusalReason::BadSignature);
        // One byte of the payload changed (the target), signature kept.
        let good = String::from_utf8(s.sign(&verdict("detector-1"))).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        let altered = String::from_utf8(body)
            .unwrap()
            .replace("192.0.2.7", "192.0.2.8");
        let altered = format!(
            "{}.{}.{}",
            parts[0],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(altered),
            parts[2]
        );
        let e = v.verify::<Verdict>(altered.as_bytes()).unwrap_err();
        assert!(matches!(e, SignError::BadSignature { .. }), "{e}");
        // Signed by a certificate of another CA.
        let other = CertificateAuthority::generate("rogue CA", Validity::days(1)).unwrap();
        let e = v
            .verify::<Verdict>(&signer(&other, "detector-1").sign(&verdict("detector-1")))
            .unwrap_err();
        assert!(matches!(e, SignError::Untrusted { .. }), "{e}");
        // The unverified view still reads it, and its verify() refuses it.
        let u = Unverified::<Verdict>::parse(altered.as_bytes()).unwrap();
        assert_eq!(u.claimed_signer.as_deref(), Some("detector-1"));
        assert!(u.verify(&v).is_err());
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_at_load() {
        let ca = CertificateAuthority::generate("tad test CA", Validity::days(1)).unwrap();
        let a = ca.issue_client("detector-1", Validity::days(1)).unwrap();
        let b = ca.issue_client("detector-2", Validity::days(1)).unwrap();
        let e = Signer::from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("does not belong"), "{e}");
    }
}
