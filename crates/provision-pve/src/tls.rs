//! How the client trusts the Proxmox certificate: system roots, a CA file, a pinned SHA-256
//! fingerprint (Proxmox's default certificate is self-signed), or — with a warning — nothing.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest, Sha256};

use super::error::PveError;

/// Which certificates the client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// The operating system's trust store (a publicly trusted or enterprise-CA certificate).
    System,
    /// Certificates signed by the CA(s) in this PEM file (e.g. `/etc/pve/pve-root-ca.pem`).
    CaFile(PathBuf),
    /// Exactly the certificate whose DER SHA-256 is this (`AA:BB:…`, as `pvenode cert info`
    /// prints it). A mismatch aborts the handshake before anything is sent.
    Fingerprint(String),
    /// Accept any certificate. Warned about on every client construction.
    Insecure,
}

/// The SHA-256 fingerprint of a DER certificate, `AA:BB:…` upper-case.
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Normalises a user-given fingerprint (`aa:bb…`, `AABB…`, with spaces) to `AA:BB:…`.
pub fn normalize_fingerprint(input: &str) -> Result<String, PveError> {
    let hex_digits: String = input
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect();
    let bytes = hex::decode(&hex_digits).map_err(|_| PveError::Config {
        message: format!("TLS fingerprint {input:?} is not hexadecimal"),
        hint: Some("copy it from `pvenode cert info` (the SHA-256 line)".to_owned()),
    })?;
    if bytes.len() != 32 {
        return Err(PveError::Config {
            message: format!(
                "TLS fingerprint {input:?} has {} bytes, a SHA-256 fingerprint has 32",
                bytes.len()
            ),
            hint: Some("copy it from `pvenode cert info` (the SHA-256 line)".to_owned()),
        });
    }
    Ok(bytes
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The fingerprint a pinning verifier saw when it refused a certificate.
pub type MismatchSlot = Arc<Mutex<Option<String>>>;

/// The rustls configuration for a [`TlsMode`], and (for pinning) the slot where a refused
/// certificate's fingerprint is recorded.
pub fn rustls_config(
    mode: &TlsMode,
) -> Result<(rustls::ClientConfig, Option<MismatchSlot>), PveError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| PveError::Config {
            message: format!("cannot set up TLS: {error}"),
            hint: None,
        })?;
    let algorithms = provider.signature_verification_algorithms;
    match mode {
        TlsMode::System => {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!("could not load a system CA certificate: {error}");
            }
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(PveError::Config {
                    message: "no usable CA certificates found in the system trust store".to_owned(),
                    hint: Some(
                        "set a CA file or pin the certificate fingerprint (pvenode cert info)"
                            .to_owned(),
                    ),
                });
            }
            Ok((
                builder.with_root_certificates(roots).with_no_client_auth(),
                None,
            ))
        }
        TlsMode::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|error| PveError::Config {
                message: format!("cannot read CA file {}: {error}", path.display()),
                hint: Some(
                    "copy /etc/pve/pve-root-ca.pem from a Proxmox node and point the CA file \
                     at it"
                        .to_owned(),
                ),
            })?;
            let mut roots = RootCertStore::empty();
            // rustls-pki-types' own PEM reader (rustls-pemfile is unmaintained, RUSTSEC-2025-0134).
            for certificate in CertificateDer::pem_slice_iter(&pem) {
                let certificate = certificate.map_err(|error| PveError::Config {
                    message: format!("CA file {} is not valid PEM: {error}", path.display()),
                    hint: None,
                })?;
                roots.add(certificate).map_err(|error| PveError::Config {
                    message: format!(
                        "CA file {} holds a bad certificate: {error}",
                        path.display()
                    ),
                    hint: None,
                })?;
            }
            if roots.is_empty() {
                return Err(PveError::Config {
                    message: format!("CA file {} contains no certificate", path.display()),
                    hint: Some("it must hold PEM `BEGIN CERTIFICATE` blocks".to_owned()),
                });
            }
            Ok((
                builder.with_root_certificates(roots).with_no_client_auth(),
                None,
            ))
        }
        TlsMode::Fingerprint(expected) => {
            let slot: MismatchSlot = Arc::new(Mutex::new(None));
            let verifier = CertificateVerifier {
                expected: Some(normalize_fingerprint(expected)?),
                seen_mismatch: slot.clone(),
                algorithms,
            };
            Ok((
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
                Some(slot),
            ))
        }
        TlsMode::Insecure => {
            let verifier = CertificateVerifier {
                expected: None,
                seen_mismatch: Arc::new(Mutex::new(None)),
                algorithms,
            };
            Ok((
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
                None,
            ))
        }
    }
}

/// Accepts exactly one certificate, by the SHA-256 of its DER encoding (`expected`), or any
/// certificate (`insecure = true`, `expected: None`). Handshake signatures are still verified,
/// so the server must hold that certificate's private key.
struct CertificateVerifier {
    expected: Option<String>,
    seen_mismatch: MismatchSlot,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for CertificateVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for CertificateVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = &self.expected else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual = fingerprint_of(end_entity.as_ref());
        if &actual == expected {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut slot) = self.seen_mismatch.lock() {
            *slot = Some(actual.clone());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_fingerprints() {
        let colon = "ab:".repeat(31) + "ab";
        assert_eq!(
            normalize_fingerprint(&colon).unwrap(),
            "AB:".repeat(31) + "AB"
        );
        assert_eq!(
            normalize_fingerprint(&"AB".repeat(32)).unwrap(),
            "AB:".repeat(31) + "AB"
        );
        assert!(normalize_fingerprint("AB:CD").is_err());
        assert!(normalize_fingerprint("zz").is_err());
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        // sha256("") = e3b0c442…
        assert!(fingerprint_of(b"").starts_with("E3:B0:C4:42"));
    }
}
