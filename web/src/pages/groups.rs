//! `/groups/<taskGroupId>`: a task group's inspector. Its tasks counted by
//! state, a page of them ([`PAGE_SIZE`], in taskId order, the next page after
//! the last id shown) narrowed by state and name, the dependency graph of a
//! selected task (`?task=<taskId>`), and the group actions of its decision
//! task's `actions.json`.
//!
//! Whatever the group's size, a page costs one statement per table it shows:
//! the group, the counts, the page of tasks, the decision task and its
//! `actions.json`, and with a selection one per level of the graph.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bbb_login::SignedIn;
use bbb_queue::error::ApiError;
use bbb_queue::ops::inspect::GroupFilter;
use bbb_queue::validate::is_slugid;
use bbb_tcvalues::TaskState;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::actions::{self, Actions};
use super::{encode, graph, group_href, state_class, task_href};
use crate::layout::{self, page};
use crate::{Web, counted, csrf};

/// Tasks on one page of a group.
pub const PAGE_SIZE: usize = 200;

/// The query of a group's page.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GroupQuery {
    /// Only tasks in this state.
    pub state: String,
    /// Only tasks whose name holds this text.
    pub name: String,
    /// The page after this taskId.
    pub after: String,
    /// The task whose dependency graph is shown.
    pub task: String,
}

impl GroupQuery {
    /// This query's link with `after` for the next page.
    fn href(&self, g: &str, after: &str, task: &str) -> String {
        let mut parts = Vec::new();
        for (k, v) in [("state", &self.state), ("name", &self.name)] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v, false)));
            }
        }
        if !after.is_empty() {
            parts.push(format!("after={}", encode(after, false)));
        }
        if !task.is_empty() {
            parts.push(format!("task={}", encode(task, false)));
        }
        if parts.is_empty() {
            group_href(g)
        } else {
            format!("{}?{}", group_href(g), parts.join("&"))
        }
    }
}

/// `GET /groups/<taskGroupId>`.
pub(crate) async fn show(
    State(web): State<Web>,
    Path(task_group_id): Path<String>,
    Query(q): Query<GroupQuery>,
    headers: HeaderMap,
) -> Response {
    let who = web.login.signed_in(&headers);
    let who = who.as_ref();
    if !is_slugid(&task_group_id) {
        return layout::not_found(
            who,
            &format!("Task group {task_group_id} (not a task group id)"),
        );
    }
    counted(1);
    let group = match web.queue.task_group(&task_group_id).await {
        Ok(g) => g,
        Err(ApiError::NotFound(_)) => {
            return layout::not_found(who, &format!("Task group {task_group_id}"));
        }
        Err(e) => return layout::error(who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let state = if q.state.is_empty() {
        None
    } else {
        match q.state.parse::<TaskState>() {
            Ok(s) => Some(s),
            Err(_) => {
                return layout::error(
                    who,
                    StatusCode::BAD_REQUEST,
                    &format!("{:?} is not a task state.", q.state),
                );
            }
        }
    };
    let filter = GroupFilter {
        state,
        name: Some(q.name.trim().to_owned()).filter(|n| !n.is_empty()),
    };
    counted(2);
    let (counts, tasks) = match tokio::try_join!(
        web.queue.group_state_counts(&task_group_id),
        web.queue
            .group_tasks_filtered(&task_group_id, &filter, &q.after, PAGE_SIZE as i64 + 1),
    ) {
        Ok(r) => r,
        Err(e) => return layout::error(who, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let more = tasks.len() > PAGE_SIZE;
    let tasks = &tasks[..tasks.len().min(PAGE_SIZE)];
    let acts = actions::load(&web, &task_group_id).await;
    let selected = if q.task.is_empty() {
        None
    } else if !is_slugid(&q.task) {
        Some(Err(format!("{} is not a task id.", q.task)))
    } else {
        counted(1);
        match web.queue.load_task(&q.task).await {
            Ok(Some(t)) => Some(graph::around(&web, &t).await.map(|g| (t, g))),
            Ok(None) => Some(Err(format!("Task {} was not found.", q.task))),
            Err(e) => Some(Err(e.to_string())),
        }
    };
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let body = html! {
        (summary(&group, total))
        (counts_nav(&task_group_id, &counts, total, &q))
        (filter_form(&task_group_id, &q))
        @if let Some(sel) = &selected {
            section #graph aria-labelledby="graph-h" {
                h2 #graph-h { "Dependency graph" }
                @match sel {
                    Ok((t, g)) => {
                        p { "Around " a href=(task_href(&t.task_id)) { (t.def.metadata.name) } ": its dependencies to the left, its dependents to the right." }
                        div.scroll { (graph::svg(g, &format!("Dependency graph around {}", t.def.metadata.name))) }
                    }
                    Err(e) => p.error role="alert" { (e) },
                }
            }
        }
        section aria-labelledby="tasks-h" {
            h2 #tasks-h { "Tasks" }
            @if tasks.is_empty() {
                p { "No task matches." }
            } @else {
                div.scroll {
                    table.tasks {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "State" } th scope="col" { "Task queue" } th scope="col" { "Runs" } th scope="col" { "Task id" } th scope="col" { "Graph" } } }
                        tbody {
                            @for t in tasks {
                                tr {
                                    td { a href=(task_href(&t.task_id)) { (t.def.metadata.name) } }
                                    td { span class=(state_class(t.state())) { (t.state().as_str()) } }
                                    td { (t.def.task_queue_id) }
                                    td { (t.runs.len()) }
                                    td { code { (t.task_id) } }
                                    td { a href=(format!("{}#graph", q.href(&task_group_id, &q.after, &t.task_id))) aria-label=(format!("Dependency graph of {}", t.def.metadata.name)) { "graph" } }
                                }
                            }
                        }
                    }
                }
            }
            nav.pages aria-label="pages" {
                @if !q.after.is_empty() { a href=(q.href(&task_group_id, "", "")) { "First page" } }
                @if more { a href=(q.href(&task_group_id, &tasks[tasks.len() - 1].task_id, "")) rel="next" { "Next page" } }
            }
        }
        (group_actions(&task_group_id, who, &acts))
    };
    page(&format!("Task group {task_group_id}"), who, body).into_response()
}

