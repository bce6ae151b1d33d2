//! HTTPS on the REST port (`--ssl_certfile`, `--ssl_keyfile`, `--ssl_ca_certs`,
//! `--ssl_client_cert`): rustls, with the settings of Python's context
//! (`ferry.rest_tls.RestTls.ssl_context`): TLS 1.2 or later, HTTP/1.1 by ALPN, client
//! certificates none, optional (asked for, verified when shown) or required.
//!
//! The handshake runs under ferry's limits as on the Python front
//! (`ferry.protocols.https_accept`): the connection counts against `--max_connections`
//! from accept, its first byte must come and the handshake finish within the head
//! deadline, and a connection whose first byte is not a TLS handshake record gets
//! Python's readable 400 in plain HTTP.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::limits::Refusal;

/// A TLS record's first byte for a handshake (a ClientHello starts with it).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// What an HTTPS front needs: the acceptor, and the answer to plain HTTP.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub plain_http: Arc<Vec<u8>>,
}

/// `--ssl_client_cert`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClientCertificate {
    None,
    Optional,
    Required,
}

impl ClientCertificate {
    pub fn parse(mode: &str) -> Result<Self, String> {
        match mode {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!("unknown client certificate mode {other:?}")),
        }
    }
}

impl Tls {
    /// From the PEM texts of the certificate chain, its key and (for client
    /// certificates) the CAs; Python has checked them already, so an error here is a PEM
    /// form rustls does not read.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: Option<&[u8]>,
        client: ClientCertificate,
        plain_http: &Refusal,
    ) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--ssl_certfile: {e}"))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("--ssl_keyfile: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (client, ca_pem) {
            (ClientCertificate::None, _) | (_, None) => builder.with_no_client_auth(),
            (mode, Some(ca_pem)) => {
                let mut roots = RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(ca_pem) {
                    let ca = ca.map_err(|e| format!("--ssl_ca_certs: {e}"))?;
                    roots.add(ca).map_err(|e| format!("--ssl_ca_certs: {e}"))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == ClientCertificate::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("--ssl_certfile / --ssl_keyfile: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            plain_http: Arc::new(plain_http.raw_response()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificate_modes_are_the_flags_values() {
        assert_eq!(
            ClientCertificate::parse("optional"),
            Ok(ClientCertificate::Optional)
        );
        assert!(ClientCertificate::parse("maybe").is_err());
    }

    #[test]
    fn a_certificate_that_is_not_pem_is_an_error_naming_the_flag() {
        let refusal = Refusal {
            status: 400,
            body: bytes::Bytes::from_static(b"{}"),
        };
        let error = Tls::new(
            b"not pem",
            b"not pem",
            None,
            ClientCertificate::None,
            &refusal,
        )
        .err()
        .unwrap();
        assert!(error.contains("--ssl_"), "{error}");
    }
}
