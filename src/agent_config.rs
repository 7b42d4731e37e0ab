//! The `[agent]` section of esm.toml: the agent socket (SDS for Envoy) and the admin socket
//! that `esm entry` talks to.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_TOML: &str = r#"
[agent]
# SDS for Envoy (and SPIFFE libraries) on a Unix socket, relative to this directory. Any
# local process may connect (mode 0666); its peer credentials decide what it gets, through
# the registration entries (`esm entry create`). Empty: off.
socket = "agent.sock"
# The admin API that `esm entry` uses: a Unix socket only this user can open (mode 0600).
admin_socket = "admin.sock"
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAgent {
    socket: String,
    admin_socket: String,
}

impl Default for RawAgent {
    fn default() -> Self {
        Self {
            socket: "agent.sock".into(),
            admin_socket: "admin.sock".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub socket: Option<PathBuf>,
    pub admin_socket: PathBuf,
}

pub fn parse(raw: RawAgent, data_dir: &Path) -> anyhow::Result<AgentConfig> {
    if raw.admin_socket.is_empty() {
        anyhow::bail!("agent.admin_socket is empty");
    }
    Ok(AgentConfig {
        socket: (!raw.socket.is_empty()).then(|| data_dir.join(&raw.socket)),
        admin_socket: data_dir.join(&raw.admin_socket),
    })
}
