//! `bbb login hash-password`: the hash to put in `[[login.users]]`.

use crate::cli::LoginCommand;
use anyhow::Context;
use std::io::BufRead;

/// Runs a `bbb login` command.
pub fn run(command: LoginCommand) -> anyhow::Result<()> {
    match command {
        LoginCommand::HashPassword => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let password = line.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!(
                "{}",
                bbb_login::hash_password(password).map_err(anyhow::Error::msg)?
            );
            Ok(())
        }
    }
}
