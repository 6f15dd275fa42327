//! Test support shared by the workspace's tests: a real PostgreSQL database
//! per test, and a real service process on a free port.
pub mod postgres;
pub mod service;
