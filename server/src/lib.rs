//! holdfast-server: the gRPC services, the RocksDB store, authentication, the audit log and
//! the wiring that runs them. See ARCHITECTURE.md.

pub mod admission;
pub mod app;
pub mod audit;
pub mod audit_intent;
pub mod auth;
pub mod backup;
pub mod cases;
pub mod config;
pub mod convert;
pub mod disk;
pub mod domain;
pub mod error;
pub mod gate;
pub mod http;
pub mod ingest;
pub mod lifecycle;
pub mod otlp;
pub mod page_token;
pub mod program;
pub mod records;
pub mod refusals;
pub mod search;
pub mod server;
pub mod service;
pub mod store;
pub mod sweeper;
pub mod validate;
pub mod workers;

pub use config::Config;
pub use server::{start, RunningServer};
