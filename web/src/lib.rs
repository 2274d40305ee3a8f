#![doc = include_str!("../README.md")]

mod layout;
mod pages;

use bbb_login::Login;
use bbb_queue::{Mount, Mounted, Queue, Shared};

pub use layout::STYLESHEET;

/// What every page handler gets.
#[derive(Clone)]
pub(crate) struct Web {
    /// The queue, for in-process reads and its database.
    pub queue: Queue,
    /// The public root URL of the services.
    pub root_url: String,
    /// Who is signed in.
    pub login: Login,
    /// For the calls made with a user's credentials.
    pub http: reqwest::Client,
}

/// The web UI, to serve beside the queue at the root URL.
pub fn mount(login: Login) -> Mount {
    Box::new(move |shared: Shared| {
        Box::pin(async move {
            login.attach(&shared);
            let web = Web {
                queue: shared.queue.clone(),
                root_url: shared.root_url.clone(),
                login,
                http: reqwest::Client::new(),
            };
            Ok(Mounted {
                routes: pages::routes(web),
                tasks: Vec::new(),
            })
        })
    })
}
