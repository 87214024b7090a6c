//! Errors of the encoder and the CLI.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong converting or decoding.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a path.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The input is not a valid safetensors file.
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The input is not a valid `.uw` file.
    Format {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        source: uw_format::Error,
    },
    /// The output exists and `--force` was not given.
    OutputExists(PathBuf),
    /// The input is of a kind this command does not take.
    BadInput(String),
    /// Interrupted (Ctrl-C); nothing was left behind.
    Interrupted,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Safetensors { path, message } => {
                write!(
                    f,
                    "{}: not a valid safetensors file: {message}",
                    path.display()
                )
            }
            Error::Format { path, source } => write!(f, "{}: {source}", path.display()),
            Error::OutputExists(p) => {
                write!(
                    f,
                    "{} already exists (use --force to overwrite)",
                    p.display()
                )
            }
            Error::BadInput(m) => f.write_str(m),
            Error::Interrupted => f.write_str("interrupted; no output was written"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Format { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Attaches a path to an I/O result.
pub trait IoContext<T> {
    /// Wraps the error with `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