fn summary(group: &Value, total: i64) -> Markup {
    let g = group["taskGroupId"].as_str().unwrap_or_default();
    html! {
        dl.summary {
            dt { "Scheduler" } dd { (group["schedulerId"].as_str().unwrap_or_default()) }
            dt { "Tasks" } dd { (total) }
            dt { "Decision task" } dd { a href=(task_href(g)) { (g) } }
            dt { "Expires" } dd { (group["expires"].as_str().unwrap_or_default()) }
            dt { "Sealed" } dd { (group["sealed"].as_str().unwrap_or("no")) }
        }
    }
}

fn counts_nav(g: &str, counts: &[(String, i64)], total: i64, q: &GroupQuery) -> Markup {
    let all = GroupQuery {
        name: q.name.clone(),
        ..GroupQuery::default()
    };
    html! {
        nav.counts aria-label="tasks by state" {
            a href=(all.href(g, "", "")) aria-current=[q.state.is_empty().then_some("true")] { "all " span.count { (total) } }
            @for (state, n) in counts {
                @let by = GroupQuery { state: state.clone(), name: q.name.clone(), ..GroupQuery::default() };
                @let class = state.parse::<TaskState>().map(state_class).unwrap_or("state");
                a href=(by.href(g, "", "")) class=(class) aria-current=[(q.state == *state).then_some("true")] {
                    (state) " " span.count { (n) }
                }
            }
        }
    }
}

fn filter_form(g: &str, q: &GroupQuery) -> Markup {
    html! {
        form.filter method="get" action=(group_href(g)) role="search" {
            div.field {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    option value="" selected[q.state.is_empty()] { "any" }
                    @for s in TaskState::ALL {
                        option value=(s.as_str()) selected[q.state == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            div.field {
                label for="f-name" { "Name contains" }
                input #f-name type="search" name="name" value=(q.name);
            }
            button type="submit" { "Filter" }
        }
    }
}

/// The group actions of `actions.json`, or why they are not shown.
fn group_actions(
    g: &str,
    who: Option<&SignedIn>,
    acts: &Result<Option<Actions>, String>,
) -> Markup {
    html! {
        section.actions aria-labelledby="actions-h" {
            h2 #actions-h { "Group actions" }
            @match acts {
                Err(e) => p.error role="alert" { "The decision task's actions cannot be read: " (e) },
                Ok(None) => p { "This group's decision task published no actions; rerun, cancel and retrigger its tasks from their pages." },
                Ok(Some(a)) => {
                    @let list = a.for_group();
                    @if list.is_empty() {
                        p { "The decision task offers no action on the whole group." }
                    } @else if let Some(who) = who {
                        @let token = csrf::token(who);
                        @for (i, action) in list.iter().enumerate() {
                            (actions::form(action, &format!("{}/act", group_href(g)), &token, i))
                        }
                    } @else {
                        p { a href="/login" { "Sign in" } " to use the actions: " @for (i, action) in list.iter().enumerate() { @if i > 0 { ", " } (action["title"].as_str().or(action["name"].as_str()).unwrap_or_default()) } "." }
                    }
                }
            }
        }
    }
}
