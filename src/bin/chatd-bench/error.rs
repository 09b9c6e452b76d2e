//! The tool's one error type: a sentence with its context, printed by `main`
//! before a non-zero exit. Nothing here retries or recovers.

use std::fmt;

/// A failure the tool cannot work around, already phrased for the user.
#[derive(Debug)]
pub struct BenchError {
    message: String,
}

pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    pub fn new(message: impl Into<String>) -> BenchError {
        BenchError { message: message.into() }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BenchError {}

/// Adds what was being done to an error, keeping the whole source chain
/// (hyper's and tungstenite's top-level messages alone say too little).
pub trait Context<T> {
    fn context(self, doing: impl fmt::Display) -> Result<T>;
}

impl<T, E: std::error::Error + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, doing: impl fmt::Display) -> Result<T> {
        self.map_err(|error| BenchError::new(format!("{doing}: {}", describe(&error))))
    }
}

/// An error and all its sources, joined with ": ".
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
