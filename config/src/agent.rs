//! The `[agent]` section of esm.toml: the agent socket (SDS for Envoy) and the admin socket
//! that `esm entry` talks to.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

pub const DEFAULT_TOML: &str = r#"
[agent]
# SDS for Envoy (and SPIFFE libraries) on a Unix socket, relative to this directory. Any
# local process may connect (mode 0666); its peer credentials decide what it gets, through
# the registration entries (`esm entry create`). Empty: off.
socket = "agent.sock"
# Also serve SDS and the Workload API over mutual TLS on this TCP address, e.g.
# "0.0.0.0:9192", for Envoys on other hosts. Callers present an X509-SVID of this trust
# domain; entries grant them with the selector spiffe:<their SPIFFE ID>. esm's own
# certificate there is spiffe://<trust domain>/esm/agent. Empty: off.
listen = ""
# The admin API that `esm entry` uses: a Unix socket only this user can open (mode 0600).
admin_socket = "admin.sock"
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAgent {
    socket: String,
    listen: String,
    admin_socket: String,
}

impl Default for RawAgent {
    fn default() -> Self {
        Self {
            socket: "agent.sock".into(),
            listen: String::new(),
            admin_socket: "admin.sock".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub admin_socket: PathBuf,
}

pub(crate) fn parse(raw: RawAgent, data_dir: &Path) -> crate::Result<AgentConfig> {
    if raw.admin_socket.is_empty() {
        return Err(Error::rule(
            "agent.admin_socket",
            "agent.admin_socket is empty",
        ));
    }
    let listen = crate::optional_addr("agent.listen", &raw.listen)?;
    Ok(AgentConfig {
        socket: (!raw.socket.is_empty()).then(|| data_dir.join(&raw.socket)),
        listen,
        admin_socket: data_dir.join(&raw.admin_socket),
    })
}
