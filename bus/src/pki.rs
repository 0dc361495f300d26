//! The bus PKI: a private certificate authority, one client certificate per node and
//! one broker (server) certificate, all ECDSA P-256 (`PKCS_ECDSA_P256_SHA256`) made
//! with rcgen.
//!
//! Every node authenticates to Mosquitto with its client certificate; the broker takes
//! the certificate's Common Name as the MQTT username (`use_identity_as_username`) and
//! applies the ACL written by [`crate::broker`]. So the CN of a client certificate IS
//! the node id (`gateway-1`, `detector-1`, `dashboard`).
//!
//! [`generate`] writes the file layout described by [`PkiLayout`]; private keys are
//! created mode 0600 (never world- or group-readable, never committed: see
//! `certs/.gitignore`). An existing CA in the output directory is reused, so issuing a
//! new node certificate or rotating leaf certificates does not invalidate the others
//! (see `certs/README.md`).

use std::{
    fs,
    io::Write,
    net::IpAddr,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

/// Errors creating, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("rcgen failed to {what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    NodeId(#[from] tad_wire::IdError),
    #[error("invalid validity: not_after {not_after} is not after not_before {not_before}")]
    Validity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("{path} exists but {other} does not: refusing to mix a CA certificate and key")]
    HalfCa { path: PathBuf, other: PathBuf },
}

/// Validity period of a certificate (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from one hour ago (tolerates clock skew between nodes) for `days` days.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }

    /// A period that ended yesterday (for tests of expired-certificate refusal).
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
        }
    }

    fn check(&self) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::Validity {
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(())
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// PEM `CERTIFICATE`.
    pub cert_pem: String,
    /// PEM `PRIVATE KEY` (PKCS#8). Write it with [`write_private`].
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The certificate authority that signs node and broker certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn rcgen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Rcgen { what, source }
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("generate a P-256 key"))
}

impl CertificateAuthority {
    /// A new self-signed CA (`IsCa::Ca(Unconstrained)`, key usages certSign + cRLSign)
    /// with Common Name `common_name`.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, PkiError> {
        validity.check()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "TuringAnamolyDetection");
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = new_key()?;
        let cert = params
            .self_signed(&key)
            .map_err(rcgen_err("self-sign the CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its PEM certificate and PEM private key (PKCS#8,
    /// ECDSA P-256, P-384 or Ed25519), e.g. to issue a new node certificate under the
    /// CA already deployed.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rcgen_err("parse the CA private key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(rcgen_err("parse the CA certificate"))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM (distribute it to every node and the broker).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A client certificate for node `node_id`: CN = `node_id` (the broker's username
    /// for the ACL), extended key usage clientAuth.
    ///
    /// Errors: [`PkiError::NodeId`] when the id is empty, longer than 64 bytes or holds
    /// anything but ASCII letters, digits, `-`, `_` and `.` (it becomes part of MQTT
    /// topics and ACL lines, where `+ # /` and spaces would change their meaning).
    pub fn issue_client(&self, node_id: &str, validity: Validity) -> Result<IssuedCert, PkiError> {
        check_node_id(node_id)?;
        validity.check()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        self.sign(params, &format!("sign the client certificate of {node_id}"))
    }

    /// The broker's server certificate. Its SANs are `localhost`, `127.0.0.1`, `::1`
    /// and every entry of `extra_names` (an entry that parses as an IP address becomes
    /// an IP SAN, anything else a DNS SAN). CN = the first extra name, or `localhost`.
    pub fn issue_broker(
        &self,
        extra_names: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        validity.check()?;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for n in extra_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let mut params = CertificateParams::default();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(rcgen_err(format!("use {n:?} as a DNS name"))),
            })
            .collect::<Result<_, _>>()?;
        params.distinguished_name = DistinguishedName::new();
        let cn = extra_names
            .first()
            .map(String::as_str)
            .unwrap_or("localhost");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        self.sign(params, "sign the broker certificate")
    }

    fn sign(&self, params: CertificateParams, what: &str) -> Result<IssuedCert, PkiError> {
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_err(what))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Checks that `id` can be a node id (certificate CN, MQTT username, topic level):
/// the rule of [`tad_wire::NodeId`].
pub fn check_node_id(id: &str) -> Result<(), PkiError> {
    tad_wire::NodeId::parse(id)?;
    Ok(())
}

/// File names inside a PKI output directory.
///
/// ```text
/// <dir>/ca.pem  ca.key                      the CA (ca.key: keep off the nodes)
/// <dir>/broker.pem  broker.key              the broker's server certificate
/// <dir>/nodes/<id>.pem  nodes/<id>.key      one client certificate per node
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiLayout {
    pub dir: PathBuf,
}

impl PkiLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn broker_cert(&self) -> PathBuf {
        self.dir.join("broker.pem")
    }
    pub fn broker_key(&self) -> PathBuf {
        self.dir.join("broker.key")
    }
    pub fn node_cert(&self, node_id: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node_id}.pem"))
    }
    pub fn node_key(&self, node_id: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node_id}.key"))
    }
}

/// What [`generate`] makes.
#[derive(Clone, Debug)]
pub struct PkiOptions {
    /// Node ids, one client certificate each.
    pub nodes: Vec<String>,
    /// Extra broker SANs besides localhost/127.0.0.1/::1 (testbed address, host name).
    pub broker_names: Vec<String>,
    /// Lifetime of a newly created CA, days.
    pub ca_days: u32,
    /// Lifetime of node and broker certificates, days.
    pub leaf_days: u32,
    /// Create a new CA even if `ca.pem`/`ca.key` exist (CA rotation: every node then
    /// needs the new `ca.pem`).
    pub new_ca: bool,
}

