//! The figures, computed from a branch's observations over its last N
//! revisions and the mapping that holds on it. Pure functions: the API loads
//! the window ([`crate::store::window`]) and hands it here.

use crate::model::{Observation, Side, Verdict};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a job runs, over the window: [`Place::Native`] when it has a native
/// result there, else [`Place::Bridged`] when it has a bridged one, else
/// [`Place::BuildbotOnly`] (only the legacy master's own builds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Place {
    /// Runs on native workers (possibly on Buildbot too, as in `shadow` mode).
    Native,
    /// Runs through the bridge, not natively.
    Bridged,
    /// Runs only on the legacy master's own schedulers.
    BuildbotOnly,
}

/// A job's last result on one side.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastResult {
    /// The revision it ran on.
    pub revision: String,
    /// Its normalised result.
    pub result: crate::model::Outcome,
    /// `<taskId>/<runId>` or the build's id.
    pub source_id: String,
    /// When it started (ms), if known.
    pub started: Option<i64>,
    /// When it finished (ms).
    pub finished: i64,
}

/// One job of a branch: a task label, a builder, or both when they are a pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// The task label, when the job has one.
    pub label: Option<String>,
    /// The builder, when the job has one.
    pub builder: Option<String>,
    /// The Treeherder symbol its tasks carry, if any.
    pub symbol: Option<String>,
    /// Where it runs over the window.
    pub runs_on: Place,
    /// The sides with results over the window.
    pub sides: Vec<Side>,
    /// Its last result on each side with results.
    pub last: BTreeMap<Side, LastResult>,
}

impl Job {
    /// Whether it is a pair (a label and a builder).
    pub fn is_pair(&self) -> bool {
        self.label.is_some() && self.builder.is_some()
    }
}

/// A branch's jobs over a window, and how they split.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchSummary {
    /// The branch.
    pub branch: String,
    /// The revisions of the window, newest first.
    pub revisions: Vec<String>,
    /// How many jobs run natively, through the bridge, and only on Buildbot.
    pub counts: Shares<usize>,
    /// The same as shares of all the branch's jobs (0 when it has none).
    pub shares: Shares<f64>,
}

/// One figure per place.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shares<T> {
    /// All jobs (for the counts; 1 or 0 for the shares).
    pub jobs: T,
    /// Jobs running natively.
    pub native: T,
    /// Jobs running through the bridge.
    pub bridged: T,
    /// Jobs running only on Buildbot.
    pub buildbot_only: T,
}

/// The jobs of a branch's window: observations grouped into jobs, with the
/// pairs of `mapping` (label → builder, as [`crate::store::mapping_for`]
/// gives) and of the bridged tasks' builders. Sorted by label, then builder.
/// A job's last result on a side is its result on the newest of
/// `revisions` (the window, newest first) where that side ran, the latest
/// finished there (a rerun replaces a run).
pub fn jobs(
    revisions: &[String],
    observations: &[Observation],
    mapping: &[(String, String)],
) -> Vec<Job> {
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(revisions.len());
    for (i, r) in revisions.iter().enumerate() {
        position.entry(r.as_str()).or_insert(i);
    }
    let rank =
        |revision: &str| std::cmp::Reverse(position.get(revision).copied().unwrap_or(usize::MAX));
    let pairs = Pairs::of(observations, mapping);
    let mut groups: BTreeMap<JobKey, Vec<&Observation>> = BTreeMap::new();
    for o in observations {
        groups.entry(pairs.key(o)).or_default().push(o);
    }
    groups
        .into_iter()
        .map(|((label, builder), obs)| {
            let sides: BTreeSet<Side> = obs.iter().map(|o| o.side).collect();
            let runs_on = place_of(
                sides.contains(&Side::Native),
                sides.contains(&Side::Bridged),
            );
            let mut last: BTreeMap<Side, &Observation> = BTreeMap::new();
            for o in obs.iter().copied() {
                let newer = last.get(&o.side).is_none_or(|l| {
                    (rank(&o.revision), o.finished, &o.source_id)
                        > (rank(&l.revision), l.finished, &l.source_id)
                });
                if newer {
                    last.insert(o.side, o);
                }
            }
            Job {
                label: label.map(str::to_owned),
                builder: builder.map(str::to_owned),
                symbol: obs.iter().rev().find_map(|o| o.symbol.clone()),
                runs_on,
                sides: sides.into_iter().collect(),
                last: last
                    .into_iter()
                    .map(|(side, o)| (side, LastResult::of(o)))
                    .collect(),
            }
        })
        .collect()
}

