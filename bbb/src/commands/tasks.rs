//! `bbb task` and `bbb group`: upstream's `taskcluster task` and
//! `taskcluster group` verbs ([`bbb_taskcli`]), credentials from the
//! `TASKCLUSTER_*` variables. A failure is printed as `Error: …` on
//! standard error and the process exits with status 1, as upstream's.

use std::io::Write;

use bbb_taskcli::{CliError, GroupCommand, Io, Session, TaskCommand};

/// Runs a `bbb task` verb.
pub async fn task(command: &TaskCommand) -> anyhow::Result<()> {
    let result = match Session::from_env() {
        Ok(session) => {
            let (mut out, mut input) = (std::io::stdout().lock(), std::io::stdin().lock());
            let mut io = Io {
                out: &mut out,
                input: &mut input,
            };
            bbb_taskcli::run_task(&session, command, &mut io).await
        }
        Err(e) => Err(e),
    };
    finish(result)
}

/// Runs a `bbb group` verb.
pub async fn group(command: &GroupCommand) -> anyhow::Result<()> {
    let result = match Session::from_env() {
        Ok(session) => {
            let (mut out, mut input) = (std::io::stdout().lock(), std::io::stdin().lock());
            let mut io = Io {
                out: &mut out,
                input: &mut input,
            };
            bbb_taskcli::run_group(&session, command, &mut io).await
        }
        Err(e) => Err(e),
    };
    finish(result)
}

fn finish(result: Result<(), CliError>) -> anyhow::Result<()> {
    if let Err(e) = result {
        let _ = std::io::stdout().flush();
        eprintln!("Error: {e}");
        std::process::exit(1);
    }
    Ok(())
}
