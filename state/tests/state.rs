//! The mapping database against real SQLite files and real PostgreSQL databases:
//! every test runs once on each backend (a fresh database per test).

mod common;

use bbb_state::{
    Change, Lease, MappingRow, RowResolution, RowState, SlotClaim, StartedBuild, StateDb,
    StateError,
};
use bbb_testdb::on_both_backends;
use common::{TestDb, slot};
use std::collections::BTreeSet;

const T0: i64 = 1_700_000_000_000;

on_both_backends!(
    crate::common::on_backend;
    concurrent_claims_insert_once,
    duplicate_delivery_finds_the_row,
    build_request_is_set_once,
    retry_carries_the_request_over,
    retry_recorded_by_the_buildbot_listener_first,
    rerun_while_the_request_waits_reuses_it,
    rerun_after_resolution_is_a_new_request,
    started_and_taken_until,
    a_run_is_served_by_one_build,
    resolution_is_kept_and_idempotent,
    concurrent_reflectors_take_disjoint_rows,
    leases_expire_and_release,
    half_done_and_deadline_batches,
    purge_and_counts,
    migrations_are_idempotent,
    reclaim_batches_over_ten_thousand_rows,
);

/// Insert (task, run) and record `brid`.
async fn requested(db: &StateDb, task: &str, run: i64, brid: i64) -> MappingRow {
    assert!(matches!(
        db.claim_slot(&slot(task, run, T0)).await.unwrap(),
        SlotClaim::New { .. }
    ));
    match db.set_build_request(task, run, brid, T0).await.unwrap() {
        Change::Applied(r) => r,
        other => panic!("set_build_request: {other:?}"),
    }
}

/// Insert (task, run), record `brid`, start build `brid * 10` claimed until `taken_until`.
async fn running(db: &StateDb, task: &str, run: i64, brid: i64, taken_until: i64) -> MappingRow {
    requested(db, task, run, brid).await;
    match db
        .mark_started(
            task,
            run,
            StartedBuild {
                build_id: Some(brid * 10),
                number: None,
            },
            taken_until,
            T0,
        )
        .await
        .unwrap()
    {
        Change::Applied(r) => r,
        other => panic!("mark_started: {other:?}"),
    }
}

fn lease(owner: &str, now: i64, limit: i64) -> Lease<'_> {
    Lease {
        owner,
        now,
        duration_ms: 60_000,
        limit,
    }
}

async fn concurrent_claims_insert_once(t: TestDb) {
    for round in 0..5 {
        let task = format!("task-{round}");
        let claims = futures::future::join_all((0..8).map(|i| {
            let db = t.db.clone();
            let task = task.clone();
            tokio::spawn(async move {
                let mut s = slot(&task, 0, T0 + i);
                let instance = format!("bridge-{i}");
                s.instance = &instance;
                db.claim_slot(&s).await.unwrap()
            })
        }))
        .await;
        let claims: Vec<SlotClaim> = claims.into_iter().map(|c| c.unwrap()).collect();
        let new = claims
            .iter()
            .filter(|c| matches!(c, SlotClaim::New { .. }))
            .count();
        assert_eq!(new, 1, "exactly one insert among {claims:?}");
        let ids: BTreeSet<i64> = claims.iter().map(|c| c.row().id).collect();
        assert_eq!(ids.len(), 1, "every claim sees the same row");
        assert_eq!(t.db.rows_for_task(&task).await.unwrap().len(), 1);
    }
}

async fn duplicate_delivery_finds_the_row(t: TestDb) {
    let first = t.db.claim_slot(&slot("t1", 0, T0)).await.unwrap();
    let SlotClaim::New { row, previous } = first else {
        panic!("first claim: {first:?}")
    };
    assert_eq!(previous, None);
    assert_eq!(row.state, RowState::Pending);
    assert_eq!((row.task_id.as_str(), row.run_id), ("t1", 0));
    assert_eq!(row.build_request_id, None);
    assert_eq!(row.master, "m1");
    assert_eq!(row.created, T0);
    assert_eq!(row.leased_until, T0 + 60_000);
    assert_eq!(row.leased_by.as_deref(), Some("bridge-a"));
    let again = t.db.claim_slot(&slot("t1", 0, T0 + 5)).await.unwrap();
    assert_eq!(again, SlotClaim::Existing(row.clone()));
    // After the request is recorded a redelivery still injects nothing.
    t.db.set_build_request("t1", 0, 11, T0 + 6).await.unwrap();
    let again = t.db.claim_slot(&slot("t1", 0, T0 + 7)).await.unwrap();
    let SlotClaim::Existing(r) = again else {
        panic!("redelivery: {again:?}")
    };
    assert_eq!(r.build_request_id, Some(11));
}

