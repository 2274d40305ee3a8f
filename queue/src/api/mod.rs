//! The HTTP API at `<rootUrl>/api/queue/v1/`: the queue's endpoints on the
//! service framework ([`bbb_service`]), which routes (both encodings of a
//! `taskQueueId` or an artifact name), authenticates, checks URL parameters
//! and the scopes each endpoint declares, and renders upstream's error body.

mod artifacts;
mod claims;
mod groups;
mod monitoring;
mod task_queues;
mod tasks;

use crate::blob::BlobStore;
use crate::core::Queue;
use crate::validate::{self, run_id_param, split_task_queue_id, task_id_param};
use axum::Router;
use bbb_auth::Authenticator;
use bbb_service::{ScopeTemplate, Service, all_of, any_of, for_each, get, post, put, scope};
use std::sync::Arc;

pub use bbb_service::BODY_LIMIT;
pub use claims::CLAIM_WORK_WAIT;

/// Shared state of the HTTP layer: what every handler gets.
#[derive(Clone)]
pub struct Api {
    /// The queue core.
    pub queue: Queue,
    /// Artifact bytes.
    pub blobs: BlobStore,
}

/// The `runId` URL parameter (checked and normalised by the service).
fn run_id(call: &bbb_service::Call) -> i64 {
    call.param("runId").parse().unwrap_or_default()
}

/// The three ways to be allowed to schedule, rerun or cancel a task.
fn task_action_scopes(verb: &str) -> ScopeTemplate {
    any_of([
        scope(format!("queue:{verb}:<schedulerId>/<taskGroupId>/<taskId>")),
        scope(format!("queue:{verb}-in-project:<projectId>")),
        all_of([
            scope(format!("queue:{verb}")),
            scope("assume:scheduler-id:<schedulerId>/<taskGroupId>"),
        ]),
    ])
}

