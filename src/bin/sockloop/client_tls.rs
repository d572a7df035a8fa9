//! The TLS options of the clients, `send` and `bench`: which CA to trust, the server
//! name to expect and a client certificate for mutual TLS.

use std::path::PathBuf;

use clap::Args;

use sockloop::Endpoint;
use sockloop::tls::{ClientTlsOptions, TlsClient};

/// How the client side speaks TLS (`send` and `bench` to a tls:// URL).
#[derive(Args, Debug)]
pub(crate) struct ClientTlsArgs {
    /// TLS: trust servers whose certificate this CA (PEM) signed. Default: the
    /// system's root certificates.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// TLS: the name the server's certificate must carry. Default: the URL's host.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,

    /// TLS: client certificate chain (PEM), for servers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// TLS: the client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The TLS client for `url`: `Ok(None)` for a plain URL. A TLS option given for a
    /// plain URL, or a file that cannot be used, is an error.
    pub(crate) fn client(&self, url: &Endpoint) -> Result<Option<TlsClient>, String> {
        let mut options = ClientTlsOptions::default();
        options.ca = self.ca.clone();
        options.server_name = self.server_name.clone();
        options.identity = self.cert.clone().zip(self.key.clone());
        TlsClient::for_endpoint(url, &options).map_err(|e| e.to_string())
    }
}
