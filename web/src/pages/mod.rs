//! The pages, one module per area, and the routes that serve them.

use axum::Router;
use axum::http::header;
use axum::routing::get;

use crate::Web;
use crate::layout::STYLESHEET;

/// Every page's route.
pub(crate) fn routes(web: Web) -> Router {
    Router::new()
        .route(
            "/static/bbb.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET) }),
        )
        .with_state(web)
}
