//! Where the engine's events go: a sink the caller gives (the CLI renders them, the server will
//! stream them), wrapped with the environment they are about.

use std::sync::Arc;

use slipway_model::event::{DeployEvent, Stamped};

/// Receives every event of a deploy, in order. Called from the engine's tasks: keep it quick.
pub type Sink = Arc<dyn Fn(Stamped<DeployEvent>) + Send + Sync>;

/// The events of one environment's deploy.
#[derive(Clone)]
pub struct Events {
    sink: Sink,
    environment: String,
}

impl Events {
    pub fn new(sink: Sink, environment: &str) -> Events {
        Events { sink, environment: environment.to_string() }
    }

    /// A sink that drops everything (reads, tests).
    pub fn discard(environment: &str) -> Events {
        Events::new(Arc::new(|_| {}), environment)
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    pub fn emit(&self, event: DeployEvent) {
        (self.sink)(Stamped::now(event));
    }

    /// A line for people about what the engine does.
    pub fn say(&self, message: impl Into<String>) {
        self.emit(DeployEvent::Progress { environment: self.environment.clone(), message: message.into() });
    }
}
