//! The migration dashboard: every branch's mode, shares and their history,
//! its last push, and the milestones (`/`); a branch's jobs, pushes and
//! milestones (`/branches/<branch>`); a pair's compared runs
//! (`/branches/<branch>/pairs/<label>`). Read from the migration record and
//! the CI service's tables in the queue's database.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bbb_ci::store::{Push, Repository};
use bbb_migration::compute::{Comparison, Job, LastResult, Place};
use bbb_migration::figures::Window;
use bbb_migration::milestones::{self, Milestone, Progress};
use bbb_migration::{Side, store};
use maud::{Markup, html};
use serde::Deserialize;

use super::{failed, time};
use crate::Web;
use crate::chart::{self, pct, short};
use crate::layout::{not_found, page};

/// Revisions the branch page's chart covers.
pub(crate) const CHART_REVISIONS: i64 = bbb_migration::api::HISTORY_REVISIONS;

/// Pushes the branch page lists.
const PUSHES: i64 = 10;

/// The query of the dashboard's pages: the window of the figures.
#[derive(Deserialize)]
pub(crate) struct WindowQuery {
    revisions: Option<String>,
}

impl WindowQuery {
    /// The window asked for, within 1 and the API's maximum, else the
    /// configured one.
    fn revisions(&self, web: &Web) -> i64 {
        self.revisions
            .as_deref()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|n| (1..=bbb_migration::api::MAX_REVISIONS).contains(n))
            .unwrap_or(web.cfg.revisions)
    }
}

/// One branch of the dashboard.
struct BranchRow {
    branch: String,
    repository: Option<Repository>,
    window: Window,
    jobs: Vec<Job>,
    last_push: Option<Push>,
}

/// The CI repository a migration branch (a Treeherder project) belongs to:
/// the repository of that project.
fn repository_of<'a>(repos: &'a [Repository], branch: &str) -> Option<&'a Repository> {
    repos.iter().find(|r| r.project == branch)
}

/// `/`: the migration dashboard.
pub(crate) async fn overview(
    State(web): State<Web>,
    Query(q): Query<WindowQuery>,
    headers: HeaderMap,
) -> Response {
    let who = web.login.signed_in(&headers);
    let n = q.revisions(&web);
    match overview_body(&web, n).await {
        Ok(body) => page("Migration", who.as_ref(), body).into_response(),
        Err(e) => failed(who.as_ref(), "Migration", &e),
    }
}

async fn overview_body(web: &Web, n: i64) -> Result<Markup, String> {
    let db = &web.queue.db;
    let entries = store::mapping(db).await.map_err(|e| e.to_string())?;
    let repos = web.ci.repositories().await.map_err(|e| e.to_string())?;
    let mut names: BTreeSet<String> = store::branches(db)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    names.extend(repos.iter().map(|r| r.project.clone()));
    let names: Vec<String> = names.into_iter().collect();
    let windows = Window::load_many(db, &names, n, &entries)
        .await
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for (branch, window) in names.into_iter().zip(windows) {
        let repository = repository_of(&repos, &branch).cloned();
        let last_push = match &repository {
            Some(r) => web
                .ci
                .pushes(&r.project, None, None, 1)
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .next(),
            None => None,
        };
        rows.push(BranchRow {
            branch,
            jobs: window.jobs(),
            repository,
            window,
            last_push,
        });
    }
    let list = milestones::list(db).await.map_err(|e| e.to_string())?;
    let today = milestones::date_of(web.queue.clock.now_ms());
    let mut progress = Vec::new();
    for m in list {
        let p = match rows.iter().find(|r| r.branch == m.def.branch) {
            Some(r) => milestones::progress(&m.def, &r.jobs, &today),
            None => milestones::progress(&m.def, &[], &today),
        };
        progress.push((m, p));
    }
    Ok(html! {
        p.lede {
            "Where every branch's jobs run over its last " (n) " revisions: natively, "
            "through the bridge on a legacy master, or only on Buildbot."
        }
        (milestone_table(&progress, true))
        section aria-labelledby="branches-h" {
            h2 #branches-h { "Branches" }
            @if rows.is_empty() {
                p { "No branch has results or pushes yet." }
            } @else {
                (chart::legend())
                div.scroll {
                    table #branches {
                        thead { tr {
                            th scope="col" { "Branch" }
                            th scope="col" { "Mode" }
                            th scope="col" { "Jobs" }
                            th scope="col" { "Native" }
                            th scope="col" { "Bridged" }
                            th scope="col" { "Buildbot only" }
                            th scope="col" { "Over its last revisions" }
                            th scope="col" { "Last push" }
                        } }
                        tbody {
                            @for r in &rows { (branch_row(r)) }
                        }
                    }
                }
            }
        }
    })
}

