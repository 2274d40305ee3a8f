//! The Pulse messages Mozilla's Buildbot 0.8 masters published on
//! `exchange/build`, and how the adapter reads them.
//!
//! Routing keys are `build.<dir>.<number>.<event>`, where `<dir>` is the
//! basename of the builder's directory with `.` and spaces replaced by `_`
//! (not the builder's name) and `<number>` is the build number. Bodies use
//! the mozillapulse envelope `{"payload": ..., "_meta": {...}}`:
//!
//! - `started` (PulseStatus `buildStarted`): `payload.build` is
//!   `BuildStatus.asDict()` (`builderName`, `number`, `properties` as
//!   `[name, value, source]` triples, `times`, `results`, `slave`, ...) and
//!   `payload.request_ids` lists the brids the build satisfies (at most 100);
//! - `finished` (PulseStatus `buildFinished`): the same dict with `results`,
//!   and no request ids;
//! - `log_uploaded` (`postrun.py`, after the log upload): the dict plus the
//!   properties `log_url`, `request_ids`, `request_times` and `statusdb_id`,
//!   all with source `postrun.py`; `_meta.message_id` is the status-DB id.
//!
//! Like Mozilla's bridge, the scheduler-DB adapter reads `started` and
//! `log_uploaded` (only the latter names every request a finished build
//! satisfied).
//!
//! Buildbot 4 masters running bbb's reporter plugin
//! (`buildbot/reporter/bbb_reporter.py`, used by the
//! [`RestMaster`](crate::RestMaster) adapter) send the same envelope with
//! `payload.build.buildid`, and:
//!
//! - `build.<dir>.<n>.finished` with `payload.request_ids` (and
//!   `payload.build.request_ids`): gives a [`LegacyEvent::BuildFinished`],
//!   plus a [`LegacyEvent::RequestRequeued`] per request when the result is
//!   RETRY (request completion comes in its own message);
//! - `buildrequest.<dir>.<brid>.complete`: `payload.buildrequest` with
//!   `buildrequestid`, `results` and `claimed`, giving a
//!   [`LegacyEvent::RequestCompleted`];
//! - `buildrequest.<dir>.<brid>.requeued`: the request went back to the
//!   queue, giving a [`LegacyEvent::RequestRequeued`].

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::types::{BuildId, BuildRequestId, BuildResult, EventSource, LegacyEvent, SourceStamp};

/// The exchange Mozilla's masters published build events to (the bridge's
/// `bblistener.pulse_exchange`).
pub const DEFAULT_BUILD_EXCHANGE: &str = "exchange/build";

/// Most request ids a `started` message carries (buildbotcustom's cap).
pub const MAX_REQUEST_IDS: usize = 100;

/// The routing-key word for a builder directory: `.` and spaces become `_`.
pub fn builder_dir(basedir_name: &str) -> String {
    basedir_name.replace(['.', ' '], "_")
}

/// `build.<dir>.<number>.<event>`.
pub fn routing_key(dir: &str, number: u64, event: &str) -> String {
    format!("build.{}.{number}.{event}", builder_dir(dir))
}

/// A build, as a master describes it in its messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BuildSnapshot {
    /// The builder's name.
    pub builder: String,
    /// The builder's directory name (the routing key's middle word).
    pub dir: String,
    /// The build number.
    pub number: u64,
    /// Properties as `(name, value, source)`.
    pub properties: Vec<(String, Value, String)>,
    /// The requests the build satisfies.
    pub request_ids: Vec<BuildRequestId>,
    /// `submitted_at` of each request.
    pub request_times: BTreeMap<BuildRequestId, i64>,
    /// Epoch seconds (fractional) when it started.
    pub start_time: f64,
    /// Epoch seconds (fractional) when it finished.
    pub finish_time: Option<f64>,
    /// The result, once finished.
    pub results: Option<BuildResult>,
    /// The slave (worker) name.
    pub slave: String,
    /// The build reason.
    pub reason: String,
    /// The uploaded log's URL (for `log_uploaded`).
    pub log_url: Option<String>,
}

