//! colloquy: the backend of an embeddable customer-support chat widget.
//!
//! This crate is the service around the core (`colloquy-actors`): configuration, the HTTP
//! adapters, the PostgreSQL store and start-up. `main.rs` only wires these together, and the
//! integration tests build the same [`startup::Application`].

pub mod blocks;
pub mod cluster;
pub mod config;
pub mod http;
pub mod mailer;
pub mod startup;
pub mod store;
pub mod teams;
pub mod telemetry;
