//! The pages and their assets, compiled into the binary. One HTML shell serves
//! every page path (`/`, `/devices`, `/alerts`, `/blocks`, `/history`,
//! `/gateways`, `/settings`, `/audit?hash=<hex>`); `app.js` draws the page the path names from the JSON API and
//! keeps it live over SSE. uPlot (MIT, vendored from npm with its licence in
//! `assets/vendor/uplot/`) draws the charts.

use warp::{
    Filter,
    http::{HeaderValue, header},
    reply::{Reply, Response},
};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const UPLOT_JS: &str = include_str!("../assets/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../assets/vendor/uplot/LICENSE");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");
const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// Paths that serve the page shell.
pub const PAGES: [&str; 7] = [
    "devices", "alerts", "blocks", "history", "gateways", "settings", "audit",
];

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn page() -> Response {
    let mut res = asset(INDEX_HTML, "text/html; charset=utf-8");
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// The page and asset routes.
pub fn routes()
-> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let index = warp::path::end().map(page);
    let pages = warp::path::param::<String>()
        .and(warp::path::end())
        .and_then(|p: String| async move {
            if PAGES.contains(&p.as_str()) {
                Ok(page())
            } else {
                Err(warp::reject::not_found())
            }
        });
    let assets = warp::path("assets").and(
        warp::path!("app.js")
            .map(|| asset(APP_JS, "text/javascript; charset=utf-8"))
            .or(warp::path!("app.css").map(|| asset(APP_CSS, "text/css; charset=utf-8")))
            .unify()
            .or(warp::path!("uPlot.iife.min.js")
                .map(|| asset(UPLOT_JS, "text/javascript; charset=utf-8")))
            .unify()
            .or(warp::path!("uPlot.min.css").map(|| asset(UPLOT_CSS, "text/css; charset=utf-8")))
            .unify()
            .or(warp::path!("favicon.svg").map(|| asset(FAVICON_SVG, "image/svg+xml")))
            .unify()
            .or(warp::path!("uPlot-LICENSE")
                .map(|| asset(UPLOT_LICENSE, "text/plain; charset=utf-8")))
            .unify(),
    );
    let openapi = warp::path!("openapi.yaml").map(|| asset(OPENAPI_YAML, "application/yaml"));
    let favicon = warp::path!("favicon.ico").map(|| asset(FAVICON_SVG, "image/svg+xml"));
    warp::get().and(
        index
            .or(pages)
            .unify()
            .or(assets)
            .unify()
            .or(openapi)
            .unify()
            .or(favicon)
            .unify(),
    )
}
