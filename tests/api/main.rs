//! One integration test binary: every black-box test of the server.

mod support;
mod storage;
mod kernel;
