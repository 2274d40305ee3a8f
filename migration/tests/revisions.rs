//! The revisions table (migration `5004`) on SQLite and PostgreSQL: a
//! branch's window reads its newest revisions from it in the order the
//! observations give (the earliest start, or finish, of each revision's
//! results, newest first, then the revision's name), a late result with an
//! earlier start moves its revision back, a re-delivered result changes
//! nothing, the migration fills it from the observations recorded before it,
//! and the windows read together or narrowed are the windows read one by one.

use bbb_migration::figures::Window;
use bbb_migration::store::{self, MappingEntry};
use bbb_migration::{Observation, Outcome, Pairing, Side};
use bbb_queue::db::Db;
use bbb_testdb::{Backend, PgDatabase, TempDir, on_both_backends};
use sqlx::Row;

on_both_backends!(
    crate::on;
    the_window_reads_the_newest_revisions_by_their_first_time,
    windows_read_together_or_narrowed_are_the_windows_read_alone,
);

/// A database with the record's migrations applied, and what keeps it.
struct Fresh {
    db: Db,
    _pg: Option<PgDatabase>,
    _dir: TempDir,
}

async fn fresh(backend: Backend) -> Fresh {
    let dir = TempDir::new("bbb-migration-revisions");
    let (url, pg) = match backend {
        Backend::Postgres => {
            let pg = PgDatabase::create("bbb_migration_revisions")
                .await
                .expect("create a PostgreSQL database");
            (pg.url().to_string(), Some(pg))
        }
        Backend::Sqlite => (
            format!("sqlite://{}/record.sqlite", dir.path().display()),
            None,
        ),
    };
    let db = Db::connect(&url, 4).await.expect("connect");
    Fresh {
        db,
        _pg: pg,
        _dir: dir,
    }
}

async fn on(backend: Backend, test: impl AsyncFnOnce(&Db)) {
    let f = fresh(backend).await;
    bbb_migration::migrate(&f.db).await.expect("migrate");
    test(&f.db).await;
    f.db.pool.close().await;
}

fn obs(
    side: Side,
    id: &str,
    branch: &str,
    revision: &str,
    job: &str,
    started: Option<i64>,
    finished: i64,
) -> Observation {
    Observation {
        side,
        source_id: id.into(),
        branch: branch.into(),
        revision: revision.into(),
        job: job.into(),
        builder: (side == Side::Buildbot).then(|| job.to_string()),
        symbol: None,
        result: Outcome::Success,
        started,
        finished,
    }
}

/// The revision order as the observations give it: what the window read
/// before the revisions table, over all of the branch's observations.
async fn order_from_observations(db: &Db, branch: &str) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT revision, MIN(COALESCE(started, finished)) AS first \
         FROM migration_observations WHERE branch = $1 \
         GROUP BY revision ORDER BY first DESC, revision DESC",
    )
    .bind(branch)
    .fetch_all(&db.pool)
    .await
    .expect("order from the observations")
    .iter()
    .map(|r| (r.get("revision"), r.get("first")))
    .collect()
}

/// The revisions table's rows of `branch`, newest first.
async fn stored(db: &Db, branch: &str) -> Vec<(String, i64)> {
    sqlx::query(
        "SELECT revision, first_time FROM migration_revisions WHERE branch = $1 \
         ORDER BY first_time DESC, revision DESC",
    )
    .bind(branch)
    .fetch_all(&db.pool)
    .await
    .expect("revisions")
    .iter()
    .map(|r| (r.get("revision"), r.get("first_time")))
    .collect()
}

async fn count(db: &Db, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&db.pool)
        .await
        .expect("count")
        .get("n")
}

async fn window_revisions(db: &Db, branch: &str, n: i64) -> Vec<String> {
    store::window(db, branch, n).await.expect("window").0
}

fn names(order: &[(String, i64)]) -> Vec<String> {
    order.iter().map(|(r, _)| r.clone()).collect()
}

