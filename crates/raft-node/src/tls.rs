//! TLS on the gRPC port, and who a peer is.
//!
//! A node with TLS configured ([`TlsPaths`]: its certificate and key, and
//! the cluster CA) serves only TLS on its gRPC port and dials its peers with
//! TLS, presenting its own certificate (mutual TLS). Clients may present a
//! certificate too (it must chain to the same CA), but a client certificate
//! grants nothing: users are authenticated by token ([`crate::auth`]).
//!
//! **Who is a peer.** A node's certificate names the node in a DNS subject
//! alternative name `node-<id>.raftq` ([`peer_name`]). The internal Raft
//! service, served on the same port as the public API, takes a message only
//! from a connection whose verified client certificate is valid for the
//! name of the node the message says it comes from; anything else gets
//! `UNAUTHENTICATED` before it is decoded. When a node dials a peer it
//! expects that peer's certificate to carry the peer's name, so a node also
//! knows it reached the member it meant, whatever address it dialled. One
//! port, not a separate internal one: the deployment (compose, Kubernetes
//! services, firewalls) stays one port per node, and the check is on the
//! caller's identity, not on which port it found.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

/// The suffix of a node's name in its certificate: node 3 is `node-3.raftq`.
pub const PEER_NAME_SUFFIX: &str = ".raftq";

/// The DNS name node `id`'s certificate must carry.
pub fn peer_name(id: u64) -> String {
    format!("node-{id}{PEER_NAME_SUFFIX}")
}

/// Where a node's TLS files are (PEM each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// The node's certificate (chain), with `node-<id>.raftq` and the names
    /// clients dial among its subject alternative names.
    pub cert: PathBuf,
    /// The certificate's private key.
    pub key: PathBuf,
    /// The cluster CA: peers' certificates must chain to it (and clients',
    /// when they present one).
    pub client_ca: PathBuf,
}

/// A node's TLS material, read and checked once at start.
#[derive(Clone, Debug)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|err| Error::Config(format!("cannot read {what} {}: {err}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(Error::Config(format!(
            "{what} {} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

impl Tls {
    /// Reads the files; a missing or non-PEM file is a config error naming it.
    /// The certificate, key and CA are parsed here too (a key that does not
    /// match, a CA that is not a certificate), so a bad set stops the start.
    pub fn load(paths: &TlsPaths) -> Result<Self> {
        let tls = Tls {
            cert_pem: read("tls_cert", &paths.cert)?,
            key_pem: read("tls_key", &paths.key)?,
            ca_pem: read("tls_client_ca", &paths.client_ca)?,
        };
        let describe = |err: tonic::transport::Error| {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            Error::Config(format!(
                "TLS files {}, {} and {} do not make a usable set: {text}",
                paths.cert.display(),
                paths.key.display(),
                paths.client_ca.display()
            ))
        };
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(describe)?;
        tonic::transport::Endpoint::from_static("https://localhost:1")
            .tls_config(tls.peer_client_config(1))
            .map_err(describe)?;
        Ok(tls)
    }

    /// Refuses a certificate that does not name node `id`
    /// (`node-<id>.raftq`): its peers would refuse every message from it.
    pub fn check_names(&self, id: u64, cert_path: &Path) -> Result<()> {
        use rustls_pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(&self.cert_pem)
            .map_err(|err| Error::Config(format!("tls_cert {}: {err}", cert_path.display())))?;
        if is_node(&[der], id) {
            return Ok(());
        }
        Err(Error::Config(format!(
            "tls_cert {} does not name this node: it needs the DNS name {} (peers check it), \
             or it is another node's certificate",
            cert_path.display(),
            peer_name(id)
        )))
    }

    /// The gRPC server's TLS: this node's identity; client certificates are
    /// asked for and verified against the cluster CA when presented (peers
    /// must present one, clients may).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
    }

    /// TLS for dialling node `target`: trust the cluster CA, expect the
    /// target's name in its certificate, present this node's own.
    pub fn peer_client_config(&self, target: u64) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(peer_name(target))
    }
}

/// rustls's server configuration of the node's certificate, for the HTTP
/// port (no client certificates asked for: scrapers and probes are not
/// peers).
pub fn http_server_config(tls: &Tls) -> Result<tokio_rustls::rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let bad = |what: &str, err: String| Error::Config(format!("HTTP TLS: {what}: {err}"));
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| bad("tls_cert", err.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|err| bad("tls_key", err.to_string()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| bad("protocol versions", err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| bad("certificate and key", err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The verified certificate chain a caller presented, if any (tonic keeps it
/// in the request's extensions once rustls verified it against the CA).
pub fn caller_certs<T>(request: &tonic::Request<T>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    request.peer_certs().filter(|certs| !certs.is_empty())
}

/// Whether `certs` (a verified chain, end entity first) is node `id`'s.
pub fn is_node(certs: &[CertificateDer<'static>], id: u64) -> bool {
    let Some(end_entity) = certs.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(peer_name(id)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_non_pem_file_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").expect("write");
        let paths = TlsPaths {
            cert: junk.clone(),
            key: junk.clone(),
            client_ca: dir.path().join("missing.pem"),
        };
        let err = Tls::load(&paths).expect_err("junk").to_string();
        assert!(err.contains("tls_cert") && err.contains("not PEM"), "{err}");
        let pem = dir.path().join("ok.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").expect("write");
        let paths = TlsPaths {
            cert: pem.clone(),
            key: pem,
            client_ca: dir.path().join("missing.pem"),
        };
        let err = Tls::load(&paths).expect_err("missing").to_string();
        assert!(
            err.contains("tls_client_ca") && err.contains("missing.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_real_set_loads_and_a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nodes = [
            (1, vec!["127.0.0.1".to_string()]),
            (2, vec!["127.0.0.1".to_string()]),
        ];
        let certs = crate::pki::make_cluster(dir.path(), &nodes.into()).expect("certs");
        let one = certs.nodes[&1].clone();
        let tls = Tls::load(&one).expect("a real set loads");
        assert!(http_server_config(&tls).is_ok());
        let cert = std::fs::read(&one.cert).expect("read");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&cert).expect("a certificate");
        assert!(is_node(&[der], 1), "node 1's certificate names node 1");
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&cert).expect("a certificate");
        assert!(!is_node(&[der], 2), "and not node 2");
        let mismatched = TlsPaths {
            key: certs.nodes[&2].key.clone(),
            ..one
        };
        let err = Tls::load(&mismatched)
            .expect_err("another node's key")
            .to_string();
        assert!(err.contains("do not make a usable set"), "{err}");
    }

    #[test]
    fn a_chain_that_is_not_a_certificate_is_nobody() {
        assert!(!is_node(&[], 1));
        assert!(!is_node(
            &[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
            1
        ));
    }
}
