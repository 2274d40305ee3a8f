//! Matching request paths to API methods. Paths arrive percent-encoded
//! (`proj%2Fwt`) or raw (`proj/wt`); both forms match.

use axum::http::Method;

/// One API method with its URL parameters (decoded).
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Route {
    Ping,
    LbHeartbeat,
    Heartbeat,
    Version,
    Task(String),
    Status(String),
    Tasks,
    Statuses,
    CreateTask(String),
    ScheduleTask(String),
    RerunTask(String),
    CancelTask(String),
    ListDependentTasks(String),
    ListTaskGroup(String),
    GetTaskGroup(String),
    SealTaskGroup(String),
    CancelTaskGroup(String),
    ClaimWork(String),
    ClaimTask(String, String),
    ReclaimTask(String, String),
    ReportCompleted(String, String),
    ReportFailed(String, String),
    ReportException(String, String),
    CreateArtifact(String, String, String),
    GetArtifact(String, String, String),
    GetLatestArtifact(String, String),
    ListArtifacts(String, String),
    ListLatestArtifacts(String),
    ArtifactInfo(String, String, String),
    LatestArtifactInfo(String, String),
    ListTaskQueues,
    GetTaskQueue(String),
    TaskQueueCounts(String),
    PendingTasks(String),
    ListPendingTasks(String),
    ListClaimedTasks(String),
    ListWorkers(String, String),
    GetWorker(String, String, String, String),
}

impl Route {
    /// The upstream API method name (for `requestInfo.method` and logs).
    pub fn name(&self) -> &'static str {
        use Route::*;
        match self {
            Ping => "ping",
            LbHeartbeat => "lbheartbeat",
            Heartbeat => "heartbeat",
            Version => "version",
            Task(..) => "task",
            Status(..) => "status",
            Tasks => "tasks",
            Statuses => "statuses",
            CreateTask(..) => "createTask",
            ScheduleTask(..) => "scheduleTask",
            RerunTask(..) => "rerunTask",
            CancelTask(..) => "cancelTask",
            ListDependentTasks(..) => "listDependentTasks",
            ListTaskGroup(..) => "listTaskGroup",
            GetTaskGroup(..) => "getTaskGroup",
            SealTaskGroup(..) => "sealTaskGroup",
            CancelTaskGroup(..) => "cancelTaskGroup",
            ClaimWork(..) => "claimWork",
            ClaimTask(..) => "claimTask",
            ReclaimTask(..) => "reclaimTask",
            ReportCompleted(..) => "reportCompleted",
            ReportFailed(..) => "reportFailed",
            ReportException(..) => "reportException",
            CreateArtifact(..) => "createArtifact",
            GetArtifact(..) => "getArtifact",
            GetLatestArtifact(..) => "getLatestArtifact",
            ListArtifacts(..) => "listArtifacts",
            ListLatestArtifacts(..) => "listLatestArtifacts",
            ArtifactInfo(..) => "artifactInfo",
            LatestArtifactInfo(..) => "latestArtifactInfo",
            ListTaskQueues => "listTaskQueues",
            GetTaskQueue(..) => "getTaskQueue",
            TaskQueueCounts(..) => "taskQueueCounts",
            PendingTasks(..) => "pendingTasks",
            ListPendingTasks(..) => "listPendingTasks",
            ListClaimedTasks(..) => "listClaimedTasks",
            ListWorkers(..) => "listWorkers",
            GetWorker(..) => "getWorker",
        }
    }

    /// The URL parameters by upstream name, for `requestInfo.params`.
    pub fn params(&self) -> serde_json::Value {
        use Route::*;
        use serde_json::json;
        match self {
            Task(t)
            | Status(t)
            | CreateTask(t)
            | ScheduleTask(t)
            | RerunTask(t)
            | CancelTask(t)
            | ListDependentTasks(t)
            | ListLatestArtifacts(t) => json!({"taskId": t}),
            ListTaskGroup(g) | GetTaskGroup(g) | SealTaskGroup(g) | CancelTaskGroup(g) => {
                json!({"taskGroupId": g})
            }
            ClaimWork(q) | GetTaskQueue(q) | TaskQueueCounts(q) | PendingTasks(q)
            | ListPendingTasks(q) | ListClaimedTasks(q) => json!({"taskQueueId": q}),
            ClaimTask(t, r)
            | ReclaimTask(t, r)
            | ReportCompleted(t, r)
            | ReportFailed(t, r)
            | ReportException(t, r)
            | ListArtifacts(t, r) => json!({"taskId": t, "runId": r}),
            CreateArtifact(t, r, n) | GetArtifact(t, r, n) | ArtifactInfo(t, r, n) => {
                json!({"taskId": t, "runId": r, "name": n})
            }
            GetLatestArtifact(t, n) | LatestArtifactInfo(t, n) => json!({"taskId": t, "name": n}),
            ListWorkers(p, w) => json!({"provisionerId": p, "workerType": w}),
            GetWorker(p, w, g, i) => {
                json!({"provisionerId": p, "workerType": w, "workerGroup": g, "workerId": i})
            }
            _ => json!({}),
        }
    }
}

