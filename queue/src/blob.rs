//! The blob store behind `s3` artifacts: either bytes on local disk, reached through
//! signed URLs that point at bbb itself (the default), or an S3-compatible object
//! store reached through presigned URLs ([`crate::s3::S3Store`]).

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// How long a signed upload URL stays valid (upstream: 45 min + 10 s).
pub const PUT_URL_TTL_MS: i64 = 45 * 60 * 1000 + 10_000;
/// How long a signed download URL stays valid.
pub const GET_URL_TTL_MS: i64 = 30 * 60 * 1000;

/// Where the bytes of `s3` artifacts live.
#[derive(Clone, Debug)]
pub enum BlobStore {
    /// On local disk, uploaded and downloaded through the queue's `/blobs/` URLs.
    Local(LocalStore),
    /// In an S3-compatible store, uploaded and downloaded through presigned URLs.
    S3(crate::s3::S3Store),
}

impl BlobStore {
    /// The URL a client PUTs the artifact's bytes to, valid until `expires` (ms).
    /// The client must send `Content-Type: <content_type>`.
    pub fn put_url(
        &self,
        (task_id, run_id, name): (&str, i64, &str),
        content_type: &str,
        now: i64,
        expires: i64,
    ) -> String {
        match self {
            BlobStore::Local(l) => l.signed_url("PUT", task_id, run_id, name, expires),
            BlobStore::S3(s) => s.put_url(task_id, run_id, name, content_type, now, expires),
        }
    }

    /// The URL a client GETs the artifact's bytes from, valid until `expires` (ms)
    /// (or for good, for public artifacts of a store with a public URL).
    pub fn get_url(
        &self,
        (task_id, run_id, name): (&str, i64, &str),
        now: i64,
        expires: i64,
    ) -> String {
        match self {
            BlobStore::Local(l) => l.signed_url("GET", task_id, run_id, name, expires),
            BlobStore::S3(s) => s.get_url(task_id, run_id, name, now, expires),
        }
    }

    /// Remove an artifact's bytes (expiry). An object that is already gone is fine.
    pub async fn remove(&self, task_id: &str, run_id: i64, name: &str) -> Result<(), String> {
        match self {
            BlobStore::Local(l) => l
                .remove(task_id, run_id, name)
                .await
                .map_err(|e| e.to_string()),
            BlobStore::S3(s) => s.delete(task_id, run_id, name).await,
        }
    }

    /// The local store, when that is the one in use (the `/blobs/` endpoints).
    pub fn local(&self) -> Option<&LocalStore> {
        match self {
            BlobStore::Local(l) => Some(l),
            BlobStore::S3(_) => None,
        }
    }
}

/// Local-disk blob store with HMAC-signed URLs.
#[derive(Clone, Debug)]
pub struct LocalStore {
    dir: PathBuf,
    key: Vec<u8>,
    base_url: String,
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl LocalStore {
    /// Blobs live under `dir`; URLs start with `<root_url>/blobs/`; `key` signs them.
    pub fn new(dir: PathBuf, key: &[u8], root_url: &str) -> Self {
        LocalStore {
            dir,
            key: key.to_vec(),
            base_url: format!("{}/blobs", root_url.trim_end_matches('/')),
        }
    }

    fn path(&self, task_id: &str, run_id: i64, name: &str) -> PathBuf {
        let digest = hex(&Sha256::digest(name.as_bytes()));
        self.dir.join(task_id).join(run_id.to_string()).join(digest)
    }

    fn signature(
        &self,
        method: &str,
        task_id: &str,
        run_id: i64,
        name: &str,
        expires: i64,
    ) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(format!("{method}\n{task_id}\n{run_id}\n{name}\n{expires}").as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A URL valid until `expires` (ms) for `method` (`PUT` or `GET`).
    pub fn signed_url(
        &self,
        method: &str,
        task_id: &str,
        run_id: i64,
        name: &str,
        expires: i64,
    ) -> String {
        format!(
            "{}/{task_id}/{run_id}/{}?expires={expires}&method={method}&signature={}",
            self.base_url,
            encode(name),
            self.signature(method, task_id, run_id, name, expires)
        )
    }

    /// Check a signed URL's parameters for the artifact `(task_id, run_id, name)`.
    pub fn verify(
        &self,
        method: &str,
        (task_id, run_id, name): (&str, i64, &str),
        expires: i64,
        signature: &str,
        now: i64,
    ) -> bool {
        let expected = self.signature(method, task_id, run_id, name, expires);
        expires >= now && subtle_eq(expected.as_bytes(), signature.as_bytes())
    }

    /// Store bytes (atomically: written aside, then renamed).
    pub async fn put(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let path = self.path(task_id, run_id, name);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    }

    /// Read bytes, if present.
    pub async fn get(
        &self,
        task_id: &str,
        run_id: i64,
        name: &str,
    ) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(task_id, run_id, name)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Remove bytes (expiry). Missing files are fine.
    pub async fn remove(&self, task_id: &str, run_id: i64, name: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(task_id, run_id, name)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signed_urls_round_trip() {
        let dir = std::env::temp_dir().join(format!("bbb-blob-{}", uuid::Uuid::new_v4()));
        let s = LocalStore::new(dir.clone(), b"k", "http://x/");
        let url = s.signed_url("PUT", "T", 0, "public/a b.txt", 10);
        assert!(
            url.starts_with(
                "http://x/blobs/T/0/public%2Fa%20b.txt?expires=10&method=PUT&signature="
            )
        );
        let sig = url.rsplit("signature=").next().unwrap();
        assert!(s.verify("PUT", ("T", 0, "public/a b.txt"), 10, sig, 5));
        assert!(!s.verify("GET", ("T", 0, "public/a b.txt"), 10, sig, 5));
        assert!(!s.verify("PUT", ("T", 0, "public/a b.txt"), 10, sig, 11));
        s.put("T", 0, "n", b"hello").await.unwrap();
        assert_eq!(s.get("T", 0, "n").await.unwrap().unwrap(), b"hello");
        let store = BlobStore::Local(s.clone());
        store.remove("T", 0, "n").await.unwrap();
        assert!(s.get("T", 0, "n").await.unwrap().is_none());
        store.remove("T", 0, "n").await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
