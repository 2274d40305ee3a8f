//! The dependency graph of a selection: a task, the tasks it depends on and
//! the tasks that depend on it, [`DEPTH`] levels each way, drawn as an SVG
//! made on the server (columns by level, dependencies to the left), each
//! node a link to its task. One query per level, never one per task.

use std::collections::BTreeMap;

use bbb_queue::model::Task;
use bbb_tcvalues::TaskState;
use maud::{Markup, html};

use super::{state_class, task_href};
use crate::{Web, counted};

/// Levels shown each way.
pub(crate) const DEPTH: i32 = 2;
/// Most tasks shown in one level; the rest are counted.
pub(crate) const MAX_PER_LEVEL: usize = 25;

/// A task in the graph.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Its level: 0 the selection, negative its dependencies, positive its
    /// dependents.
    pub level: i32,
    /// `metadata.name`.
    pub name: String,
    /// Its state.
    pub state: TaskState,
    /// The tasks it depends on.
    pub dependencies: Vec<String>,
}

/// The graph around a task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Graph {
    /// The tasks by id.
    pub nodes: BTreeMap<String, Node>,
    /// `(required, dependent)` between tasks shown.
    pub edges: Vec<(String, String)>,
    /// Tasks left out of each level for room.
    pub left_out: BTreeMap<i32, usize>,
}

impl Graph {
    fn add(&mut self, t: &Task, level: i32) {
        self.nodes.insert(
            t.task_id.clone(),
            Node {
                level,
                name: t.def.metadata.name.clone(),
                state: t.state(),
                dependencies: t.def.dependencies.clone(),
            },
        );
    }

    /// Of `ids` (not yet shown), those the level has room for; the rest counted.
    fn room(&mut self, ids: Vec<String>, level: i32) -> Vec<String> {
        let mut ids: Vec<String> = ids
            .into_iter()
            .filter(|i| !self.nodes.contains_key(i))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.len() > MAX_PER_LEVEL {
            *self.left_out.entry(level).or_default() += ids.len() - MAX_PER_LEVEL;
            ids.truncate(MAX_PER_LEVEL);
        }
        ids
    }
}

/// The graph around `center`.
pub(crate) async fn around(web: &Web, center: &Task) -> Result<Graph, String> {
    let mut g = Graph::default();
    g.add(center, 0);
    // Upwards: the dependencies named by the definitions of the level below.
    let mut frontier = vec![center.clone()];
    for level in 1..=DEPTH {
        let wanted: Vec<String> = frontier
            .iter()
            .flat_map(|t| t.def.dependencies.clone())
            .collect();
        let ids = g.room(wanted, -level);
        if ids.is_empty() {
            break;
        }
        counted(ids.len().div_ceil(500) as u64);
        let tasks = web
            .queue
            .load_tasks(&ids)
            .await
            .map_err(|e| e.to_string())?;
        for t in &tasks {
            g.add(t, -level);
        }
        frontier = tasks;
    }
    // Downwards: the dependency table.
    let mut frontier = vec![center.task_id.clone()];
    for level in 1..=DEPTH {
        counted(frontier.len().div_ceil(500) as u64);
        let edges = web
            .queue
            .dependent_edges(&frontier)
            .await
            .map_err(|e| e.to_string())?;
        let ids = g.room(edges.iter().map(|(_, d)| d.clone()).collect(), level);
        if ids.is_empty() {
            break;
        }
        counted(ids.len().div_ceil(500) as u64);
        let tasks = web
            .queue
            .load_tasks(&ids)
            .await
            .map_err(|e| e.to_string())?;
        for t in &tasks {
            g.add(t, level);
        }
        frontier = tasks.iter().map(|t| t.task_id.clone()).collect();
    }
    // Every edge between tasks shown, from their definitions.
    g.edges = g
        .nodes
        .iter()
        .flat_map(|(id, n)| n.dependencies.iter().map(move |d| (d.clone(), id.clone())))
        .filter(|(d, _)| g.nodes.contains_key(d))
        .collect();
    Ok(g)
}

const NODE_W: i32 = 190;
const NODE_H: i32 = 30;
const COL_GAP: i32 = 60;
const ROW_GAP: i32 = 12;

/// The graph as an SVG: a column per level, each task a box (its state as
/// its class) linking to its page, an arrow from each dependency to its
/// dependent.
pub(crate) fn svg(g: &Graph, label: &str) -> Markup {
    let levels: Vec<i32> = {
        let mut l: Vec<i32> = g.nodes.values().map(|n| n.level).collect();
        l.sort();
        l.dedup();
        l
    };
    let mut columns: BTreeMap<i32, Vec<(&String, &Node)>> = BTreeMap::new();
    for (id, n) in &g.nodes {
        columns.entry(n.level).or_default().push((id, n));
    }
    for col in columns.values_mut() {
        col.sort_by(|a, b| a.1.name.cmp(&b.1.name).then(a.0.cmp(b.0)));
    }
    let mut at: BTreeMap<&str, (i32, i32)> = BTreeMap::new();
    for (ci, level) in levels.iter().enumerate() {
        for (ri, (id, _)) in columns[level].iter().enumerate() {
            at.insert(
                id.as_str(),
                (
                    ci as i32 * (NODE_W + COL_GAP),
                    ri as i32 * (NODE_H + ROW_GAP) + 24,
                ),
            );
        }
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(1) as i32;
    let width = levels.len() as i32 * (NODE_W + COL_GAP) - COL_GAP;
    let height = rows * (NODE_H + ROW_GAP) + 24;
    let heading = |level: i32| match level {
        0 => "selected".to_owned(),
        l if l < 0 => format!("dependencies −{}", -l),
        l => format!("dependents +{l}"),
    };
    let short = |name: &str| {
        if name.chars().count() > 24 {
            format!("{}…", name.chars().take(23).collect::<String>())
        } else {
            name.to_owned()
        }
    };
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" role="group" aria-label=(label)
            width=(width) height=(height) viewBox=(format!("0 0 {width} {height}")) {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto" {
                    path d="M0,0 L10,5 L0,10 z" {}
                }
            }
            @for (ci, level) in levels.iter().enumerate() {
                text.level x=(ci as i32 * (NODE_W + COL_GAP)) y="14" {
                    (heading(*level))
                    @if let Some(n) = g.left_out.get(level) { " (" (n) " more)" }
                }
            }
            @for (from, to) in &g.edges {
                @if let (Some((x1, y1)), Some((x2, y2))) = (at.get(from.as_str()), at.get(to.as_str())) {
                    line.edge x1=(x1 + NODE_W) y1=(y1 + NODE_H / 2) x2=(x2) y2=(y2 + NODE_H / 2) marker-end="url(#arrow)" {}
                }
            }
            @for (id, n) in &g.nodes {
                @if let Some((x, y)) = at.get(id.as_str()) {
                    a href=(task_href(id)) {
                        title { (n.name) " — " (n.state.as_str()) " (" (id) ")" }
                        rect class=(state_class(n.state)) x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="4" {}
                        text x=(x + 8) y=(y + 20) { (short(&n.name)) }
                    }
                }
            }
        }
    }
}
