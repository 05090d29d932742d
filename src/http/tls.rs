//! TLS material: configured PEM files, or a self-signed certificate generated on first
//! start for the device's hostname and addresses. Reloaded on SIGHUP without dropping
//! connections: each new handshake reads the current configuration from an `ArcSwap`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::HttpsConfig;

/// Where the generated certificate lives, relative to the data dir.
pub const GENERATED_DIR: &str = "tls";

/// The certificate and key files in use, and the live rustls configuration.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the configured files, or generates (once) and loads a self-signed pair.
    ///
    /// # Errors
    /// Unreadable or invalid PEM files, or a failed generation.
    pub fn load_or_generate(config: &HttpsConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let (cert, key) = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => {
                let dir = data_dir.join(GENERATED_DIR);
                let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
                if !cert.exists() || !key.exists() {
                    generate_self_signed(&dir, &cert, &key)?;
                }
                (cert, key)
            }
        };
        let server_config = build(&cert, &key)?;
        Ok(Self {
            cert,
            key,
            current: ArcSwap::from_pointee(server_config),
        })
    }

    /// The configuration for the next handshake.
    #[must_use]
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Re-reads the certificate and key; on error the old pair stays in use.
    ///
    /// # Errors
    /// The new files do not load; nothing changed.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = build(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    #[must_use]
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

fn build(cert_path: &Path, key_path: &Path) -> anyhow::Result<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("certificate {} is not valid PEM", cert_path.display()))?;
    let Some(leaf) = chain.first() else {
        anyhow::bail!(
            "certificate file {} holds no certificate",
            cert_path.display()
        );
    };
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read a private key from {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "{} and {} do not form a usable pair",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tracing::info!(cert = %cert_path.display(), sha256 = %fingerprint, "TLS certificate loaded");
    Ok(config)
}

/// `AB:CD:...` SHA-256 of a DER certificate, as browsers show it.
#[must_use]
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn generate_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names = subject_names();
    let mut params = rcgen::CertificateParams::new(names.clone()).context("certificate names")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cairn appliance");
    let key = rcgen::KeyPair::generate().context("generate TLS key")?;
    let cert = params.self_signed(&key).context("self-sign certificate")?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_private(cert_path, cert.pem().as_bytes())?;
    tracing::info!(names = ?names, path = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// The hostname, `localhost`, and every address of the device's interfaces.
fn subject_names() -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && !host.is_empty()
    {
        names.push(host.to_owned());
    }
    names.push("localhost".into());
    let mut addrs: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else {
                continue;
            };
            if let Some(v4) = address.as_sockaddr_in() {
                addrs.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = address.as_sockaddr_in6() {
                let ip = v6.ip();
                // Link-local addresses need a zone and cannot appear in a certificate usefully.
                if (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    addrs.push(IpAddr::V6(ip));
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    names.dedup();
    names.extend(addrs.into_iter().map(|a| a.to_string()));
    names
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::config::HttpsConfig;

    #[test]
    fn generates_once_with_private_files_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::load_or_generate(&HttpsConfig::default(), dir.path()).unwrap();
        let key = dir.path().join("tls/key.pem");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let first = std::fs::read(tls.cert_path()).unwrap();
        let again = Tls::load_or_generate(&HttpsConfig::default(), dir.path()).unwrap();
        assert_eq!(std::fs::read(again.cert_path()).unwrap(), first);
        tls.reload().unwrap();
        std::fs::write(&key, "garbage").unwrap();
        assert!(tls.reload().is_err());
    }
}
