pub mod media_peer;
pub mod postgres;
pub mod raw;
pub mod ws;
