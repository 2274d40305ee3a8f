//! The bridge processes' health snapshots and the build requests per master,
//! on a real SQLite file and a real PostgreSQL database.

mod common;

use bbb_state::{
    Change, HealthRow, MasterRequests, NewSlot, RowResolution, SlotClaim, StartedBuild, StateDb,
};
use bbb_testdb::on_both_backends;
use common::{TestDb, slot};

const T0: i64 = 1_700_000_000_000;

on_both_backends!(
    crate::common::on_backend;
    a_process_s_snapshot_is_one_row_it_overwrites,
    requests_are_counted_per_master,
);

fn row(master: &str, instance: &str, updated: i64, snapshot: &str) -> HealthRow {
    HealthRow {
        master: master.into(),
        instance: instance.into(),
        started: T0,
        updated,
        snapshot: snapshot.into(),
    }
}

async fn a_process_s_snapshot_is_one_row_it_overwrites(t: TestDb) {
    let db = &t.db;
    assert_eq!(db.health().await.unwrap(), vec![]);
    db.put_health(&row("m1", "a", T0, "{\"injected\":1}"))
        .await
        .unwrap();
    db.put_health(&row("m1", "a", T0, "{\"injected\":1}"))
        .await
        .unwrap();
    db.put_health(&row("m1", "b", T0 + 5, "{}")).await.unwrap();
    db.put_health(&row("m0", "a", T0 + 1, "{}")).await.unwrap();
    db.put_health(&row("m1", "a", T0 + 10, "{\"injected\":2}"))
        .await
        .unwrap();
    // Read as the web UI does: through a pool of its own.
    let reader = StateDb::connect(&t.url, 2).await.unwrap();
    let rows = reader.health().await.unwrap();
    assert_eq!(
        rows,
        vec![
            row("m0", "a", T0 + 1, "{}"),
            row("m1", "a", T0 + 10, "{\"injected\":2}"),
            row("m1", "b", T0 + 5, "{}"),
        ]
    );
    // Processes silent since before the cutoff go.
    assert_eq!(db.purge_health_before(T0 + 5).await.unwrap(), 1);
    assert_eq!(db.purge_health_before(T0 + 5).await.unwrap(), 0);
    let left: Vec<_> = db
        .health()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.master, r.instance))
        .collect();
    assert_eq!(
        left,
        [
            ("m1".to_string(), "a".to_string()),
            ("m1".to_string(), "b".to_string())
        ]
    );
}

async fn requests_are_counted_per_master(t: TestDb) {
    let db = &t.db;
    assert_eq!(db.requests_by_master().await.unwrap(), vec![]);
    let on = |task: &'static str, master: &'static str| NewSlot {
        master,
        ..slot(task, 0, T0)
    };
    // m1: one row pending (not injected yet), two requested, one running,
    // one resolved; m2: one running.
    for (task, master) in [
        ("p", "m1"),
        ("q1", "m1"),
        ("q2", "m1"),
        ("r", "m1"),
        ("done", "m1"),
        ("r2", "m2"),
    ] {
        assert!(matches!(
            db.claim_slot(&on(task, master)).await.unwrap(),
            SlotClaim::New { .. }
        ));
    }
    for (i, task) in ["q1", "q2", "r", "done", "r2"].into_iter().enumerate() {
        assert!(matches!(
            db.set_build_request(task, 0, 100 + i as i64, T0)
                .await
                .unwrap(),
            Change::Applied(_)
        ));
    }
    for task in ["r", "r2"] {
        let started = StartedBuild {
            build_id: Some(7),
            number: None,
        };
        assert!(matches!(
            db.mark_started(task, 0, started, T0 + 60_000, T0)
                .await
                .unwrap(),
            Change::Applied(_)
        ));
    }
    db.mark_resolved("done", 0, RowResolution::Completed, T0)
        .await
        .unwrap();
    assert_eq!(
        db.requests_by_master().await.unwrap(),
        vec![
            MasterRequests {
                master: "m1".into(),
                pending: 3,
                running: 1
            },
            MasterRequests {
                master: "m2".into(),
                pending: 0,
                running: 1
            },
        ]
    );
}
