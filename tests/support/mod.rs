pub mod media_peer;
pub mod raw;
pub mod ws;
