//! Tracing setup: `RUST_LOG` wins over `log.level`; `--log-format` over `log.format`.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

pub fn init(config: &LogConfig, format_flag: Option<&str>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let result = match format_flag.unwrap_or(&config.format) {
        "json" => builder.json().flatten_event(false).with_current_span(true).try_init(),
        _ => builder.try_init(),
    };
    // A second init (tests in one process) is harmless; the first subscriber stays.
    drop(result);
}
