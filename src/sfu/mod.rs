//! The SFU: moves RTP/RTCP between peer connections. Knows nothing of HTTP, the database, auth or Chime.

mod config;
pub use config::SfuConfig;
