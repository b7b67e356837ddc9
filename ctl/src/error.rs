//! The error kctl reports to the operator: what went wrong (an `anyhow` chain, printed as
//! `error: {:#}`), what to do about it (an optional hint line), and which exit code it maps to.
//!
//! Exit codes are part of kctl's interface (scripts branch on them):
//! 0 success, 1 the operation or a call failed, 2 usage, configuration or spec errors,
//! 130 the operator pressed Ctrl-C (the operation itself goes on in the agent).

use std::fmt;

/// Exit code of a run that failed at the agent or on the way to it.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of a usage, configuration or spec error: nothing was sent, or the agent refused
/// the request as invalid.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// What a command reports when it cannot do its job.
pub struct Error {
    pub code: u8,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure at the agent or on the network (exit code 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> Error {
        Error {
            code: EXIT_FAILED,
            error: error.into(),
            hint: None,
        }
    }

    /// A usage, configuration or spec error (exit code 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Error {
        Error {
            code: EXIT_USAGE,
            error: error.into(),
            hint: None,
        }
    }

    /// Adds (or replaces) the hint line.
    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// Adds context to the error chain, keeping the code and the hint.
    pub fn context(mut self, context: impl fmt::Display + Send + Sync + 'static) -> Error {
        self.error = self.error.context(context);
        self
    }

    /// The lines printed on stderr: `error: ...` and, if any, `hint: ...`.
    pub fn render(&self) -> String {
        let mut out = format!("error: {:#}\n", self.error);
        if let Some(hint) = &self.hint {
            out.push_str(&format!("hint: {hint}\n"));
        }
        out
    }
}

impl From<anyhow::Error> for Error {
    fn from(error: anyhow::Error) -> Error {
        Error::failed(error)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("error", &format!("{:#}", self.error))
            .field("hint", &self.hint)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Error {}

/// Extension for `Result<T, anyhow::Error>` (and other errors) to pick the exit code.
pub trait ResultExt<T> {
    /// Maps the error to a usage/config/spec error (exit code 2).
    fn usage(self) -> Result<T>;
    /// Maps the error to a usage/config/spec error (exit code 2) with a hint.
    fn usage_hint(self, hint: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for std::result::Result<T, E> {
    fn usage(self) -> Result<T> {
        self.map_err(Error::usage)
    }

    fn usage_hint(self, hint: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::usage(e).hint(hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::anyhow;

    #[test]
    fn render_prints_the_chain_and_the_hint() {
        let e = Error::usage(anyhow!("root cause").context("cannot read identity"))
            .hint("consider `kctl ca init`");
        assert_eq!(e.code, EXIT_USAGE);
        assert_eq!(
            e.render(),
            "error: cannot read identity: root cause\nhint: consider `kctl ca init`\n"
        );
        let plain = Error::from(anyhow!("boom"));
        assert_eq!(plain.code, EXIT_FAILED);
        assert_eq!(plain.render(), "error: boom\n");
    }
}
