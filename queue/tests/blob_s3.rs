//! `s3` artifacts in an S3-compatible store: a real S3 server (`moto_server`, from
//! the Python test environment that `scripts/pyenv.sh` installs) per test, driven
//! through the official client and plain HTTP as workers and browsers use it.

mod common;

use bbb_queue::blob::BlobStore;
use bbb_queue::config::{BlobConfig, BlobKind};
use bbb_queue::s3::S3Store;
use bbb_queue::sigv4::{self, Request, Signer};
use bbb_queue::testing::{TestOptions, TestQueue};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

bbb_testdb::on_both_backends!(crate::on; upload_download_and_expire, store_checks_credentials);

/// Runs `test`, which starts its own queue (with its own store), on
/// `backend`.
async fn on<F: Future<Output = ()>>(backend: bbb_testdb::Backend, test: fn(bool) -> F) {
    test(backend == bbb_testdb::Backend::Postgres).await;
}

/// A `moto_server` on a free loopback port, killed on drop.
struct Moto {
    url: String,
    _child: tokio::process::Child,
}

fn moto_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("pyenv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/pyenv.sh first",
        bin.display()
    );
    bin
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Moto {
    /// Start a server; with `no_auth_actions`, it checks signatures and IAM
    /// permissions after that many requests (moto's `INITIAL_NO_AUTH_ACTION_COUNT`).
    async fn start(no_auth_actions: Option<u32>) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = tokio::process::Command::new(moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(n) = no_auth_actions {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", n.to_string());
        }
        let mut child = cmd.spawn().expect("start moto_server");
        let url = format!("http://127.0.0.1:{port}");
        let http = http();
        // Wait for it to answer (a server that never does shows as a hang).
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto_server exited: {status}");
            }
            if let Ok(r) = http.get(format!("{url}/moto-api/")).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { url, _child: child }
    }

    /// Settings for `bucket` (created by the queue at start) with moto's usual
    /// test credentials.
    fn blob_config(&self, bucket: &str) -> BlobConfig {
        BlobConfig {
            kind: BlobKind::S3,
            s3_endpoint: self.url.clone(),
            s3_bucket: bucket.into(),
            s3_access_key_id: "testing".into(),
            s3_secret_access_key: "testing".into(),
            s3_create_bucket: true,
            ..BlobConfig::default()
        }
    }

    /// One signed IAM call (form-encoded `Action=...`); returns the XML answer.
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().copied().chain([("Version", "2010-05-08")]))
            .finish();
        let host = self.url.trim_start_matches("http://").to_string();
        let date = sigv4::amz_date(chrono::Utc::now().timestamp_millis());
        let hash = sigv4::sha256_hex(body.as_bytes());
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-amz-date".to_string(), date.clone()),
            ("x-amz-content-sha256".to_string(), hash.clone()),
        ];
        let signer = Signer::new("AKIAIOSFODNN7EXAMPLE", "setup", "us-east-1", "iam");
        let auth = signer.authorization(
            &Request {
                method: "POST",
                host: &host,
                path: "/",
                query: vec![],
                headers: headers.clone(),
            },
            &date,
            &hash,
        );
        let mut rb = http()
            .post(format!("{}/", self.url))
            .header("authorization", auth);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.body(body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "IAM {params:?}: {status} {text}");
        text
    }

    /// Create an IAM user allowed everything and return its access key pair
    /// (three IAM actions).
    async fn iam_user(&self) -> (String, String) {
        self.iam(&[("Action", "CreateUser"), ("UserName", "bbb")])
            .await;
        let keys = self
            .iam(&[("Action", "CreateAccessKey"), ("UserName", "bbb")])
            .await;
        let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]});
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", "bbb"),
            ("PolicyName", "all"),
            ("PolicyDocument", &policy.to_string()),
        ])
        .await;
        (
            xml_field(&keys, "AccessKeyId"),
            xml_field(&keys, "SecretAccessKey"),
        )
    }
}

