//! The contract suites of Confab's backends: what every implementation of an sdk trait
//! must do, written once and run by each backend crate's tests, and in-memory fakes for
//! the plugins' tests. Only tests and benches depend on this crate (as a
//! dev-dependency), so none of it is in a production build.

pub mod cluster;
pub mod fakes;
pub mod storage;
