//! One error type for the whole crate. Everything a user can cause (a bad config, text or checkpoint, a bad
//! command-line argument) is an `Error`, never a panic; the wasm boundary turns it into a JS `Error` with the
//! same message.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A config value that breaks a rule: names the field, the value and the rule.
    #[error("invalid config: {field} = {value}: {rule}")]
    Config { field: String, value: String, rule: String },
    #[error("config is not valid JSON for this schema: {0}")]
    ConfigParse(String),
    /// Training text or task data that cannot be used.
    #[error("bad data: {0}")]
    Data(String),
    /// A checkpoint that is truncated, foreign or does not match.
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
    /// Training stopped because the loss or the gradients stopped being finite.
    #[error("training diverged at step {step}: {what}; the last good state is kept")]
    Diverged { step: usize, what: String },
    /// Something the GPU refused or failed at (limits, a lost device, no adapter).
    #[error("gpu: {0}")]
    Gpu(String),
    /// Anything else the caller asked for that cannot be done (an unknown token, an empty prompt, …).
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
