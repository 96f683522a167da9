//! `[http]`: the operations listener (`/healthz`, `/readyz`, `/metrics`). The key keeps its name
//! for compatibility; it is not an API listener.

use std::net::SocketAddr;

use serde::Deserialize;

use super::rejected;

/// The health/metrics listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address for `/healthz`, `/readyz`, `/metrics`; empty (`None`) disables the listener.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let listen = String::deserialize(d)?;
    if listen.trim().is_empty() {
        return Ok(None);
    }
    listen.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(rejected(
            "http.listen",
            &listen,
            "expected ip:port, e.g. 127.0.0.1:9090, or empty to disable",
        ))
    })
}