async fn build_request_is_set_once(t: TestDb) {
    t.db.claim_slot(&slot("t1", 0, T0)).await.unwrap();
    let c = t.db.set_build_request("t1", 0, 100, T0 + 1).await.unwrap();
    let Change::Applied(row) = c else {
        panic!("first set: {c:?}")
    };
    assert_eq!(row.state, RowState::Requested);
    assert_eq!(row.build_request_id, Some(100));
    assert_eq!(row.leased_until, 0, "the inserter's lease is freed");
    assert_eq!(row.updated, T0 + 1);
    assert_eq!(t.db.get("t1", 0).await.unwrap(), Some(row.clone()));

    let same = t.db.set_build_request("t1", 0, 100, T0 + 2).await.unwrap();
    assert_eq!(same, Change::Unchanged(row.clone()));
    let other = t.db.set_build_request("t1", 0, 200, T0 + 3).await.unwrap();
    assert_eq!(other, Change::Refused(row.clone()));
    assert_eq!(
        t.db.get("t1", 0).await.unwrap().unwrap().build_request_id,
        Some(100)
    );

    assert_eq!(
        t.db.set_build_request("nope", 0, 1, T0).await.unwrap(),
        Change::NotFound
    );
    // A run resolved before any request was recorded refuses one (cancel what was injected).
    t.db.claim_slot(&slot("t2", 0, T0)).await.unwrap();
    t.db.mark_resolved("t2", 0, RowResolution::Exception, T0 + 1)
        .await
        .unwrap();
    let late = t.db.set_build_request("t2", 0, 300, T0 + 2).await.unwrap();
    assert!(
        matches!(late, Change::Refused(ref r) if r.build_request_id.is_none()),
        "{late:?}"
    );

    // Concurrent different requests: exactly one wins.
    t.db.claim_slot(&slot("t3", 0, T0)).await.unwrap();
    let results = futures::future::join_all((0..6).map(|i| {
        let db = t.db.clone();
        tokio::spawn(async move { db.set_build_request("t3", 0, 1000 + i, T0).await.unwrap() })
    }))
    .await;
    let applied: Vec<Change> = results
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|c| matches!(c, Change::Applied(_)))
        .collect();
    assert_eq!(applied.len(), 1);
    let winner = applied[0].row().unwrap().build_request_id;
    assert_eq!(
        t.db.get("t3", 0).await.unwrap().unwrap().build_request_id,
        winner
    );
}

