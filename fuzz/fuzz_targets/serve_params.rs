//! `etl serve`'s query strings: decoded by axum's `Query` extractor as the server does, then read
//! with every accessor the handlers use. Any outcome but a panic is fine: a bad value is a 400.
#![no_main]

use axum::extract::Query;
use axum::http::Uri;
use etl::http::params::{Params, parse_date, parse_uuid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the query string, the rest a path segment (`/users/{user_id}`).
    let (query, segment) = query.split_once('\n').unwrap_or((query, ""));
    let _ = parse_uuid("user_id", segment);
    let _ = parse_date("date", segment);
    let Ok(uri) = format!("/x?{query}").parse::<Uri>() else {
        return;
    };
    let Ok(Query(params)) = Query::<Params>::try_from_uri(&uri) else {
        return;
    };
    let _ = params.int("days", 7, 1..=3650);
    let _ = params.int("limit", 50, 1..=500);
    let _ = params.int("offset", 0, 0..=100_000);
    let _ = params.uuid("user_id");
    let _ = params.float("min_z", 0.0..=1e6);
    let _ = params.date("start_date");
    let _ = params.date("end_date");
    let _ = params.choice("status", &["approved", "declined", "pending"]);
    let _ = params.get("kind");
});
