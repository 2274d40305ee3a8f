//! `bbb bench`: runs a benchmark program (crate `bbb-bench`), which prints
//! its figures.

use crate::cli::{BenchCommand, BenchMaster};

/// Runs the benchmark `which` names.
pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Queue {
            backends,
            concurrency,
            seconds,
            wake_samples,
            no_graph,
            commit_batch,
            no_compare,
        } => {
            let opts = bbb_bench::queue::Options {
                backends: backends.iter().map(|b| b.name().to_owned()).collect(),
                concurrency,
                seconds,
                wake_samples,
                graph: !no_graph,
                commit_batch,
                compare_unbatched: !no_compare,
            };
            bbb_bench::queue::run(opts).await
        }
        BenchCommand::Bridge {
            master,
            mysql_url,
            state_db,
            rates,
            tasks,
            rows,
        } => {
            let opts = bbb_bench::bridge::Options {
                master: match master {
                    BenchMaster::SchedulerDb => bbb_bench::bridge::MasterKind::SchedulerDb,
                    BenchMaster::Sandbox => bbb_bench::bridge::MasterKind::Sandbox,
                },
                mysql_url,
                state_db,
                rates,
                tasks_per_rate: tasks,
                reflector_rows: rows,
                ..bbb_bench::bridge::Options::default()
            };
            bbb_bench::bridge::run(opts).await
        }
    }
}
