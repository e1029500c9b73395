//! The storm report as Markdown: one table of metric, product, floor and ratio, then the details.

use serde_json::Value;

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn f1(v: &Value) -> String {
    num(v).map_or("–".into(), |x| format!("{x:.1}"))
}

fn ratio(product: &Value, floor: &Value) -> String {
    match (num(product), num(floor)) {
        (Some(p), Some(f)) if f > 0.0 => format!("{:.0} %", p / f * 100.0),
        _ => "–".into(),
    }
}

fn latency(v: &Value) -> String {
    format!(
        "{} / {} / {}",
        f1(&v["p50_ms"]),
        f1(&v["p95_ms"]),
        f1(&v["p99_ms"])
    )
}

pub fn markdown(report: &Value) -> String {
    let r = &report["results"];
    let (fl, st, fp, pb) = (&r["floor"], &r["storm"], &r["footprint"], &r["pushback"]);
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |m: &str, p: String, f: String, q: String| rows.push([m.into(), p, f, q]);
    row(
        "login storm, logins/s",
        f1(&st["login"]["per_s"]),
        f1(&fl["login"]["per_s"]),
        ratio(&st["login"]["per_s"], &fl["login"]["per_s"]),
    );
    row(
        "login storm p50 / p95 / p99 ms",
        latency(&st["login"]),
        latency(&fl["login"]),
        String::new(),
    );
    row(
        "login storm errors; objects exact",
        format!("{}; {}", st["login"]["errors"], st["objects_exact"]),
        fl["login"]["errors"].to_string(),
        String::new(),
    );
    row(
        "apiserver requests per login",
        f1(&st["apiserver_during_logins"]["requests_per_op"]),
        f1(&fl["apiserver_login"]["requests_per_op"]),
        String::new(),
    );
    let users = st["users"].as_f64().unwrap_or(0.0);
    let logout_rate = st["all_gone_after_logout_s"]
        .as_f64()
        .map(|s| Value::from(users / s))
        .unwrap_or(Value::Null);
    row(
        "logout of all → every object gone, sessions/s",
        f1(&logout_rate),
        f1(&fl["cleanup"]["per_s"]),
        ratio(&logout_rate, &fl["cleanup"]["per_s"]),
    );
    row(
        "controller provisioning, sessions/s",
        f1(&fp["provision"]["per_s"]),
        f1(&r["footprint"]["floor_provision"]["per_s"]),
        ratio(&fp["provision"]["per_s"], &fp["floor_provision"]["per_s"]),
    );
    row(
        "controller cleanup, sessions/s",
        f1(&fp["cleanup"]["per_s"]),
        f1(&fp["floor_cleanup"]["per_s"]),
        ratio(&fp["cleanup"]["per_s"], &fp["floor_cleanup"]["per_s"]),
    );
    for p in ["/healthz", "/ready", "/metrics"] {
        row(
            &format!("{p} during the storm, p99 / max ms"),
            format!(
                "{} / {}",
                f1(&st["health_during_storm"][p]["p99_ms"]),
                f1(&st["health_during_storm"][p]["max_ms"])
            ),
            String::new(),
            String::new(),
        );
    }
    row(
        "logout idle / during the storm, p50 / max ms",
        format!(
            "{} / {} — {} / {}",
            f1(&st["logout_idle"]["p50_ms"]),
            f1(&st["logout_idle"]["max_ms"]),
            f1(&st["logout_during_storm"]["p50_ms"]),
            f1(&st["logout_during_storm"]["max_ms"])
        ),
        String::new(),
        String::new(),
    );
    row(
        "noisy node: requests, 429 from the per-node limiter",
        format!(
            "{}, {}",
            st["noisy_node"]["requests"], st["noisy_node"]["rate_limited_429"]
        ),
        String::new(),
        String::new(),
    );
    row(
        "pushback: apiserver 429s to tka; user errors",
        format!(
            "{}; {} (logins), {} (logouts)",
            pb["apiserver"]["tka_rejected_429"], pb["login"]["errors"], pb["logout"]["errors"]
        ),
        String::new(),
        String::new(),
    );
    let rss = |v: &Value| f1(&v["rss_mib"]);
    let big = &fp["big"];
    row(
        "tka-server RSS MiB: idle / 1,000 / 10,000 sessions",
        format!(
            "{} / {} / {}",
            rss(&fp["rss_idle"]),
            rss(&fp["rss_with_sessions"]),
            rss(&big["rss"])
        ),
        String::new(),
        String::new(),
    );
    let per_session = |with: &Value, n: &Value| match (
        num(&with["rss_mib"]),
        num(&fp["rss_idle"]["rss_mib"]),
        num(n),
    ) {
        (Some(w), Some(i), Some(n)) if n > 0.0 => format!("{:.1}", (w - i) * 1024.0 / n),
        _ => "–".into(),
    };
    row(
        "RSS per session KiB (1,000 / 10,000)",
        format!(
            "{} / {}",
            per_session(&fp["rss_with_sessions"], &fp["sessions"]),
            per_session(&big["rss"], &big["sessions"])
        ),
        String::new(),
        String::new(),
    );
    let sz = &r["sizes"];
    row(
        "binary MiB, static: tka-server / tka",
        format!(
            "{} / {}",
            f1(&sz["static"]["tka-server"]),
            f1(&sz["static"]["tka"])
        ),
        String::new(),
        String::new(),
    );
    let mut md = format!(
        "## Scale (`cargo bench --features integration --bench storm`)\n\ncommit {}, {} CPUs; load average per phase in storm.json\n\n| metric | tka | floor | ratio |\n|---|---|---|---|\n",
        report["commit"].as_str().unwrap_or("?"),
        report["cpus"]
    );
    for [m, p, f, q] in rows {
        md.push_str(&format!("| {m} | {p} | {f} | {q} |\n"));
    }
    md
}
