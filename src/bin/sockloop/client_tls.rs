//! The TLS options of the clients, `send` and `bench`: which CA to trust, the server
//! name to expect and a client certificate for mutual TLS.

use std::path::PathBuf;

use clap::Args;

use sockloop::Endpoint;
use sockloop::tls::{self, TlsClient};

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
        let Endpoint::Tls(hp) = url else {
            if self.ca.is_some()
                || self.server_name.is_some()
                || self.cert.is_some()
                || self.key.is_some()
            {
                return Err(format!(
                    "--ca, --server-name, --cert and --key apply to tls:// URLs only, not {url}"
                ));
            }
            return Ok(None);
        };
        let identity = self.cert.as_deref().zip(self.key.as_deref());
        let config = tls::client_config(self.ca.as_deref(), identity).map_err(|e| e.to_string())?;
        let name = self.server_name.as_deref().unwrap_or(hp.host());
        TlsClient::new(config, name)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
