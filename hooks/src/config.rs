//! The `[hooks]` section of the configuration file.

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
    /// Apply the `BBB_HOOKS_*` environment variables.
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    /// Apply the `BBB_HOOKS_*` overrides `lookup` gives; empty values are ignored.
    pub fn apply_vars(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        for (name, field) in [
            ("BBB_HOOKS_SCHEDULER_POLL_MS", &mut self.scheduler_poll_ms),
            ("BBB_HOOKS_RECONCILE_MS", &mut self.reconcile_ms),
        ] {
            if let Some(v) = lookup(name).filter(|v| !v.is_empty()) {
                *field = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}={v:?} is not a positive number"))?;
            }
        }
        Ok(())
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