impl BuildSnapshot {
    /// A build starting on a 0.8 master, with the properties the master
    /// gives every build: `buildername` (source `Builder`), `buildnumber`
    /// and `master` (`Build`) and `slavename` (`BuildSlave`, the slave being
    /// `<builder>-slave`). The builder's directory is its name.
    pub fn start(builder: &str, number: u64, master: &str, start_time: i64) -> BuildSnapshot {
        let slave = format!("{builder}-slave");
        BuildSnapshot {
            builder: builder.to_owned(),
            dir: builder.to_owned(),
            number,
            properties: vec![
                (
                    "buildername".to_owned(),
                    json!(builder),
                    "Builder".to_owned(),
                ),
                ("buildnumber".to_owned(), json!(number), "Build".to_owned()),
                ("master".to_owned(), json!(master), "Build".to_owned()),
                (
                    "slavename".to_owned(),
                    json!(slave),
                    "BuildSlave".to_owned(),
                ),
            ],
            start_time: start_time as f64,
            slave,
            ..BuildSnapshot::default()
        }
    }

    /// The same build serving request `id` (submitted at `submitted_at`),
    /// with the request's properties as stored (name, value, source), those
    /// of its source stamp (`branch` as stored, `revision`, `repository` and
    /// `project` when set, source `Build`) and its buildset's reason.
    pub fn serving(
        mut self,
        id: BuildRequestId,
        submitted_at: i64,
        properties: impl IntoIterator<Item = (String, Value, String)>,
        sourcestamp: &SourceStamp,
        reason: &str,
    ) -> BuildSnapshot {
        // The request's own first: where a name repeats, the master's value
        // is the build's.
        self.properties.splice(0..0, properties);
        let stamp = [
            ("branch", sourcestamp.branch.as_deref()),
            ("revision", sourcestamp.revision.as_deref()),
            ("repository", Some(sourcestamp.repository.as_str())),
            ("project", Some(sourcestamp.project.as_str())),
        ];
        for (name, value) in stamp {
            if let Some(value) = value.filter(|value| !value.is_empty()) {
                self.properties
                    .push((name.to_owned(), json!(value), "Build".to_owned()));
            }
        }
        self.request_ids.push(id);
        self.request_times.insert(id, submitted_at);
        self.reason = reason.to_owned();
        self
    }

    /// The finished build's properties as `name: [value, source]`: what
    /// the adapter reads from its `log_uploaded` message (see
    /// [`log_uploaded_message`]).
    pub fn finished_properties(&self, statusdb_id: u64) -> BTreeMap<String, Value> {
        properties_of(&as_dict(self, &postrun_properties(self, statusdb_id)))
    }
}

/// The master identity carried in `_meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterIdentity {
    /// `_meta.master_name`.
    pub name: String,
    /// `_meta.master_incarnation`.
    pub incarnation: String,
}

fn as_dict(build: &BuildSnapshot, extra_properties: &[(String, Value, String)]) -> Value {
    let properties: Vec<Value> = build
        .properties
        .iter()
        .chain(extra_properties)
        .map(|(name, value, source)| json!([name, value, source]))
        .collect();
    // pulse_publisher.py turned `times` into strings.
    let times = json!([
        build.start_time.to_string(),
        build.finish_time.map(|t| t.to_string())
    ]);
    json!({
        "builderName": build.builder,
        "number": build.number,
        "properties": properties,
        "times": times,
        "results": build.results.map(BuildResult::code),
        "slave": build.slave,
        "reason": build.reason,
        "blame": [],
        "text": [],
        "logs": [],
        "steps": [],
        "eta": null,
        "currentStep": null,
        "sourceStamp": {"branch": null, "revision": null, "changes": [], "hasPatch": false},
    })
}

fn envelope(
    exchange: &str,
    routing_key: String,
    payload: Value,
    master: &MasterIdentity,
    message_id: String,
) -> bbb_pulse::Message {
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    bbb_pulse::Message {
        exchange: exchange.to_owned(),
        routing_key: routing_key.clone(),
        cc: Vec::new(),
        payload: json!({
            "payload": payload,
            "_meta": {
                "exchange": exchange,
                "routing_key": routing_key,
                "serializer": "json",
                "sent": sent.to_string(),
                "master_name": master.name,
                "master_incarnation": master.incarnation,
                "message_id": message_id,
            }
        }),
    }
}

