//! Where the k3s binary comes from: the GitHub release of the profile's version (checked against the
//! release's `sha256sum-amd64.txt`, cached in the workspace) or an air-gapped local file with its sha256.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::profile::Profile;

use super::K3sError;

/// Release downloads live under this prefix.
pub const RELEASE_BASE_URL: &str = "https://github.com/k3s-io/k3s/releases/download";
/// The amd64 binary asset.
pub const BINARY_ASSET: &str = "k3s";
/// The amd64 checksum asset.
pub const CHECKSUM_ASSET: &str = "sha256sum-amd64.txt";

/// A local file and its verified sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
}

/// Where to get the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinarySource {
    Release { version: String },
    Local { path: PathBuf, sha256: String },
}

impl BinarySource {
    /// The profile's choice: `airgap.k3s_binary` (+ `k3s_sha256`) or the release of `cluster.k3s_version`.
    pub fn from_profile(profile: &Profile) -> Result<Self, K3sError> {
        match &profile.airgap.k3s_binary {
            Some(path) => {
                let sha256 = profile
                    .airgap
                    .k3s_sha256
                    .clone()
                    .ok_or_else(|| K3sError::MissingSha256 { path: path.clone() })?;
                Ok(Self::Local {
                    path: PathBuf::from(path),
                    sha256: sha256.to_ascii_lowercase(),
                })
            }
            None => Ok(Self::Release {
                version: profile.cluster.k3s_version.clone(),
            }),
        }
    }
}

/// `https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/<asset>`.
pub fn release_asset_url(version: &str, asset: &str) -> String {
    let encoded: String =
        percent_encoding::utf8_percent_encode(version, percent_encoding::NON_ALPHANUMERIC)
            .to_string()
            .replace("%2E", ".")
            .replace("%2D", "-")
            .replace("%5F", "_");
    format!("{RELEASE_BASE_URL}/{encoded}/{asset}")
}

/// Parse a `sha256sum` file (`<64 hex>  <name>` per line, `*` binary marker allowed) into name → digest.
pub fn parse_checksums(text: &str) -> Result<BTreeMap<String, String>, K3sError> {
    let mut sums = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: &str| K3sError::Checksums {
            asset: CHECKSUM_ASSET.to_owned(),
            message: format!("line {}: {message}: {line}", number + 1),
        };
        let (digest, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| bad("expected `<sha256>  <file>`"))?;
        let name = name.trim().trim_start_matches('*');
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("not a sha256 digest"));
        }
        if name.is_empty() {
            return Err(bad("no file name"));
        }
        sums.insert(name.to_owned(), digest.to_ascii_lowercase());
    }
    Ok(sums)
}

/// The digest of `asset` in a parsed checksum file.
pub fn checksum_for(sums: &BTreeMap<String, String>, asset: &str) -> Result<String, K3sError> {
    sums.get(asset).cloned().ok_or_else(|| K3sError::Checksums {
        asset: CHECKSUM_ASSET.to_owned(),
        message: format!("no entry for {asset}"),
    })
}

/// sha256 of a local file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, K3sError> {
    use sha2::{Digest, Sha256};
    let io = |source| K3sError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Check a local file against an expected digest.