fn branch_row(r: &BranchRow) -> Markup {
    let summary = r.window.summary(&r.jobs);
    let history = r.window.history();
    html! {
        tr data-branch=(r.branch) {
            th scope="row" { a href={"/branches/" (r.branch)} { (r.branch) } }
            td { (modes(r.repository.as_ref())) }
            td data-figure="jobs" { (summary.counts.jobs) }
            td data-figure="native" { (summary.counts.native) " (" (pct(summary.shares.native)) ")" }
            td data-figure="bridged" { (summary.counts.bridged) " (" (pct(summary.shares.bridged)) ")" }
            td data-figure="buildbot-only" { (summary.counts.buildbot_only) " (" (pct(summary.shares.buildbot_only)) ")" }
            td {
                (chart::bar(&summary.shares, &summary.counts, 120))
                br;
                (chart::history(&history, 120, 24, &format!("{} per revision", r.branch)))
            }
            td { (push_summary(r.last_push.as_ref())) }
        }
    }
}

/// A repository's branches and their modes, or that CI does not follow it.
fn modes(repo: Option<&Repository>) -> Markup {
    html! {
        @match repo {
            Some(repo) if !repo.branches.is_empty() => {
                @for (i, b) in repo.branches.iter().enumerate() {
                    @if i > 0 { ", " }
                    span.mode data-mode=(b.mode.as_str()) { (b.name) ": " (b.mode.as_str()) }
                }
            }
            _ => { span.muted { "not followed by CI" } }
        }
    }
}

/// A push's state, revision and decision task (or error), in a line.
fn push_summary(push: Option<&Push>) -> Markup {
    html! {
        @if let Some(p) = push {
            code { (short(&p.revision)) } " " (p.branch) " "
            (push_state(p))
        } @else {
            span.muted { "none" }
        }
    }
}

fn push_state(p: &Push) -> Markup {
    html! {
        @match (&p.decision_task_id, &p.error) {
            (Some(task), _) => {
                span.state.ok { (p.state) } " "
                a href={"/tasks/" (task)} { "decision task " code { (task) } }
            }
            (None, Some(error)) => {
                span.state.bad { (p.state) }
                pre.error role="note" { (error) }
            }
            (None, None) => { span.state { (p.state) } }
        }
    }
}

