//! `http::router::route` over a mix of request lines as a busy server sees
//! them: mostly hits (message pages, static files, auth), some 404s, 405s
//! and bad ids. Every REST request pays for it, and ARCHITECTURE.md promises
//! it allocates nothing, so it should stay in the tens of nanoseconds.

use std::hint::black_box;

use chatd::http::router::{Route, route};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hyper::Method;

fn mix() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/api/chat/rooms/12/messages"),
        (Method::GET, "/api/chat/rooms"),
        (Method::POST, "/api/chat/rooms"),
        (Method::GET, "/api/chat/rooms/12"),
        (Method::POST, "/api/chat/rooms/12/read"),
        (Method::PUT, "/api/chat/messages/734"),
        (Method::DELETE, "/api/chat/messages/734"),
        (Method::POST, "/api/chat/messages/734/like"),
        (Method::GET, "/api/chat/unread-count"),
        (Method::GET, "/api/chat/online-users"),
        (Method::GET, "/api/chat/search-users"),
        (Method::GET, "/api/auth/me"),
        (Method::POST, "/api/auth/login"),
        (Method::GET, "/api/chat/ws"),
        (Method::GET, "/static/chat_files/images/user_3_1704110400000_a1b2c3.png"),
        (Method::HEAD, "/static/app.js"),
        (Method::GET, "/healthz"),
        (Method::GET, "/"),
        // 404
        (Method::GET, "/favicon.ico"),
        (Method::GET, "/api/chat/rooms/12/members"),
        (Method::GET, "/wp-admin/install.php"),
        // 405
        (Method::GET, "/api/auth/login"),
        (Method::DELETE, "/api/chat/rooms"),
        // bad id
        (Method::GET, "/api/chat/rooms/abc/messages"),
        (Method::PUT, "/api/chat/messages/-4"),
    ]
}

fn bench_route(c: &mut Criterion) {
    let requests = mix();
    let found = requests.iter().filter(|(m, p)| matches!(route(m, p), Route::Found(_))).count();
    assert_eq!(found, 18, "the mix should be mostly hits");

    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.bench_function("mix_25", |b| {
        b.iter(|| {
            for (method, path) in &requests {
                black_box(route(black_box(method), black_box(path)));
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("messages_page", |b| {
        b.iter(|| route(black_box(&Method::GET), black_box("/api/chat/rooms/12/messages")))
    });
    group.bench_function("not_found", |b| b.iter(|| route(black_box(&Method::GET), black_box("/favicon.ico"))));
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
