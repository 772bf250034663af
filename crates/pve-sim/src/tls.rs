//! The simulator's self-signed certificate, generated at start like a fresh Proxmox install's,
//! and its SHA-256 fingerprint in the `AA:BB:…` form `pvenode cert info` prints.

use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::SimError;

pub(crate) struct Identity {
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    pub fingerprint: String,
}

impl Identity {
    pub fn generate() -> Result<Identity, SimError> {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "pve1".to_owned(),
        ])
        .map_err(SimError::Certificate)?;
        let cert_der = certified.cert.der().clone();
        let fingerprint = fingerprint(&cert_der);
        Ok(Identity {
            cert_der,
            key_der: certified.signing_key.serialize_der(),
            fingerprint,
        })
    }

    pub fn rustls_config(&self) -> Result<RustlsConfig, SimError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(SimError::Tls)?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .map_err(SimError::Tls)?;
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(RustlsConfig::from_config(Arc::new(config)))
    }
}

/// `AA:BB:…` (upper-case hex pairs) of the SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
