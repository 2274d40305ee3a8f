//! Matching request paths to endpoints. A path is split on `/` and each
//! segment percent-decoded before matching, so a parameter may arrive encoded
//! (`proj%2Fwt`) or, where the pattern allows, raw (`proj/wt`).
//!
//! A pattern is a path below the service's prefix whose segments are literals
//! or parameters:
//!
//! - `<name>`: one segment;
//! - `<name:N>`: a value of `N` `/`-separated parts, as one encoded segment
//!   (holding a `/` once decoded) or as `N` raw segments (`taskQueueId`);
//! - `<name..>`: the rest of the path, one or more segments joined with `/`
//!   (an artifact's name); only last.
//!
//! As in upstream's routing, a trailing `/` is optional on both sides: the
//! pattern `/roles/` matches `roles` and `roles/` (the official Python client
//! drops the slash, the Rust client keeps it), and `/task/<taskId>` matches
//! `task/abc/` too.

/// URL parameters by name, in path order.
pub type Params = Vec<(String, String)>;

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    One(String),
    Parts(String, usize),
    Rest(String),
}

/// A parsed path pattern, such as `/task/<taskId>/runs/<runId>/artifacts/<name..>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<Part>,
}

impl Pattern {
    /// Parse `path` (leading `/` optional). Panics on a malformed pattern: a
    /// pattern is written in the service's code, and a bad one is a bug found
    /// as soon as the service is built.
    pub fn parse(path: &str) -> Pattern {
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        let parts =
            segs.iter()
                .enumerate()
                .map(
                    |(i, s)| match s.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
                        None => Part::Literal(s.to_string()),
                        Some(p) => {
                            if let Some(name) = p.strip_suffix("..") {
                                assert!(i + 1 == segs.len(), "{path}: <{p}> must be last");
                                Part::Rest(name.to_string())
                            } else if let Some((name, n)) = p.split_once(':') {
                                let n: usize =
                                    n.parse().ok().filter(|n| *n >= 1).unwrap_or_else(|| {
                                        panic!("{path}: bad part count in <{p}>")
                                    });
                                Part::Parts(name.to_string(), n)
                            } else {
                                Part::One(p.to_string())
                            }
                        }
                    },
                )
                .collect();
        Pattern { parts }
    }

    /// The parameter names, in path order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Literal(_) => None,
            Part::One(n) | Part::Parts(n, _) | Part::Rest(n) => Some(n.as_str()),
        })
    }

    /// The parameters, in path order, if the decoded segments `segs` match.
    pub fn matches(&self, segs: &[String]) -> Option<Params> {
        let mut params = Vec::new();
        let mut rest = segs;
        for part in &self.parts {
            match part {
                Part::Literal(l) => match rest {
                    [s, tail @ ..] if s == l => rest = tail,
                    _ => return None,
                },
                Part::One(name) => match rest {
                    [s, tail @ ..] => {
                        params.push((name.clone(), s.clone()));
                        rest = tail;
                    }
                    [] => return None,
                },
                Part::Parts(name, n) => match rest {
                    [one, tail @ ..] if one.contains('/') => {
                        params.push((name.clone(), one.clone()));
                        rest = tail;
                    }
                    _ if rest.len() >= *n => {
                        params.push((name.clone(), rest[..*n].join("/")));
                        rest = &rest[*n..];
                    }
                    _ => return None,
                },
                Part::Rest(name) => {
                    if rest.is_empty() {
                        return None;
                    }
                    params.push((name.clone(), rest.join("/")));
                    rest = &[];
                }
            }
        }
        match rest {
            [] => Some(params),
            [last] if last.is_empty() => Some(params),
            _ => None,
        }
    }
}

/// Split a path below the service's prefix into decoded segments.
pub fn segments(path: &str) -> Vec<String> {
    path.split('/').map(decode).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> Option<Params> {
        Pattern::parse(pattern).matches(&segments(path))
    }

    fn p(pairs: &[(&str, &str)]) -> Option<Params> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_and_one_segment_parameters() {
        assert_eq!(m("/ping", "ping"), p(&[]));
        assert_eq!(m("/ping", "ping/x"), None);
        assert_eq!(m("/task/<taskId>", "task/abc"), p(&[("taskId", "abc")]));
        assert_eq!(m("/task/<taskId>", "task"), None);
        assert_eq!(m("/task/<taskId>", "task/a%2Fb"), p(&[("taskId", "a/b")]));
        assert_eq!(
            Pattern::parse("/a/<x>/b/<y:2>/<z..>")
                .names()
                .collect::<Vec<_>>(),
            ["x", "y", "z"]
        );
    }

    #[test]
    fn multi_part_parameters_encoded_or_raw() {
        let pat = "/task-queues/<taskQueueId:2>/counts";
        assert_eq!(
            m(pat, "task-queues/proj%2Fwt/counts"),
            p(&[("taskQueueId", "proj/wt")])
        );
        assert_eq!(
            m(pat, "task-queues/proj/wt/counts"),
            p(&[("taskQueueId", "proj/wt")])
        );
        assert_eq!(m(pat, "task-queues/proj/counts"), None);
        assert_eq!(
            m("/task-queues/<taskQueueId:2>", "task-queues/proj/counts"),
            p(&[("taskQueueId", "proj/counts")])
        );
        assert_eq!(m("/task-queues/<taskQueueId:2>", "task-queues/proj"), None);
    }

    #[test]
    fn rest_parameters_keep_slashes() {
        let pat = "/task/<taskId>/artifacts/<name..>";
        let want = p(&[("taskId", "T"), ("name", "public/logs/live.log")]);
        assert_eq!(m(pat, "task/T/artifacts/public%2Flogs%2Flive.log"), want);
        assert_eq!(m(pat, "task/T/artifacts/public/logs/live.log"), want);
        assert_eq!(m(pat, "task/T/artifacts"), None);
        assert_eq!(
            m(pat, "task/T/artifacts/"),
            p(&[("taskId", "T"), ("name", "")])
        );
    }

    #[test]
    fn a_trailing_slash_is_optional() {
        assert_eq!(m("/roles/", "roles"), p(&[]));
        assert_eq!(m("/roles/", "roles/"), p(&[]));
        assert_eq!(m("/roles/", "roles/x"), None);
        assert_eq!(m("/roles/", "roles//"), None);
        assert_eq!(m("/task/<taskId>", "task/abc/"), p(&[("taskId", "abc")]));
        assert_eq!(m("/task/<taskId>", "task/abc/x"), None);
        assert_eq!(m("/task/<taskId>", "task/"), p(&[("taskId", "")]));
    }

    #[test]
    #[should_panic(expected = "must be last")]
    fn a_rest_parameter_must_be_last() {
        Pattern::parse("/a/<x..>/b");
    }
}
