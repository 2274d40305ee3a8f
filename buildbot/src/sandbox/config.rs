//! What a sandbox master is made of: its builders and their default
//! scripts, its name, its event buffer, its log URLs and its clock; and what
//! it reports (counters, running builds).

use std::collections::BTreeMap;

use bbb_clock::Clock;
use serde_json::Value;

use crate::script::ScriptedBuilder;
use crate::types::{BuildId, BuildRequestId, SourceStamp};

/// A builder of the sandbox master, with its default script (as the
/// simulator's: [`ScriptedBuilder::new`] gives 4 slots and builds that pass
/// after 100 ms). A builder with 0 slots never starts a build.
pub type SandboxBuilder = ScriptedBuilder;

/// Configuration of a [`SandboxMaster`](super::SandboxMaster).
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The master's name: `master` in events and
    /// [`RequestState::Running`](crate::RequestState::Running),
    /// `claimed_by_name` on a real master.
    pub master_name: String,
    /// The builders it serves. When a name appears twice, the first wins.
    pub builders: Vec<SandboxBuilder>,
    /// Accept requests for any builder:
    /// [`LegacyMaster::builders`](crate::LegacyMaster::builders) answers
    /// `None`, and a builder not in [`builders`](Self::builders) is created
    /// on first use with [`SandboxBuilder::new`]'s defaults.
    pub accept_any_builder: bool,
    /// How many events each subscriber may fall behind before it loses the
    /// oldest (see [`SandboxMaster::events`](crate::LegacyMaster::events)). At
    /// least 1.
    pub event_capacity: usize,
    /// Base of the `log_url` of finished builds:
    /// `<base>/builders/<builder>/builds/<number>/log`. `None` gives
    /// `sandbox://<master_name>`, which names the log but cannot be fetched;
    /// set an `http://` base when something serves
    /// [`SandboxMaster::build_log`](super::SandboxMaster::build_log) there.
    pub log_url_base: Option<String>,
    /// The wall clock the sandbox stamps its times with, in epoch seconds
    /// ([`Clock::now_secs`]): `claimed_at`, `start_time`, `finish_time` and
    /// `complete_at`. Build durations are measured with Tokio's timer
    /// instead, so tests can also pause and advance Tokio's clock.
    pub clock: Clock,
}

impl Default for SandboxConfig {
    /// Master `sandbox-master` with the builders `linux.build`, `linux.test`,
    /// `win.build` and `win.test` ([`SandboxBuilder::new`]'s defaults), no
    /// other builder accepted, 4096 events of buffer, `sandbox://` log URLs
    /// and the system clock.
    fn default() -> Self {
        Self {
            master_name: "sandbox-master".to_owned(),
            builders: ["linux.build", "linux.test", "win.build", "win.test"]
                .into_iter()
                .map(SandboxBuilder::new)
                .collect(),
            accept_any_builder: false,
            event_capacity: 4096,
            log_url_base: None,
            clock: Clock::system(),
        }
    }
}

impl SandboxConfig {
    /// The defaults with these builders instead.
    pub fn with_builders(builders: impl IntoIterator<Item = SandboxBuilder>) -> Self {
        Self {
            builders: builders.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The defaults, accepting every builder (with [`SandboxBuilder::new`]'s
    /// defaults unless listed in [`builders`](Self::builders)).
    pub fn accepting_any_builder() -> Self {
        Self {
            accept_any_builder: true,
            ..Self::default()
        }
    }
}

/// Counters of a [`SandboxMaster`](super::SandboxMaster).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Requests accepted by `submit`.
    pub submitted: u64,
    /// Builds started.
    pub started: u64,
    /// Builds finished (any result).
    pub finished: u64,
    /// Builds finished RETRY (their request was requeued).
    pub retried: u64,
    /// Builds stopped (finished CANCELLED because of a stop).
    pub stopped: u64,
    /// Pending requests cancelled without a build (by `cancel_request` or
    /// `cancel_from_master`).
    pub cancelled: u64,
}

/// A build running on the sandbox master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningBuild {
    /// The request it satisfies.
    pub build_request_id: BuildRequestId,
    /// Its builder.
    pub builder: String,
    /// Its per-builder build number.
    pub build_number: u64,
    /// Its build id.
    pub build_id: BuildId,
    /// Epoch seconds when it started.
    pub start_time: i64,
}

/// A request as the sandbox's scheduler DB holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRequest {
    /// Its id (the brid).
    pub build_request_id: BuildRequestId,
    /// Its buildset's id.
    pub buildset_id: u64,
    /// The task it was submitted for.
    pub task_id: String,
    /// Its builder.
    pub buildername: String,
    /// Its buildset's reason, `Created by BBB for task <taskId>`.
    pub reason: String,
    /// Its priority (higher runs first).
    pub priority: i32,
    /// When it was submitted (the run's scheduled time), epoch seconds.
    pub submitted_at: i64,
    /// Its properties, plain JSON values (`taskId` included).
    pub properties: BTreeMap<String, Value>,
    /// Its source stamp, the branch as the scheduler-DB adapter stores it.
    pub sourcestamp: SourceStamp,
}
