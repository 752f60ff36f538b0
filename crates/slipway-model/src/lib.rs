//! slipway's typed domain, shared by the CLI, the engines and (later) the server: an
//! environment's validated settings ([`environment`]), releases with typed reasons, outcomes
//! and config ([`release`]), the build manifest that `slipway go build` writes and images and
//! deploys read ([`manifest`]), run records ([`run`]), and the events that `--json` output and
//! the server's streams are made of ([`event`]). No IO here beyond reading the clock.

pub mod access;
pub mod environment;
pub mod event;
pub mod manifest;
pub mod names;
pub mod release;
pub mod run;
pub mod sections;
pub mod time;

pub use release::{Actor, Artifact, Release, ReleaseConfig, ReleaseId, ReleaseReason, ReleaseStatus};
