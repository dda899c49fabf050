//! Black-box tests of holdfast live in `tests/tests/`: each starts the real `holdfast-server`
//! binary on a free loopback port with its own data directory, and drives it with the real
//! client library and the real `holdfast` CLI. Shared helpers are in `tests/tests/common`.