async fn the_window_reads_the_newest_revisions_by_their_first_time(db: &Db) {
    use Side::*;
    // Three revisions, each result in a transaction of its own.
    for o in [
        obs(Native, "a/0", "b1", "rev-a", "test", Some(100), 150),
        obs(Buildbot, "m/1", "b1", "rev-a", "bb", Some(120), 170),
        obs(Native, "b/0", "b1", "rev-b", "test", Some(200), 250),
        obs(Native, "c/0", "b1", "rev-c", "test", Some(300), 350),
        // No start: its finish counts.
        obs(Bridged, "d/0", "b1", "rev-d", "legacy", None, 400),
        // Another branch with the same revision names.
        obs(Native, "x/0", "b2", "rev-a", "test", Some(1000), 1100),
    ] {
        store::ingest(db, &[o]).await.expect("ingest");
    }
    let expected = vec![
        ("rev-d".to_string(), 400),
        ("rev-c".to_string(), 300),
        ("rev-b".to_string(), 200),
        ("rev-a".to_string(), 100),
    ];
    assert_eq!(stored(db, "b1").await, expected);
    assert_eq!(order_from_observations(db, "b1").await, expected);
    assert_eq!(window_revisions(db, "b1", 2).await, ["rev-d", "rev-c"]);
    assert_eq!(window_revisions(db, "b2", 10).await, ["rev-a"]);
    assert_eq!(window_revisions(db, "none", 10).await, Vec::<String>::new());

    // A late result of rev-d that started before rev-b's first: rev-d moves
    // back; a later one of rev-c changes nothing.
    store::ingest(
        db,
        &[
            obs(Buildbot, "m/2", "b1", "rev-d", "bb", Some(150), 900),
            obs(Native, "c/1", "b1", "rev-c", "test", Some(800), 850),
        ],
    )
    .await
    .expect("ingest late results");
    let expected = vec![
        ("rev-c".to_string(), 300),
        ("rev-b".to_string(), 200),
        ("rev-d".to_string(), 150),
        ("rev-a".to_string(), 100),
    ];
    assert_eq!(stored(db, "b1").await, expected);
    assert_eq!(order_from_observations(db, "b1").await, expected);
    assert_eq!(
        window_revisions(db, "b1", 3).await,
        ["rev-c", "rev-b", "rev-d"]
    );

    // Re-delivered results (in one transaction, and again) change nothing.
    let before = (
        count(db, "migration_observations").await,
        stored(db, "b1").await,
    );
    let again = [
        obs(Native, "a/0", "b1", "rev-a", "test", Some(100), 150),
        obs(Buildbot, "m/2", "b1", "rev-d", "bb", Some(150), 900),
        obs(Buildbot, "m/2", "b1", "rev-d", "bb", Some(150), 900),
    ];
    store::ingest(db, &again).await.expect("re-deliver");
    store::ingest(db, &again).await.expect("re-deliver again");
    assert_eq!(
        (
            count(db, "migration_observations").await,
            stored(db, "b1").await
        ),
        before
    );
    assert_eq!(count(db, "migration_revisions").await, 5);

    // Equal first times: the later name first, as the observations order them.
    store::ingest(
        db,
        &[
            obs(Native, "e/0", "b1", "rev-e", "test", Some(300), 310),
            obs(Native, "f/0", "b1", "rev-0", "test", Some(300), 310),
        ],
    )
    .await
    .expect("ingest ties");
    let order = order_from_observations(db, "b1").await;
    assert_eq!(stored(db, "b1").await, order);
    assert_eq!(
        window_revisions(db, "b1", 10).await,
        ["rev-e", "rev-c", "rev-0", "rev-b", "rev-d", "rev-a"]
    );
    assert_eq!(window_revisions(db, "b1", 10).await, names(&order));

    // The window's observations are its revisions' own, by finish time.
    let (revisions, observations) = store::window(db, "b1", 2).await.expect("window");
    assert_eq!(revisions, ["rev-e", "rev-c"]);
    let ids: Vec<&str> = observations.iter().map(|o| o.source_id.as_str()).collect();
    assert_eq!(ids, ["e/0", "c/0", "c/1"]);
    assert_eq!(
        store::branches(db).await.expect("branches"),
        ["b1".to_string(), "b2".to_string()]
    );
}