/// The milestones with their progress bars; `link` links their branches.
fn milestone_table(list: &[(Milestone, Progress)], link: bool) -> Markup {
    html! {
        section aria-labelledby="milestones-h" {
            h2 #milestones-h { "Milestones" }
            @if list.is_empty() {
                p.muted { "No milestone set (see the migration API's " code { "createMilestone" } ")." }
            } @else {
                div.scroll {
                    table #milestones {
                        thead { tr {
                            th scope="col" { "Milestone" }
                            @if link { th scope="col" { "Branch" } }
                            th scope="col" { "Due" }
                            th scope="col" { "Progress" }
                            th scope="col" { "Not native yet" }
                        } }
                        tbody {
                            @for (m, p) in list {
                                @let label = format!("{}: {} of {} jobs native", m.name, p.native, p.total);
                                tr data-milestone=(m.name) class=[p.overdue.then_some("overdue")] {
                                    th scope="row" {
                                        (m.name)
                                        @if !m.def.description.is_empty() { br; span.muted { (m.def.description) } }
                                    }
                                    @if link { td { a href={"/branches/" (m.def.branch)} { (m.def.branch) } } }
                                    td {
                                        (m.def.due)
                                        @if p.overdue { " " strong.badge.bad { "overdue" } }
                                    }
                                    td {
                                        progress max=(p.total) value=(p.native) aria-label=(label) {
                                            (p.native) " of " (p.total)
                                        }
                                        " " span.progress-text { (p.native) " of " (p.total) " native" }
                                    }
                                    td {
                                        @for (i, j) in p.remaining.iter().enumerate() {
                                            @if i > 0 { ", " }
                                            code { (j) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `/branches/<branch>`: a branch's figures, history, pushes, milestones and jobs.
pub(crate) async fn branch(
    State(web): State<Web>,
    Path(branch): Path<String>,
    Query(q): Query<WindowQuery>,
    headers: HeaderMap,
) -> Response {
    let who = web.login.signed_in(&headers);
    let n = q.revisions(&web);
    match branch_body(&web, &branch, n).await {
        Ok(Some(body)) => page(&format!("Branch {branch}"), who.as_ref(), body).into_response(),
        Ok(None) => not_found(who.as_ref(), &format!("Branch {branch}")),
        Err(e) => failed(who.as_ref(), &format!("Branch {branch}"), &e),
    }
}

async fn branch_body(web: &Web, branch: &str, n: i64) -> Result<Option<Markup>, String> {
    let db = &web.queue.db;
    let entries = store::mapping(db).await.map_err(|e| e.to_string())?;
    // One read of the larger of the window and the chart's: the other is
    // its prefix.
    let larger = Window::load(db, branch, n.max(CHART_REVISIONS), &entries)
        .await
        .map_err(|e| e.to_string())?;
    let repository = web.ci.repository(branch).await.map_err(|e| e.to_string())?;
    if larger.is_empty() && repository.is_none() {
        return Ok(None);
    }
    // The chart covers the window when that is larger.
    let (window, history) = if n >= CHART_REVISIONS {
        let history = larger.history();
        (larger, history)
    } else {
        (larger.newest(n as usize), larger.history())
    };
    let pushes = match &repository {
        Some(r) => web
            .ci
            .pushes(&r.project, None, None, PUSHES)
            .await
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let jobs = window.jobs();
    let summary = window.summary(&jobs);
    let today = milestones::date_of(web.queue.clock.now_ms());
    let own: Vec<(Milestone, Progress)> = milestones::list(db)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|m| m.def.branch == branch)
        .map(|m| {
            let p = milestones::progress(&m.def, &jobs, &today);
            (m, p)
        })
        .collect();
    let comparisons: BTreeMap<String, Comparison> = jobs
        .iter()
        .filter_map(|j| {
            let (label, builder) = (j.label.as_ref()?, j.builder.as_ref()?);
            Some((label.clone(), window.compare(label, builder)))
        })
        .collect();
    Ok(Some(html! {
        section aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            dl.facts {
                dt { "Mode" } dd { (modes(repository.as_ref())) }
                dt { "Window" } dd { "the last " (summary.revisions.len()) " revisions with results (asked: " (n) ")" }
                dt { "Jobs" } dd data-figure="jobs" { (summary.counts.jobs) }
                dt { "Native" } dd data-figure="native" { (summary.counts.native) " (" (pct(summary.shares.native)) ")" }
                dt { "Bridged" } dd data-figure="bridged" { (summary.counts.bridged) " (" (pct(summary.shares.bridged)) ")" }
                dt { "Buildbot only" } dd data-figure="buildbot-only" { (summary.counts.buildbot_only) " (" (pct(summary.shares.buildbot_only)) ")" }
            }
            (chart::bar(&summary.shares, &summary.counts, 320))
        }
        section aria-labelledby="history-h" {
            h2 #history-h { "Shares per revision" }
            p.muted { "The jobs of each of the last " (history.len()) " revisions, oldest left." }
            (chart::legend())
            (chart::history(&history, 640, 160, &format!("{branch}: shares of jobs per revision")))
            details {
                summary { "The figures" }
                div.scroll {
                    table #history {
                        thead { tr {
                            th scope="col" { "Revision" }
                            th scope="col" { "First result" }
                            th scope="col" { "Jobs" }
                            th scope="col" { "Native" }
                            th scope="col" { "Bridged" }
                            th scope="col" { "Buildbot only" }
                        } }
                        tbody {
                            @for p in history.iter().rev() {
                                tr {
                                    td { code { (short(&p.revision)) } }
                                    td { (time(p.time)) }
                                    td { (p.counts.jobs) }
                                    td { (p.counts.native) }
                                    td { (p.counts.bridged) }
                                    td { (p.counts.buildbot_only) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !own.is_empty() { (milestone_table(&own, false)) }
        section aria-labelledby="pushes-h" {
            h2 #pushes-h { "Last pushes" }
            @if pushes.is_empty() {
                p.muted { "No push recorded." }
            } @else {
                div.scroll {
                    table #pushes {
                        thead { tr {
                            th scope="col" { "Revision" }
                            th scope="col" { "Branch" }
                            th scope="col" { "By" }
                            th scope="col" { "Pushed" }
                            th scope="col" { "Mode" }
                            th scope="col" { "Decision" }
                        } }
                        tbody {
                            @for p in &pushes {
                                tr data-revision=(p.revision) {
                                    td { code { (short(&p.revision)) } }
                                    td { (p.branch) }
                                    td { (p.owner) }
                                    td { (time(p.pushdate)) }
                                    td { (p.mode.as_str()) }
                                    td { (push_state(p)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="jobs-h" {
            h2 #jobs-h { "Jobs" }
            @if jobs.is_empty() {
                p.muted { "No results recorded yet." }
            } @else {
                div.scroll {
                    table #jobs {
                        thead { tr {
                            th scope="col" { "Job" }
                            th scope="col" { "Runs" }
                            th scope="col" { "Last native" }
                            th scope="col" { "Last bridged" }
                            th scope="col" { "Last Buildbot" }
                            th scope="col" { abbr title="revisions where both sides ran and agreed / where both ran" { "Agree" } }
                            th scope="col" { "False failures" }
                            th scope="col" { "False passes" }
                            th scope="col" { "Runtime ratio" }
                        } }
                        tbody {
                            @for j in &jobs {
                                (job_row(branch, j, j.label.as_ref().and_then(|l| comparisons.get(l))))
                            }
                        }
                    }
                }
            }
        }
    }))
}

fn place(p: Place) -> &'static str {
    match p {
        Place::Native => "native",
        Place::Bridged => "bridged",
        Place::BuildbotOnly => "Buildbot only",
    }
}

/// A URL path segment: `%`-escapes what a label may hold that a path may not.
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn job_row(branch: &str, j: &Job, c: Option<&Comparison>) -> Markup {
    let name = j.label.clone().or(j.builder.clone()).unwrap_or_default();
    html! {
        tr data-job=(name) class=[c.is_some().then_some("pair")] {
            th scope="row" {
                @if let Some(l) = &j.label { (l) }
                @if j.is_pair() { " ↔ " }
                @if let Some(b) = &j.builder { span.builder { (b) } }
                @if let Some(s) = &j.symbol { " " span.muted { "(" (s) ")" } }
            }
            td data-figure="runs-on" { (place(j.runs_on)) }
            @for side in Side::ALL {
                td { (last(j.last.get(&side), side)) }
            }
            @if let Some(c) = c {
                td data-figure="agree" {
                    a href={"/branches/" (segment(branch)) "/pairs/" (segment(j.label.as_deref().unwrap_or_default()))}
                        aria-label={"the runs of " (name) " compared"} {
                        (c.agreeing) " / " (c.both_ran)
                    }
                }
                td data-figure="false-failures" class=[(c.false_failures > 0).then_some("bad")] { (c.false_failures) }
                td data-figure="false-passes" class=[(c.false_passes > 0).then_some("bad")] { (c.false_passes) }
                td data-figure="runtime-ratio" { (ratio(c.runtime_ratio)) }
            } @else {
                td colspan="4" { span.muted { "not paired" } }
            }
        }
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("–".to_string(), |r| format!("{r:.2}"))
}

/// A side's last result: its result and revision, linked to its task.
fn last(l: Option<&LastResult>, side: Side) -> Markup {
    html! {
        @if let Some(l) = l {
            span class={"result " (l.result.as_str())} { (l.result.as_str()) }
            " " code { (short(&l.revision)) }
            @if side != Side::Buildbot {
                @if let Some((task, _)) = l.source_id.split_once('/') {
                    " " a href={"/tasks/" (task)} aria-label={"task " (task)} { "task" }
                }
            }
        } @else {
            span.muted { "–" }
        }
    }
}

/// `/branches/<branch>/pairs/<label>`: a pair's runs compared.
pub(crate) async fn pair(
    State(web): State<Web>,
    Path((branch, label)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
    headers: HeaderMap,
) -> Response {
    let who = web.login.signed_in(&headers);
    let n = q.revisions(&web);
    let title = format!("{label} on {branch}");
    match pair_body(&web, &branch, &label, n).await {
        Ok(Some(body)) => page(&title, who.as_ref(), body).into_response(),
        Ok(None) => not_found(
            who.as_ref(),
            &format!("A pair of {label} with a builder on branch {branch}"),
        ),
        Err(e) => failed(who.as_ref(), &title, &e),
    }
}

fn runtime(l: &LastResult) -> String {
    match l.started {
        Some(s) => format!("{:.1} s", (l.finished - s).max(0) as f64 / 1000.0),
        None => "–".into(),
    }
}

async fn pair_body(web: &Web, branch: &str, label: &str, n: i64) -> Result<Option<Markup>, String> {
    let db = &web.queue.db;
    let entries = store::mapping(db).await.map_err(|e| e.to_string())?;
    let window = Window::load(db, branch, n, &entries)
        .await
        .map_err(|e| e.to_string())?;
    let Some(builder) = window.builder_of(&window.jobs(), label) else {
        return Ok(None);
    };
    let c = window.compare(label, &builder);
    Ok(Some(html! {
        p { a href={"/branches/" (segment(branch))} { "← branch " (branch) } }
        dl.facts {
            dt { "Task label" } dd { code { (c.label) } }
            dt { "Builder" } dd { code { (c.builder) } }
            dt { "Compared with Buildbot" } dd { (c.new_side.as_str()) }
            dt { "Revisions where both ran" } dd data-figure="both-ran" { (c.both_ran) " of the last " (window.revisions.len()) }
            dt { "Agreeing" } dd data-figure="agree" { (c.agreeing) }
            dt { "False failures" } dd data-figure="false-failures" { (c.false_failures) }
            dt { "False passes" } dd data-figure="false-passes" { (c.false_passes) }
            dt { "Inconclusive" } dd data-figure="inconclusive" { (c.inconclusive) }
            dt { "Runtime ratio (median)" } dd data-figure="runtime-ratio" { (ratio(c.runtime_ratio)) }
        }
        h2 { "The runs compared" }
        @if c.runs.is_empty() {
            p.muted { "No revision of the window ran on both sides." }
        } @else {
            div.scroll {
                table #runs {
                    thead { tr {
                        th scope="col" { "Revision" }
                        th scope="col" { "Buildbot" }
                        th scope="col" { "Buildbot runtime" }
                        th scope="col" { (c.new_side.as_str()) }
                        th scope="col" { "Runtime" }
                        th scope="col" { "Comparison" }
                    } }
                    tbody {
                        @for r in &c.runs {
                            tr data-revision=(r.revision) {
                                td { code { (short(&r.revision)) } }
                                td {
                                    span class={"result " (r.old.result.as_str())} { (r.old.result.as_str()) }
                                    " " span.muted { "build " (r.old.source_id) }
                                }
                                td { (runtime(&r.old)) }
                                td { (last(Some(&r.new), c.new_side)) }
                                td { (runtime(&r.new)) }
                                td class={"comparison " (r.comparison)} { (r.comparison) }
                            }
                        }
                    }
                }
            }
        }
    }))
}
