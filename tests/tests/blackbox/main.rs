//! The black-box tests: the real server binary on a loopback port, driven by the real
//! client, its HTTP API and a browser. One test binary, one module per subject: each test
//! binary links the whole server, so one binary instead of sixteen saves minutes of every
//! build. Run one subject with a filter, e.g. `cargo test --release --test blackbox --
//! retention::`.
//!
//! tests/cluster.rs is its own binary: it restarts PostgreSQL, which the tests of this one
//! share when they run on cluster nodes (HOLDFAST_TEST_BACKEND=cluster).

#[path = "../common/mod.rs"]
mod common;

mod auth_audit;
mod backup;
mod cli;
mod console;
mod discovery;
mod disk_full;
mod durability;
mod erasure;
mod fault_loop;
mod hostile_search;
mod http_api;
mod interactions;
mod limits;
mod retention;
mod sweeper;
mod tls_and_ops;
