//! The text of a build's log, as Buildbot 0.8's log uploader wrote it for
//! Mozilla's masters: a few `key: value` header lines, then each step
//! between `========= Started …` and `========= Finished …` markers carrying
//! its result code, its elapsed time and its times. Treeherder's log parser
//! read that shape (the header lines and the step markers) from every
//! Buildbot job's log; the sandbox master, the simulator and the REST
//! adapter render their builds' logs with it, so a bridged run's
//! `public/logs/live_backing.log` reads the same whichever master ran it.

use std::fmt::Write as _;

use crate::error::{LegacyError, Result};
use crate::types::BuildResult;

/// A build's log: who ran it, how it ended, and its steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildLog {
    /// The builder's name (`builder:`).
    pub builder: String,
    /// The slave (worker) that ran it (`slave:`).
    pub slave: String,
    /// When it started, epoch seconds (`starttime:`).
    pub start_time: i64,
    /// How it ended (`results:`); `None` while it runs.
    pub results: Option<BuildResult>,
    /// The build's id on its master (`buildid:`).
    pub build_id: String,
    /// The revision it built (`revision:`), when known.
    pub revision: Option<String>,
    /// Its steps, in order.
    pub steps: Vec<LogStep>,
}

/// One step of a [`BuildLog`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStep {
    /// Its name (`set props: master`, `run script`, …).
    pub name: String,
    /// Its result; `None` while it runs.
    pub results: Option<BuildResult>,
    /// When it started, epoch seconds.
    pub started: i64,
    /// When it finished, epoch seconds; `None` while it runs.
    pub finished: Option<i64>,
    /// What it wrote, line by line.
    pub text: String,
}

impl BuildLog {
    /// The log's text. A step still running has no `Finished` marker; a
    /// build still running says `results: running`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let results = match self.results {
            Some(r) => format!("{} ({})", r.name().to_ascii_lowercase(), r.code()),
            None => "running".to_owned(),
        };
        let _ = writeln!(out, "builder: {}", self.builder);
        let _ = writeln!(out, "slave: {}", self.slave);
        let _ = writeln!(out, "starttime: {}.0", self.start_time);
        let _ = writeln!(out, "results: {results}");
        let _ = writeln!(out, "buildid: {}", self.build_id);
        let _ = writeln!(
            out,
            "revision: {}",
            self.revision.as_deref().unwrap_or("None")
        );
        for step in &self.steps {
            let code = step.results.map_or(0, BuildResult::code);
            let elapsed = step.finished.map_or(0, |f| (f - step.started).max(0));
            let marker = |kind: &str, at: i64| {
                format!(
                    "========= {kind} {} (results: {code}, elapsed: {elapsed} secs) (at {}) =========",
                    step.name,
                    marker_time(at)
                )
            };
            let _ = writeln!(out);
            let _ = writeln!(out, "{}", marker("Started", step.started));
            out.push_str(&step.text);
            if !step.text.is_empty() && !step.text.ends_with('\n') {
                out.push('\n');
            }
            if let Some(finished) = step.finished {
                let _ = writeln!(out, "{}", marker("Finished", finished));
            }
        }
        out
    }
}

/// `2016-08-15 03:02:01.000000`: the time format of the step markers.
fn marker_time(secs: i64) -> String {
    let iso = bbb_clock::fmt_ms(secs.saturating_mul(1000));
    // `2016-08-15T03:02:01.000Z`
    format!("{}000", iso.trim_end_matches('Z').replacen('T', " ", 1))
}

/// The most bytes of a log [`download`] reads, compressed or not: a log
/// longer than this is cut there (Treeherder's parser gives up on much
/// smaller logs anyway).
pub const MAX_LOG_BYTES: usize = 64 * 1024 * 1024;

/// Downloads the log at `url` (`http` or `https`; anything else, such as
/// the sandbox's `sandbox://`, gives `None`), gunzipped when the body is
/// gzip (a 0.8 master's `.txt.gz`, whatever its headers say), as UTF-8 with
/// invalid bytes replaced. A 404 or 410 gives `None` (no log was uploaded);
/// another failure is an error. At most [`MAX_LOG_BYTES`] are read.
pub(crate) async fn download(http: &reqwest::Client, url: &str) -> Result<Option<String>> {
    let shown = bbb_secret::mask_url(url);
    let fetchable = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !fetchable {
        return Ok(None);
    }
    let failed = |reason: String| LegacyError::Http {
        url: shown.clone(),
        reason,
    };
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(failed(format!("status {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?
    {
        let room = MAX_LOG_BYTES - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_LOG_BYTES {
            break;
        }
    }
    Ok(Some(decode(&body)))
}

/// A log's bytes as text: gunzipped first when they are gzip (what can be
/// read of a cut or damaged stream is kept).
fn decode(body: &[u8]) -> String {
    if body.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read as _;
        let mut text = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(body)
            .take(MAX_LOG_BYTES as u64)
            .read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    } else {
        String::from_utf8_lossy(body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_header_and_the_step_markers() {
        let log = BuildLog {
            builder: "linux64-build".to_owned(),
            slave: "linux64-build-slave".to_owned(),
            start_time: 1_471_230_121,
            results: Some(BuildResult::Failure),
            build_id: "7".to_owned(),
            revision: Some("abcdef".to_owned()),
            steps: vec![
                LogStep {
                    name: "set props: master".to_owned(),
                    results: Some(BuildResult::Success),
                    started: 1_471_230_121,
                    finished: Some(1_471_230_121),
                    text: "master: sandbox-master".to_owned(),
                },
                LogStep {
                    name: "run script".to_owned(),
                    results: Some(BuildResult::Failure),
                    started: 1_471_230_121,
                    finished: Some(1_471_230_124),
                    text: "it failed\n".to_owned(),
                },
            ],
        };
        assert_eq!(
            log.render(),
            "builder: linux64-build\n\
             slave: linux64-build-slave\n\
             starttime: 1471230121.0\n\
             results: failure (2)\n\
             buildid: 7\n\
             revision: abcdef\n\
             \n\
             ========= Started set props: master (results: 0, elapsed: 0 secs) (at 2016-08-15 03:02:01.000000) =========\n\
             master: sandbox-master\n\
             ========= Finished set props: master (results: 0, elapsed: 0 secs) (at 2016-08-15 03:02:01.000000) =========\n\
             \n\
             ========= Started run script (results: 2, elapsed: 3 secs) (at 2016-08-15 03:02:01.000000) =========\n\
             it failed\n\
             ========= Finished run script (results: 2, elapsed: 3 secs) (at 2016-08-15 03:02:04.000000) =========\n"
        );
    }

    #[test]
    fn a_running_build_has_no_finished_marker() {
        let log = BuildLog {
            builder: "b".to_owned(),
            start_time: 0,
            steps: vec![LogStep {
                name: "run script".to_owned(),
                started: 0,
                ..LogStep::default()
            }],
            ..BuildLog::default()
        };
        let text = log.render();
        assert!(text.contains("results: running\n"), "{text}");
        assert!(text.contains("========= Started run script"), "{text}");
        assert!(!text.contains("Finished"), "{text}");
        assert!(text.contains("revision: None\n"), "{text}");
    }

    #[test]
    fn gzip_bodies_are_decoded_and_text_is_kept() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all("a log\nwith é\n".as_bytes()).unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(decode(&gz), "a log\nwith é\n");
        assert_eq!(decode(b"plain\n"), "plain\n");
        assert_eq!(decode(b"bad \xff byte"), "bad \u{fffd} byte");
    }
}
