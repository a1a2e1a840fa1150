//! The HTTP side of the simulator: routing `/api/v3/...` paths, authentication, quota and
//! fault injection around each API request, gzip, and the accept loop.
//!
//! The accept loop is hyper's own rather than `axum::serve`, because one fault closes the
//! connection without any reply, which a handler cannot express.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures_util::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use super::json::{self, Reply};
use super::state::{Admission, Auth, Collection, DIRECT_UPLOAD_MAX, Fault, Sim, UPLOAD_URL_MAX};
use super::upload::{self, UploadError};

/// Marks a response whose connection must be closed without sending it.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

/// `http://ADDR`, with an unspecified bind address replaced by loopback so that the upload
/// URLs handed out are reachable.
pub(crate) fn origin(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/_sim/stats", get(sim_stats))
        .route("/_upload/{token}", post(upload_via_url))
        .route("/_download/{token}", get(download_by_token))
        .route("/api/v3", any(api))
        .route("/api/v3/{*rest}", any(api))
        .fallback(|| async { finish(Reply::not_found("Resource not found"), false) })
        .with_state(sim)
}

/// Serves until `shutdown` completes; in-flight requests then get a few seconds.
pub(crate) async fn run_server(
    listener: TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(sim);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "simulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    let Ok(resp) = app.oneshot(req.map(Body::new)).await;
                    if resp.extensions().get::<DropConnection>().is_some() {
                        // hyper closes the connection without writing a response.
                        return Err(std::io::Error::other("simulated dropped connection"));
                    }
                    Ok::<_, std::io::Error>(resp)
                }
            });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
    Ok(())
}

async fn sim_stats(State(sim): State<Arc<Sim>>) -> Response {
    axum::Json(sim.stats()).into_response()
}

async fn upload_via_url(
    State(sim): State<Arc<Sim>>,
    Path(token): Path<String>,
    req: Request,
) -> Response {
    sim.count("POST upload_url");
    let (parts, body) = req.into_parts();
    let gz = accepts_gzip(&parts.headers);
    if !sim.take_upload_token(&token) {
        drain(body, UPLOAD_URL_MAX).await;
        return finish(Reply::not_found("Upload URL not found or already used"), gz);
    }
    finish(
        receive(&sim, &parts.headers, body, UPLOAD_URL_MAX).await,
        gz,
    )
}

async fn download_by_token(State(sim): State<Arc<Sim>>, Path(token): Path<String>) -> Response {
    sim.count("GET download");
    finish(sim.download_by_token(&token), false)
}

async fn receive(sim: &Sim, headers: &HeaderMap, body: Body, limit: u64) -> Reply {
    match upload::receive(headers, body, limit).await {
        Ok(r) => sim.uploaded(r),
        Err(UploadError::TooLarge) => Reply::html(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request Entity Too Large",
            "Your client issued a request that was too large.",
        ),
        Err(UploadError::BadRequest(msg)) => Reply::bad_request(msg),
    }
}

/// Reads and discards a body, so that a client still sending it can read our early reply.
async fn drain(body: Body, max: u64) {
    let mut seen = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > max {
            break;
        }
    }
}

