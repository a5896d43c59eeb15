//! `fake-chime`: the fake Chime SDK Meetings service as a process, for the browser test. Listens on
//! 127.0.0.1 (port from the first argument, else OS-chosen), prints `listening on http://127.0.0.1:PORT`, and
//! runs until stdin closes or it is killed. Requests must be signed with `FAKE_CHIME_ACCESS_KEY_ID` /
//! `FAKE_CHIME_SECRET_ACCESS_KEY` for `FAKE_CHIME_REGION` (defaults: `fake_chime::Credentials::default()`).
//! Control: `POST /_fake/fail {"operation"?, "failure", "times"?}`, `POST /_fake/recover`, `GET /_fake/state`.

use fake_chime::{Credentials, FakeChime};
use std::io::Write;

#[tokio::main]
async fn main() {
    let defaults = Credentials::default();
    let env = |name: &str, default: String| std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or(default);
    let credentials = Credentials {
        access_key_id: env("FAKE_CHIME_ACCESS_KEY_ID", defaults.access_key_id),
        secret_access_key: env("FAKE_CHIME_SECRET_ACCESS_KEY", defaults.secret_access_key),
        region: env("FAKE_CHIME_REGION", defaults.region),
    };
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let fake = FakeChime::start_on(([127, 0, 0, 1], port).into(), credentials).await;
    println!("listening on {}", fake.url());
    let _ = std::io::stdout().flush();
    // Stop when the parent goes away (its end of our stdin closes) or on a signal.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
