//! TLS on the HTTP listener: a certificate chain and key from PEM files, offered with HTTP/2
//! and HTTP/1.1 by ALPN, and reloaded when the files change (a renewal) without touching the
//! connections already open: only new handshakes see the new certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a renewal.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate new handshakes get; replaced whole on a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// Loads the files and returns the acceptor, with a task that reloads them when they change.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let current = Arc::new(Current(RwLock::new(Arc::new(load(files)?))));
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(reload(files.clone(), current));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "{}: cannot read a PEM certificate chain",
                files.cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in it", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{}: cannot read a PEM private key", files.key.display()))?;
    let signer = aws_lc_rs::sign::any_supported_type(&key)
        .with_context(|| format!("{}: an unsupported key", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    certified.keys_match().with_context(|| {
        format!(
            "{} does not match {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(certified)
}

/// The client this node's own requests go out with (deliveries to packagers, input relays):
/// the public roots, and `trust_ca` (the CA of a cluster's own certificates) when given.
pub fn internal_client(trust_ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(4);
    if let Some(path) = trust_ca {
        let pem =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{}: not a PEM certificate", path.display()))?;
        builder = builder.add_root_certificate(ca);
    }
    Ok(builder.build()?)
}

/// Reloads the files when either's modification time changes; a bad pair keeps the old one
/// in service and is reported.
async fn reload(files: TlsFiles, current: Arc<Current>) {
    let mut seen = modified(&files);
    let mut tick = tokio::time::interval(RELOAD_CHECK);
    loop {
        tick.tick().await;
        let now = modified(&files);
        if now == seen {
            continue;
        }
        seen = now;
        let result = match load(&files) {
            Ok(loaded) => {
                *current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                "loaded"
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "TLS certificate not reloaded; the previous one stays");
                "failed"
            }
        };
        metrics::counter!("steadycast_tls_reloads_total", "result" => result).increment(1);
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(&files.cert), at(&files.key))
}
