//! The rustls client config (ring provider) built from a node's PEM files: trust
//! only the cluster CA, authenticate with the node's certificate and key. The files
//! are read by [`BusClient::builder`] (to fail early) and again when the client
//! starts.
//!
//! [`BusClient::builder`]: super::BusClient::builder

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::{BusConfig, BusError};

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, BusError> {
    std::fs::read(path).map_err(|e| BusError::TlsFile {
        what,
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The rustls client config (ring provider): trust only `ca_file`, authenticate
/// with `cert_file` + `key_file`.
///
/// # Errors
/// [`BusError::TlsFile`] for a file that cannot be read or holds no PEM certificate
/// or key (naming the file), [`BusError::Tls`] when rustls refuses them.
pub fn tls_config(cfg: &BusConfig) -> Result<rustls::ClientConfig, BusError> {
    let bad = |what: &'static str, path: &Path, why: String| BusError::TlsFile {
        what,
        path: path.to_owned(),
        why,
    };
    let ca = read_file("CA certificate", &cfg.ca_file)?;
    let cert = read_file("client certificate", &cfg.cert_file)?;
    let key = read_file("client key", &cfg.key_file)?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("CA certificate", &cfg.ca_file, e.to_string()))?;
    if cas.is_empty() {
        return Err(bad(
            "CA certificate",
            &cfg.ca_file,
            "no PEM CERTIFICATE in it".into(),
        ));
    }
    for c in cas {
        roots
            .add(c)
            .map_err(|e| bad("CA certificate", &cfg.ca_file, e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("client certificate", &cfg.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "client certificate",
            &cfg.cert_file,
            "no PEM CERTIFICATE in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| bad("client key", &cfg.key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_file_error(cfg: &BusConfig) -> (&'static str, std::path::PathBuf, String) {
        match tls_config(cfg) {
            Err(BusError::TlsFile { what, path, why }) => (what, path, why),
            other => panic!("expected a TLS file error, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BusConfig {
            ca_file: dir.path().join("ca.pem"),
            ..BusConfig::default()
        };
        let (what, path, _) = tls_file_error(&cfg);
        assert_eq!(what, "CA certificate");
        assert_eq!(path, cfg.ca_file);
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let cfg = BusConfig {
            ca_file: junk.clone(),
            cert_file: junk.clone(),
            key_file: junk.clone(),
            ..BusConfig::default()
        };
        let (what, path, why) = tls_file_error(&cfg);
        assert_eq!((what, path), ("CA certificate", junk));
        assert!(why.contains("no PEM CERTIFICATE"), "{why}");
    }
}
