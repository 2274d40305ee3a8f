//! The S3-compatible blob store: presigned PUT and GET URLs for `s3` artifacts,
//! signed DELETEs when they expire. Objects are keyed `<prefix><taskId>/<runId>/<name>`.

use crate::config::BlobConfig;
use crate::sigv4::{self, Request, Signer};

/// An S3-compatible bucket (AWS S3, MinIO, Ceph, moto, ...).
#[derive(Clone)]
pub struct S3Store {
    scheme: String,
    /// `host[:port]` of the endpoint.
    endpoint_host: String,
    /// The endpoint's path, without a trailing `/` (usually empty).
    endpoint_path: String,
    bucket: String,
    prefix: String,
    path_style: bool,
    public_url: Option<String>,
    signer: Signer,
    http: reqwest_tc::Client,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field(
                "endpoint",
                &format!(
                    "{}://{}{}",
                    self.scheme, self.endpoint_host, self.endpoint_path
                ),
            )
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("public_url", &self.public_url)
            .field("signer", &self.signer)
            .finish()
    }
}

impl S3Store {
    /// A store from the `[queue.blob]` settings (`kind = "s3"`).
    pub fn new(cfg: &BlobConfig) -> anyhow::Result<S3Store> {
        if cfg.s3_endpoint.is_empty() {
            anyhow::bail!("blob.s3_endpoint must be set when blob.kind is s3");
        }
        let endpoint = url::Url::parse(&cfg.s3_endpoint).map_err(|e| {
            anyhow::anyhow!("blob.s3_endpoint {:?} is not a URL: {e}", cfg.s3_endpoint)
        })?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            anyhow::bail!("blob.s3_endpoint must be an http:// or https:// URL");
        }
        let host = endpoint
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("blob.s3_endpoint has no host"))?;
        for (key, value) in [
            ("s3_bucket", &cfg.s3_bucket),
            ("s3_region", &cfg.s3_region),
            ("s3_access_key_id", &cfg.s3_access_key_id),
            ("s3_secret_access_key", cfg.s3_secret_access_key.expose()),
        ] {
            if value.is_empty() {
                anyhow::bail!("blob.{key} must be set when blob.kind is s3");
            }
        }
        let endpoint_host = match endpoint.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(S3Store {
            scheme: endpoint.scheme().into(),
            endpoint_host,
            endpoint_path: endpoint.path().trim_end_matches('/').into(),
            bucket: cfg.s3_bucket.clone(),
            prefix: cfg.s3_prefix.clone(),
            path_style: cfg.s3_path_style,
            public_url: cfg
                .s3_public_url
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string()),
            signer: Signer::new(
                &cfg.s3_access_key_id,
                cfg.s3_secret_access_key.expose(),
                &cfg.s3_region,
                "s3",
            ),
            http: reqwest_tc::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
        })
    }

    /// The object key of an artifact: `<prefix><taskId>/<runId>/<name>`.
    pub fn key(&self, task_id: &str, run_id: i64, name: &str) -> String {
        format!("{}{task_id}/{run_id}/{name}", self.prefix)
    }

    /// Host and encoded path of the object `key` (of the bucket itself for `None`).
    fn location(&self, key: Option<&str>) -> (String, String) {
        let key = key.map(|k| sigv4::uri_encode(k, true)).unwrap_or_default();
        if self.path_style {
            let path = format!("{}/{}/{key}", self.endpoint_path, self.bucket);
            (self.endpoint_host.clone(), path)
        } else {
            let host = format!("{}.{}", self.bucket, self.endpoint_host);
            (host, format!("{}/{key}", self.endpoint_path))
        }
    }

    fn presigned(
        &self,
        method: &str,
        key: &str,
        headers: Vec<(String, String)>,
        now: i64,
        expires: i64,
    ) -> String {
        let (host, path) = self.location(Some(key));
        let req = Request {
            method,
            host: &host,
            path: &path,
            query: vec![],
            headers,
        };
        let expires_s = (expires - now + 999) / 1000;
        let query = self.signer.presign(&req, &sigv4::amz_date(now), expires_s);
        format!("{}://{host}{path}?{query}", self.scheme)
    }

    /// A presigned PUT URL for an artifact, valid from `now` to `expires` (ms). It
    /// signs `Content-Type: <content_type>`, which the uploader must send unchanged
    /// (TaskCluster workers send the `contentType` they gave `createArtifact`).
    pub fn put_url(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
        content_type: &str,
        now: i64,
        expires: i64,
    ) -> String {
        let key = self.key(task_id, run_id, name);
        let headers = vec![("content-type".to_string(), content_type.to_string())];
        self.presigned("PUT", &key, headers, now, expires)
    }

    /// A presigned GET URL for an artifact, valid from `now` to `expires` (ms); for a
    /// `public/` artifact of a store with a public URL, `<public_url>/<key>`.
    pub fn get_url(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
        now: i64,
        expires: i64,
    ) -> String {
        let key = self.key(task_id, run_id, name);
        match &self.public_url {
            Some(base) if name.starts_with("public/") => {
                format!("{base}/{}", sigv4::uri_encode(&key, true))
            }
            _ => self.presigned("GET", &key, vec![], now, expires),
        }
    }

    /// Send a request signed with an `Authorization` header (wall-clock time) to the
    /// object `key`, or to the bucket for `None`.
    async fn send(
        &self,
        method: reqwest_tc::Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<reqwest_tc::Response, String> {
        let (host, path) = self.location(key);
        let date = sigv4::amz_date(chrono::Utc::now().timestamp_millis());
        let payload_hash = sigv4::sha256_hex(&body);
        let headers = vec![
            ("x-amz-content-sha256".to_string(), payload_hash.clone()),
            ("x-amz-date".to_string(), date.clone()),
        ];
        let req = Request {
            method: method.as_str(),
            host: &host,
            path: &path,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: headers.clone(),
        };
        let auth = self.signer.authorization(&req, &date, &payload_hash);
        let query: String = query
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    sigv4::uri_encode(k, false),
                    sigv4::uri_encode(v, false)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let url = match query.as_str() {
            "" => format!("{}://{host}{path}", self.scheme),
            q => format!("{}://{host}{path}?{q}", self.scheme),
        };
        let mut rb = self
            .http
            .request(method.clone(), url)
            .header("authorization", auth)
            .body(body);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb.send()
            .await
            .map_err(|e| format!("{method} {}: {e}", self.describe(key)))
    }

    fn describe(&self, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("s3://{}/{k}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }

    async fn failure(&self, what: &str, key: Option<&str>, r: reqwest_tc::Response) -> String {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let code = body
            .split_once("<Code>")
            .and_then(|(_, rest)| rest.split_once("</Code>"))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        format!("{what} {}: {status} {code}", self.describe(key))
    }

    /// Delete an artifact's object. An object that is already gone is fine.
    pub async fn delete(&self, task_id: &str, run_id: i64, name: &str) -> Result<(), String> {
        let key = self.key(task_id, run_id, name);
        let r = self
            .send(reqwest_tc::Method::DELETE, Some(&key), &[], vec![])
            .await?;
        if r.status().is_success() || r.status() == reqwest_tc::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(self.failure("DELETE", Some(&key), r).await)
        }
    }

    /// Create the bucket unless it exists.
    pub async fn ensure_bucket(&self) -> Result<(), String> {
        // GetBucketLocation: unlike HEAD, a refusal comes with an error code.
        let r = self
            .send(reqwest_tc::Method::GET, None, &[("location", "")], vec![])
            .await?;
        if r.status().is_success() {
            return Ok(());
        }
        if r.status() != reqwest_tc::StatusCode::NOT_FOUND {
            return Err(self.failure("GET", None, r).await);
        }
        let body = if self.signer.region == "us-east-1" {
            vec![]
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.signer.region
            )
            .into_bytes()
        };
        let r = self.send(reqwest_tc::Method::PUT, None, &[], body).await?;
        if r.status().is_success() || r.status() == reqwest_tc::StatusCode::CONFLICT {
            Ok(())
        } else {
            Err(self.failure("PUT", None, r).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BlobKind;

    fn cfg(path_style: bool) -> BlobConfig {
        BlobConfig {
            kind: BlobKind::S3,
            s3_endpoint: "http://127.0.0.1:9000/".into(),
            s3_bucket: "arts".into(),
            s3_access_key_id: "AKID".into(),
            s3_secret_access_key: "SECRET".into(),
            s3_path_style: path_style,
            s3_public_url: Some("https://cdn.example/".into()),
            ..BlobConfig::default()
        }
    }

    #[test]
    fn urls_and_keys() {
        let s = S3Store::new(&cfg(true)).unwrap();
        assert_eq!(s.key("T", 1, "public/a b.txt"), "T/1/public/a b.txt");
        let put = s.put_url(
            "T",
            1,
            "private/a b.txt",
            "text/plain",
            1_369_353_600_000,
            1_369_353_600_000 + 2_710_000,
        );
        assert!(put.starts_with("http://127.0.0.1:9000/arts/T/1/private/a%20b.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=2710&X-Amz-SignedHeaders=content-type%3Bhost&X-Amz-Signature="), "{put}");
        assert_eq!(
            s.get_url("T", 1, "public/a b.txt", 0, 1000),
            "https://cdn.example/T/1/public/a%20b.txt"
        );
        assert!(
            s.get_url("T", 1, "private/x", 0, 1000)
                .contains("X-Amz-SignedHeaders=host&")
        );
        let v = S3Store::new(&cfg(false)).unwrap();
        assert!(
            v.put_url("T", 1, "x", "a/b", 0, 1)
                .starts_with("http://arts.127.0.0.1:9000/T/1/x?")
        );
        assert!(!format!("{v:?}").contains("SECRET"));
        let mut bad = cfg(true);
        bad.s3_bucket.clear();
        assert!(
            S3Store::new(&bad)
                .unwrap_err()
                .to_string()
                .contains("s3_bucket")
        );
    }
}
