//! slipway's one place for the operating system, so every crate stops children, handles
//! Ctrl-C and names the user the same way: process groups ([`process`]), the records that let a
//! new process kill what a killed one left ([`process::Records`]), interrupts ([`signals`]),
//! who runs us on which machine ([`whoami`]), private directories ([`private`]), our resource limits ([`limits`]) and what sockets hold ([`socket`]). The only crate besides the agent's
//! container code that makes raw system calls.

pub mod limits;
pub mod private;
pub mod process;
pub mod signals;
pub mod socket;
pub mod whoami;
