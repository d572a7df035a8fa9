//! TLS configuration: certificates, keys and trust, for `tls://` listeners and for the
//! clients. The TLS stream itself — rustls driven by a non-blocking socket — is the TLS
//! variant of the transport layer (`transport/tls_stream.rs`).
//!
//! Every configuration here is built with the *ring* provider: it builds with a C
//! compiler alone (aws-lc-rs needs cmake), and its AES-GCM and ChaCha20 are as fast on
//! x86-64 and aarch64. Files are read when a configuration is made, so a missing or
//! unreadable certificate is reported before anything is bound.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::endpoint::Endpoint;
use crate::transport::{TlsStream, Transport};

pub use rustls;

/// Most bytes of encrypted records rustls may hold for one connection before a write
/// is cut short (its `set_buffer_limit`); the rest waits in the connection's own queue.
pub const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// The crypto provider every configuration here is built with.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// Reads a PEM certificate chain (one or more `CERTIFICATE` blocks).
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read certificate {}: {e}", path.display()),
        )
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad certificate file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "no certificate in {} (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1: the first one in the file).
pub fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let pem = fs::read(path).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot read key {}: {e}", path.display()))
    })?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(format!("no usable private key in {}: {e}", path.display())))
}

/// Reads CA certificates into a trust store.
fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("bad CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// The server side of `tls://` listeners, from PEM files: the certificate chain and its
/// key, and, for mutual TLS, the CA that client certificates must be signed by (a
/// client without one is refused during the handshake).
///
/// Fails, naming the file, when a file is missing or unreadable, holds no certificate
/// or key, or when the key does not belong to the certificate.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> io::Result<Arc<ServerConfig>> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| invalid(format!("client CA {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key_der).map_err(|e| {
        invalid(format!(
            "certificate {} and key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// The client side: which servers to trust and, for mutual TLS, the certificate to
/// show. `ca: None` trusts the system's roots.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> io::Result<Arc<ClientConfig>> {
    let roots = match ca {
        Some(path) => load_roots(path)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                invalid(format!(
                    "certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?,
    };
    Ok(Arc::new(config))
}

fn system_roots() -> io::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no system root certificates found{why}; give --ca FILE"),
        ));
    }
    Ok(roots)
}

/// What a client needs to open TLS connections: the configuration and the name the
/// server's certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// A client that checks the server's certificate against `server_name` (a DNS name
    /// or an IP address).
    pub fn new(config: Arc<ClientConfig>, server_name: &str) -> io::Result<TlsClient> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("server name '{server_name}': {e}")))?;
        Ok(TlsClient {
            config,
            server_name,
        })
    }

    /// The same client with session resumption turned off, so that every connection
    /// makes a full handshake (certificate checks and key exchange included). By
    /// default a client resumes the session it had, as most TLS clients do.
    pub fn without_resumption(mut self) -> TlsClient {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::disabled();
        self.config = Arc::new(config);
        self
    }

    /// Starts the client side of a handshake over a connecting (or connected) socket.
    pub(crate) fn wrap(&self, tcp: TcpStream) -> io::Result<Transport> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| io::Error::other(format!("TLS client: {e}")))?;
        Ok(Transport::Tls(Box::new(TlsStream::new(tcp, conn.into()))))
    }

    /// The TLS client for `endpoint`, built from `options`: `None` for a plain
    /// endpoint. The one way every client — `sockloop send`, `sockloop bench` and the
    /// library's [`send`](crate::client::send) and [`bench`](crate::client::bench) —
    /// turns its TLS settings into a client: without `ca` the system's roots are
    /// trusted, without `server_name` the URL's host is expected in the certificate.
    ///
    /// A TLS option given for a plain endpoint is an error (kind `InvalidInput`): the
    /// caller asked for something that cannot happen. So is a file that cannot be
    /// read or used, naming the file.
    pub fn for_endpoint(
        endpoint: &Endpoint,
        options: &ClientTlsOptions,
    ) -> io::Result<Option<TlsClient>> {
        let Endpoint::Tls(hp) = endpoint else {
            if options.is_empty() {
                return Ok(None);
            }
            return Err(invalid(format!(
                "--ca, --server-name, --cert and --key apply to tls:// URLs only, not {endpoint}"
            )));
        };
        let identity = options
            .identity
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        let config = client_config(options.ca.as_deref(), identity)?;
        let name = options.server_name.as_deref().unwrap_or(hp.host());
        TlsClient::new(config, name).map(Some)
    }
}