/// `build.<dir>.<n>.started`, with `request_ids`.
pub fn started_message(
    exchange: &str,
    build: &BuildSnapshot,
    master: &MasterIdentity,
) -> bbb_pulse::Message {
    let request_ids: Vec<u64> = build
        .request_ids
        .iter()
        .take(MAX_REQUEST_IDS)
        .map(|id| id.0)
        .collect();
    envelope(
        exchange,
        routing_key(&build.dir, build.number, "started"),
        json!({"build": as_dict(build, &[]), "request_ids": request_ids}),
        master,
        format!("{}-{}-started", build.dir, build.number),
    )
}

/// `build.<dir>.<n>.finished` (no request ids, like PulseStatus).
pub fn finished_message(
    exchange: &str,
    build: &BuildSnapshot,
    master: &MasterIdentity,
) -> bbb_pulse::Message {
    envelope(
        exchange,
        routing_key(&build.dir, build.number, "finished"),
        json!({"build": as_dict(build, &[])}),
        master,
        format!("{}-{}-finished", build.dir, build.number),
    )
}

/// The properties `postrun.py` adds once the log is uploaded: `request_ids`,
/// `request_times`, `statusdb_id` and `log_url`.
fn postrun_properties(build: &BuildSnapshot, statusdb_id: u64) -> Vec<(String, Value, String)> {
    let source = "postrun.py".to_owned();
    let request_ids: Vec<u64> = build.request_ids.iter().map(|id| id.0).collect();
    let request_times: serde_json::Map<String, Value> = build
        .request_times
        .iter()
        .map(|(id, time)| (id.to_string(), json!(time)))
        .collect();
    let mut extra = vec![
        ("request_ids".to_owned(), json!(request_ids), source.clone()),
        (
            "request_times".to_owned(),
            Value::Object(request_times),
            source.clone(),
        ),
        ("statusdb_id".to_owned(), json!(statusdb_id), source.clone()),
    ];
    if let Some(log_url) = &build.log_url {
        extra.push(("log_url".to_owned(), json!(log_url), source));
    }
    extra
}

/// `build.<dir>.<n>.log_uploaded`, with the `postrun.py` properties
/// `log_url`, `request_ids`, `request_times` and `statusdb_id`.
pub fn log_uploaded_message(
    exchange: &str,
    build: &BuildSnapshot,
    master: &MasterIdentity,
    statusdb_id: u64,
) -> bbb_pulse::Message {
    envelope(
        exchange,
        routing_key(&build.dir, build.number, "log_uploaded"),
        json!({"build": as_dict(build, &postrun_properties(build, statusdb_id))}),
        master,
        statusdb_id.to_string(),
    )
}

/// Why a message was not turned into events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not the expected JSON shape.
    #[error("malformed build message: {0}")]
    Malformed(String),
}

fn properties_of(build: &Value) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    if let Some(list) = build.get("properties").and_then(Value::as_array) {
        for entry in list {
            if let Some([name, value, source]) = entry.as_array().map(Vec::as_slice)
                && let Some(name) = name.as_str()
            {
                map.insert(name.to_owned(), json!([value, source]));
            }
        }
    }
    map
}

fn ids_from(value: &Value) -> Option<Vec<BuildRequestId>> {
    value
        .as_array()?
        .iter()
        .map(|id| {
            id.as_u64()
                .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
                .map(BuildRequestId)
        })
        .collect()
}

