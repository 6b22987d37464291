//! Throwaway certificates and a first admin token: what `raftq dev
//! --secure`, the secured drill and the tests run with.
//!
//! [`make_cluster`] writes, under one directory, a fresh CA (`ca.pem`,
//! `ca.key`), a certificate and key per node (`node-<id>.pem`,
//! `node-<id>.key`: the DNS name `node-<id>.raftq` that peers check, and the
//! host names and IP addresses clients dial), and a client certificate
//! (`client.pem`, `client.key`). Keys are ECDSA P-256, written readable by
//! the owner only. For production, issue certificates with the same names
//! from your own CA (docs/SECURITY.md); nothing here is needed at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{Error, Result};
use crate::tls::{peer_name, TlsPaths};

/// The files [`make_cluster`] wrote.
#[derive(Clone, Debug)]
pub struct ClusterCerts {
    /// The CA certificate: clients' `--ca`, nodes' `--tls-client-ca`.
    pub ca: PathBuf,
    /// Each node's certificate, key and the CA, as `raftq serve` takes them.
    pub nodes: BTreeMap<u64, TlsPaths>,
    /// A client certificate and key from the same CA.
    pub client: (PathBuf, PathBuf),
}

fn pki_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |err| Error::Internal(format!("cannot make the {what}: {err}"))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|err| Error::Config(format!("cannot write {}: {err}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|err| Error::Config(format!("cannot write {}: {err}", path.display())))
}

/// Writes a new CA, one certificate per node of `nodes` (id → the host
/// names and IP addresses clients use for it) and a client certificate into
/// `dir` (created if missing; files of an earlier run are replaced).
pub fn make_cluster(dir: &Path, nodes: &BTreeMap<u64, Vec<String>>) -> Result<ClusterCerts> {
    std::fs::create_dir_all(dir)
        .map_err(|err| Error::Config(format!("cannot create {}: {err}", dir.display())))?;
    let mut ca_params = CertificateParams::default();
    // A name of its own, so that two CAs never look alike in an error.
    let tag = crate::auth::new_token()?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("raftq cluster CA {}", &tag[3..11]),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(pki_error("CA key"))?;
    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(pki_error("CA"))?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.pem(), false)?;

    let issue = |file: &str,
                 names: Vec<String>,
                 common: &str,
                 server: bool|
     -> Result<(PathBuf, PathBuf)> {
        let mut params = CertificateParams::new(names).map_err(pki_error(file))?;
        params.distinguished_name.push(DnType::CommonName, common);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        let key = KeyPair::generate().map_err(pki_error(file))?;
        let cert = params.signed_by(&key, &ca).map_err(pki_error(file))?;
        let (cert_path, key_path) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok((cert_path, key_path))
    };
    let mut node_paths = BTreeMap::new();
    for (id, hosts) in nodes {
        let mut names = vec![peer_name(*id)];
        names.extend(hosts.iter().cloned());
        let (cert, key) = issue(&format!("node-{id}"), names, &peer_name(*id), true)?;
        node_paths.insert(
            *id,
            TlsPaths {
                cert,
                key,
                client_ca: ca_path.clone(),
            },
        );
    }
    let client = issue("client", vec!["raftq-client".into()], "raftq client", false)?;
    Ok(ClusterCerts {
        ca: ca_path,
        nodes: node_paths,
        client,
    })
}
