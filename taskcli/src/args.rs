//! The verbs and their flags, as upstream's `taskcluster task` and
//! `taskcluster group` (clients/client-shell/cmds/task/task.go and
//! cmds/group/actors.go) declare them: same names, short flags and
//! defaults.

use clap::Subcommand;

/// The default `--format-string` of `group list`: upstream's Go template.
pub const DEFAULT_LIST_FORMAT: &str =
    "{{ .Status.TaskID }} {{ .Task.Metadata.Name }} {{ .Status.State }}";

/// `bbb task <verb> <taskId>`: task-related actions and commands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum TaskCommand {
    /// Get the status of a task (the state of its last run, with the
    /// reason it was resolved: `exception 'canceled'`).
    Status {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Check all runs of the task.
        #[arg(short = 'a', long)]
        all_runs: bool,
        /// Specifies which run to consider.
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        run: i64,
    },
    /// Get the name of a task.
    Name {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
    },
    /// Get the full definition of a task.
    Def {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
    },
    /// Get the taskGroupID of a task.
    Group {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
    },
    /// Get the name of the artifacts of a task.
    Artifacts {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Specifies which run to consider.
        #[arg(short, long, default_value_t = -1, allow_negative_numbers = true)]
        run: i64,
    },
    /// Streams the log until completion (the latest run's
    /// `public/logs/live.log`, followed while the task runs, else its
    /// `public/logs/live_backing.log`).
    Log {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
    },
    /// Cancel a task.
    Cancel {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Using this flag, will tell the command to not actually run, but prints out what it would do.
        #[arg(short, long)]
        noop: bool,
        /// Prompts user with a confirmation (y/n) before performing any changes.
        #[arg(short, long)]
        confirm: bool,
    },
    /// Re-trigger a task (new taskId, updated timestamps).
    Retrigger {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Retrigger in exact mode (keep the task's dependencies and
        /// routes). WARNING: THIS MAY HAVE SIDE EFFECTS. USE AFTER YOU READ
        /// THE SOURCE CODE.
        #[arg(short, long)]
        exact: bool,
    },
    /// Rerun a task.
    Rerun {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Using this flag, will tell the command to not actually run, but prints out what it would do.
        #[arg(short, long)]
        noop: bool,
        /// Prompts user with a confirmation (y/n) before performing any changes.
        #[arg(short, long)]
        confirm: bool,
        /// Allows a user to rerun a task not in the exception or failed state.
        #[arg(short, long)]
        force: bool,
    },
    /// Completes a task (claims its last run as worker `taskcluster-cli` and
    /// reports it completed).
    Complete {
        /// The task.
        #[arg(value_name = "taskId")]
        task_id: String,
        /// Using this flag, will tell the command to not actually run, but prints out what it would do.
        #[arg(short, long)]
        noop: bool,
        /// Prompts user with a confirmation (y/n) before performing any changes.
        #[arg(short, long)]
        confirm: bool,
    },
}

/// `bbb group <verb> <taskGroupId>`: taskgroup-related actions and commands.
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum GroupCommand {
    /// Cancel a whole group by taskGroupId: every task of the group that is
    /// unscheduled, pending or running (of one worker type, with
    /// `--worker-type`), after a confirmation unless `--force`.
    Cancel {
        /// The task group.
        #[arg(value_name = "taskGroupId")]
        task_group_id: String,
        /// Only cancel tasks with a certain worker type.
        #[arg(short, long)]
        worker_type: Option<String>,
        /// Skip cancellation confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Show the status of a task group (how many tasks are in each state).
    Status {
        /// The task group.
        #[arg(value_name = "taskGroupId")]
        task_group_id: String,
    },
    /// List task details: ID and label, of the tasks in the states asked
    /// for (none without a flag, as upstream's).
    List {
        /// The task group.
        #[arg(value_name = "taskGroupId")]
        task_group_id: String,
        /// Include all tasks (Overrides other options).
        #[arg(short, long)]
        all: bool,
        /// Include running tasks.
        #[arg(short, long)]
        running: bool,
        /// Include failed tasks.
        #[arg(short, long)]
        failed: bool,
        /// Include exception tasks.
        #[arg(short, long)]
        exception: bool,
        /// Include completed tasks.
        #[arg(short, long)]
        completed: bool,
        /// Include unscheduled tasks.
        #[arg(short, long)]
        unscheduled: bool,
        /// Include pending tasks.
        #[arg(short, long)]
        pending: bool,
        /// Go Template string for output (field paths only, such as
        /// `{{ .Status.TaskID }}`, matched to the listing's fields without
        /// regard to case).
        #[arg(long, default_value = DEFAULT_LIST_FORMAT)]
        format_string: String,
    },
}