/// Turns one `exchange/build` message into events: `started` gives a
/// [`LegacyEvent::BuildStarted`]; `log_uploaded` gives a
/// [`LegacyEvent::BuildFinished`] plus, for each request, a
/// [`LegacyEvent::RequestRequeued`] (RETRY) or
/// [`LegacyEvent::RequestCompleted`]. Other events, builds without request
/// ids (builds of no bridged request) and `log_uploaded` messages whose
/// `request_ids` property does not come from `postrun.py` give no events.
///
/// The reporter plugin's messages (see the module docs) are read too: a
/// `finished` message that names its requests gives a
/// [`LegacyEvent::BuildFinished`] (and [`LegacyEvent::RequestRequeued`] per
/// request for RETRY), `buildrequest.*.*.complete` a
/// [`LegacyEvent::RequestCompleted`] and `buildrequest.*.*.requeued` a
/// [`LegacyEvent::RequestRequeued`]. A Buildbot 0.8 `finished` message has no
/// request ids and still gives nothing.
pub fn parse_build_message(routing_key: &str, body: &[u8]) -> Result<Vec<LegacyEvent>, ParseError> {
    let event = routing_key.rsplit('.').next().unwrap_or_default();
    if routing_key.starts_with("buildrequest.") {
        return parse_request_message(event, body);
    }
    if event != "started" && event != "log_uploaded" && event != "finished" {
        return Ok(Vec::new());
    }
    let body = json_body(body)?;
    let payload = body
        .get("payload")
        .ok_or_else(|| ParseError::Malformed("no payload".to_owned()))?;
    let build = payload
        .get("build")
        .ok_or_else(|| ParseError::Malformed("no payload.build".to_owned()))?;
    let builder = build
        .get("builderName")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::Malformed("no build.builderName".to_owned()))?
        .to_owned();
    let build_number = build
        .get("number")
        .and_then(Value::as_u64)
        .ok_or_else(|| ParseError::Malformed("no build.number".to_owned()))?;
    let master = body
        .pointer("/_meta/master_name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let properties = properties_of(build);
    let task_id = properties
        .get("taskId")
        .and_then(|p| p.get(0))
        .and_then(Value::as_str)
        .map(str::to_owned);

    let build_ids: Vec<BuildId> = build
        .get("buildid")
        .and_then(Value::as_u64)
        .map(BuildId)
        .into_iter()
        .collect();
    let payload_ids = || -> Result<Vec<BuildRequestId>, ParseError> {
        match payload
            .get("request_ids")
            .or_else(|| build.get("request_ids"))
        {
            Some(ids) => {
                ids_from(ids).ok_or_else(|| ParseError::Malformed("bad request_ids".to_owned()))
            }
            None => Ok(Vec::new()),
        }
    };

    if event == "started" {
        let ids = payload_ids()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![LegacyEvent::BuildStarted {
            build_request_ids: ids,
            builder,
            build_number,
            build_ids,
            master,
            task_id,
            source: EventSource::Pulse,
        }]);
    }

    // A finish: `finished` (the reporter's) names its requests in the
    // payload, `log_uploaded` (0.8) in postrun.py's `request_ids` property.
    let (ids, build_ids) = if event == "finished" {
        let ids = payload_ids()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        (ids, build_ids)
    } else {
        let Some(ids_property) = properties.get("request_ids") else {
            return Ok(Vec::new());
        };
        if ids_property.get(1).and_then(Value::as_str) != Some("postrun.py") {
            return Ok(Vec::new());
        }
        let ids = ids_property
            .get(0)
            .and_then(ids_from)
            .ok_or_else(|| ParseError::Malformed("bad request_ids property".to_owned()))?;
        (ids, Vec::new())
    };
    let results = results_of(build)?;
    let log_url = properties
        .get("log_url")
        .and_then(|p| p.get(0))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut events = vec![LegacyEvent::BuildFinished {
        build_request_ids: ids.clone(),
        builder,
        build_number,
        build_ids,
        results,
        master,
        task_id,
        properties,
        log_url,
        source: EventSource::Pulse,
    }];
    // A RETRY requeues every request; otherwise `log_uploaded` completes
    // them too (the reporter sends its own `complete` messages).
    for id in ids {
        if results == BuildResult::Retry {
            events.push(LegacyEvent::RequestRequeued {
                build_request_id: id,
                source: EventSource::Pulse,
            });
        } else if event == "log_uploaded" {
            events.push(LegacyEvent::RequestCompleted {
                build_request_id: id,
                results,
                claimed: true,
                source: EventSource::Pulse,
            });
        }
    }
    Ok(events)
}

