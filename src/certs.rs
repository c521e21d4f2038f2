//! Certificates: an rcgen-made CA and a serving certificate signed by it, written with the
//! file names of a Kubernetes TLS Secret (`ca.crt`, `tls.crt`, `tls.key`).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::net::IpAddr;
use std::path::Path;
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error(
        "certificate directory {dir} holds no tls.crt and tls.key, and fluxadmit cannot write \
         one there ({reason}); mount a TLS Secret with ca.crt, tls.crt and tls.key there, or \
         point --cert-dir at a writable directory to have one generated"
    )]
    ReadOnlyDir { dir: String, reason: String },
}

/// What the serving certificate is for.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Extra DNS names.
    pub dns: Vec<String>,
    /// Extra IP addresses.
    pub ips: Vec<IpAddr>,
    /// Namespace of the in-cluster Service `fluxadmit`.
    pub namespace: String,
    /// Validity in days.
    pub days: u32,
}

impl Default for CertOptions {
    fn default() -> Self {
        CertOptions {
            dns: Vec::new(),
            ips: Vec::new(),
            namespace: "fluxadmit".into(),
            days: 365,
        }
    }
}

impl CertOptions {
    /// Every subject alternative name: localhost, 127.0.0.1, the service names, then extras.
    pub fn sans(&self) -> Vec<String> {
        let mut sans = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            format!("fluxadmit.{}.svc", self.namespace),
            format!("fluxadmit.{}.svc.cluster.local", self.namespace),
        ];
        for d in &self.dns {
            if !sans.contains(d) {
                sans.push(d.clone());
            }
        }
        for ip in &self.ips {
            let s = ip.to_string();
            if !sans.contains(&s) {
                sans.push(s);
            }
        }
        sans
    }
}

/// A CA and a serving certificate, PEM encoded.
pub struct Bundle {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("ca_cert", &self.ca_cert)
            .finish_non_exhaustive()
    }
}

/// Generates a fresh CA and a serving certificate signed by it.
pub fn generate(opts: &CertOptions) -> Result<Bundle, CertError> {
    let now = OffsetDateTime::now_utc();
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "fluxadmit CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - Duration::hours(1);
    ca.not_after = now + Duration::days(i64::from(opts.days) + 1);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(opts.sans())?;
    leaf.distinguished_name
        .push(DnType::CommonName, "fluxadmit");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - Duration::hours(1);
    leaf.not_after = now + Duration::days(i64::from(opts.days));
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Writes `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into `dir` (keys readable by the owner only).
pub fn write(dir: &Path, b: &Bundle) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.display().to_string(),
        error: source,
    })?;
    for (name, text, secret) in [
        ("ca.crt", &b.ca_cert, false),
        ("ca.key", &b.ca_key, true),
        ("tls.crt", &b.cert, false),
        ("tls.key", &b.key, true),
    ] {
        let path = dir.join(name);
        write_file(&path, text.as_bytes(), secret).map_err(|source| CertError::Io {
            path: path.display().to_string(),
            error: source,
        })?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Uses the certificate in `dir` if there is one, else generates and writes one.
/// Returns true when it generated.
/// A directory that exists but cannot be written (a read-only mount, or no write permission
/// for this user) is reported as such, before anything is written.
pub fn ensure(dir: &Path, opts: &CertOptions) -> Result<bool, CertError> {
    if dir.join("tls.crt").exists() && dir.join("tls.key").exists() {
        return Ok(false);
    }
    if dir.is_dir()
        && let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
    {
        return Err(CertError::ReadOnlyDir {
            dir: dir.display().to_string(),
            reason: std::io::Error::from(e).to_string(),
        });
    }
    write(dir, &generate(opts)?)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_include_service_names_and_extras() {
        let o = CertOptions {
            dns: vec!["hook.example".into()],
            ips: vec!["10.0.0.9".parse().unwrap()],
            namespace: "flux-system".into(),
            days: 1,
        };
        let s = o.sans();
        assert!(s.contains(&"fluxadmit.flux-system.svc".to_owned()));
        assert!(s.contains(&"fluxadmit.flux-system.svc.cluster.local".to_owned()));
        assert!(s.contains(&"hook.example".to_owned()));
        assert!(s.contains(&"10.0.0.9".to_owned()));
    }

    #[test]
    fn generates_pem_and_writes_with_k8s_names() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path(), &CertOptions::default()).unwrap());
        for f in ["ca.crt", "tls.crt", "tls.key", "ca.key"] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        assert!(
            std::fs::read_to_string(dir.path().join("tls.crt"))
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        // A second call keeps what is there.
        assert!(!ensure(dir.path(), &CertOptions::default()).unwrap());
    }
}
