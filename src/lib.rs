//! The Confab kernel: CLI, configuration, plugin host, HTTP + Socket.IO server, and the
//! storage and cluster backends that plugins reach through `confab-sdk`.

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod storage;
