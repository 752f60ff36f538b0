//! What slipway's tests and benchmarks share, kept out of the release binary: a PostgreSQL
//! cluster each test process starts for itself ([`postgres`]) and the HTTP load generator
//! ([`load`], also the `slipway-load` binary the benchmarks run).

pub mod load;
pub mod postgres;