pub fn verify_file(path: &Path, expected: &str) -> Result<Artifact, K3sError> {
    let actual = sha256_file(path)?;
    if actual != expected.to_ascii_lowercase() {
        return Err(K3sError::ChecksumMismatch {
            what: path.display().to_string(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(Artifact {
        path: path.to_path_buf(),
        sha256: actual,
    })
}

/// Cache path of a release binary: `<cache>/k3s-<version>`.
pub fn cached_binary_path(cache_dir: &Path, version: &str) -> PathBuf {
    cache_dir.join(format!("k3s-{version}"))
}

/// The release's `sha256sum-amd64.txt` as downloaded with the binary: `<cache>/k3s-<version>.sha256sum-amd64.txt`.
pub fn cached_checksums_path(cache_dir: &Path, version: &str) -> PathBuf {
    cache_dir.join(format!("k3s-{version}.{CHECKSUM_ASSET}"))
}

/// Resolve the binary to a verified local file, downloading the release into `cache_dir` once.
pub async fn fetch_binary(source: &BinarySource, cache_dir: &Path) -> Result<Artifact, K3sError> {
    match source {
        BinarySource::Local { path, sha256 } => verify_file(path, sha256),
        BinarySource::Release { version } => {
            fetch_release(&http_client()?, RELEASE_BASE_URL, version, cache_dir).await
        }
    }
}

/// The release binary of `version` from `base_url`, through the cache.
///
/// The binary is pushed to every node and run as root, so the cache is trusted only as far as only
/// this user could have written it: the cache directory, the binary and the kept checksum file must be
/// owned by the user and not writable by group or others (refused otherwise, naming the fix). The
/// expected digest is the release's own `sha256sum-amd64.txt`, kept verbatim from the download that
/// was verified, never a digest file written next to the binary; the binary is hashed against it on
/// every use and downloaded again when it does not match.
pub async fn fetch_release(
    client: &reqwest::Client,
    base_url: &str,
    version: &str,
    cache_dir: &Path,
) -> Result<Artifact, K3sError> {
    if let Some(parent) = cache_dir.parent().filter(|parent| parent.is_dir()) {
        crate::files::check_trusted(parent)?;
    }
    crate::files::create_private_dir(cache_dir)?;
    let cached = cached_binary_path(cache_dir, version);
    let sums_path = cached_checksums_path(cache_dir, version);
    if let Some(sums) = crate::files::read_trusted(&sums_path)? {
        let expected = checksum_for(
            &parse_checksums(&String::from_utf8_lossy(&sums))?,
            BINARY_ASSET,
        )?;
        if cached.exists() {
            crate::files::check_trusted(&cached)?;
            match verify_file(&cached, &expected) {
                Ok(artifact) => return Ok(artifact),
                Err(error) => tracing::warn!(
                    "cached k3s binary does not match the release checksum, downloading it again: {error}"
                ),
            }
        }
    }
    let sums_url = asset_url(base_url, version, CHECKSUM_ASSET);
    let sums = download(client, &sums_url).await?;
    let expected = checksum_for(
        &parse_checksums(&String::from_utf8_lossy(&sums))?,
        BINARY_ASSET,
    )?;
    let binary_url = asset_url(base_url, version, BINARY_ASSET);
    let bytes = download(client, &binary_url).await?;
    let actual = crate::nodeprep::sha256_hex(&bytes);
    if actual != expected {
        return Err(K3sError::ChecksumMismatch {
            what: binary_url,
            expected,
            actual,
        });
    }
    crate::files::write_atomic(&cached, &bytes, 0o600)?;
    crate::files::write_atomic(&sums_path, &sums, 0o600)?;
    Ok(Artifact {
        path: cached,
        sha256: actual,
    })
}

fn asset_url(base_url: &str, version: &str, asset: &str) -> String {
    release_asset_url(version, asset).replacen(RELEASE_BASE_URL, base_url, 1)
}

/// The air-gap image tarball, when the profile names one (its sha256 is then required).
pub fn images_artifact(profile: &Profile) -> Result<Option<Artifact>, K3sError> {
    match &profile.airgap.images {
        None => Ok(None),
        Some(path) => {
            let expected = profile
                .airgap
                .images_sha256
                .as_deref()
                .ok_or_else(|| K3sError::MissingSha256 { path: path.clone() })?;
            verify_file(Path::new(path), expected).map(Some)
        }
    }
}

fn http_client() -> Result<reqwest::Client, K3sError> {
    let failed = |message: String| K3sError::Download {
        url: RELEASE_BASE_URL.to_owned(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A malformed system certificate is skipped; the others still verify GitHub.
        if roots.add(cert).is_err() {
            continue;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| failed(error.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .map_err(|error| failed(error.to_string()))
}

async fn download(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, K3sError> {
    let failed = |message: String| K3sError::Download {
        url: url.to_owned(),
        message,
    };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| failed(error.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("HTTP {}", response.status())));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|error| failed(error.to_string()))?;
    Ok(bytes.to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_plus() {
        assert_eq!(
            release_asset_url("v1.31.4+k3s1", "sha256sum-amd64.txt"),
            "https://github.com/k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/sha256sum-amd64.txt"
        );
    }

    #[test]
    fn rejects_malformed_checksum_lines() {
        assert!(parse_checksums("nothex  k3s\n").is_err());
        assert!(parse_checksums(&format!("{}\n", "a".repeat(64))).is_err());
        let sums = parse_checksums(&format!("{} *k3s\n", "A".repeat(64))).unwrap();
        assert_eq!(checksum_for(&sums, "k3s").unwrap(), "a".repeat(64));
        assert!(checksum_for(&sums, "k3s-arm64").is_err());
    }

    /// A loopback HTTP server with a release: `…/sha256sum-amd64.txt` and `…/k3s`; counts requests.
    async fn release_server(
        binary: &'static [u8],
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let sums = format!(
            "{}  k3s\n{}  k3s-arm64\n",
            crate::nodeprep::sha256_hex(binary),
            "0".repeat(64)
        );
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let sums = sums.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if uri.path().ends_with(CHECKSUM_ASSET) {
                    sums.into_bytes()
                } else {
                    binary.to_vec()
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{address}"), hits)
    }

    #[tokio::test]
    async fn a_planted_cached_binary_is_never_trusted_from_a_neighbour_digest() {
        use std::os::unix::fs::PermissionsExt as _;
        use std::sync::atomic::Ordering;
        let (base, hits) = release_server(b"real k3s").await;
        // Plain HTTP on loopback; the real client is TLS-only towards GitHub.
        let client = http_client().unwrap();
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let version = "v1.31.4+k3s1";
        crate::files::create_private_dir(&cache).unwrap();
        // What the old code trusted: a binary and a `.sha256` file next to it that match each other.
        let planted = cached_binary_path(&cache, version);
        std::fs::write(&planted, b"evil").unwrap();
        std::fs::write(
            planted.with_extension("sha256"),
            crate::nodeprep::sha256_hex(b"evil"),
        )
        .unwrap();
        let real = crate::nodeprep::sha256_hex(b"real k3s");
        let artifact = fetch_release(&client, &base, version, &cache)
            .await
            .unwrap();
        assert_eq!(artifact.sha256, real);
        assert_eq!(std::fs::read(&artifact.path).unwrap(), b"real k3s");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "checksums and binary downloaded"
        );

        // Verified on every use: the cache serves without the network while it matches.
        fetch_release(&client, &base, version, &cache)
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        std::fs::write(&artifact.path, b"evil").unwrap();
        let again = fetch_release(&client, &base, version, &cache)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&again.path).unwrap(), b"real k3s");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            4,
            "a changed binary is downloaded again"
        );

        // A checksum file or a cache others may write is refused, naming the fix.
        let sums = cached_checksums_path(&cache, version);
        std::fs::set_permissions(&sums, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = fetch_release(&client, &base, version, &cache)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::set_permissions(&sums, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = fetch_release(&client, &base, version, &cache)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("chmod 700 {}", cache.display())),
            "{error}"
        );
    }

    #[test]
    fn local_file_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k3s");
        std::fs::write(&path, b"binary").unwrap();
        let digest = crate::nodeprep::sha256_hex(b"binary");
        assert_eq!(verify_file(&path, &digest).unwrap().sha256, digest);
        assert!(matches!(
            verify_file(&path, &"0".repeat(64)),
            Err(K3sError::ChecksumMismatch { .. })
        ));
    }
}
