pub mod media_peer;
