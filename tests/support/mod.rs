pub mod media_peer;
pub mod ws;
