//! TLS and the bearer token: how the client proves who it is and checks
//! that it reached the cluster.
//!
//! With [`ClientTls`], every connection is TLS: the nodes' certificates must
//! chain to the CA given, and name the host dialled (or
//! [`ClientTls::domain`]). A client certificate is sent when the cluster
//! asks for one; it grants nothing by itself. With a token, every call
//! carries `authorization: Bearer <token>`; the cluster answers
//! `UNAUTHENTICATED` to a missing or unknown token and `PERMISSION_DENIED`
//! to a call the token's user may not make.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::error::{Error, Result};

/// TLS settings of a client. Its `Debug` never shows the key.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA certificate(s), PEM, that the nodes' certificates chain to.
    pub ca_pem: Vec<u8>,
    /// This client's certificate and private key, PEM each, for clusters
    /// that ask for one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to expect in the nodes' certificates when it is not the
    /// host of the address dialled (an IP address dialled through a name).
    pub domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClientTls {
    /// Reads the CA and, when both are given, a client certificate and key
    /// (PEM files). A missing file is `INVALID_ARGUMENT` naming it.
    pub fn from_files(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<Self> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|err| {
                Error::new(
                    tonic::Code::InvalidArgument,
                    format!("cannot read the {what} {}: {err}", path.display()),
                )
            })
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => {
                Some((read("client certificate", cert)?, read("client key", key)?))
            }
            (None, None) => None,
            _ => {
                return Err(Error::new(
                    tonic::Code::InvalidArgument,
                    "a client certificate needs its key, and a key its certificate",
                ))
            }
        };
        Ok(ClientTls {
            ca_pem: read("CA certificate", ca)?,
            identity,
            domain: None,
        })
    }

    /// tonic's form of these settings.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// The longest token the client sends (raftq's are 67 bytes); a longer one
/// would make the server refuse the headers.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Adds the bearer token, if any, to every request. Its `Debug` never
/// shows the token.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// Credentials carrying `token`; a token with characters a header cannot
    /// hold is `INVALID_ARGUMENT`.
    pub fn new(token: Option<&str>) -> Result<Self> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|token| {
                if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::new(
                        tonic::Code::InvalidArgument,
                        format!(
                            "a token is printable ASCII without spaces, at most \
                             {MAX_TOKEN_BYTES} bytes: this one is not (is it the token?)"
                        ),
                    ));
                }
                format!("Bearer {token}").parse().map_err(|_| {
                    Error::new(
                        tonic::Code::InvalidArgument,
                        "the token holds characters a gRPC header cannot carry",
                    )
                })
            })
            .transpose()?;
        Ok(Credentials { token })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A connection to one node with the client's credentials on every call.
pub type Transport = InterceptedService<Channel, Credentials>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_shows_in_debug_output_and_goes_into_every_request() {
        let credentials = Credentials::new(Some("rq_secret")).expect("a valid token");
        assert!(!format!("{credentials:?}").contains("rq_secret"));
        let config = crate::ClientConfig {
            token: Some("rq_secret".into()),
            ..crate::ClientConfig::default()
        };
        assert!(!format!("{config:?}").contains("rq_secret"));
        let mut interceptor = credentials;
        let request = tonic::service::Interceptor::call(&mut interceptor, tonic::Request::new(()))
            .expect("passes");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .map(|v| v.to_str().ok()),
            Some(Some("Bearer rq_secret"))
        );
        assert!(Credentials::new(Some("bad\ntoken")).is_err());
        assert!(Credentials::new(Some("tök")).is_err());
        assert!(Credentials::new(Some(&"a".repeat(MAX_TOKEN_BYTES + 1))).is_err());
        let none = Credentials::new(Some("  ")).expect("blank is no token");
        let mut none = none;
        let request =
            tonic::service::Interceptor::call(&mut none, tonic::Request::new(())).expect("passes");
        assert!(request.metadata().get("authorization").is_none());
    }
}
