//! Runs the bridge benchmark (`bbb_bench::bridge`) with options from the
//! command line:
//!
//! ```text
//! cargo run --release -p bbb-bench --example bridge -- \
//!     [--master schedulerdb|sandbox] [--mysql-url URL] [--state-db postgres://...] \
//!     [--rates 50,100,200,400] [--tasks N] [--listener-concurrency N] \
//!     [--rows N] [--load-concurrency N]
//! ```

use anyhow::{Context, bail};
use bbb_bench::bridge::{MasterKind, Options};

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut opts = Options::default();
    let mut args = args;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--master" => {
                opts.master = match value()?.as_str() {
                    "schedulerdb" => MasterKind::SchedulerDb,
                    "sandbox" => MasterKind::Sandbox,
                    other => bail!("unknown master kind {other:?} (schedulerdb or sandbox)"),
                }
            }
            "--mysql-url" => opts.mysql_url = value()?,
            "--state-db" => opts.state_db = Some(value()?),
            "--rates" => {
                opts.rates = value()?
                    .split(',')
                    .map(|r| r.trim().parse().context("--rates"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--tasks" => opts.tasks_per_rate = value()?.parse().context("--tasks")?,
            "--listener-concurrency" => {
                opts.listener_concurrency = value()?.parse().context("--listener-concurrency")?
            }
            "--rows" => opts.reflector_rows = value()?.parse().context("--rows")?,
            "--load-concurrency" => {
                opts.load_concurrency = value()?.parse().context("--load-concurrency")?
            }
            "-h" | "--help" => {
                println!(
                    "options: --master schedulerdb|sandbox, --mysql-url URL, --state-db postgres://..., \
                     --rates 50,100,200,400, --tasks N, --listener-concurrency N, --rows N, --load-concurrency N"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?} (try --help)"),
        }
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = parse(std::env::args().skip(1))?;
    bbb_bench::bridge::run(opts).await
}
