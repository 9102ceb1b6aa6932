//! One integration test binary: every black-box test of the server.

mod auth;
mod auth_socket;
mod chat_rest;
mod chat_socket;
mod chat_support;
mod cluster;
mod cluster_outage;
mod docs;
mod edge;
mod fuzz;
mod kernel;
mod kernel_socket;
mod presence;
mod ratelimit;
mod sessions;
mod storage_mongo;
mod streams;
mod streams_cluster;
mod support;
