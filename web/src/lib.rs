#![doc = include_str!("../README.md")]

mod csrf;
mod layout;
mod pages;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bbb_auth::Authenticator;
use bbb_hooks::client::HawkClient;
use bbb_login::Login;
use bbb_queue::blob::BlobStore;
use bbb_queue::{Mount, Mounted, Queue, Shared};

pub use layout::STYLESHEET;
pub use pages::groups::PAGE_SIZE;

/// What every page handler gets.
#[derive(Clone)]
pub(crate) struct Web {
    /// The queue, for in-process reads and its database.
    pub queue: Queue,
    /// Where `s3` artifacts' bytes live (to read `actions.json` and logs).
    pub blobs: BlobStore,
    /// The authenticator the services share (to expand a decision task's
    /// scopes, as Treeherder asks the auth service to).
    pub auth: Arc<Authenticator>,
    /// The public root URL of the services.
    pub root_url: String,
    /// Who is signed in.
    pub login: Login,
    /// For the calls made with a user's credentials (Hawk-signed).
    pub hawk: HawkClient,
    /// For unsigned reads of artifacts and live logs.
    pub http: reqwest::Client,
}

/// Database statements the pages have made in this process: each read a page
/// makes counts one (see [`queries`]).
static QUERIES: AtomicU64 = AtomicU64::new(0);

/// How many database statements the pages of this process have made so far
/// (what the benchmark divides by the pages it loaded).
pub fn queries() -> u64 {
    QUERIES.load(Ordering::Relaxed)
}

/// Count `n` statements made by a page.
pub(crate) fn counted(n: u64) {
    QUERIES.fetch_add(n, Ordering::Relaxed);
}

/// The web UI, to serve beside the queue at the root URL.
pub fn mount(login: Login) -> Mount {
    Box::new(move |shared: Shared| {
        Box::pin(async move {
            login.attach(&shared);
            let http = reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?;
            let web = Web {
                hawk: HawkClient::new(&shared.root_url, shared.queue.clock.clone()),
                queue: shared.queue.clone(),
                blobs: shared.blobs.clone(),
                auth: shared.auth.clone(),
                root_url: shared.root_url.clone(),
                login,
                http,
            };
            Ok(Mounted {
                routes: pages::routes(web),
                tasks: Vec::new(),
            })
        })
    })
}