impl LastResult {
    fn of(o: &Observation) -> LastResult {
        LastResult {
            revision: o.revision.clone(),
            result: o.result,
            source_id: o.source_id.clone(),
            started: o.started,
            finished: o.finished,
        }
    }
}

/// Where a job with native results (`native`) or bridged ones (`bridged`)
/// runs.
fn place_of(native: bool, bridged: bool) -> Place {
    if native {
        Place::Native
    } else if bridged {
        Place::Bridged
    } else {
        Place::BuildbotOnly
    }
}

/// A job's key: its label and its builder.
type JobKey<'a> = (Option<&'a str>, Option<&'a str>);

/// label → builder and builder → label: the mapping's entries, then the
/// builders bridged tasks named (for labels the mapping leaves out); a
/// builder several labels map to goes with the first of them by name.
struct Pairs<'a> {
    builder_of: HashMap<&'a str, &'a str>,
    label_of: HashMap<&'a str, &'a str>,
}

impl<'a> Pairs<'a> {
    fn of(observations: &'a [Observation], mapping: &'a [(String, String)]) -> Pairs<'a> {
        let mut builder_of: HashMap<&str, &str> = mapping
            .iter()
            .map(|(l, b)| (l.as_str(), b.as_str()))
            .collect();
        for o in observations.iter().filter(|o| o.side == Side::Bridged) {
            if let Some(b) = &o.builder {
                builder_of.entry(o.job.as_str()).or_insert(b.as_str());
            }
        }
        let mut sorted: Vec<(&str, &str)> = builder_of.iter().map(|(l, b)| (*l, *b)).collect();
        sorted.sort_unstable();
        let mut label_of = HashMap::with_capacity(sorted.len());
        for (label, builder) in sorted {
            label_of.entry(builder).or_insert(label);
        }
        Pairs {
            builder_of,
            label_of,
        }
    }

    /// The job `o` belongs to: a task's label with its builder, a build's
    /// builder with its label.
    fn key(&self, o: &'a Observation) -> JobKey<'a> {
        match o.side {
            Side::Native | Side::Bridged => {
                (Some(&o.job), self.builder_of.get(o.job.as_str()).copied())
            }
            Side::Buildbot => (self.label_of.get(o.job.as_str()).copied(), Some(&o.job)),
        }
    }
}

/// The shares of `counts` (0 when it has no jobs).
fn shares_of(counts: &Shares<usize>) -> Shares<f64> {
    let share = |n: usize| {
        if counts.jobs == 0 {
            0.0
        } else {
            n as f64 / counts.jobs as f64
        }
    };
    Shares {
        jobs: if counts.jobs == 0 { 0.0 } else { 1.0 },
        native: share(counts.native),
        bridged: share(counts.bridged),
        buildbot_only: share(counts.buildbot_only),
    }
}

/// A branch's summary from its window's revisions and jobs.
pub fn summary(branch: &str, revisions: Vec<String>, jobs: &[Job]) -> BranchSummary {
    let count = |p: Place| jobs.iter().filter(|j| j.runs_on == p).count();
    let counts = Shares {
        jobs: jobs.len(),
        native: count(Place::Native),
        bridged: count(Place::Bridged),
        buildbot_only: count(Place::BuildbotOnly),
    };
    let shares = shares_of(&counts);
    BranchSummary {
        branch: branch.to_string(),
        revisions,
        counts,
        shares,
    }
}

/// One revision of a branch's history: how its jobs split on that revision.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPoint {
    /// The revision.
    pub revision: String,
    /// When its first result started (or finished, without a start), ms.
    pub time: i64,
    /// How many of the jobs that ran on it ran natively, through the bridge,
    /// and only on Buildbot.
    pub counts: Shares<usize>,
    /// The same as shares of its jobs.
    pub shares: Shares<f64>,
}