fn xml_field(xml: &str, name: &str) -> String {
    let start = xml.find(&format!("<{name}>")).expect(name) + name.len() + 2;
    let end = xml[start..].find('<').expect(name) + start;
    xml[start..end].to_string()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Upload through the putUrl, download through the getArtifact / getLatestArtifact
/// redirects (content type preserved), then expiry deletes the objects.
async fn upload_download_and_expire(postgres: bool) {
    let moto = Moto::start(None).await;
    let q = TestQueue::with(TestOptions {
        postgres,
        blob: Some(moto.blob_config("artifacts")),
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = root(&q);
    let http = http();
    let id = new_task(&queue, "prov/s3", json!({})).await;
    let (_, as_task) = claim_as_task(&q, &queue, "prov/s3", "w1").await;

    let public = "public/logs/hello world.txt";
    let ct = "text/plain; charset=utf-8";
    let art = as_task
        .createArtifact(
            &id,
            "0",
            public,
            &json!({"storageType": "s3", "contentType": ct, "expires": from_now(600)}),
        )
        .await
        .unwrap();
    assert_eq!(art["storageType"], "s3");
    assert_eq!(art["contentType"], ct);
    let put = art["putUrl"].as_str().unwrap();
    assert!(
        put.starts_with(&format!(
            "{}/artifacts/{id}/0/public/logs/hello%20world.txt?",
            moto.url
        )),
        "{put}"
    );
    assert!(put.contains("X-Amz-SignedHeaders=content-type%3Bhost"));
    // The putUrl is valid for 45 min + 10 s, which `expires` tells.
    assert!(put.contains("X-Amz-Expires=2710&"), "{put}");
    let put_expires = bbb_queue::time::parse_ms(art["expires"].as_str().unwrap()).unwrap();
    assert!(put_expires > now_ms() + 40 * 60 * 1000);
    let r = http
        .put(put)
        .header("content-type", ct)
        .body("hello s3")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {}", r.status());

    for got in [
        queue.getArtifact(&id, "0", public).await.unwrap(),
        queue.getLatestArtifact(&id, public).await.unwrap(),
    ] {
        assert_eq!(got["storageType"], "s3");
        let url = got["url"].as_str().unwrap();
        assert!(url.starts_with(&moto.url), "{url}");
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let body = http.get(url).send().await.unwrap();
        assert_eq!(body.status(), 200);
        assert_eq!(body.headers()["content-type"], ct);
        assert_eq!(body.text().await.unwrap(), "hello s3");
    }
    // An anonymous browser: the API answers 303 to the store.
    let path = format!("/api/queue/v1/task/{id}/artifacts/public%2Flogs%2Fhello%20world.txt");
    let r = get_path(&http, &q, &path).await;
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let body = http.get(&location).send().await.unwrap();
    assert_eq!(body.text().await.unwrap(), "hello s3");

    // A private binary artifact, through the official client's getArtifact.
    let private = "private/data.bin";
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let art = as_task
        .createArtifact(
            &id,
            "0",
            private,
            &json!({"storageType": "s3", "contentType": "application/octet-stream", "expires": from_now(600), "contentLength": bytes.len()}),
        )
        .await
        .unwrap();
    let r = http
        .put(art["putUrl"].as_str().unwrap())
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {}", r.status());
    let got = queue.getArtifact(&id, "0", private).await.unwrap();
    let body = http.get(got["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(body.headers()["content-type"], "application/octet-stream");
    assert_eq!(body.bytes().await.unwrap().to_vec(), bytes);
    let info = queue.artifactInfo(&id, "0", private).await.unwrap();
    assert_eq!(info["contentLength"], 100_000);

    // The queue's own /blobs/ endpoints are off with an S3 store.
    let path = format!("/blobs/{id}/0/{private}?expires=1&method=GET&signature=x");
    let r = get_path(&http, &q, &path).await;
    assert_eq!(r.status(), 404);

    // Expiry deletes both objects, then the artifacts.
    let core = &q.running.queue;
    assert_eq!(core.expire_old_data(&q.running.blobs).await.unwrap(), 0);
    q.clock.advance(Duration::from_secs(3600));
    assert_eq!(core.expire_old_data(&q.running.blobs).await.unwrap(), 2);
    for name in [public, private] {
        let url = q
            .running
            .blobs
            .get_url((&id, 0, name), now_ms(), now_ms() + 60_000);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 404, "{name} is gone from the store");
        let e = core.artifact(&id, 0, name).await.unwrap_err();
        assert!(
            matches!(e, bbb_queue::ApiError::NotFound(_)),
            "{name} is gone from the queue: {e}"
        );
    }
    // Idempotent: nothing left to do, and deleting a missing object is fine.
    assert_eq!(core.expire_old_data(&q.running.blobs).await.unwrap(), 0);
    q.running.blobs.remove(&id, 0, public).await.unwrap();
    q.stop().await;
}

/// With a store that checks signatures: good credentials create the bucket and
/// delete objects; a wrong secret or an unknown key is refused, and expiry keeps
/// the artifact until its object could be deleted.
async fn store_checks_credentials(postgres: bool) {
    let moto = Moto::start(Some(3)).await;
    let (key_id, secret) = moto.iam_user().await;
    let mut good = moto.blob_config("checked");
    good.s3_access_key_id = key_id.clone();
    good.s3_secret_access_key = secret.into();
    let q = TestQueue::with(TestOptions {
        postgres,
        blob: Some(good.clone()),
        ..Default::default()
    })
    .await
    .expect("good credentials create the bucket");
    q.running.blobs.remove("T", 0, "missing").await.unwrap();

    let mut wrong_secret = good.clone();
    wrong_secret.s3_secret_access_key = "not-the-secret".into();
    let e = TestQueue::with(TestOptions {
        blob: Some(wrong_secret.clone()),
        ..Default::default()
    })
    .await
    .err()
    .expect("a wrong secret is refused");
    assert!(
        format!("{e:#}").contains("403 Forbidden SignatureDoesNotMatch"),
        "{e:#}"
    );
    assert!(
        !format!("{e:#}").contains("not-the-secret"),
        "the secret is not shown"
    );
    let mut unknown_key = good.clone();
    unknown_key.s3_access_key_id = "AKIAUNKNOWNKEY000000".into();
    let e = TestQueue::with(TestOptions {
        blob: Some(unknown_key),
        ..Default::default()
    })
    .await
    .err()
    .expect("an unknown key is refused");
    assert!(format!("{e:#}").contains("403 Forbidden"), "{e:#}");

    // Expiry with a store that refuses the DELETE keeps the artifact for later.
    let queue = root(&q);
    let id = new_task(&queue, "prov/s3c", json!({})).await;
    let claim = claim_one(&queue, "prov/s3c", "w1").await;
    with_creds(&q, task_creds(&claim))
        .createArtifact(&id, "0", "public/x", &s3_text(60))
        .await
        .unwrap();
    q.clock.advance(Duration::from_secs(3600));
    let refused = BlobStore::S3(S3Store::new(&wrong_secret).unwrap());
    let e = refused.remove(&id, 0, "public/x").await.unwrap_err();
    assert!(e.contains("SignatureDoesNotMatch"), "{e}");
    let core = &q.running.queue;
    assert_eq!(core.expire_old_data(&refused).await.unwrap(), 0);
    assert_eq!(
        core.expire_old_data_once().await.unwrap(),
        vec![(id.clone(), 0, "public/x".to_string())],
        "still due"
    );
    assert_eq!(core.expire_old_data(&q.running.blobs).await.unwrap(), 1);
    assert!(core.expire_old_data_once().await.unwrap().is_empty());
    q.stop().await;
}