/// The message body as JSON.
fn json_body(body: &[u8]) -> Result<Value, ParseError> {
    serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))
}

fn results_of(object: &Value) -> Result<BuildResult, ParseError> {
    let code = object
        .get("results")
        .and_then(Value::as_i64)
        .ok_or_else(|| ParseError::Malformed("no results".to_owned()))?;
    BuildResult::from_code(code)
        .ok_or_else(|| ParseError::Malformed(format!("unknown result code {code}")))
}

/// `buildrequest.<dir>.<brid>.<event>` from bbb's reporter plugin.
fn parse_request_message(event: &str, body: &[u8]) -> Result<Vec<LegacyEvent>, ParseError> {
    if event != "complete" && event != "requeued" {
        return Ok(Vec::new());
    }
    let body = json_body(body)?;
    let request = body
        .pointer("/payload/buildrequest")
        .ok_or_else(|| ParseError::Malformed("no payload.buildrequest".to_owned()))?;
    let id = request
        .get("buildrequestid")
        .and_then(Value::as_u64)
        .map(BuildRequestId)
        .ok_or_else(|| ParseError::Malformed("no buildrequest.buildrequestid".to_owned()))?;
    if event == "requeued" {
        return Ok(vec![LegacyEvent::RequestRequeued {
            build_request_id: id,
            source: EventSource::Pulse,
        }]);
    }
    let results = results_of(request)?;
    let claimed = request
        .get("claimed")
        .and_then(Value::as_bool)
        .ok_or_else(|| ParseError::Malformed("no buildrequest.claimed".to_owned()))?;
    Ok(vec![LegacyEvent::RequestCompleted {
        build_request_id: id,
        results,
        claimed,
        source: EventSource::Pulse,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> BuildSnapshot {
        BuildSnapshot {
            builder: "Linux x86-64 mozilla-central build".to_owned(),
            dir: "m-c-lx.build".to_owned(),
            number: 7,
            properties: vec![("taskId".to_owned(), json!("T1"), "bbb".to_owned())],
            request_ids: vec![BuildRequestId(3), BuildRequestId(4)],
            results: Some(BuildResult::Retry),
            log_url: Some("http://logs/7.txt.gz".to_owned()),
            ..BuildSnapshot::default()
        }
    }

    fn master() -> MasterIdentity {
        MasterIdentity {
            name: "bm01".to_owned(),
            incarnation: "1".to_owned(),
        }
    }

    #[test]
    fn round_trips_started_and_log_uploaded() {
        let started = started_message(DEFAULT_BUILD_EXCHANGE, &snapshot(), &master());
        assert_eq!(started.routing_key, "build.m-c-lx_build.7.started");
        let body = serde_json::to_vec(&started.payload).unwrap();
        let events = parse_build_message(&started.routing_key, &body).unwrap();
        assert!(
            matches!(&events[..], [LegacyEvent::BuildStarted { build_request_ids, task_id: Some(t), master: Some(m), build_number: 7, .. }]
            if build_request_ids == &[BuildRequestId(3), BuildRequestId(4)] && t == "T1" && m == "bm01")
        );

        let uploaded = log_uploaded_message(DEFAULT_BUILD_EXCHANGE, &snapshot(), &master(), 99);
        let body = serde_json::to_vec(&uploaded.payload).unwrap();
        let events = parse_build_message(&uploaded.routing_key, &body).unwrap();
        assert_eq!(events.len(), 3);
        assert!(matches!(
            &events[0],
            LegacyEvent::BuildFinished {
                results: BuildResult::Retry,
                log_url: Some(_),
                ..
            }
        ));
        assert!(matches!(
            &events[1],
            LegacyEvent::RequestRequeued {
                build_request_id: BuildRequestId(3),
                ..
            }
        ));

        let finished = finished_message(DEFAULT_BUILD_EXCHANGE, &snapshot(), &master());
        let body = serde_json::to_vec(&finished.payload).unwrap();
        assert!(
            parse_build_message(&finished.routing_key, &body)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn ignores_request_ids_not_from_postrun() {
        let mut build = snapshot();
        build.properties.push((
            "request_ids".to_owned(),
            json!([1]),
            "SetProperty".to_owned(),
        ));
        let message = finished_message(DEFAULT_BUILD_EXCHANGE, &build, &master());
        let body = serde_json::to_vec(&message.payload).unwrap();
        let key = message.routing_key.replace(".finished", ".log_uploaded");
        assert!(parse_build_message(&key, &body).unwrap().is_empty());
    }

    /// Messages as bbb_reporter.py publishes them.
    fn reporter_build(event: &str, results: Option<i64>) -> (String, Vec<u8>) {
        let key = format!("build.bbb-linux.4.{event}");
        let body = json!({
            "_meta": {"master_name": "vm:/srv/master", "master_incarnation": "1-2", "routing_key": key},
            "payload": {
                "build": {
                    "builderName": "bbb-linux", "number": 4, "buildid": 17, "buildrequestid": 9,
                    "request_ids": [9], "results": results,
                    "properties": [["taskId", "T9", "Force Build Form"], ["log_url", "http://l/4", "Build"]],
                    "times": [1.0, null], "slave": "worker-1", "reason": "Created by BBB for task T9"
                },
                "request_ids": [9]
            }
        });
        (key, serde_json::to_vec(&body).unwrap())
    }

    #[test]
    fn reads_reporter_build_messages() {
        let (key, body) = reporter_build("started", None);
        let events = parse_build_message(&key, &body).unwrap();
        assert!(
            matches!(&events[..], [LegacyEvent::BuildStarted { build_request_ids, build_ids, task_id: Some(t), master: Some(m), build_number: 4, .. }]
            if build_request_ids == &[BuildRequestId(9)] && build_ids == &[BuildId(17)] && t == "T9" && m == "vm:/srv/master")
        );

        let (key, body) = reporter_build("finished", Some(0));
        let events = parse_build_message(&key, &body).unwrap();
        assert!(
            matches!(&events[..], [LegacyEvent::BuildFinished { results: BuildResult::Success, log_url: Some(url), build_ids, .. }]
            if url == "http://l/4" && build_ids == &[BuildId(17)])
        );

        let (key, body) = reporter_build("finished", Some(5));
        let events = parse_build_message(&key, &body).unwrap();
        assert!(matches!(
            &events[..],
            [
                LegacyEvent::BuildFinished {
                    results: BuildResult::Retry,
                    ..
                },
                LegacyEvent::RequestRequeued {
                    build_request_id: BuildRequestId(9),
                    ..
                }
            ]
        ));
    }

    #[test]
    fn reads_reporter_request_messages() {
        let body = |results: Option<i64>, claimed: bool| {
            serde_json::to_vec(&json!({
                "_meta": {"master_name": "m"},
                "payload": {"buildrequest": {
                    "buildrequestid": 12, "buildsetid": 3, "builderName": "bbb-linux",
                    "results": results, "claimed": claimed, "properties": []
                }}
            }))
            .unwrap()
        };
        let events =
            parse_build_message("buildrequest.bbb-linux.12.complete", &body(Some(6), false))
                .unwrap();
        assert_eq!(
            events,
            vec![LegacyEvent::RequestCompleted {
                build_request_id: BuildRequestId(12),
                results: BuildResult::Cancelled,
                claimed: false,
                source: EventSource::Pulse,
            }]
        );
        let events =
            parse_build_message("buildrequest.bbb-linux.12.requeued", &body(None, true)).unwrap();
        assert_eq!(
            events,
            vec![LegacyEvent::RequestRequeued {
                build_request_id: BuildRequestId(12),
                source: EventSource::Pulse,
            }]
        );
        assert!(
            parse_build_message("buildrequest.bbb-linux.12.new", b"not json")
                .unwrap()
                .is_empty()
        );
        assert!(parse_build_message("buildrequest.bbb-linux.12.complete", b"{}").is_err());
    }
}