/// The branch's history over a window (`revisions` newest first), oldest
/// first: for each revision, the jobs that ran on it, each placed as
/// [`jobs`] places a job over a window (native when it ran natively there,
/// else bridged, else Buildbot only), with the pairs of the whole window (a
/// pair that ran on both sides of one revision is one job).
pub fn history(
    revisions: &[String],
    observations: &[Observation],
    mapping: &[(String, String)],
) -> Vec<HistoryPoint> {
    // The pairs the whole window makes, so each revision groups its
    // observations into the same jobs as the window does.
    let pairs = Pairs::of(observations, mapping);
    let mut by_revision: HashMap<&str, Vec<&Observation>> = HashMap::new();
    for o in observations {
        by_revision.entry(o.revision.as_str()).or_default().push(o);
    }
    let mut sides: HashMap<JobKey, (bool, bool)> = HashMap::new();
    revisions
        .iter()
        .rev()
        .filter_map(|revision| {
            let obs = by_revision.get(revision.as_str())?;
            let time = obs.iter().map(|o| o.started.unwrap_or(o.finished)).min()?;
            // Each job of the revision: whether it ran natively, bridged.
            sides.clear();
            for o in obs {
                let s = sides.entry(pairs.key(o)).or_default();
                s.0 |= o.side == Side::Native;
                s.1 |= o.side == Side::Bridged;
            }
            let mut counts = Shares {
                jobs: sides.len(),
                native: 0,
                bridged: 0,
                buildbot_only: 0,
            };
            for &(native, bridged) in sides.values() {
                match place_of(native, bridged) {
                    Place::Native => counts.native += 1,
                    Place::Bridged => counts.bridged += 1,
                    Place::BuildbotOnly => counts.buildbot_only += 1,
                }
            }
            let shares = shares_of(&counts);
            Some(HistoryPoint {
                revision: revision.clone(),
                time,
                counts,
                shares,
            })
        })
        .collect()
}

/// One revision where both sides of a pair ran: the last result of each.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComparedRun {
    /// The revision.
    pub revision: String,
    /// The legacy master's own build.
    pub old: LastResult,
    /// The task's run (native, or bridged when the pair has no native run).
    pub new: LastResult,
    /// `agree`, `falseFailure`, `falsePass` or `inconclusive`.
    pub comparison: &'static str,
}

/// A pair's comparison over a window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The task label.
    pub label: String,
    /// The builder.
    pub builder: String,
    /// The side compared with Buildbot: native, or bridged when the pair has
    /// no native result in the window.
    pub new_side: Side,
    /// Revisions of the window where both sides ran.
    pub both_ran: usize,
    /// Of those, where both passed or both failed.
    pub agreeing: usize,
    /// Where Buildbot passed and the new side failed.
    pub false_failures: usize,
    /// Where Buildbot failed and the new side passed.
    pub false_passes: usize,
    /// Where either result says nothing about the job (exception, retry,
    /// cancelled, skipped).
    pub inconclusive: usize,
    /// The median runtime of the new side's runs over the median of the old
    /// side's, on the compared revisions where both have a runtime; `None`
    /// without any (or when the old median is 0).
    pub runtime_ratio: Option<f64>,
    /// The compared revisions, newest first.
    pub runs: Vec<ComparedRun>,
}

