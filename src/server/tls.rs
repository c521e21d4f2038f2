//! TLS: rustls with TLS 1.2/1.3 and ALPN h2 + http/1.1. The serving certificate sits behind a
//! resolver whose key is swapped in place when the files change (including the kubelet's
//! atomic `..data` symlink swap), so new handshakes get the new certificate and existing
//! connections are untouched.

use crate::metrics::Metrics;
use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Reads a PEM certificate chain and key into a rustls certified key.
pub fn load_certified_key(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let err = |p: &Path, m: String| TlsError::Load {
        path: p.display().to_string(),
        message: m,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_path, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert_path, "no certificate in file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| err(key_path, format!("not a PEM private key: {e}")))?;
    let signing = ring::sign::any_supported_type(&key).map_err(|e| err(key_path, e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| err(key_path, format!("key does not match certificate: {e}")))?;
    Ok(ck)
}

/// Serves whatever certified key is current.
#[derive(Debug)]
pub struct SwappableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The serving certificate files and the live resolver they feed.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    resolver: Arc<SwappableCert>,
    last: std::sync::Mutex<(Vec<u8>, Vec<u8>)>,
}

impl CertFiles {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<CertFiles, TlsError> {
        let (c, k) = read_pair(&cert, &key)?;
        let ck = load_certified_key(&c, &k, &cert, &key)?;
        Ok(CertFiles {
            cert,
            key,
            resolver: Arc::new(SwappableCert(ArcSwap::from_pointee(ck))),
            last: std::sync::Mutex::new((c, k)),
        })
    }

    /// A rustls server config: TLS 1.3 and 1.2, ALPN h2 then http/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut cfg =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(self.resolver.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Re-reads the files; swaps the certificate when they changed and parse. Ok(true) = swapped.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = read_pair(&self.cert, &self.key)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 == c && last.1 == k {
            return Ok(false);
        }
        let ck = load_certified_key(&c, &k, &self.cert, &self.key)?;
        self.resolver.0.store(Arc::new(ck));
        *last = (c, k);
        Ok(true)
    }

    /// Polls the files every `every` until the process ends. Polling follows symlink swaps
    /// and needs no inotify support in the container.
    pub fn spawn_watch(
        self: Arc<Self>,
        every: Duration,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = self.clone();
                let res = tokio::task::spawn_blocking(move || me.reload()).await;
                match res {
                    Ok(Ok(true)) => {
                        metrics.tls_reloads.inc();
                        tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        metrics.tls_reload_errors.inc();
                        tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one");
                    }
                    Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
                }
            }
        })
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| TlsError::Load {
            path: p.display().to_string(),
            message: e.to_string(),
        })
    };
    Ok((read(cert)?, read(key)?))
}
