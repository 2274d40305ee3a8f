//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): query-string presigning and
//! `Authorization` headers, as S3 and S3-compatible stores (MinIO, Ceph, moto)
//! check them.

use bbb_secret::Secret;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Longest validity S3 accepts for a presigned URL, in seconds (7 days).
pub const MAX_PRESIGN_EXPIRES_S: i64 = 7 * 24 * 3600;

/// Access key pair plus the region and service they sign for. `Debug` shows
/// the secret key as `***`.
#[derive(Clone, Debug)]
pub struct Signer {
    /// The access key id (appears in URLs and headers).
    pub access_key_id: String,
    secret_access_key: Secret<String>,
    /// The region, e.g. `us-east-1`.
    pub region: String,
    /// The service, `s3` for object stores.
    pub service: String,
}

/// One request to sign: method, host (with `:port` unless default), the path as sent
/// (already URI-encoded), query parameters (not encoded) and headers.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// `GET`, `PUT`, `DELETE`, `HEAD`, ...
    pub method: &'a str,
    /// The `Host` header value.
    pub host: &'a str,
    /// The URI-encoded path, starting with `/`.
    pub path: &'a str,
    /// Query parameters, unencoded.
    pub query: Vec<(String, String)>,
    /// Headers to sign besides `host` (names in any case).
    pub headers: Vec<(String, String)>,
}

/// Percent-encode as SigV4 requires: everything but `A-Za-z0-9-._~` (and `/` when
/// `keep_slash`, for paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for a time in ms since the epoch.
pub fn amz_date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Lowercase hex SHA-256 of `data` (for `x-amz-content-sha256`).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn canonical_query(query: &[(String, String)]) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    q.sort();
    q.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

impl Signer {
    /// A signer for `service` in `region`.
    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str, service: &str) -> Self {
        Signer {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            region: region.into(),
            service: service.into(),
        }
    }

    fn scope(&self, date: &str) -> String {
        format!("{date}/{}/{}/aws4_request", self.region, self.service)
    }

    /// The signature of `req` at `amz_date` with the given payload hash.
    fn signature(&self, req: &Request<'_>, amz_date: &str, payload_hash: &str) -> (String, String) {
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .chain([("host".to_string(), req.host.to_string())])
            .collect();
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
            req.method,
            req.path,
            canonical_query(&req.query),
        );
        let date = &amz_date[..8];
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
            self.scope(date),
            sha256_hex(canonical_request.as_bytes())
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_access_key.expose()).as_bytes(),
            date,
        );
        let k_region = hmac(&k_date, &self.region);
        let k_service = hmac(&k_region, &self.service);
        let k_signing = hmac(&k_service, "aws4_request");
        (signed_headers, hex(&hmac(&k_signing, &string_to_sign)))
    }

    /// The query string (encoded, without `?`) of a presigned URL for `req`, valid
    /// for `expires_s` seconds from `amz_date`. The payload is not signed; the
    /// request's headers (e.g. `content-type`) must be sent exactly as signed.
    pub fn presign(&self, req: &Request<'_>, amz_date: &str, expires_s: i64) -> String {
        let mut signed_names: Vec<String> = req
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .chain(["host".to_string()])
            .collect();
        signed_names.sort();
        let mut req = req.clone();
        req.query.extend([
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            (
                "X-Amz-Credential".into(),
                format!("{}/{}", self.access_key_id, self.scope(&amz_date[..8])),
            ),
            ("X-Amz-Date".into(), amz_date.into()),
            (
                "X-Amz-Expires".into(),
                expires_s.clamp(1, MAX_PRESIGN_EXPIRES_S).to_string(),
            ),
            ("X-Amz-SignedHeaders".into(), signed_names.join(";")),
        ]);
        let (_, signature) = self.signature(&req, amz_date, UNSIGNED_PAYLOAD);
        format!(
            "{}&X-Amz-Signature={signature}",
            canonical_query(&req.query)
        )
    }

    /// The `Authorization` header for `req`, whose headers must already include
    /// `x-amz-date` (= `amz_date`) and `x-amz-content-sha256` (= `payload_hash`).
    pub fn authorization(&self, req: &Request<'_>, amz_date: &str, payload_hash: &str) -> String {
        let (signed_headers, signature) = self.signature(req, amz_date, payload_hash);
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id,
            self.scope(&amz_date[..8])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// AWS's documented example of a presigned GET (S3 API reference, "Authenticating
    /// Requests: Using Query Parameters").
    #[test]
    fn documented_presigned_url() {
        let s = Signer::new(AKID, SECRET, "us-east-1", "s3");
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: vec![],
            headers: vec![],
        };
        let q = s.presign(&req, "20130524T000000Z", 86400);
        assert_eq!(
            q,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// AWS's documented example of a signed GET with an `Authorization` header
    /// (S3 API reference, "Signature Calculations for the Authorization Header":
    /// GET Object with a Range header).
    #[test]
    fn documented_authorization_header() {
        let s = Signer::new(AKID, SECRET, "us-east-1", "s3");
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let req = Request {
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: vec![],
            headers: vec![
                ("Range".into(), "bytes=0-9".into()),
                ("x-amz-content-sha256".into(), empty.clone()),
                ("x-amz-date".into(), "20130524T000000Z".into()),
            ],
        };
        assert_eq!(
            s.authorization(&req, "20130524T000000Z", &empty),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encoding_and_dates() {
        assert_eq!(
            uri_encode("public/a b+c~.txt", true),
            "public/a%20b%2Bc~.txt"
        );
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(amz_date(1_369_353_600_000), "20130524T000000Z");
    }

    #[test]
    fn debug_shows_everything_but_the_secret_key() {
        let s = Signer::new(AKID, SECRET, "r", "s3");
        let shown = format!("{s:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("wJalr"), "{shown}");
        assert_eq!(
            shown,
            format!(
                "Signer {{ access_key_id: \"{AKID}\", secret_access_key: ***, \
                 region: \"r\", service: \"s3\" }}"
            )
        );
    }
}
