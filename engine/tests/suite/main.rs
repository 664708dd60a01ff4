//! The engine's integration suite: one binary, one module per topic. Every copy test runs the
//! same body over both backends and every mode the backend offers.

mod cancel;
mod children;
mod common;
mod copy;
mod limits;
mod net;
mod tree;
