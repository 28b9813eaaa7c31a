//! The rustls client configuration for [`TlsSettings`]: which server certificates are accepted
//! (none checked, chain only, chain and host name) and the client certificate. Files are
//! checked as libpq checks them; every error names the file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{ConnectionError, RootCert, SslMode, TlsSettings};

/// The client configuration; reads the root certificates, the client certificate and its key.
pub fn client_config(settings: &TlsSettings) -> Result<ClientConfig, ConnectionError> {
    let provider = Arc::new(ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match &settings.root_cert {
        None => Arc::new(AnyCertificate(provider.clone())),
        Some(root) => {
            let roots = Arc::new(root_store(root)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|error| ConnectionError::File {
                    kind: "sslrootcert",
                    path: root_path(root).into(),
                    reason: error.to_string(),
                })?;
            match settings.mode {
                SslMode::VerifyFull => webpki,
                _ => Arc::new(ChainOnly(webpki)),
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConnectionError::TlsSetup(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &settings.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates(cert, "sslcert")?;
            let key = private_key(key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| ConnectionError::File {
                    kind: "sslkey",
                    path: cert.clone(),
                    reason: format!("does not fit the certificate: {error}"),
                })?
        }
    };
    // PostgreSQL 17's direct TLS (sslnegotiation=direct) insists on this ALPN name; older
    // servers ignore it. libpq sends it too.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn root_path(root: &RootCert) -> &str {
    match root {
        RootCert::System => "system",
        RootCert::File(path) => path.to_str().unwrap_or("sslrootcert"),
    }
}

fn root_store(root: &RootCert) -> Result<RootCertStore, ConnectionError> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ConnectionError::File {
                    kind: "sslrootcert",
                    path: "system".into(),
                    reason: "the system's trust store holds no certificates (is ca-certificates \
                             installed?)"
                        .to_owned(),
                });
            }
        }
        RootCert::File(path) => {
            for cert in certificates(path, "sslrootcert")? {
                store.add(cert).map_err(|error| ConnectionError::File {
                    kind: "sslrootcert",
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            }
        }
    }
    Ok(store)
}

/// The certificates in a PEM file; at least one.
fn certificates(
    path: &Path,
    kind: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ConnectionError> {
    let file_error = |reason: String| ConnectionError::File {
        kind,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|error| file_error(format!("cannot read: {error}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(format!("is not a PEM certificate file: {error}")))?;
    if certs.is_empty() {
        return Err(file_error("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The client key, refused as libpq refuses it when others may read it: a key owned by the
/// user may be 0600 or less, one owned by root 0640 or less (so that a group can share it).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectionError> {
    let file_error = |reason: String| ConnectionError::File {
        kind: "sslkey",
        path: path.to_owned(),
        reason,
    };
    let metadata =
        std::fs::metadata(path).map_err(|error| file_error(format!("cannot read: {error}")))?;
    if !metadata.is_file() {
        return Err(file_error("is not a plain file".to_owned()));
    }
    let mode = metadata.mode() & 0o7777;
    let too_open = if metadata.uid() == nix::unistd::geteuid().as_raw() {
        mode & 0o077 != 0
    } else if metadata.uid() == 0 {
        mode & 0o037 != 0
    } else {
        false
    };
    if too_open {
        return Err(file_error(format!(
            "has group or world access (mode {mode:04o}); the key must be u=rw (0600) or less \
             when owned by the user, or u=rw,g=r (0640) or less when owned by root"
        )));
    }
    let bytes = std::fs::read(path).map_err(|error| file_error(format!("cannot read: {error}")))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|error| file_error(format!("is not a PEM private key: {error}")))
}

/// `require` (and `prefer`, `allow`) without a root certificate: encrypts, checks nothing
/// about who the server is, but still checks that the server holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a root certificate): the chain must lead to a trusted CA;
/// the host name is not compared. webpki checks the chain before the name, so a name
/// mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
