//! HTTP surface.
pub mod ws;