/// One `/api/v3` request, parsed from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    UploadUrl,
    Upload,
    File(String),
    AnalyseFile(String),
    DownloadUrl(String),
    Download(String),
    Analysis(String),
    SubmitUrl,
    Url(String),
    AnalyseUrl(String),
    NetworkLocation(String),
    Host(Collection, String),
    AddNote(Collection, String, &'static str),
    Related(Collection, String, String),
    Unknown,
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        let segs: Vec<Cow<'_, str>> = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let get = method == Method::GET;
        let post = method == Method::POST;
        let s: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
        match s.as_slice() {
            ["files", "upload_url"] if get => Route::UploadUrl,
            ["files"] if post => Route::Upload,
            ["analyses", id] if get => Route::Analysis(id.to_string()),
            ["urls"] if post => Route::SubmitUrl,
            [c, id] if get => match Collection::parse(c) {
                Some(Collection::Files) => Route::File(id.to_string()),
                Some(Collection::Urls) => Route::Url(id.to_string()),
                Some(c) => Route::Host(c, id.to_string()),
                None => Route::Unknown,
            },
            ["files", id, "analyse"] if post => Route::AnalyseFile(id.to_string()),
            ["urls", id, "analyse"] if post => Route::AnalyseUrl(id.to_string()),
            ["files", id, "download_url"] if get => Route::DownloadUrl(id.to_string()),
            ["files", id, "download"] if get => Route::Download(id.to_string()),
            ["urls", id, "network_location"] if get => Route::NetworkLocation(id.to_string()),
            [c, id, rel @ ("comments" | "votes")] if post => match Collection::parse(c) {
                Some(c) => Route::AddNote(
                    c,
                    id.to_string(),
                    if *rel == "comments" {
                        "comments"
                    } else {
                        "votes"
                    },
                ),
                None => Route::Unknown,
            },
            [c, id, rel] | [c, id, "relationships", rel] if get => match Collection::parse(c) {
                Some(c) => Route::Related(c, id.to_string(), rel.to_string()),
                None => Route::Unknown,
            },
            _ => Route::Unknown,
        }
    }

    /// The endpoint pattern counted in `SimStats::requests`.
    fn label(&self) -> Cow<'static, str> {
        match self {
            Route::UploadUrl => "GET /files/upload_url".into(),
            Route::Upload => "POST /files".into(),
            Route::File(_) => "GET /files/{id}".into(),
            Route::AnalyseFile(_) => "POST /files/{id}/analyse".into(),
            Route::DownloadUrl(_) => "GET /files/{id}/download_url".into(),
            Route::Download(_) => "GET /files/{id}/download".into(),
            Route::Analysis(_) => "GET /analyses/{id}".into(),
            Route::SubmitUrl => "POST /urls".into(),
            Route::Url(_) => "GET /urls/{id}".into(),
            Route::AnalyseUrl(_) => "POST /urls/{id}/analyse".into(),
            Route::NetworkLocation(_) => "GET /urls/{id}/network_location".into(),
            Route::Host(c, _) => format!("GET /{}/{{id}}", c.path()).into(),
            Route::AddNote(c, _, rel) => format!("POST /{}/{{id}}/{rel}", c.path()).into(),
            Route::Related(c, _, rel) if rel == "comments" || rel == "votes" => {
                format!("GET /{}/{{id}}/{rel}", c.path()).into()
            }
            Route::Related(c, _, _) => format!("GET /{}/{{id}}/{{relationship}}", c.path()).into(),
            Route::Unknown => "unknown".into(),
        }
    }
}

/// Decodes `%XX` escapes of a path segment (analysis ids carry `=`, often escaped).
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

/// Turns a reply into a response, gzip-encoded when the client accepts it. 429s are never
/// encoded (VirusTotal's are not, and clients have tripped over that).
fn finish(reply: Reply, gzip: bool) -> Response {
    let encode =
        gzip && reply.content_type == json::JSON && reply.status != StatusCode::TOO_MANY_REQUESTS;
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::CONTENT_TYPE, reply.content_type);
    let body = if encode {
        builder = builder.header(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        reply.gzipped.unwrap_or_else(|| json::gzip(&reply.body))
    } else {
        reply.body
    };
    builder
        .body(Body::from(body))
        .expect("static headers are valid")
}

fn query_params(query: Option<&str>) -> (Option<usize>, Option<String>) {
    let mut limit = None;
    let mut cursor = None;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "limit" => limit = v.parse().ok(),
            "cursor" => cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    (limit, cursor)
}

async fn api(State(sim): State<Arc<Sim>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let gz = accepts_gzip(&parts.headers);
    let path = parts.uri.path().strip_prefix("/api/v3").unwrap_or("");
    let route = Route::parse(&parts.method, path);

    let refusal = match sim.authenticate(parts.headers.get("x-apikey").map(HeaderValue::as_bytes)) {
        Auth::Valid { id, premium } => match sim.admit(id, &route.label()) {
            Admission::Accepted(fault) => {
                if let Some(early) = fault_before(&sim, fault).await {
                    drain(body, DIRECT_UPLOAD_MAX * 2).await;
                    return early;
                }
                let reply = dispatch(&sim, route, &parts, body, premium, gz).await;
                return fault_after(fault, reply, gz);
            }
            Admission::OverQuota => Reply::error(
                StatusCode::TOO_MANY_REQUESTS,
                "QuotaExceededError",
                "Quota exceeded",
            ),
        },
        Auth::Missing => {
            sim.auth_failed();
            Reply::error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationRequiredError",
                "X-Apikey header is missing",
            )
        }
        Auth::Wrong => {
            sim.auth_failed();
            Reply::error(
                StatusCode::UNAUTHORIZED,
                "WrongCredentialsError",
                "Wrong API key",
            )
        }
    };
    // Read what the client is still sending, so that it gets to read the refusal.
    drain(body, DIRECT_UPLOAD_MAX * 2).await;
    finish(refusal, gz)
}

/// Faults that strike before the request takes effect (or delay it).
async fn fault_before(sim: &Sim, fault: Option<Fault>) -> Option<Response> {
    let reply = match fault? {
        Fault::Transient => Reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "TransientError",
            "Please try again later",
        ),
        Fault::Deadline => Reply::error(
            StatusCode::GATEWAY_TIMEOUT,
            "DeadlineExceededError",
            "Deadline exceeded",
        ),
        Fault::Html500 => Reply::html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server Error",
            "The server encountered an error and could not complete your request.",
        ),
        Fault::Latency => {
            tokio::time::sleep(sim.faults.latency).await;
            return None;
        }
        Fault::Drop | Fault::Truncate => return None,
    };
    // Error replies are gzip-free here: the front end's errors often are.
    Some(finish(reply, false))
}

