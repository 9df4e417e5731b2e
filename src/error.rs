//! One error type for the whole crate. Everything a user can cause (a bad config, text or checkpoint, a bad
//! command-line argument, no usable GPU) is an `Error`, never a panic. The wasm boundary turns it into a JS
//! `Error` with the same message and the error's `kind` (see `Error::kind`), plus what a page needs to act on it
//! without reading the message: a config error's `field`, `value` and `rule`, a data error's `reason` and numbers.

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A config value that breaks a rule: names the field, the value and the rule.
    #[error("invalid config: {field} = {value}: {rule}")]
    Config { field: String, value: String, rule: String },
    #[error("config is not valid JSON for this schema: {0}")]
    ConfigParse(String),
    /// Training text that cannot be used, and why.
    #[error("bad data: {0}")]
    Data(#[from] DataIssue),
    /// A checkpoint that is truncated, foreign or does not match.
    #[error("bad checkpoint: {0}")]
    Checkpoint(String),
    /// No usable GPU, or the GPU path refused or failed at something (a buffer over the device's limits, a lost
    /// device, a kernel that did not compile).
    #[error("gpu: {0}")]
    Gpu(String),
    /// Training stopped because the loss or the gradients stopped being finite.
    #[error("training diverged at step {step}: {what}; the last good state is kept")]
    Diverged { step: usize, what: String },
    /// Anything else the caller asked for that cannot be done (an unknown token, an empty prompt, …).
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(String),
}

impl Error {
    /// What kind of error this is, one word per variant (a config that does not parse is a `config` error too):
    /// `config`, `data`, `checkpoint`, `gpu`, `diverged`, `invalid`, `io`. JS receives it as the error's `kind`;
    /// the engine adds `runtime` for a panic, which aborts the instance and is no `Error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } | Error::ConfigParse(_) => "config",
            Error::Data(_) => "data",
            Error::Checkpoint(_) => "checkpoint",
            Error::Gpu(_) => "gpu",
            Error::Diverged { .. } => "diverged",
            Error::Invalid(_) => "invalid",
            Error::Io(_) => "io",
        }
    }
}

/// Why a text cannot be trained on. Each carries the numbers its message needs; JS receives them as properties of
/// the error (`reason`, and e.g. `bytes` and `limit`), so a page can say it in its own words.
#[derive(Debug, Error, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DataIssue {
    #[error("this config trains on text, and no text was given")]
    NoText,
    /// No bytes, or only whitespace.
    #[error("the text is empty")]
    Empty,
    #[error("the text is {bytes} bytes; the limit is {} MiB", .limit >> 20)]
    TooLarge { bytes: usize, limit: usize },
    /// `at`: the length of the valid prefix, in bytes.
    #[error("the text is not valid UTF-8 (byte {at}): is it a binary file?")]
    NotUtf8 { at: usize },
    #[error("the text contains control characters: it looks like a binary file")]
    ControlCharacters,
    #[error("the text has {distinct} distinct characters; a character-level vocabulary holds at most {limit}")]
    TooManyCharacters { distinct: usize, limit: usize },
    /// `need` = 10 × (model.ctx_len + 2): the validation split (the last 10%) must hold a sequence and its target.
    #[error(
        "the text is too short: {chars} characters, and its 10% validation part must hold at least {} \
         (model.ctx_len + 2), so at least {need} characters are needed",
        .need / 10
    )]
    TooShort { chars: usize, need: usize },
    /// A corpus given to continue a checkpoint holds a character the checkpoint's vocabulary lacks.
    #[error("character {character:?} is not in the model's vocabulary")]
    NotInVocabulary { character: char },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_kind() {
        let s = || String::from("x");
        let cases = [
            (Error::Config { field: s(), value: s(), rule: s() }, "config"),
            (Error::ConfigParse(s()), "config"),
            (Error::Data(DataIssue::Empty), "data"),
            (Error::Checkpoint(s()), "checkpoint"),
            (Error::Gpu(s()), "gpu"),
            (Error::Diverged { step: 3, what: s() }, "diverged"),
            (Error::Invalid(s()), "invalid"),
            (Error::Io(s()), "io"),
        ];
        for (e, kind) in &cases {
            assert_eq!(e.kind(), *kind, "{e:?}");
        }
    }

    #[test]
    fn a_data_issue_serialises_as_its_reason_and_numbers() {
        let j = serde_json::to_value(DataIssue::TooLarge { bytes: 40 << 20, limit: 32 << 20 }).unwrap();
        assert_eq!(j, serde_json::json!({"reason": "too_large", "bytes": 40 << 20, "limit": 32 << 20}));
        let j = serde_json::to_value(DataIssue::NotInVocabulary { character: 'é' }).unwrap();
        assert_eq!(j, serde_json::json!({"reason": "not_in_vocabulary", "character": "é"}));
        let e = Error::from(DataIssue::TooLarge { bytes: 5, limit: 32 << 20 });
        assert_eq!(e.to_string(), "bad data: the text is 5 bytes; the limit is 32 MiB");
    }
}
