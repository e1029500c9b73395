//! Pure domain model: wire types, Go durations, capability rules, naming, kubeconfig documents. No I/O.

pub mod duration;
pub mod kubeconfig;
pub mod naming;
pub mod rules;
pub mod wire;