async fn retry_carries_the_request_over(t: TestDb) {
    running(&t.db, "t1", 0, 7, T0 + 1_200_000).await;
    // The build ends RETRY: mark before resolving the run worker-shutdown.
    let c = t.db.mark_retrying("t1", 0, None, T0 + 10).await.unwrap();
    let Change::Applied(r0) = c else {
        panic!("mark_retrying: {c:?}")
    };
    assert_eq!(r0.state, RowState::Retrying);
    assert_eq!(r0.taken_until, None, "a retried run is never reclaimed");
    assert!(matches!(
        t.db.mark_retrying("t1", 0, None, T0 + 11).await.unwrap(),
        Change::Unchanged(_)
    ));
    assert!(
        t.db.take_batch_needing_reclaim(&lease("rx", T0 + 2_000_000, 10), 600_000)
            .await
            .unwrap()
            .is_empty()
    );

    // The queue's run 1 arrives at a TC listener: no second request.
    let claim = t.db.claim_slot(&slot("t1", 1, T0 + 20)).await.unwrap();
    let SlotClaim::CarriedOver { row, previous } = claim else {
        panic!("run 1: {claim:?}")
    };
    assert_eq!(row.run_id, 1);
    assert_eq!(row.state, RowState::Requested);
    assert_eq!(row.build_request_id, Some(7));
    assert_eq!(row.leased_until, 0);
    assert_eq!(previous.run_id, 0);
    assert_eq!(previous.state, RowState::Resolved);
    assert_eq!(previous.resolution, Some(RowResolution::CarriedOver));
    assert_eq!(t.db.get("t1", 0).await.unwrap(), Some(previous.clone()));

    // Lookups by the shared request: newest run first.
    let rows = t.db.find_by_build_request(7).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        vec![1, 0]
    );
    assert_eq!(
        t.db.current_for_build_request(7)
            .await
            .unwrap()
            .map(|r| r.run_id),
        Some(1)
    );
    assert_eq!(t.db.current_for_build_request(8).await.unwrap(), None);

    // Duplicates of every event change nothing.
    assert!(matches!(
        t.db.claim_slot(&slot("t1", 1, T0 + 21)).await.unwrap(),
        SlotClaim::Existing(ref r) if r.build_request_id == Some(7)
    ));
    assert!(matches!(
        t.db.reuse_for_rerun("t1", 1, 7, T0 + 22).await.unwrap(),
        Change::Unchanged(_)
    ));
    assert!(matches!(
        t.db.mark_retrying("t1", 0, None, T0 + 23).await.unwrap(),
        Change::Refused(_)
    ));

    // The retried build starts and finishes on run 1.
    let c =
        t.db.mark_started(
            "t1",
            1,
            StartedBuild {
                build_id: Some(71),
                number: None,
            },
            T0 + 2_400_000,
            T0 + 30,
        )
        .await
        .unwrap();
    assert!(
        matches!(c, Change::Applied(ref r) if r.state == RowState::Running && r.build_id == Some(71))
    );
    t.db.mark_resolved("t1", 1, RowResolution::Completed, T0 + 40)
        .await
        .unwrap();
    let rows = t.db.rows_for_task("t1").await.unwrap();
    assert!(rows.iter().all(|r| r.state == RowState::Resolved));
    assert_eq!(rows[0].resolution, Some(RowResolution::Completed));
}

async fn retry_recorded_by_the_buildbot_listener_first(t: TestDb) {
    running(&t.db, "t1", 0, 7, T0 + 1_200_000).await;
    t.db.mark_retrying("t1", 0, None, T0 + 10).await.unwrap();
    // reportException answered with run 1: the Buildbot listener records it.
    let c = t.db.reuse_for_rerun("t1", 1, 7, T0 + 20).await.unwrap();
    let Change::Applied(r1) = c else {
        panic!("reuse: {c:?}")
    };
    assert_eq!(r1.state, RowState::Requested);
    assert_eq!(r1.build_request_id, Some(7));
    assert_eq!(r1.master, "m1");
    assert_eq!(r1.deadline, T0 + 86_400_000, "deadline copied from run 0");
    let r0 = t.db.get("t1", 0).await.unwrap().unwrap();
    assert_eq!(
        (r0.state, r0.resolution),
        (RowState::Resolved, Some(RowResolution::CarriedOver))
    );
    // Then the task-pending of run 1 reaches a TC listener.
    let claim = t.db.claim_slot(&slot("t1", 1, T0 + 30)).await.unwrap();
    assert_eq!(claim, SlotClaim::Existing(r1));
    // Both racing, many times over: one row per run, one request, run 0 carried over.
    for i in 0..20 {
        let task = format!("race{i}");
        running(&t.db, &task, 0, 100 + i, T0 + 1_200_000).await;
        t.db.mark_retrying(&task, 0, None, T0 + 10).await.unwrap();
        let (db1, db2, task1, task2) = (t.db.clone(), t.db.clone(), task.clone(), task.clone());
        let a = tokio::spawn(async move { db1.claim_slot(&slot(&task1, 1, T0 + 20)).await });
        let b = tokio::spawn(async move { db2.reuse_for_rerun(&task2, 1, 100 + i, T0 + 20).await });
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert!(
            matches!(a, SlotClaim::CarriedOver { .. } | SlotClaim::Existing(_)),
            "{a:?}"
        );
        assert!(b.holds(), "{b:?}");
        let rows = t.db.rows_for_task(&task).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].build_request_id, Some(100 + i));
        assert_eq!(rows[0].state, RowState::Requested);
        assert_eq!(rows[1].resolution, Some(RowResolution::CarriedOver));
    }
}

