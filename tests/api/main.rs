//! One integration test binary: every black-box test of the server.

mod support;
mod storage;
mod kernel;
mod auth;
mod auth_socket;
mod chat_support;
mod chat_rest;
mod chat_socket;
mod kernel_socket;
mod docs;
mod presence;
mod cluster;