/// The queue's endpoints and their URL parameter checks, in the order
/// requests are matched.
pub fn service(api: Api, auth: Arc<Authenticator>) -> Service<Api> {
    let clock = api.queue.clock.clone();
    let worker_id = || scope("queue:worker-id:<workerGroup>/<workerId>");
    let blobs = Router::new()
        .route(
            "/blobs/{task_id}/{run_id}/{*name}",
            axum::routing::any(artifacts::blob),
        )
        .with_state(api.clone());
    Service::new("queue", "v1", api, auth, clock)
        .param("taskId", |v| task_id_param(v).map(|()| v.to_string()))
        .param("runId", |v| run_id_param(v).map(|r| r.to_string()))
        .param("taskGroupId", |v| {
            validate::param("taskGroupId", v, validate::is_slugid(v)).map(|()| v.to_string())
        })
        .param("taskQueueId", |v| {
            validate::param("taskQueueId", v, split_task_queue_id(v).is_some())
                .map(|()| v.to_string())
        })
        .endpoints([
            get("/__heartbeat__", "heartbeat").to(monitoring::heartbeat),
            get("/__version__", "version").to(monitoring::version),
            get("/task/<taskId>", "task")
                .scopes(scope("queue:get-task:<taskId>"))
                .to(tasks::task),
            put("/task/<taskId>", "createTask")
                .scopes(all_of([
                    for_each("scope", "scopes", "<scope>"),
                    for_each("route", "routes", "queue:route:<route>"),
                    scope("queue:create-task:project:<projectId>"),
                    scope("queue:scheduler-id:<schedulerId>"),
                    any_of([for_each(
                        "priority",
                        "priorities",
                        "queue:create-task:<priority>:<taskQueueId>",
                    )]),
                ]))
                .to(tasks::create_task),
            get("/task/<taskId>/status", "status")
                .scopes(scope("queue:status:<taskId>"))
                .to(tasks::status),
            post("/tasks", "tasks")
                .scopes(all_of([for_each("taskId", "taskIds", "queue:get-task:<taskId>")]))
                .to(tasks::tasks),
            post("/tasks/status", "statuses")
                .scopes(all_of([for_each("taskId", "taskIds", "queue:status:<taskId>")]))
                .to(tasks::statuses),
            post("/task/<taskId>/schedule", "scheduleTask")
                .scopes(task_action_scopes("schedule-task"))
                .to(tasks::schedule_task),
            post("/task/<taskId>/rerun", "rerunTask")
                .scopes(task_action_scopes("rerun-task"))
                .to(tasks::rerun_task),
            post("/task/<taskId>/cancel", "cancelTask")
                .scopes(task_action_scopes("cancel-task"))
                .to(tasks::cancel_task),
            get("/task/<taskId>/dependents", "listDependentTasks")
                .scopes(scope("queue:list-dependent-tasks:<taskId>"))
                .to(tasks::list_dependent_tasks),
            get("/task-group/<taskGroupId>/list", "listTaskGroup")
                .scopes(scope("queue:list-task-group:<taskGroupId>"))
                .to(groups::list_task_group),
            get("/task-group/<taskGroupId>", "getTaskGroup")
                .scopes(scope("queue:list-task-group:<taskGroupId>"))
                .to(groups::get_task_group),
            post("/task-group/<taskGroupId>/seal", "sealTaskGroup")
                .scopes(scope("queue:seal-task-group:<schedulerId>/<taskGroupId>"))
                .to(groups::seal_task_group),
            post("/task-group/<taskGroupId>/cancel", "cancelTaskGroup")
                .scopes(scope("queue:cancel-task-group:<schedulerId>/<taskGroupId>"))
                .to(groups::cancel_task_group),
            post("/task/<taskId>/runs/<runId>/claim", "claimTask")
                .scopes(all_of([scope("queue:claim-task:<taskQueueId>"), worker_id()]))
                .to(claims::claim_task),
            post("/task/<taskId>/runs/<runId>/reclaim", "reclaimTask")
                .scopes(scope("queue:reclaim-task:<taskId>/<runId>"))
                .to(claims::reclaim_task),
            post("/task/<taskId>/runs/<runId>/completed", "reportCompleted")
                .scopes(scope("queue:resolve-task:<taskId>/<runId>"))
                .to(claims::report_completed),
            post("/task/<taskId>/runs/<runId>/failed", "reportFailed")
                .scopes(scope("queue:resolve-task:<taskId>/<runId>"))
                .to(claims::report_failed),
            post("/task/<taskId>/runs/<runId>/exception", "reportException")
                .scopes(scope("queue:resolve-task:<taskId>/<runId>"))
                .to(claims::report_exception),
            get("/task/<taskId>/runs/<runId>/artifacts", "listArtifacts")
                .scopes(scope("queue:list-artifacts:<taskId>:<runId>"))
                .to(artifacts::list_artifacts),
            post("/task/<taskId>/runs/<runId>/artifacts/<name..>", "createArtifact")
                .scopes(scope("queue:create-artifact:<taskId>/<runId>"))
                .to(artifacts::create_artifact),
            get("/task/<taskId>/runs/<runId>/artifacts/<name..>", "getArtifact")
                .scopes(scope("queue:get-artifact:<name>"))
                .to(artifacts::get_artifact),
            get("/task/<taskId>/runs/<runId>/artifact-content/<name..>", "artifact")
                .scopes(scope("queue:get-artifact:<name>"))
                .to(artifacts::artifact),
            get("/task/<taskId>/runs/<runId>/artifact-info/<name..>", "artifactInfo")
                .scopes(scope("queue:list-artifacts:<taskId>:<runId>"))
                .to(artifacts::artifact_info),
            get("/task/<taskId>/artifacts", "listLatestArtifacts")
                .scopes(scope("queue:list-artifacts:<taskId>"))
                .to(artifacts::list_latest_artifacts),
            get("/task/<taskId>/artifacts/<name..>", "getLatestArtifact")
                .scopes(scope("queue:get-artifact:<name>"))
                .to(artifacts::get_latest_artifact),
            get("/task/<taskId>/artifact-content/<name..>", "latestArtifact")
                .scopes(scope("queue:get-artifact:<name>"))
                .to(artifacts::latest_artifact),
            get("/task/<taskId>/artifact-info/<name..>", "latestArtifactInfo")
                .scopes(scope("queue:list-artifacts:<taskId>"))
                .to(artifacts::latest_artifact_info),
            get("/task-queues", "listTaskQueues")
                .scopes(scope("queue:list-task-queues"))
                .to(task_queues::list_task_queues),
            get(
                "/provisioners/<provisionerId>/worker-types/<workerType>/workers",
                "listWorkers",
            )
            .scopes(scope("queue:list-workers:<provisionerId>/<workerType>"))
            .to(task_queues::list_workers),
            get(
                "/provisioners/<provisionerId>/worker-types/<workerType>/workers/<workerGroup>/<workerId>",
                "getWorker",
            )
            .scopes(scope(
                "queue:get-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>",
            ))
            .to(task_queues::get_worker),
            post("/claim-work/<taskQueueId:2>", "claimWork")
                .scopes(all_of([scope("queue:claim-work:<taskQueueId>"), worker_id()]))
                .to(claims::claim_work),
            get("/pending/<taskQueueId:2>", "pendingTasks")
                .scopes(scope("queue:pending-count:<taskQueueId>"))
                .to(task_queues::pending_tasks),
            get("/task-queues/<taskQueueId:2>/counts", "taskQueueCounts")
                .scopes(all_of([
                    scope("queue:pending-count:<taskQueueId>"),
                    scope("queue:claimed-count:<taskQueueId>"),
                ]))
                .to(task_queues::task_queue_counts),
            get("/task-queues/<taskQueueId:2>/pending", "listPendingTasks")
                .scopes(scope("queue:pending-list:<taskQueueId>"))
                .to(task_queues::list_pending_tasks),
            get("/task-queues/<taskQueueId:2>/claimed", "listClaimedTasks")
                .scopes(scope("queue:claimed-list:<taskQueueId>"))
                .to(task_queues::list_claimed_tasks),
            get("/task-queues/<taskQueueId:2>", "getTaskQueue")
                .scopes(scope("queue:get-task-queue:<taskQueueId>"))
                .to(task_queues::get_task_queue),
        ])
        .routes(blobs)
}

