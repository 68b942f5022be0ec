//! The HTTP side: GET /metrics, in the format the scraper asks for; 404 for anything else.

use std::time::Instant;

use tiny_http::{Header, Method, Request, Response, Server};

use super::{Series, Shared, families, native, text};

/// Answers requests one at a time until the server is unblocked.
pub(super) fn serve(server: &Server, shared: &Shared, mut series: Series) {
    let mut decode_errors = 0u64;
    for request in server.incoming_requests() {
        let response = answer(&request, shared, &mut series, &mut decode_errors);
        // A scraper that hung up is not our error; the next one gets its answer.
        let _ = request.respond(response);
    }
}

fn answer(
    request: &Request,
    shared: &Shared,
    series: &mut Series,
    decode_errors: &mut u64,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let path = request.url().split('?').next().unwrap_or("");
    if path != "/metrics" {
        return plain(404, "locktrace: only /metrics is served here\n");
    }
    if !matches!(request.method(), Method::Get | Method::Head) {
        return plain(405, "locktrace: /metrics answers GET\n");
    }
    let Some(snap) = shared.fresh() else {
        return plain(503, "locktrace: tracing has not started yet\n");
    };
    // Expiry is measured against the snapshot's own time, not the scrape's.
    series.update(&snap.report, snap.at.min(Instant::now()));
    let families = families(&snap, series, decode_errors);
    let protobuf = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Accept"))
        .any(|h| native::accepted(h.value.as_str()));
    match protobuf {
        true => with_type(
            Response::from_data(native::render(&families)),
            native::CONTENT_TYPE,
        ),
        false => with_type(
            Response::from_data(text::render(&families)),
            text::CONTENT_TYPE,
        ),
    }
}

fn plain(status: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    with_type(
        Response::from_data(body.as_bytes().to_vec()).with_status_code(status),
        "text/plain; charset=utf-8",
    )
}

fn with_type(
    response: Response<std::io::Cursor<Vec<u8>>>,
    content_type: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    match Header::from_bytes("Content-Type", content_type) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}
