//! Tells systemd (`Type=notify`) what the agent is doing: READY, STATUS, WATCHDOG, STOPPING.
//!
//! A thin wrapper around the `sd-notify` crate. Without `NOTIFY_SOCKET` every call does nothing.
//! The environment is left as it is, so tests and child processes see the same variables.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Longest STATUS text sent; `systemctl status` shows one line.
const MAX_STATUS_CHARS: usize = 200;

/// The agent's line to the service manager. Remembers what it sent, so that READY goes out once
/// and STATUS only when its text changes.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    ready_sent: bool,
    last_status: Option<String>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`, when set) from the environment.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        Notifier {
            enabled,
            watchdog: if enabled {
                sd_notify::watchdog_enabled()
            } else {
                None
            },
            ready_sent: false,
            last_status: None,
        }
    }

    /// The watchdog period the service manager expects pings within (`WATCHDOG_USEC`), if any.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.filter(|d| !d.is_zero())
    }

    /// Sends READY=1, the first time only.
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    /// Sends STATUS= when `text` differs from the last one sent. Made one line and shortened.
    pub fn status(&mut self, text: &str) {
        let text = one_line(text, MAX_STATUS_CHARS);
        if self.last_status.as_deref() != Some(text.as_str()) {
            self.send(&[NotifyState::Status(&text)]);
            self.last_status = Some(text);
        }
    }

    /// Sends WATCHDOG=1.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Sends STOPPING=1.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&self, state: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        // The service manager going away must not stop the agent; systemd will notice anyway.
        if let Err(error) = sd_notify::notify(state) {
            debug!(%error, "cannot notify the service manager");
        }
    }
}

/// `text` on one line (line breaks become spaces), at most `max` characters, ending in `…` when
/// shortened.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let mut short: String = flat.chars().take(max - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn status_text_is_one_short_line() {
        assert_eq!(one_line("a\nb\r\n c", 10), "a b c");
        assert_eq!(one_line("abcdefghijk", 5), "abcd…");
        assert_eq!(one_line("äöü", 3), "äöü");
    }
}