/// The axum router: the API, the blob endpoints, CORS and spans.
pub fn router(api: Api, auth: Arc<Authenticator>) -> Router {
    service(api, auth).router()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    async fn with_service<T>(f: impl FnOnce(&Service<Api>) -> T) -> T {
        let q = crate::testing::TestQueue::sqlite().await;
        let auth = bbb_auth::Authenticator::new(bbb_auth::AuthConfig::default()).unwrap();
        let api = Api {
            queue: q.running.queue.clone(),
            blobs: q.running.blobs.clone(),
        };
        let out = f(&service(api, Arc::new(auth)));
        q.stop().await;
        out
    }

    fn found(
        name: &'static str,
        params: &[(&str, &str)],
    ) -> Option<(&'static str, bbb_service::routes::Params)> {
        let params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some((name, params))
    }

    #[tokio::test]
    async fn encoded_and_raw_queue_ids_match() {
        with_service(|s| {
            let a = s.find(&Method::POST, "claim-work/proj%2Fwt");
            let b = s.find(&Method::POST, "claim-work/proj/wt");
            assert_eq!(a, found("claimWork", &[("taskQueueId", "proj/wt")]));
            assert_eq!(a, b);
            assert_eq!(
                s.find(&Method::GET, "task-queues/proj/wt/counts"),
                found("taskQueueCounts", &[("taskQueueId", "proj/wt")])
            );
            assert_eq!(
                s.find(&Method::GET, "task-queues/proj%2Fwt/pending"),
                found("listPendingTasks", &[("taskQueueId", "proj/wt")])
            );
            assert_eq!(
                s.find(&Method::GET, "task-queues/proj%2Fwt"),
                found("getTaskQueue", &[("taskQueueId", "proj/wt")])
            );
            assert_eq!(
                s.find(&Method::GET, "task-queues"),
                found("listTaskQueues", &[])
            );
        })
        .await
    }

    #[tokio::test]
    async fn artifact_names_keep_slashes() {
        with_service(|s| {
            let want = found(
                "getArtifact",
                &[
                    ("taskId", "T"),
                    ("runId", "0"),
                    ("name", "public/logs/live.log"),
                ],
            );
            assert_eq!(
                s.find(
                    &Method::GET,
                    "task/T/runs/0/artifacts/public%2Flogs%2Flive.log"
                ),
                want
            );
            assert_eq!(
                s.find(&Method::GET, "task/T/runs/0/artifacts/public/logs/live.log"),
                want
            );
            assert_eq!(
                s.find(&Method::GET, "task/T/runs/0/artifacts"),
                found("listArtifacts", &[("taskId", "T"), ("runId", "0")])
            );
            assert_eq!(s.find(&Method::DELETE, "task/T"), None);
        })
        .await
    }
}