/// Observations of `branches` × `revisions` × a few jobs of every kind, with
/// first times that are not in the revisions' order of names.
fn record(branches: usize, revisions: usize) -> Vec<Observation> {
    let mut out = Vec::new();
    for b in 0..branches {
        for r in 0..revisions {
            let branch = format!("branch-{b}");
            let revision = format!("rev-{}", (r * 7) % revisions);
            let t = (r as i64) * 1000 + (b as i64);
            for j in 0..4 {
                let start = t + j * 10;
                out.push(obs(
                    Side::Native,
                    &format!("t{b}-{r}-{j}/0"),
                    &branch,
                    &revision,
                    &format!("test-{j}"),
                    Some(start),
                    start + 100 - j,
                ));
                if j % 2 == 0 {
                    let mut build = obs(
                        Side::Buildbot,
                        &format!("m/{b}-{r}-{j}"),
                        &branch,
                        &revision,
                        &format!("bb-{j}"),
                        Some(start + 1),
                        start + 120,
                    );
                    build.result = if (r + j as usize).is_multiple_of(3) {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    out.push(build);
                }
                if j == 3 {
                    let mut bridged = obs(
                        Side::Bridged,
                        &format!("u{b}-{r}/0"),
                        &branch,
                        &revision,
                        "legacy-3",
                        None,
                        start + 50,
                    );
                    bridged.builder = Some("br-3".into());
                    out.push(bridged);
                }
            }
        }
    }
    out
}

fn mapping() -> Vec<MappingEntry> {
    ["test-0", "test-2"]
        .into_iter()
        .map(|label| MappingEntry {
            pairing: Pairing {
                branch: "*".into(),
                label: label.into(),
                builder: label.replace("test", "bb"),
            },
            source: "file".into(),
            updated: 0,
            updated_by: "tests".into(),
        })
        .collect()
}

/// Every figure of a window, to compare two windows by.
fn figures(w: &Window) -> String {
    let jobs = w.jobs();
    let comparisons: Vec<_> = jobs
        .iter()
        .filter_map(|j| Some(w.compare(j.label.as_deref()?, j.builder.as_deref()?)))
        .collect();
    serde_json::to_string(&(
        &w.revisions,
        &w.observations,
        w.summary(&jobs),
        &jobs,
        w.history(),
        comparisons,
    ))
    .expect("figures as JSON")
}

async fn windows_read_together_or_narrowed_are_the_windows_read_alone(db: &Db) {
    store::ingest(db, &record(3, 12)).await.expect("ingest");
    let entries = mapping();
    let branches: Vec<String> = ["branch-2", "branch-0", "none", "branch-1", "branch-0"]
        .into_iter()
        .map(String::from)
        .collect();
    for n in [1, 5, 12, 50] {
        let together = Window::load_many(db, &branches, n, &entries)
            .await
            .expect("windows");
        assert_eq!(together.len(), branches.len());
        for (branch, w) in branches.iter().zip(&together) {
            let alone = Window::load(db, branch, n, &entries).await.expect("window");
            assert_eq!(w.branch, *branch);
            assert_eq!(figures(w), figures(&alone), "{branch}, {n} revisions");
            assert_eq!(
                w.revisions,
                names(&order_from_observations(db, branch).await)
                    .into_iter()
                    .take(n as usize)
                    .collect::<Vec<_>>()
            );
            for k in [1, 3, 12, 60] {
                let narrowed = w.newest(k);
                let read = Window::load(db, branch, n.min(k as i64), &entries)
                    .await
                    .expect("window");
                assert_eq!(figures(&narrowed), figures(&read), "{branch}, {n} → {k}");
            }
        }
    }
    let w = Window::load(db, "branch-1", 4, &entries)
        .await
        .expect("window");
    let jobs = w.jobs();
    // test-0 ↔ bb-0, test-2 ↔ bb-2, legacy-3 ↔ br-3, test-1, test-3.
    assert_eq!(jobs.len(), 5);
    assert_eq!(w.summary(&jobs).counts.native, 4);
    assert_eq!(w.history().len(), 4);
}

/// Runs the record's migrations before the revisions table (`5001` to
/// `5003`) from a copy of their files.
async fn migrate_before_revisions(db: &Db) {
    let dir = TempDir::new("bbb-migration-old-migrations");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(match db.backend {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        });
    for entry in std::fs::read_dir(&src).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let version: u32 = name[..4].parse().expect("version");
        if version <= 5003 {
            std::fs::copy(&path, dir.path().join(&name)).expect("copy");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("migrator");
    assert_eq!(migrator.iter().count(), 3);
    migrator
        .run(&db.pool)
        .await
        .expect("the migrations before 5004");
}

async fn backfill(backend: Backend) {
    let f = fresh(backend).await;
    let db = &f.db;
    migrate_before_revisions(db).await;
    // Observations written as the record wrote them before 5004.
    let existing = record(2, 6);
    for o in &existing {
        sqlx::query(
            "INSERT INTO migration_observations \
             (side, source_id, branch, revision, job, builder, symbol, result, started, finished) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(o.side.as_str())
        .bind(&o.source_id)
        .bind(&o.branch)
        .bind(&o.revision)
        .bind(&o.job)
        .bind(o.builder.clone())
        .bind(o.symbol.clone())
        .bind(o.result.as_str())
        .bind(o.started)
        .bind(o.finished)
        .execute(&db.pool)
        .await
        .expect("insert an observation");
    }
    let before: Vec<Vec<(String, i64)>> = vec![
        order_from_observations(db, "branch-0").await,
        order_from_observations(db, "branch-1").await,
    ];
    bbb_migration::migrate(db).await.expect("migrate to 5004");
    assert_eq!(count(db, "migration_revisions").await, 12);
    for (b, order) in before.iter().enumerate() {
        let branch = format!("branch-{b}");
        assert_eq!(order.len(), 6);
        assert_eq!(stored(db, &branch).await, *order);
        assert_eq!(window_revisions(db, &branch, 4).await, names(&order[..4]));
    }
    // Recording goes on from there: a late result lowers a backfilled row.
    let oldest = before[0].last().expect("a revision").clone();
    let newest = before[0][0].0.clone();
    store::ingest(
        db,
        &[obs(
            Side::Native,
            "late/0",
            "branch-0",
            &newest,
            "test-9",
            Some(oldest.1 - 1),
            oldest.1 + 10,
        )],
    )
    .await
    .expect("ingest");
    let after = order_from_observations(db, "branch-0").await;
    assert_eq!(after.last().expect("a revision").0, newest);
    assert_eq!(stored(db, "branch-0").await, after);
    db.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_migration_fills_the_revisions_of_existing_observations_sqlite() {
    backfill(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_migration_fills_the_revisions_of_existing_observations_postgres() {
    backfill(Backend::Postgres).await;
}
