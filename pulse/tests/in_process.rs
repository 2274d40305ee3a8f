//! The semantic tests against the in-process bus.

mod common;

async fn env(_name: &str) -> common::Env {
    common::Env::in_process()
}

semantic_tests!(env);