async fn rerun_while_the_request_waits_reuses_it(t: TestDb) {
    requested(&t.db, "t1", 0, 9).await;
    // Run 0 was resolved on the queue side while its request still waits; run 1 appears.
    let claim = t.db.claim_slot(&slot("t1", 1, T0 + 10)).await.unwrap();
    let SlotClaim::New { row, previous } = claim else {
        panic!("run 1: {claim:?}")
    };
    assert_eq!(row.state, RowState::Pending);
    let previous = previous.expect("previous run");
    assert_eq!(
        (previous.run_id, previous.state, previous.build_request_id),
        (0, RowState::Requested, Some(9))
    );
    let c = t.db.reuse_for_rerun("t1", 1, 9, T0 + 11).await.unwrap();
    assert!(
        matches!(c, Change::Applied(ref r) if r.build_request_id == Some(9) && r.state == RowState::Requested),
        "{c:?}"
    );
    assert_eq!(
        t.db.get("t1", 0).await.unwrap().unwrap().resolution,
        Some(RowResolution::CarriedOver)
    );
    assert!(matches!(
        t.db.reuse_for_rerun("t1", 1, 9, T0 + 12).await.unwrap(),
        Change::Unchanged(_)
    ));
    // A request no earlier run holds cannot be carried over.
    let err = t.db.reuse_for_rerun("t1", 2, 99, T0).await.unwrap_err();
    assert!(
        matches!(
            err,
            StateError::NotCarried {
                build_request_id: 99,
                ..
            }
        ),
        "{err}"
    );
    // A run that got its own request refuses another.
    requested(&t.db, "t2", 0, 20).await;
    requested(&t.db, "t2", 1, 21).await;
    assert!(matches!(
        t.db.reuse_for_rerun("t2", 1, 20, T0).await.unwrap(),
        Change::Refused(ref r) if r.build_request_id == Some(21)
    ));
    assert_eq!(
        t.db.get("t2", 0).await.unwrap().unwrap().state,
        RowState::Requested,
        "a refused reuse leaves the earlier run alone"
    );
}

async fn rerun_after_resolution_is_a_new_request(t: TestDb) {
    running(&t.db, "t1", 0, 5, T0 + 1_200_000).await;
    t.db.mark_resolved("t1", 0, RowResolution::Completed, T0 + 10)
        .await
        .unwrap();
    let claim = t.db.claim_slot(&slot("t1", 1, T0 + 20)).await.unwrap();
    let SlotClaim::New { row, previous } = claim else {
        panic!("rerun: {claim:?}")
    };
    assert_eq!(row.build_request_id, None);
    assert_eq!(previous.unwrap().resolution, Some(RowResolution::Completed));
    assert!(matches!(
        t.db.set_build_request("t1", 1, 6, T0 + 21).await.unwrap(),
        Change::Applied(_)
    ));
    assert_eq!(
        t.db.current_for_build_request(5)
            .await
            .unwrap()
            .unwrap()
            .run_id,
        0
    );
    assert_eq!(
        t.db.current_for_build_request(6)
            .await
            .unwrap()
            .unwrap()
            .run_id,
        1
    );
}

