//! TLS material for the HTTPS listener. Browsers only grant camera and microphone to secure origins, and
//! other devices on the clinic LAN cannot use the `localhost` exemption, so the gateway always offers HTTPS.
//! With no `cert.pem`/`key.pem` in `certs_dir`, a self-signed certificate is generated for localhost and every
//! address of this machine; an operator replaces the two files with a real certificate to get rid of the
//! browser warning.

use crate::auth::write_private;
use anyhow::Context;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when the pair was generated during this start.
    pub generated: bool,
}

/// Uses `certs_dir/cert.pem` + `key.pem`, generating a self-signed pair if neither exists.
pub fn ensure_cert(certs_dir: &Path) -> anyhow::Result<CertFiles> {
    let cert = certs_dir.join("cert.pem");
    let key = certs_dir.join("key.pem");
    match (cert.exists(), key.exists()) {
        (true, true) => return Ok(CertFiles { cert, key, generated: false }),
        (false, false) => {}
        _ => anyhow::bail!(
            "{} must contain both cert.pem and key.pem (or neither, to generate a self-signed pair)",
            certs_dir.display()
        ),
    }
    std::fs::create_dir_all(certs_dir).with_context(|| format!("creating {}", certs_dir.display()))?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(lan_addresses().into_iter().map(|ip| ip.to_string()));
    names.dedup();
    // rcgen turns names that parse as IP addresses into IP SANs, the rest into DNS SANs.
    let generated = rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, &generated.key_pair.serialize_pem()).with_context(|| format!("writing {}", key.display()))?;
    Ok(CertFiles { cert, key, generated: true })
}

/// A rustls server configuration for the pair (the embedded TURN server's TLS listener; the HTTPS listener
/// loads the same files through axum-server).
pub fn server_config(files: &CertFiles) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not form a pair")?;
    Ok(std::sync::Arc::new(config))
}

/// This machine's non-loopback interface addresses (the ones other LAN devices can reach).
pub fn lan_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).filter(|ip| !ip.is_loopback()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_reused_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_cert(dir.path()).unwrap();
        assert!(first.generated);
        let pem = std::fs::read_to_string(&first.cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let second = ensure_cert(dir.path()).unwrap();
        assert!(!second.generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&first.key).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
