//! `Pii<T>`: a wrapper whose `Debug` and `Display` print `<redacted>`, so patient data (names, IPs,
//! tokens) cannot reach a log line by accident, even through `?` formatting of a larger struct.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Pii<T>(pub T);

impl<T> Pii<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let ip = Pii("192.0.2.7".to_string());
        assert_eq!(format!("{ip} {ip:?}"), "<redacted> <redacted>");
        assert_eq!(ip.expose(), "192.0.2.7");
    }
}