/// The comparison of the pair `label` ↔ `builder` over a window
/// (`revisions` newest first), from the observations of its job.
pub fn compare(
    label: &str,
    builder: &str,
    revisions: &[String],
    observations: &[Observation],
    mapping: &[(String, String)],
) -> Comparison {
    let pairs = Pairs::of(observations, mapping);
    let mine: Vec<&Observation> = observations
        .iter()
        .filter(|o| pairs.key(o) == (Some(label), Some(builder)))
        .collect();
    let new_side = if mine.iter().any(|o| o.side == Side::Native) {
        Side::Native
    } else {
        Side::Bridged
    };
    let last_on = |side: Side, revision: &str| {
        mine.iter()
            .filter(|o| o.side == side && o.revision == revision)
            .max_by(|a, b| (a.finished, &a.source_id).cmp(&(b.finished, &b.source_id)))
            .map(|o| LastResult::of(o))
    };
    let mut c = Comparison {
        label: label.to_string(),
        builder: builder.to_string(),
        new_side,
        both_ran: 0,
        agreeing: 0,
        false_failures: 0,
        false_passes: 0,
        inconclusive: 0,
        runtime_ratio: None,
        runs: Vec::new(),
    };
    let (mut old_times, mut new_times) = (Vec::new(), Vec::new());
    for revision in revisions {
        let (Some(old), Some(new)) = (
            last_on(Side::Buildbot, revision),
            last_on(new_side, revision),
        ) else {
            continue;
        };
        c.both_ran += 1;
        let comparison = match (old.result.verdict(), new.result.verdict()) {
            (Verdict::Pass, Verdict::Pass) | (Verdict::Fail, Verdict::Fail) => {
                c.agreeing += 1;
                "agree"
            }
            (Verdict::Pass, Verdict::Fail) => {
                c.false_failures += 1;
                "falseFailure"
            }
            (Verdict::Fail, Verdict::Pass) => {
                c.false_passes += 1;
                "falsePass"
            }
            _ => {
                c.inconclusive += 1;
                "inconclusive"
            }
        };
        if let (Some(o), Some(n)) = (old.started, new.started) {
            old_times.push(old.finished - o);
            new_times.push(new.finished - n);
        }
        c.runs.push(ComparedRun {
            revision: revision.clone(),
            old,
            new,
            comparison,
        });
    }
    c.runtime_ratio = match (median(&mut old_times), median(&mut new_times)) {
        (Some(o), Some(n)) if o > 0.0 => Some(n / o),
        _ => None,
    };
    c
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        (values[mid - 1] + values[mid]) as f64 / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;

    fn obs(
        side: Side,
        id: &str,
        rev: &str,
        job: &str,
        result: Outcome,
        start: i64,
        end: i64,
    ) -> Observation {
        Observation {
            side,
            source_id: id.into(),
            branch: "b".into(),
            revision: rev.into(),
            job: job.into(),
            builder: None,
            symbol: None,
            result,
            started: Some(start),
            finished: end,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3, 1, 2]), Some(2.0));
        assert_eq!(median(&mut [4, 1, 2, 3]), Some(2.5));
    }

    #[test]
    fn a_rerun_replaces_the_result_its_side_compares() {
        use Outcome::*;
        let revisions = vec!["r2".to_string(), "r1".to_string()];
        let o = vec![
            obs(Side::Buildbot, "1", "r1", "lin.test", Success, 0, 100),
            obs(Side::Native, "t/0", "r1", "test-lin", Failure, 0, 40),
            obs(Side::Native, "t/1", "r1", "test-lin", Success, 50, 110),
            obs(Side::Buildbot, "2", "r2", "lin.test", Failure, 0, 300),
            obs(Side::Native, "u/0", "r2", "test-lin", Exception, 0, 90),
        ];
        let mapping = vec![("test-lin".to_string(), "lin.test".to_string())];
        let c = compare("test-lin", "lin.test", &revisions, &o, &mapping);
        assert_eq!((c.both_ran, c.agreeing, c.inconclusive), (2, 1, 1));
        assert_eq!((c.false_failures, c.false_passes), (0, 0));
        // Runtimes: old 300 and 100 (median 200), new 90 and 60 (median 75).
        assert_eq!(c.runtime_ratio, Some(75.0 / 200.0));
        assert_eq!(c.runs[1].new.source_id, "t/1");
        let jobs = jobs(&[], &o, &mapping);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].runs_on, Place::Native);
        assert_eq!(jobs[0].last[&Side::Native].source_id, "t/1");
    }

    #[test]
    fn the_history_places_each_revision_s_jobs_with_the_window_s_pairs() {
        use Outcome::*;
        let revisions = vec!["r2".to_string(), "r1".to_string()];
        let mut bridged = obs(Side::Bridged, "b/0", "r1", "build-lin", Success, 5, 50);
        bridged.builder = Some("lin.build".into());
        let o = vec![
            // r1: the pair on Buildbot and bridged, a Buildbot-only job.
            obs(Side::Buildbot, "1", "r1", "lin.build", Success, 0, 100),
            bridged,
            obs(Side::Buildbot, "2", "r1", "lin.talos", Success, 1, 100),
            // r2: the pair on Buildbot only (the bridged task's pairing
            // holds), and a native job.
            obs(Side::Buildbot, "3", "r2", "lin.build", Success, 200, 300),
            obs(Side::Native, "n/0", "r2", "test-lin", Success, 210, 290),
        ];
        let h = history(&revisions, &o, &[]);
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].revision.as_str(), h[0].time), ("r1", 0));
        assert_eq!(
            (h[0].counts.jobs, h[0].counts.native, h[0].counts.bridged),
            (2, 0, 1)
        );
        assert_eq!(h[0].counts.buildbot_only, 1);
        assert_eq!((h[1].revision.as_str(), h[1].time), ("r2", 200));
        assert_eq!(
            (
                h[1].counts.jobs,
                h[1].counts.native,
                h[1].counts.buildbot_only
            ),
            (2, 1, 1)
        );
        assert_eq!(h[1].shares.native, 0.5);
        assert_eq!(history(&[], &o, &[]), Vec::new());
    }

    /// The figures as they were computed before the window was read from
    /// the revisions table and the computation stopped cloning: the
    /// reference the faster functions must equal exactly.
    mod reference {
        use super::super::{
            BranchSummary, ComparedRun, Comparison, HistoryPoint, Job, LastResult, Place, Shares,
            median,
        };
        use crate::model::{Observation, Side, Verdict};
        use std::collections::{BTreeMap, BTreeSet, HashMap};

        pub(super) fn jobs(
            revisions: &[String],
            observations: &[Observation],
            mapping: &[(String, String)],
        ) -> Vec<Job> {
            let rank = |revision: &str| {
                std::cmp::Reverse(
                    revisions
                        .iter()
                        .position(|r| r == revision)
                        .unwrap_or(usize::MAX),
                )
            };
            let (builder_of, label_of) = pairs(observations, mapping);
            let mut groups: BTreeMap<(Option<String>, Option<String>), Vec<&Observation>> =
                BTreeMap::new();
            for o in observations {
                let key = match o.side {
                    Side::Native | Side::Bridged => {
                        (Some(o.job.clone()), builder_of.get(&o.job).cloned())
                    }
                    Side::Buildbot => (label_of.get(&o.job).cloned(), Some(o.job.clone())),
                };
                groups.entry(key).or_default().push(o);
            }
            groups
                .into_iter()
                .map(|((label, builder), obs)| {
                    let sides: BTreeSet<Side> = obs.iter().map(|o| o.side).collect();
                    let runs_on = if sides.contains(&Side::Native) {
                        Place::Native
                    } else if sides.contains(&Side::Bridged) {
                        Place::Bridged
                    } else {
                        Place::BuildbotOnly
                    };
                    let mut last: BTreeMap<Side, LastResult> = BTreeMap::new();
                    for o in &obs {
                        let newer = last.get(&o.side).is_none_or(|l| {
                            (rank(&o.revision), o.finished, &o.source_id)
                                > (rank(&l.revision), l.finished, &l.source_id)
                        });
                        if newer {
                            last.insert(
                                o.side,
                                LastResult {
                                    revision: o.revision.clone(),
                                    result: o.result,
                                    source_id: o.source_id.clone(),
                                    started: o.started,
                                    finished: o.finished,
                                },
                            );
                        }
                    }
                    Job {
                        label,
                        builder,
                        symbol: obs.iter().rev().find_map(|o| o.symbol.clone()),
                        runs_on,
                        sides: sides.into_iter().collect(),
                        last,
                    }
                })
                .collect()
        }

        fn pairs(
            observations: &[Observation],
            mapping: &[(String, String)],
        ) -> (HashMap<String, String>, HashMap<String, String>) {
            let mut builder_of: HashMap<String, String> = mapping.iter().cloned().collect();
            for o in observations.iter().filter(|o| o.side == Side::Bridged) {
                if let Some(b) = &o.builder {
                    builder_of.entry(o.job.clone()).or_insert_with(|| b.clone());
                }
            }
            let mut label_of = HashMap::new();
            let mut sorted: Vec<_> = builder_of.iter().collect();
            sorted.sort();
            for (label, builder) in sorted {
                label_of
                    .entry(builder.clone())
                    .or_insert_with(|| label.clone());
            }
            (builder_of, label_of)
        }

        pub(super) fn summary(branch: &str, revisions: Vec<String>, jobs: &[Job]) -> BranchSummary {
            let count = |p: Place| jobs.iter().filter(|j| j.runs_on == p).count();
            let counts = Shares {
                jobs: jobs.len(),
                native: count(Place::Native),
                bridged: count(Place::Bridged),
                buildbot_only: count(Place::BuildbotOnly),
            };
            let share = |n: usize| {
                if jobs.is_empty() {
                    0.0
                } else {
                    n as f64 / jobs.len() as f64
                }
            };
            let shares = Shares {
                jobs: if jobs.is_empty() { 0.0 } else { 1.0 },
                native: share(counts.native),
                bridged: share(counts.bridged),
                buildbot_only: share(counts.buildbot_only),
            };
            BranchSummary {
                branch: branch.to_string(),
                revisions,
                counts,
                shares,
            }
        }

        pub(super) fn history(
            revisions: &[String],
            observations: &[Observation],
            mapping: &[(String, String)],
        ) -> Vec<HistoryPoint> {
            // The pairs the whole window makes, so each revision groups its
            // observations into the same jobs as the window does.
            let (builder_of, _) = pairs(observations, mapping);
            let mut pairs: Vec<(String, String)> = builder_of.into_iter().collect();
            pairs.sort();
            let mut by_revision: HashMap<&str, Vec<Observation>> = HashMap::new();
            for o in observations {
                by_revision
                    .entry(o.revision.as_str())
                    .or_default()
                    .push(o.clone());
            }
            revisions
                .iter()
                .rev()
                .filter_map(|revision| {
                    let obs = by_revision.get(revision.as_str())?;
                    let time = obs.iter().map(|o| o.started.unwrap_or(o.finished)).min()?;
                    let jobs = jobs(std::slice::from_ref(revision), obs, &pairs);
                    let s = summary("", Vec::new(), &jobs);
                    Some(HistoryPoint {
                        revision: revision.clone(),
                        time,
                        counts: s.counts,
                        shares: s.shares,
                    })
                })
                .collect()
        }

        pub(super) fn compare(
            label: &str,
            builder: &str,
            revisions: &[String],
            observations: &[Observation],
            mapping: &[(String, String)],
        ) -> Comparison {
            let (builder_of, label_of) = pairs(observations, mapping);
            let mine: Vec<&Observation> = observations
                .iter()
                .filter(|o| match o.side {
                    Side::Native | Side::Bridged => {
                        o.job == label && builder_of.get(&o.job).is_some_and(|b| b == builder)
                    }
                    Side::Buildbot => {
                        o.job == builder && label_of.get(&o.job).is_some_and(|l| l == label)
                    }
                })
                .collect();
            let new_side = if mine.iter().any(|o| o.side == Side::Native) {
                Side::Native
            } else {
                Side::Bridged
            };
            let last_on = |side: Side, revision: &str| {
                mine.iter()
                    .filter(|o| o.side == side && o.revision == revision)
                    .max_by(|a, b| (a.finished, &a.source_id).cmp(&(b.finished, &b.source_id)))
                    .map(|o| LastResult {
                        revision: o.revision.clone(),
                        result: o.result,
                        source_id: o.source_id.clone(),
                        started: o.started,
                        finished: o.finished,
                    })
            };
            let mut c = Comparison {
                label: label.to_string(),
                builder: builder.to_string(),
                new_side,
                both_ran: 0,
                agreeing: 0,
                false_failures: 0,
                false_passes: 0,
                inconclusive: 0,
                runtime_ratio: None,
                runs: Vec::new(),
            };
            let (mut old_times, mut new_times) = (Vec::new(), Vec::new());
            for revision in revisions {
                let (Some(old), Some(new)) = (
                    last_on(Side::Buildbot, revision),
                    last_on(new_side, revision),
                ) else {
                    continue;
                };
                c.both_ran += 1;
                let comparison = match (old.result.verdict(), new.result.verdict()) {
                    (Verdict::Pass, Verdict::Pass) | (Verdict::Fail, Verdict::Fail) => {
                        c.agreeing += 1;
                        "agree"
                    }
                    (Verdict::Pass, Verdict::Fail) => {
                        c.false_failures += 1;
                        "falseFailure"
                    }
                    (Verdict::Fail, Verdict::Pass) => {
                        c.false_passes += 1;
                        "falsePass"
                    }
                    _ => {
                        c.inconclusive += 1;
                        "inconclusive"
                    }
                };
                if let (Some(o), Some(n)) = (old.started, new.started) {
                    old_times.push(old.finished - o);
                    new_times.push(new.finished - n);
                }
                c.runs.push(ComparedRun {
                    revision: revision.clone(),
                    old,
                    new,
                    comparison,
                });
            }
            c.runtime_ratio = match (median(&mut old_times), median(&mut new_times)) {
                (Some(o), Some(n)) if o > 0.0 => Some(n / o),
                _ => None,
            };
            c
        }
    }

    /// A small deterministic generator (a linear congruential one).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    /// Observations of every kind: pairs by the mapping (two labels mapped
    /// to one builder), bridged tasks naming builders (one of them mapped
    /// too), reruns, equal finish times, no start, symbols, revisions
    /// outside the window.
    fn random_record(seed: u64) -> (Vec<String>, Vec<Observation>, Vec<(String, String)>) {
        use Outcome::*;
        let mut g = Lcg(seed);
        let revisions: Vec<String> = (0..6).map(|r| format!("r{}", (r * 7 + seed) % 9)).collect();
        let outcomes = [
            Success, Warnings, Failure, Skipped, Exception, Retry, Cancelled,
        ];
        let mut o = Vec::new();
        for i in 0..(20 + g.below(120)) {
            let side = Side::ALL[g.below(3) as usize];
            let job = match side {
                Side::Native => format!("test-{}", g.below(5)),
                Side::Bridged => format!("legacy-{}", g.below(3)),
                Side::Buildbot => format!("bb-{}", g.below(5)),
            };
            let builder = match side {
                Side::Native => None,
                Side::Bridged => (g.below(4) > 0).then(|| format!("br-{}", g.below(2))),
                Side::Buildbot => Some(job.clone()),
            };
            let start = g.below(50) as i64;
            o.push(Observation {
                side,
                source_id: format!("s{}", g.below(40).max(i % 7)),
                branch: "b".into(),
                revision: format!("r{}", g.below(9)),
                job,
                builder,
                symbol: (g.below(3) == 0).then(|| format!("T{}", g.below(3))),
                result: outcomes[g.below(7) as usize],
                started: (g.below(5) > 0).then_some(start),
                finished: start + g.below(20) as i64,
            });
        }
        let mapping = vec![
            ("test-0".to_string(), "bb-0".to_string()),
            ("test-1".to_string(), "bb-1".to_string()),
            ("test-2".to_string(), "bb-0".to_string()),
            ("legacy-0".to_string(), "bb-3".to_string()),
        ];
        (revisions, o, mapping)
    }

    #[test]
    fn the_figures_equal_the_reference_computation() {
        for seed in 0..400 {
            let (revisions, o, mapping) = random_record(seed);
            let mine = jobs(&revisions, &o, &mapping);
            assert_eq!(
                mine,
                reference::jobs(&revisions, &o, &mapping),
                "seed {seed}"
            );
            assert_eq!(
                summary("b", revisions.clone(), &mine),
                reference::summary("b", revisions.clone(), &mine)
            );
            assert_eq!(
                history(&revisions, &o, &mapping),
                reference::history(&revisions, &o, &mapping),
                "seed {seed}"
            );
            let mut pairs: Vec<(String, String)> = mine
                .iter()
                .filter_map(|j| Some((j.label.clone()?, j.builder.clone()?)))
                .collect();
            pairs.push(("test-4".into(), "bb-4".into()));
            pairs.push(("legacy-1".into(), "br-1".into()));
            for (label, builder) in pairs {
                assert_eq!(
                    compare(&label, &builder, &revisions, &o, &mapping),
                    reference::compare(&label, &builder, &revisions, &o, &mapping),
                    "seed {seed}, {label} ↔ {builder}"
                );
            }
        }
    }
}
