//! The `[hooks]` section of the configuration file.

use bbb_envlayer::Var;
use serde::{Deserialize, Serialize};

/// How the hooks service runs. Every key has a default that works on one
/// machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// The longest the scheduler waits between looks at the hooks table, in
    /// milliseconds (env `BBB_HOOKS_SCHEDULER_POLL_MS`). It otherwise sleeps
    /// until the next scheduled slot and wakes when this process changes a
    /// hook; this bounds how late it notices a hook another process changed.
    pub scheduler_poll_ms: u64,
    /// How often every hook's Pulse bindings are reconciled with the bus, in
    /// milliseconds (env `BBB_HOOKS_RECONCILE_MS`); a change made through this
    /// process is applied at once.
    pub reconcile_ms: u64,
    /// Regular expressions (matched from the start) of exchanges hooks may not
    /// bind to. Upstream's: task-created messages (a hook creating tasks on
    /// them would never stop) and the hooks service's own exchanges.
    pub denylist: Vec<String>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            scheduler_poll_ms: 1000,
            reconcile_ms: 5000,
            denylist: vec![
                "exchange/taskcluster-queue/v1/task-created".into(),
                "exchange/taskcluster-hooks/.*".into(),
            ],
        }
    }
}

impl HooksConfig {
    /// The `BBB_HOOKS_*` variables that override the `[hooks]` section, in
    /// the order they are applied and listed by `--help`.
    pub const ENV: &'static [Var<HooksConfig>] = &[
        Var::new(
            "BBB_HOOKS_SCHEDULER_POLL_MS",
            "longest wait between the scheduler's looks at the hooks, ms (scheduler_poll_ms)",
            |c, v| positive(&mut c.scheduler_poll_ms, v),
        ),
        Var::new(
            "BBB_HOOKS_RECONCILE_MS",
            "how often Pulse bindings are reconciled with the bus, ms (reconcile_ms)",
            |c, v| positive(&mut c.reconcile_ms, v),
        ),
    ];

    /// Apply the `BBB_HOOKS_*` environment variables.
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(bbb_envlayer::from_env)
    }

    /// Apply the `BBB_HOOKS_*` overrides `lookup` gives; empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        bbb_envlayer::apply(Self::ENV, self, lookup).map_err(|e| e.to_string())
    }
}

/// Sets `slot` to the value read as a number above zero.
fn positive(slot: &mut u64, value: &str) -> Result<(), String> {
    match bbb_envlayer::number(value)? {
        0 => Err("not a positive number".to_owned()),
        n => {
            *slot = n;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides() {
        let mut cfg = HooksConfig::default();
        cfg.apply_vars(|n| (n == "BBB_HOOKS_SCHEDULER_POLL_MS").then(|| "250".to_string()))
            .unwrap();
        assert_eq!(cfg.scheduler_poll_ms, 250);
        assert_eq!(cfg.reconcile_ms, 5000);
        let e = cfg
            .apply_vars(|n| (n == "BBB_HOOKS_RECONCILE_MS").then(|| "0".to_string()))
            .unwrap_err();
        assert!(e.contains("BBB_HOOKS_RECONCILE_MS"), "{e}");
    }
}