/// Decode one path segment.
pub fn decode(seg: &str) -> String {
    percent_decode(seg)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A taskQueueId from the front of `rest`: one decoded segment holding `/`, or two
/// raw segments. Returns it with what follows.
fn task_queue(rest: &[String]) -> Option<(String, &[String])> {
    match rest {
        [one, tail @ ..] if one.contains('/') => Some((one.clone(), tail)),
        [p, w, tail @ ..] => Some((format!("{p}/{w}"), tail)),
        _ => None,
    }
}

/// Match a method and the decoded path segments below `/api/queue/v1/`.
pub fn route(method: &Method, segs: &[String]) -> Option<Route> {
    use Route::*;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = *method == Method::GET;
    let post = *method == Method::POST;
    let put = *method == Method::PUT;
    let o = |x: &&str| x.to_string();
    let r = match s.as_slice() {
        ["ping"] if get => Ping,
        ["__lbheartbeat__"] if get => LbHeartbeat,
        ["__heartbeat__"] if get => Heartbeat,
        ["__version__"] if get => Version,
        ["task", t] if get => Task(o(t)),
        ["task", t] if put => CreateTask(o(t)),
        ["task", t, "status"] if get => Status(o(t)),
        ["tasks"] if post => Tasks,
        ["tasks", "status"] if post => Statuses,
        ["task", t, "schedule"] if post => ScheduleTask(o(t)),
        ["task", t, "rerun"] if post => RerunTask(o(t)),
        ["task", t, "cancel"] if post => CancelTask(o(t)),
        ["task", t, "dependents"] if get => ListDependentTasks(o(t)),
        ["task-group", g, "list"] if get => ListTaskGroup(o(g)),
        ["task-group", g] if get => GetTaskGroup(o(g)),
        ["task-group", g, "seal"] if post => SealTaskGroup(o(g)),
        ["task-group", g, "cancel"] if post => CancelTaskGroup(o(g)),
        ["task", t, "runs", r, "claim"] if post => ClaimTask(o(t), o(r)),
        ["task", t, "runs", r, "reclaim"] if post => ReclaimTask(o(t), o(r)),
        ["task", t, "runs", r, "completed"] if post => ReportCompleted(o(t), o(r)),
        ["task", t, "runs", r, "failed"] if post => ReportFailed(o(t), o(r)),
        ["task", t, "runs", r, "exception"] if post => ReportException(o(t), o(r)),
        ["task", t, "runs", r, "artifacts"] if get => ListArtifacts(o(t), o(r)),
        ["task", t, "runs", r, "artifacts", name @ ..] if !name.is_empty() && (post || get) => {
            let name = name.join("/");
            if post {
                CreateArtifact(o(t), o(r), name)
            } else {
                GetArtifact(o(t), o(r), name)
            }
        }
        ["task", t, "runs", r, "artifact-info", name @ ..] if get && !name.is_empty() => {
            ArtifactInfo(o(t), o(r), name.join("/"))
        }
        ["task", t, "artifacts"] if get => ListLatestArtifacts(o(t)),
        ["task", t, "artifacts", name @ ..] if get && !name.is_empty() => {
            GetLatestArtifact(o(t), name.join("/"))
        }
        ["task", t, "artifact-info", name @ ..] if get && !name.is_empty() => {
            LatestArtifactInfo(o(t), name.join("/"))
        }
        ["task-queues"] if get => ListTaskQueues,
        ["provisioners", p, "worker-types", w, "workers"] if get => ListWorkers(o(p), o(w)),
        ["provisioners", p, "worker-types", w, "workers", g, i] if get => {
            GetWorker(o(p), o(w), o(g), o(i))
        }
        ["claim-work", ..] if post => ClaimWork(whole_queue(&segs[1..])?),
        ["pending", ..] if get => PendingTasks(whole_queue(&segs[1..])?),
        ["task-queues", ..] if get => {
            let rest = &segs[1..];
            match rest.last().map(String::as_str) {
                Some("counts") if queue_then(rest, 1).is_some() => {
                    TaskQueueCounts(queue_then(rest, 1)?)
                }
                Some("pending") if queue_then(rest, 1).is_some() => {
                    ListPendingTasks(queue_then(rest, 1)?)
                }
                Some("claimed") if queue_then(rest, 1).is_some() => {
                    ListClaimedTasks(queue_then(rest, 1)?)
                }
                _ => GetTaskQueue(whole_queue(rest)?),
            }
        }
        _ => return None,
    };
    Some(r)
}

fn whole_queue(rest: &[String]) -> Option<String> {
    match task_queue(rest)? {
        (q, []) => Some(q),
        _ => None,
    }
}

fn queue_then(rest: &[String], tail: usize) -> Option<String> {
    let (q, t) = task_queue(rest)?;
    (t.len() == tail).then_some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(decode).collect()
    }

    #[test]
    fn encoded_and_raw_queue_ids_match() {
        let a = route(&Method::POST, &segs("claim-work/proj%2Fwt")).unwrap();
        let b = route(&Method::POST, &segs("claim-work/proj/wt")).unwrap();
        assert_eq!(a, Route::ClaimWork("proj/wt".into()));
        assert_eq!(a, b);
        assert_eq!(
            route(&Method::GET, &segs("task-queues/proj/wt/counts")).unwrap(),
            Route::TaskQueueCounts("proj/wt".into())
        );
        assert_eq!(
            route(&Method::GET, &segs("task-queues/proj%2Fwt/pending")).unwrap(),
            Route::ListPendingTasks("proj/wt".into())
        );
        assert_eq!(
            route(&Method::GET, &segs("task-queues/proj%2Fwt")).unwrap(),
            Route::GetTaskQueue("proj/wt".into())
        );
    }

    #[test]
    fn artifact_names_keep_slashes() {
        let want = Route::GetArtifact("T".into(), "0".into(), "public/logs/live.log".into());
        assert_eq!(
            route(
                &Method::GET,
                &segs("task/T/runs/0/artifacts/public%2Flogs%2Flive.log")
            )
            .unwrap(),
            want
        );
        assert_eq!(
            route(
                &Method::GET,
                &segs("task/T/runs/0/artifacts/public/logs/live.log")
            )
            .unwrap(),
            want
        );
        assert_eq!(route(&Method::DELETE, &segs("task/T")), None);
    }
}