impl Default for PkiOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["gateway-1".into(), "detector-1".into(), "dashboard".into()],
            broker_names: Vec::new(),
            ca_days: 3650,
            leaf_days: 397,
            new_ca: false,
        }
    }
}

/// What [`generate`] did.
#[derive(Clone, Debug)]
pub struct PkiReport {
    pub layout: PkiLayout,
    /// True when a new CA was created, false when an existing one was reused.
    pub ca_created: bool,
    /// Files written (certificates and keys).
    pub written: Vec<PathBuf>,
}

/// Creates (or reuses) the CA in `out` and (re)issues the broker certificate and one
/// client certificate per node, writing them as described by [`PkiLayout`].
///
/// An existing `ca.pem` + `ca.key` pair is reused unless `opts.new_ca`; one without
/// the other is an error ([`PkiError::HalfCa`]). Keys are written mode 0600,
/// certificates 0644; the directory is created mode 0700 if missing.
pub fn generate(out: &Path, opts: &PkiOptions) -> Result<PkiReport, PkiError> {
    for n in &opts.nodes {
        check_node_id(n)?;
    }
    let layout = PkiLayout::new(out);
    create_dir(out)?;
    create_dir(&out.join("nodes"))?;
    let mut written = Vec::new();
    let (ca_cert, ca_key) = (layout.ca_cert(), layout.ca_key());
    let reuse = !opts.new_ca && (ca_cert.exists() || ca_key.exists());
    let (ca, ca_created) = if reuse {
        if !ca_key.exists() {
            return Err(PkiError::HalfCa {
                path: ca_cert,
                other: ca_key,
            });
        }
        if !ca_cert.exists() {
            return Err(PkiError::HalfCa {
                path: ca_key,
                other: ca_cert,
            });
        }
        let cert = read(&ca_cert)?;
        let key = read(&ca_key)?;
        (CertificateAuthority::from_pem(&cert, &key)?, false)
    } else {
        let ca = CertificateAuthority::generate("tad bus CA", Validity::days(opts.ca_days))?;
        write_private(&ca_key, &ca.key_pem())?;
        write_public(&ca_cert, ca.cert_pem())?;
        written.extend([ca_cert, ca_key]);
        (ca, true)
    };
    let broker = ca.issue_broker(&opts.broker_names, Validity::days(opts.leaf_days))?;
    write_pair(
        &layout.broker_cert(),
        &layout.broker_key(),
        &broker,
        &mut written,
    )?;
    for n in &opts.nodes {
        let c = ca.issue_client(n, Validity::days(opts.leaf_days))?;
        write_pair(&layout.node_cert(n), &layout.node_key(n), &c, &mut written)?;
    }
    Ok(PkiReport {
        layout,
        ca_created,
        written,
    })
}

fn write_pair(
    cert: &Path,
    key: &Path,
    c: &IssuedCert,
    written: &mut Vec<PathBuf>,
) -> Result<(), PkiError> {
    write_private(key, &c.key_pem)?;
    write_public(cert, &c.cert_pem)?;
    written.extend([cert.to_owned(), key.to_owned()]);
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes a private key: the file is created (or truncated) with mode 0600 before any
/// byte is written, and an existing file's mode is forced to 0600.
pub fn write_private(path: &Path, pem: &str) -> Result<(), PkiError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err(path))?;
    f.write_all(pem.as_bytes()).map_err(io_err(path))
}

/// Writes a certificate (public), mode 0644.
pub fn write_public(path: &Path, pem: &str) -> Result<(), PkiError> {
    fs::write(path, pem).map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_that_would_break_topics_are_refused() {
        assert!(check_node_id("gateway-1").is_ok());
        for bad in ["", "gw/1", "gw+", "a#", "has space", &"x".repeat(65)] {
            assert!(check_node_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generate_writes_keys_0600_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let opts = PkiOptions {
            broker_names: vec!["198.51.100.2".into(), "broker.tad".into()],
            ..PkiOptions::default()
        };
        let r = generate(&out, &opts).unwrap();
        assert!(r.ca_created);
        let l = &r.layout;
        for key in [
            l.ca_key(),
            l.broker_key(),
            l.node_key("gateway-1"),
            l.node_key("dashboard"),
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let ca_before = fs::read_to_string(l.ca_cert()).unwrap();
        let r2 = generate(&out, &opts).unwrap();
        assert!(!r2.ca_created);
        assert_eq!(fs::read_to_string(l.ca_cert()).unwrap(), ca_before);
        fs::remove_file(l.ca_key()).unwrap();
        assert!(matches!(
            generate(&out, &opts),
            Err(PkiError::HalfCa { .. })
        ));
    }

    #[test]
    fn bad_validity_is_an_error() {
        let ca = CertificateAuthority::generate("t", Validity::days(1)).unwrap();
        let v = Validity {
            not_before: OffsetDateTime::now_utc(),
            not_after: OffsetDateTime::now_utc() - Duration::days(1),
        };
        assert!(matches!(
            ca.issue_client("n", v),
            Err(PkiError::Validity { .. })
        ));
    }
}