async fn started_and_taken_until(t: TestDb) {
    t.db.claim_slot(&slot("t1", 0, T0)).await.unwrap();
    assert!(matches!(
        t.db.mark_started(
            "t1",
            0,
            StartedBuild {
                build_id: Some(1),
                number: None
            },
            T0 + 100,
            T0
        )
        .await
        .unwrap(),
        Change::Refused(_)
    ));
    t.db.set_build_request("t1", 0, 3, T0).await.unwrap();
    let c =
        t.db.mark_started(
            "t1",
            0,
            StartedBuild {
                build_id: Some(30),
                number: None,
            },
            T0 + 1000,
            T0 + 1,
        )
        .await
        .unwrap();
    let Change::Applied(r) = c else {
        panic!("started: {c:?}")
    };
    assert_eq!(
        (r.state, r.build_id, r.taken_until),
        (RowState::Running, Some(30), Some(T0 + 1000))
    );
    // A duplicate started event with an older claim changes nothing.
    assert_eq!(
        t.db.mark_started(
            "t1",
            0,
            StartedBuild {
                build_id: Some(31),
                number: None
            },
            T0 + 900,
            T0 + 2
        )
        .await
        .unwrap(),
        Change::Unchanged(r.clone())
    );
    // One with a later claim keeps the build id and moves takenUntil.
    let c =
        t.db.mark_started(
            "t1",
            0,
            StartedBuild {
                build_id: Some(31),
                number: None,
            },
            T0 + 1100,
            T0 + 3,
        )
        .await
        .unwrap();
    assert!(
        matches!(c, Change::Applied(ref r) if r.build_id == Some(30) && r.taken_until == Some(T0 + 1100))
    );
    assert!(matches!(
        t.db.update_taken_until("t1", 0, T0 + 1050, T0 + 4)
            .await
            .unwrap(),
        Change::Unchanged(_)
    ));
    let c =
        t.db.update_taken_until("t1", 0, T0 + 5000, T0 + 5)
            .await
            .unwrap();
    assert!(matches!(c, Change::Applied(ref r) if r.taken_until == Some(T0 + 5000)));
    assert_eq!(
        t.db.update_taken_until("nope", 0, T0, T0).await.unwrap(),
        Change::NotFound
    );
    t.db.mark_resolved("t1", 0, RowResolution::Failed, T0 + 6)
        .await
        .unwrap();
    assert!(matches!(
        t.db.update_taken_until("t1", 0, T0 + 9000, T0 + 7)
            .await
            .unwrap(),
        Change::Refused(_)
    ));
    assert!(matches!(
        t.db.mark_started(
            "t1",
            0,
            StartedBuild {
                build_id: Some(30),
                number: None
            },
            T0 + 9000,
            T0 + 8
        )
        .await
        .unwrap(),
        Change::Refused(_)
    ));
}

/// A running row records one build: the start of another build of the
/// request is refused (the caller decides on the row as it is now) instead of
/// replacing it, and a RETRY names the build that served the run.
async fn a_run_is_served_by_one_build(t: TestDb) {
    let build = |number| StartedBuild {
        build_id: Some(number * 100),
        number: Some(number),
    };
    requested(&t.db, "t1", 0, 7).await;
    let Change::Applied(r) =
        t.db.mark_started("t1", 0, build(57), T0 + 1000, T0)
            .await
            .unwrap()
    else {
        panic!("first start not applied")
    };
    assert_eq!((r.build_number, r.build_id), (Some(57), Some(5700)));
    // A later build's start (from a copy of the row read while it was
    // requested), and an earlier one's, are refused.
    for other in [63, 12] {
        let c =
            t.db.mark_started("t1", 0, build(other), T0 + 2000, T0 + 1)
                .await
                .unwrap();
        assert!(
            matches!(&c, Change::Refused(r) if r.build_number == Some(57)),
            "{c:?}"
        );
    }
    // The same build again moves takenUntil only.
    let c =
        t.db.mark_started("t1", 0, build(57), T0 + 2000, T0 + 2)
            .await
            .unwrap();
    assert!(
        matches!(&c, Change::Applied(r) if r.build_number == Some(57) && r.taken_until == Some(T0 + 2000)),
        "{c:?}"
    );
    // A start without a number fills nothing and refuses nothing.
    let c =
        t.db.mark_started("t1", 0, StartedBuild::default(), T0 + 1500, T0 + 3)
            .await
            .unwrap();
    assert!(matches!(c, Change::Unchanged(_)), "{c:?}");

    // A row that recorded a later build than the one that served it (the
    // later start was applied first): the RETRY puts the serving build's number.
    requested(&t.db, "t2", 0, 8).await;
    t.db.mark_started("t2", 0, build(63), T0 + 1000, T0)
        .await
        .unwrap();
    let c = t.db.mark_retrying("t2", 0, Some(57), T0 + 4).await.unwrap();
    assert!(
        matches!(&c, Change::Applied(r) if r.state == RowState::Retrying && r.build_number == Some(57) && r.build_id.is_none()),
        "{c:?}"
    );
    // Without a number, the recorded build stays.
    requested(&t.db, "t3", 0, 9).await;
    t.db.mark_started("t3", 0, build(70), T0 + 1000, T0)
        .await
        .unwrap();
    let c = t.db.mark_retrying("t3", 0, None, T0 + 4).await.unwrap();
    assert!(
        matches!(&c, Change::Applied(r) if r.build_number == Some(70) && r.build_id == Some(7000)),
        "{c:?}"
    );
}

