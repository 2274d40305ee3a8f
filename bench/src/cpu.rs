//! CPU time used by this process and by the local PostgreSQL server, read
//! from `/proc` (Linux). It turns a throughput figure into a cost per
//! operation, which the machine's speed drift does not move much.

use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// CPU time used so far.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// This process: for the queue benchmark, the queue server and its client.
    pub own: Duration,
    /// Every process named `postgres` (the local server and its backends),
    /// by pid, in ticks: a backend that exits between two samples takes its
    /// time with it, so differences are taken per process.
    postgres: std::collections::HashMap<u32, u64>,
}

impl CpuSample {
    /// Reads the counters now. Both stay zero where `/proc` is missing.
    pub fn now() -> CpuSample {
        let own = ticks_of("/proc/self/stat").map(|(_, t)| t).unwrap_or(0);
        let mut postgres = std::collections::HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some((comm, t)) = ticks_of(&format!("/proc/{pid}/stat"))
                    && comm == "postgres"
                {
                    postgres.insert(pid, t);
                }
            }
        }
        CpuSample {
            own: ticks(own),
            postgres,
        }
    }

    /// CPU used since `earlier`: (this process, PostgreSQL). PostgreSQL
    /// processes that exited in between are not counted.
    pub fn since(&self, earlier: &CpuSample) -> (Duration, Duration) {
        let postgres = self
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(earlier.postgres.get(pid).copied().unwrap_or(0)))
            .sum();
        (self.own.saturating_sub(earlier.own), ticks(postgres))
    }
}

/// Microseconds of CPU per operation, for a `(this process, PostgreSQL)` pair.
pub fn per_op_us(used: (Duration, Duration), ops: f64) -> (f64, f64) {
    let ops = ops.max(1.0);
    (
        used.0.as_secs_f64() * 1e6 / ops,
        used.1.as_secs_f64() * 1e6 / ops,
    )
}

/// CPU time the calling thread has used (zero where `/proc` is missing).
pub fn thread_cpu() -> Duration {
    ticks(
        ticks_of("/proc/thread-self/stat")
            .map(|(_, t)| t)
            .unwrap_or(0),
    )
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / TICKS_PER_SECOND)
}

/// `(comm, utime + stime)` from a `/proc/<pid>/stat` file.
fn ticks_of(path: &str) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        let before = CpuSample::now();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let (own, _) = CpuSample::now().since(&before);
        assert!(own > Duration::ZERO, "{own:?}");
    }

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let dir = std::env::temp_dir().join(format!("bbb-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stat");
        std::fs::write(
            &path,
            "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0",
        )
        .unwrap();
        assert_eq!(
            ticks_of(path.to_str().unwrap()),
            Some(("a (b) c".to_owned(), 300))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
