//! A real SMTP server for tests: `tests/support/smtp_sink.py` (aiosmtpd) run by the venv that
//! `scripts/smtp-sink-setup` makes at `target/smtp-venv` (run here once per test process if needed). Each
//! message it accepts is a file; `messages()` parses them back with `mail-parser`.
//!
//! Recipients starting with `reject` get 550, with `defer` 451. With `CI=true` a sink that cannot be set up
//! fails the test; locally `start_or_skip` returns None and says why, so a machine without Python still runs
//! the rest.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How the sink behaves.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Wait this long before answering the end of DATA.
    pub data_delay: Option<Duration>,
    /// Offer STARTTLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct ParsedMail {
    /// The envelope: `MAIL FROM` and `RCPT TO`.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// Header fields, decoded.
    pub subject: Option<String>,
    pub from_name: Option<String>,
    pub from_address: Option<String>,
    pub to_address: Option<String>,
    /// The `Message-ID` header as written, angle brackets included.
    pub message_id: Option<String>,
    /// The `Date` header, as RFC 3339.
    pub date: Option<String>,
    /// The first text part, transfer encoding undone.
    pub body: String,
    /// The message as it came over the wire.
    pub raw: Vec<u8>,
}

pub struct SmtpSink {
    port: u16,
    dir: tempfile::TempDir,
    options: SinkOptions,
    child: Option<Child>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The venv's python, after running the setup script once in this process. Err: why there is none.
fn python() -> Result<&'static Path, &'static str> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let script = Path::new(ROOT).join("scripts/smtp-sink-setup");
        let status = Command::new("bash").arg(&script).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(format!("{} failed ({s})", script.display())),
            Err(e) => return Err(format!("{} could not run: {e}", script.display())),
        }
        let python = Path::new(ROOT).join("target/smtp-venv/bin/python");
        if python.exists() { Ok(python) } else { Err(format!("{} is missing after setup", python.display())) }
    });
    found.as_deref().map_err(String::as_str)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl SmtpSink {
    /// A running sink, or a panic if it cannot be had.
    pub async fn start() -> Self {
        Self::start_with(SinkOptions::default()).await
    }

    pub async fn start_with(options: SinkOptions) -> Self {
        match python() {
            Ok(_) => {}
            Err(why) => panic!("the test SMTP server is unavailable: {why}"),
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut sink = Self { port: free_port(), dir, options, child: None };
        sink.spawn().await;
        sink
    }

    /// A running sink; or, outside CI, None with a message when Python or aiosmtpd cannot be set up.
    pub async fn start_or_skip() -> Option<Self> {
        Self::start_with_or_skip(SinkOptions::default()).await
    }

    pub async fn start_with_or_skip(options: SinkOptions) -> Option<Self> {
        if let Err(why) = python() {
            if in_ci() {
                panic!("the test SMTP server is unavailable (CI=true makes this a failure): {why}");
            }
            eprintln!("SKIPPED: the test SMTP server is unavailable: {why}");
            return None;
        }
        Some(Self::start_with(options).await)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT` (add `?tls=required` for STARTTLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn spawn(&mut self) {
        let python = python().expect("checked at start");
        let mut cmd = Command::new(python);
        cmd.arg(Path::new(ROOT).join("tests/support/smtp_sink.py"))
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(delay) = self.options.data_delay {
            cmd.args(["--data-delay", &delay.as_secs_f64().to_string()]);
        }
        if let Some((cert, key)) = &self.options.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        // Its stdin stays open while we hold the child: the sink exits when it closes, so a test process that
        // dies does not leave it behind.
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("the sink starts");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the SMTP sink exited before listening on {} ({status})", self.port);
            }
            assert!(Instant::now() < deadline, "the SMTP sink did not listen on {} within 15 s", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Kills the server (its port then refuses connections); messages already written stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port and directory, behaving as `options` say.
    pub async fn restart_with(&mut self, options: SinkOptions) {
        self.options = options;
        self.restart().await;
    }

    /// Stops the server and starts it again on the same port and directory.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<ParsedMail> {
        let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(self.dir.path())
            .expect("the sink's directory")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n = path.file_name()?.to_str()?.strip_suffix(".eml")?.parse().ok()?;
                Some((n, path))
            })
            .collect();
        numbered.sort();
        numbered.into_iter().map(|(_, path)| parse(&path)).collect()
    }

    /// Waits until at least `n` messages arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ParsedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(Instant::now() < deadline, "{} of {n} messages arrived within {timeout:?}", messages.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn parse(eml: &Path) -> ParsedMail {
    let raw = std::fs::read(eml).expect("the message file");
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eml.with_extension("json")).expect("the envelope file")).expect("JSON");
    let message = mail_parser::MessageParser::default().parse(&raw).expect("a parsable message");
    let addr = |a: Option<&mail_parser::Address>| {
        a.and_then(|a| a.first()).map(|a| (a.name().map(str::to_owned), a.address().map(str::to_owned)))
    };
    let (from_name, from_address) = addr(message.from()).unwrap_or_default();
    let to_address = addr(message.to()).and_then(|(_, a)| a);
    ParsedMail {
        mail_from: envelope["mail_from"].as_str().unwrap_or_default().to_owned(),
        rcpt_to: envelope["rcpt_tos"].as_array().into_iter().flatten().filter_map(|v| Some(v.as_str()?.to_owned())).collect(),
        subject: message.subject().map(str::to_owned),
        from_name,
        from_address,
        to_address,
        message_id: message.header_raw("Message-ID").map(|v| v.trim().to_owned()),
        date: message.date().map(|d| d.to_rfc3339()),
        body: message.body_text(0).map(|b| b.into_owned()).unwrap_or_default(),
        raw: raw.clone(),
    }
}
