//! Certificates made at run time: a test CA, a server certificate for `localhost`,
//! `127.0.0.1` and `::1`, a client certificate, and an unrelated CA. Nothing is
//! committed to the repository; every run has fresh keys.

use std::net::TcpStream;
use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files in a directory.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here, and a client certificate it signed.
    pub other_ca: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA cert")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("client"),
    );
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// Generates everything and writes it under `dir`.
    pub fn new(dir: &Path) -> Pki {
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write PEM");
            p
        };
        let root = ca("sockloop test CA");
        let other = ca("some other CA");
        let (sc, sk) = leaf(
            &root,
            &["localhost", "127.0.0.1", "::1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (cc, ck) = leaf(&root, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let (xc, xk) = leaf(
            &other,
            &["stranger.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        Pki {
            ca: write("ca.pem", &root.pem()),
            server_cert: write("server.pem", &sc),
            server_key: write("server.key", &sk),
            client_cert: write("client.pem", &cc),
            client_key: write("client.key", &ck),
            other_ca: write("other-ca.pem", &other.pem()),
            stranger_cert: write("stranger.pem", &xc),
            stranger_key: write("stranger.key", &xk),
        }
    }

    /// A rustls client session for `localhost` that trusts this CA and, when
    /// `identity`, shows the client certificate: the client side of every TLS test
    /// that drives the session itself.
    pub fn client_session(&self, identity: bool) -> ClientConnection {
        let id = identity.then_some((self.client_cert.as_path(), self.client_key.as_path()));
        let config = sockloop::tls::client_config(Some(&self.ca), id).expect("client TLS config");
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
            .expect("client connection")
    }

    /// [`Pki::client_session`] over `tcp`, as a blocking stream (the handshake runs on
    /// first use).
    pub fn client_stream(
        &self,
        identity: bool,
        tcp: TcpStream,
    ) -> StreamOwned<ClientConnection, TcpStream> {
        StreamOwned::new(self.client_session(identity), tcp)
    }
}