/// A client's TLS settings, as a user gives them (`--ca`, `--server-name`, `--cert`,
/// `--key`); [`TlsClient::for_endpoint`] turns them into a client.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClientTlsOptions {
    /// Trust servers whose certificate this CA (PEM) signed; `None`: the system roots.
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry; `None`: the URL's host.
    pub server_name: Option<String>,
    /// A client certificate chain and its key (PEM), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTlsOptions {
    /// True when nothing is set: the defaults.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.server_name.is_none() && self.identity.is_none()
    }
}

/// What a TLS connection negotiated and who its client said it was, for a service that
/// reports it (`who`) or decides by it; see [`Context::tls`](crate::Context::tls).
///
/// It is built only when asked for — the client's certificate is parsed then — so a
/// connection that nobody asks about pays nothing for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version as people write it: `TLSv1.3`, `TLSv1.2`.
    pub version: String,
    /// The cipher suite's IANA name: `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The subject of the certificate the client presented (mutual TLS), in the
    /// string form of RFC 4514 (`CN=alice,O=Example`: most specific first). `None`
    /// when the client presented none, or when its subject could not be parsed.
    pub client_subject: Option<String>,
}

impl TlsInfo {
    /// From a session whose handshake is over; `None` before that, since the version
    /// and the suite are not settled yet.
    pub(crate) fn of(conn: &rustls::Connection) -> Option<TlsInfo> {
        if conn.is_handshaking() {
            return None;
        }
        let version = conn.protocol_version()?;
        let suite = conn.negotiated_cipher_suite()?.suite();
        let version = match version.as_str() {
            // rustls spells them TLSv1_3; people and OpenSSL write TLSv1.3.
            Some(name) => name.replace('_', "."),
            None => format!("{version:?}"),
        };
        let cipher = match suite.as_str() {
            Some(name) => name.to_owned(),
            None => format!("{suite:?}"),
        };
        let client_subject = match conn {
            rustls::Connection::Server(s) => s
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| subject_rfc4514(leaf)),
            rustls::Connection::Client(_) => None,
        };
        Some(TlsInfo {
            version,
            cipher,
            client_subject,
        })
    }
}

/// The subject of a DER certificate in the string form of RFC 4514: the relative
/// names from the last to the first, joined by `,`; several values of one joined by
/// `+`; the usual attribute names (`CN`, `O`, ...) and dotted OIDs for the rest;
/// special characters escaped with `\`; a value that is not a string as `#` and the
/// hex of its DER encoding. `None` when the certificate does not parse.
pub fn subject_rfc4514(der: &[u8]) -> Option<String> {
    use x509_parser::asn1_rs::ToDer;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = String::new();
    let rdns: Vec<_> = cert.subject().iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            match short_name(&oid) {
                Some(name) => out.push_str(name),
                None => out.push_str(&oid),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_rfc4514(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().to_der_vec().ok()? {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    Some(out)
}

/// The attribute names RFC 4514 (section 3) lists; every other type is written as
/// its dotted OID.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes a value as RFC 4514 section 2.4 asks: `"+,;<>\` anywhere, `#` or a space
/// at the start, a space at the end, and NUL.
fn escape_rfc4514(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn a_subject_reads_most_specific_first() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "Example"),
            (rcgen::DnType::CommonName, "alice"),
        ]);
        assert_eq!(subject_rfc4514(&der).as_deref(), Some("CN=alice,O=Example"));
    }

    #[test]
    fn special_characters_in_a_subject_are_escaped() {
        let der = cert_with(&[
            (rcgen::DnType::OrganizationName, "Smith, Jones & Co"),
            (rcgen::DnType::CommonName, " #1+2 "),
        ]);
        assert_eq!(
            subject_rfc4514(&der).as_deref(),
            Some("CN=\\ #1\\+2\\ ,O=Smith\\, Jones & Co")
        );
    }

    #[test]
    fn garbage_is_no_subject() {
        assert_eq!(subject_rfc4514(b"not a certificate"), None);
    }
}
