#![doc = include_str!("../README.md")]

mod args;
mod group;
mod session;
mod task;
mod template;

use std::io::{BufRead, Write};

pub use crate::args::{GroupCommand, TaskCommand};
pub use crate::session::{ENV_HELP, Session};

/// Why a command failed: the message shown after `Error: `, as upstream's
/// CLI shows it (the queue's own message included when the queue refused).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

/// The result of a command.
pub type Result<T> = std::result::Result<T, CliError>;

/// Where a command writes what it prints (standard output for `bbb`) and
/// reads its confirmations from (standard input).
pub struct Io<'a> {
    /// What the command prints.
    pub out: &'a mut dyn Write,
    /// Where `--confirm` and `group cancel` read the answer.
    pub input: &'a mut dyn BufRead,
}

impl Io<'_> {
    /// Writes `text` and a newline.
    fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.out, "{text}").map_err(write_error)
    }

    /// Writes `text` and flushes (a prompt, a chunk of a live log).
    fn part(&mut self, text: &[u8]) -> Result<()> {
        self.out.write_all(text).map_err(write_error)?;
        self.out.flush().map_err(write_error)
    }

    /// Reads one line of input; `None` at the end of the input.
    fn read_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        match self.input.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(line)),
            Err(e) => Err(CliError(format!("cannot read the answer: {e}"))),
        }
    }
}

fn write_error(e: std::io::Error) -> CliError {
    CliError(format!("cannot write the output: {e}"))
}

/// Runs one `bbb task` verb.
pub async fn run_task(session: &Session, command: &TaskCommand, io: &mut Io<'_>) -> Result<()> {
    task::run(session, command, io).await
}

/// Runs one `bbb group` verb.
pub async fn run_group(session: &Session, command: &GroupCommand, io: &mut Io<'_>) -> Result<()> {
    group::run(session, command, io).await
}

/// An error of the official client as one line of text: the queue's message
/// (when it answered with one), then the HTTP status and URL.
fn describe(error: &anyhow::Error) -> String {
    format!("{error:#}")
}