async fn resolution_is_kept_and_idempotent(t: TestDb) {
    running(&t.db, "t1", 0, 4, T0 + 1000).await;
    let c =
        t.db.mark_resolved("t1", 0, RowResolution::Canceled, T0 + 10)
            .await
            .unwrap();
    let Change::Applied(r) = c else {
        panic!("resolve: {c:?}")
    };
    assert_eq!(r.state, RowState::Resolved);
    assert_eq!(r.resolution, Some(RowResolution::Canceled));
    assert_eq!(r.resolved_at, Some(T0 + 10));
    assert_eq!(r.taken_until, None);
    assert_eq!(
        t.db.mark_resolved("t1", 0, RowResolution::Completed, T0 + 20)
            .await
            .unwrap(),
        Change::Unchanged(r.clone())
    );
    // A late duplicate task-pending finds the kept row and injects nothing.
    assert_eq!(
        t.db.claim_slot(&slot("t1", 0, T0 + 30)).await.unwrap(),
        SlotClaim::Existing(r.clone())
    );
    assert_eq!(t.db.current_for_build_request(4).await.unwrap(), Some(r));
    assert_eq!(
        t.db.mark_resolved("nope", 0, RowResolution::Failed, T0)
            .await
            .unwrap(),
        Change::NotFound
    );
    assert!(t.db.delete("t1", 0).await.unwrap());
    assert!(!t.db.delete("t1", 0).await.unwrap());
    requested(&t.db, "t2", 0, 1).await;
    requested(&t.db, "t2", 1, 2).await;
    assert_eq!(t.db.forget_task("t2").await.unwrap(), 2);
    assert!(t.db.rows_for_task("t2").await.unwrap().is_empty());
}

async fn concurrent_reflectors_take_disjoint_rows(t: TestDb) {
    let n = 300;
    for i in 0..n {
        running(&t.db, &format!("t{i:04}"), 0, i + 1, T0 + 1000 + i).await;
    }
    let other = StateDb::connect(&t.url, 8).await.unwrap();
    let reflector = |db: StateDb, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let batch = db
                .take_batch_needing_reclaim(&lease(owner, T0, 7), 600_000)
                .await
                .unwrap();
            if batch.is_empty() {
                return mine;
            }
            assert!(batch.iter().all(|r| r.leased_by.as_deref() == Some(owner)));
            assert!(batch.iter().all(|r| r.leased_until == T0 + 60_000));
            mine.extend(batch.into_iter().map(|r| r.id));
            tokio::task::yield_now().await;
        }
    };
    let handles = [
        tokio::spawn(reflector(t.db.clone(), "rx-a")),
        tokio::spawn(reflector(other.clone(), "rx-b")),
        tokio::spawn(reflector(t.db.clone(), "rx-c")),
        tokio::spawn(reflector(other.clone(), "rx-d")),
    ];
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for h in handles {
        let ids = h.await.unwrap();
        total += ids.len();
        seen.extend(ids);
    }
    assert_eq!(total, n as usize, "no row taken twice");
    assert_eq!(seen.len(), n as usize, "every row taken");
    other.close().await;
}

