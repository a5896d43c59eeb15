//! GET /ws: the signaling socket. (Skeleton.)

use crate::app::AppState;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;

pub async fn upgrade(State(_state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|_socket| async {})
}