/// Faults that strike after the request took effect: the reply is lost or mangled.
fn fault_after(fault: Option<Fault>, reply: Reply, gz: bool) -> Response {
    match fault {
        Some(Fault::Drop) => {
            let mut resp = Response::new(Body::empty());
            resp.extensions_mut().insert(DropConnection);
            resp
        }
        Some(Fault::Truncate) => {
            let cut = reply.body.len() / 2;
            let truncated = Reply {
                status: StatusCode::OK,
                gzipped: None,
                body: reply.body.slice(..cut),
                ..reply
            };
            finish(truncated, false)
        }
        _ => finish(reply, gz),
    }
}

async fn read_small(body: Body) -> Option<Bytes> {
    axum::body::to_bytes(body, 1024 * 1024).await.ok()
}

/// Reads the `url` form field of `POST /urls`, url-encoded or multipart.
async fn url_field(headers: &HeaderMap, body: Body) -> Option<String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Ok(boundary) = multer::parse_boundary(content_type) {
        let stream = body.into_data_stream().take(1024);
        let mut form = multer::Multipart::new(stream, boundary);
        while let Ok(Some(field)) = form.next_field().await {
            if field.name() == Some("url") {
                return field.text().await.ok();
            }
        }
        return None;
    }
    let bytes = read_small(body).await?;
    url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
}

async fn dispatch(
    sim: &Sim,
    route: Route,
    parts: &axum::http::request::Parts,
    body: Body,
    premium: bool,
    gz: bool,
) -> Reply {
    match route {
        Route::UploadUrl => sim.upload_url(),
        Route::Upload => receive(sim, &parts.headers, body, DIRECT_UPLOAD_MAX).await,
        Route::File(id) => sim.file(&id, gz),
        Route::AnalyseFile(id) => sim.analyse_file(&id),
        Route::DownloadUrl(id) => sim.download(&id, premium, true),
        Route::Download(id) => sim.download(&id, premium, false),
        Route::Analysis(id) => sim.analysis(&id),
        Route::SubmitUrl => match url_field(&parts.headers, body).await {
            Some(url) => sim.submit_url(&url),
            None => Reply::bad_request("the url form field is missing"),
        },
        Route::Url(id) => sim.url(&id, gz),
        Route::AnalyseUrl(id) => sim.analyse_url(&id),
        Route::NetworkLocation(id) => sim.network_location(&id),
        Route::Host(c, id) => sim.host(c, &id),
        Route::AddNote(c, id, rel) => match read_small(body).await {
            Some(bytes) => sim.add_note(c, &id, rel, &bytes),
            None => Reply::bad_request("request body too large or broken"),
        },
        Route::Related(c, id, rel) => {
            let (limit, cursor) = query_params(parts.uri.query());
            sim.collection(c, &id, &rel, limit, cursor.as_deref())
        }
        Route::Unknown => Reply::not_found(format!(
            "Resource not found: {} {}",
            parts.method,
            parts.uri.path()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_with_escaped_ids_and_relationships() {
        assert_eq!(
            Route::parse(&Method::GET, "/analyses/YWJj%3D%3D"),
            Route::Analysis("YWJj==".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, "/files/upload_url"),
            Route::UploadUrl
        );
        assert_eq!(
            Route::parse(&Method::GET, "/files/abc"),
            Route::File("abc".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, "/domains/a.example/relationships/subdomains"),
            Route::Related(Collection::Domains, "a.example".into(), "subdomains".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/ip_addresses/1.2.3.4/votes"),
            Route::AddNote(Collection::Ips, "1.2.3.4".into(), "votes")
        );
        assert_eq!(Route::parse(&Method::DELETE, "/files/abc"), Route::Unknown);
        assert_eq!(Route::parse(&Method::GET, "/bogus/abc"), Route::Unknown);
    }

    #[test]
    fn labels_name_the_endpoint_pattern() {
        assert_eq!(
            Route::parse(&Method::GET, "/ip_addresses/1.2.3.4").label(),
            "GET /ip_addresses/{id}"
        );
        assert_eq!(
            Route::parse(&Method::GET, "/files/x/comments").label(),
            "GET /files/{id}/comments"
        );
        assert_eq!(
            Route::parse(&Method::GET, "/files/x/contacted_urls").label(),
            "GET /files/{id}/{relationship}"
        );
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%3Db"), "a=b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn unspecified_bind_addresses_become_loopback_origins() {
        assert_eq!(
            origin("0.0.0.0:8765".parse().unwrap()),
            "http://127.0.0.1:8765"
        );
        assert_eq!(origin("127.0.0.1:1".parse().unwrap()), "http://127.0.0.1:1");
    }
}
