//! slipway's wire types and typed clients. The agent's API is JSON over HTTP/1.1 on a Unix
//! socket (`<data-dir>/agent.sock`); the CLI and the deploy engine use [`AgentClient`]. The
//! server's REST API and job protocol are in [`server`]. This crate holds no logic: the types
//! say what crosses the boundary, nothing decides here.

mod agent;
mod client;
pub mod server;

pub use agent::*;
pub use client::{AgentClient, ApiError};

/// Where an agent listens: `<data-dir>/agent.sock`.
pub fn socket_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("agent.sock")
}

/// Where a server reaches an agent connected to it (`slipway agent --server URL --name N`):
/// `<server data-dir>/agents/<name>.sock`, the server's end of the agent's tunnel, there
/// while the agent is connected.
pub fn connected_socket(data_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    data_dir.join("agents").join(format!("{name}.sock"))
}