async fn leases_expire_and_release(t: TestDb) {
    for i in 0..5 {
        running(&t.db, &format!("t{i}"), 0, i + 1, T0 + 1000).await;
    }
    let l = Lease {
        owner: "rx-a",
        now: T0,
        duration_ms: 1000,
        limit: 10,
    };
    let first = t.db.take_batch_needing_reclaim(&l, 600_000).await.unwrap();
    assert_eq!(first.len(), 5);
    let at = |now| Lease {
        owner: "rx-b",
        now,
        duration_ms: 1000,
        limit: 10,
    };
    assert!(
        t.db.take_batch_needing_reclaim(&at(T0 + 999), 600_000)
            .await
            .unwrap()
            .is_empty()
    );
    let again =
        t.db.take_batch_needing_reclaim(&at(T0 + 1000), 600_000)
            .await
            .unwrap();
    assert_eq!(again.len(), 5, "an expired lease frees the row");
    assert!(again.iter().all(|r| r.leased_by.as_deref() == Some("rx-b")));
    let ids: Vec<i64> = again.iter().map(|r| r.id).collect();
    assert_eq!(
        t.db.release_leases(&ids, "rx-a").await.unwrap(),
        0,
        "not rx-a's"
    );
    assert!(
        t.db.take_batch_needing_reclaim(&at(T0 + 1001), 600_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(t.db.release_leases(&ids[..3], "rx-b").await.unwrap(), 3);
    assert_eq!(t.db.release_leases(&[], "rx-b").await.unwrap(), 0);
    let freed =
        t.db.take_batch_needing_reclaim(&at(T0 + 1001), 600_000)
            .await
            .unwrap();
    assert_eq!(
        freed.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    // The reclaim window: rows claimed until well after now + window are not offered.
    running(&t.db, "late", 0, 99, T0 + 10_000_000).await;
    let batch =
        t.db.take_batch_needing_reclaim(&at(T0 + 100_000), 600_000)
            .await
            .unwrap();
    assert!(batch.iter().all(|r| r.task_id != "late"));
}

async fn half_done_and_deadline_batches(t: TestDb) {
    // A row whose inserter died before recording a request.
    t.db.claim_slot(&slot("half", 0, T0)).await.unwrap();
    requested(&t.db, "req", 0, 2).await;
    running(&t.db, "run", 0, 3, T0 + 5_000_000).await;
    let rx = |now| Lease {
        owner: "rx",
        now,
        duration_ms: 30_000,
        limit: 10,
    };
    // Still within the inserter's lease: not offered.
    assert!(
        t.db.take_batch_without_build_request(&rx(T0 + 59_999), T0 + 59_999)
            .await
            .unwrap()
            .is_empty()
    );
    // Lease over but changed after `older_than`: not offered either.
    assert!(
        t.db.take_batch_without_build_request(&rx(T0 + 60_000), T0 - 1)
            .await
            .unwrap()
            .is_empty()
    );
    let half =
        t.db.take_batch_without_build_request(&rx(T0 + 60_000), T0)
            .await
            .unwrap();
    assert_eq!(
        half.iter().map(|r| r.task_id.as_str()).collect::<Vec<_>>(),
        vec!["half"]
    );
    // Requested rows, for cancel detection; taken again once the lease (interval) ends.
    let req =
        t.db.take_batch_in_state(&rx(T0 + 1), RowState::Requested, T0 + 1)
            .await
            .unwrap();
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].task_id, "req");
    assert!(
        t.db.take_batch_in_state(&rx(T0 + 2), RowState::Requested, T0 + 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.db.take_batch_in_state(&rx(T0 + 30_001), RowState::Requested, T0 + 30_001)
            .await
            .unwrap()
            .len(),
        1
    );
    // Deadlines: nothing before, both active rows with a request after.
    let deadline = T0 + 86_400_000;
    assert!(
        t.db.take_batch_past_deadline(&rx(deadline - 1))
            .await
            .unwrap()
            .is_empty()
    );
    let past = t.db.take_batch_past_deadline(&rx(deadline)).await.unwrap();
    let mut names: Vec<&str> = past.iter().map(|r| r.task_id.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["req", "run"]);
    t.db.mark_resolved("run", 0, RowResolution::Exception, deadline)
        .await
        .unwrap();
    let past =
        t.db.take_batch_past_deadline(&rx(deadline + 30_000))
            .await
            .unwrap();
    assert_eq!(
        past.iter().map(|r| r.task_id.as_str()).collect::<Vec<_>>(),
        vec!["req"],
        "resolved rows are never offered"
    );
}

async fn purge_and_counts(t: TestDb) {
    let counts = t.db.rows_by_state().await.unwrap();
    assert_eq!(
        counts,
        RowState::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>()
    );
    t.db.claim_slot(&slot("p", 0, T0)).await.unwrap();
    requested(&t.db, "q", 0, 1).await;
    requested(&t.db, "q2", 0, 2).await;
    running(&t.db, "r", 0, 3, T0 + 1000).await;
    running(&t.db, "y", 0, 4, T0 + 1000).await;
    t.db.mark_retrying("y", 0, None, T0).await.unwrap();
    for i in 0..7 {
        let task = format!("done{i}");
        running(&t.db, &task, 0, 10 + i, T0 + 1000).await;
        t.db.mark_resolved(&task, 0, RowResolution::Completed, T0 + i * 1000)
            .await
            .unwrap();
    }
    let counts = t.db.rows_by_state().await.unwrap();
    assert_eq!(
        counts,
        vec![
            (RowState::Pending, 1),
            (RowState::Requested, 2),
            (RowState::Running, 1),
            (RowState::Retrying, 1),
            (RowState::Resolved, 7),
        ]
    );
    // Resolved before T0 + 5000: done0..done4, purged two at a time.
    assert_eq!(t.db.purge_resolved_before(T0 + 5000, 2).await.unwrap(), 2);
    assert_eq!(t.db.purge_resolved_before(T0 + 5000, 2).await.unwrap(), 2);
    assert_eq!(t.db.purge_resolved_before(T0 + 5000, 2).await.unwrap(), 1);
    assert_eq!(t.db.purge_resolved_before(T0 + 5000, 2).await.unwrap(), 0);
    assert!(t.db.get("done4", 0).await.unwrap().is_none());
    assert!(t.db.get("done5", 0).await.unwrap().is_some());
    let counts = t.db.rows_by_state().await.unwrap();
    assert_eq!(counts[4], (RowState::Resolved, 2));
    assert_eq!(
        counts[0..4].iter().map(|c| c.1).sum::<i64>(),
        5,
        "active rows are never purged"
    );
}

async fn migrations_are_idempotent(t: TestDb) {
    requested(&t.db, "t1", 0, 1).await;
    t.db.migrate().await.unwrap();
    t.db.migrate().await.unwrap();
    let second = StateDb::connect(&t.url, 2).await.unwrap();
    second.migrate().await.unwrap();
    assert_eq!(
        second.get("t1", 0).await.unwrap().unwrap().build_request_id,
        Some(1)
    );
    second.close().await;
    let bad = StateDb::connect("mysql://user:secret@host/db", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(bad, StateError::UnsupportedUrl(ref u) if !u.contains("secret")),
        "{bad}"
    );
}

async fn reclaim_batches_over_ten_thousand_rows(t: TestDb) {
    // Bulk-load 10,000 running rows claimed until T0 + i seconds, in shuffled order.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9999) \
         INSERT INTO mappings (task_id, run_id, state, build_request_id, build_id, master, \
         deadline, created, updated, taken_until) \
         SELECT 'bulk' || i, 0, 'running', i + 1, i + 1, 'm1', $1, $2, $2, \
         $2 + ((i * 7919) % 10000) * 1000 FROM n",
    )
    .bind(T0 + 86_400_000)
    .bind(T0)
    .execute(t.db.pool())
    .await
    .unwrap();
    // Plus rows a reclaim must skip.
    requested(&t.db, "req", 0, 20_001).await;
    running(&t.db, "far", 0, 20_002, T0 + 100_000_000).await;

    sqlx::query("ANALYZE mappings")
        .execute(t.db.pool())
        .await
        .unwrap();
    let plan =
        t.db.explain_reclaim_selection(&lease("rx", T0, 512), 600_000)
            .await
            .unwrap()
            .join("\n");
    assert!(
        plan.contains("mappings_reclaim"),
        "reclaim selection uses its index:\n{plan}"
    );

    let window = 10_000_000;
    let mut seen = BTreeSet::new();
    let mut last = i64::MIN;
    loop {
        let batch =
            t.db.take_batch_needing_reclaim(&lease("rx", T0, 512), window)
                .await
                .unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 512);
        for r in &batch {
            let tu = r.taken_until.unwrap();
            assert!(tu >= last, "soonest takenUntil first across batches");
            last = tu;
            assert!(r.task_id.starts_with("bulk"));
            assert!(seen.insert(r.id), "row {} taken twice", r.id);
        }
    }
    assert_eq!(seen.len(), 10_000);
    let counts = t.db.rows_by_state().await.unwrap();
    assert_eq!(counts[2], (RowState::Running, 10_001));
}
