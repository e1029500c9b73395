//! The storm report as Markdown: one table of metric, product, floor and ratio, and the bare floor and its
//! ratio (beside an earlier run's, when one was saved with `--as before`), each row with the load average when
//! its phase started and the target. "floor" is the floor with the spec's writes ([`crate::floor::Writes`]).

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

/// One line of the table, as measured in one run.
struct Row {
    metric: &'static str,
    /// The phase that measured it (its load average is shown).
    phase: &'static str,
    product: String,
    floor: String,
    ratio: String,
    /// The same beside the bare floor.
    bare: String,
    bare_ratio: String,
    target: &'static str,
}

fn row(metric: &'static str, phase: &'static str, product: String, target: &'static str) -> Row {
    Row {
        metric,
        phase,
        product,
        floor: String::new(),
        ratio: String::new(),
        bare: String::new(),
        bare_ratio: String::new(),
        target,
    }
}

/// A rate beside both floors: `floors` is `{"spec": …, "bare": …}` and `path` the rate's place in each.
fn rate_row(
    metric: &'static str,
    phase: &'static str,
    product: &Value,
    floors: &Value,
    path: [&str; 2],
    target: &'static str,
) -> Row {
    let at = |w: &str| &floors[w][path[0]][path[1]];
    Row {
        floor: f1(at("spec")),
        ratio: ratio(product, at("spec")),
        bare: f1(at("bare")),
        bare_ratio: ratio(product, at("bare")),
        ..row(metric, phase, f1(product), target)
    }
}

fn rows(report: &Value) -> Vec<Row> {
    let r = &report["results"];
    let (fl, st, fp, pb) = (&r["floor"], &r["storm"], &r["footprint"], &r["pushback"]);
    let users = st["users"].as_f64().unwrap_or(0.0);
    let logout_rate = st["all_gone_after_logout_s"]
        .as_f64()
        .map(|s| Value::from(users / s))
        .unwrap_or(Value::Null);
    let mut out = vec![
        rate_row(
            "login storm, logins/s",
            "storm",
            &st["login"]["per_s"],
            fl,
            ["login", "per_s"],
            "≥ 50 % of floor",
        ),
        Row {
            floor: latency(&fl["spec"]["login"]),
            bare: latency(&fl["bare"]["login"]),
            ..row(
                "login storm p50 / p95 / p99 ms",
                "storm",
                latency(&st["login"]),
                "p99 ≤ 1000",
            )
        },
        row(
            "login storm errors; objects exact",
            "storm",
            format!("{}; {}", st["login"]["errors"], st["objects_exact"]),
            "0; true",
        ),
        Row {
            floor: f1(&fl["spec"]["apiserver_login"]["requests_per_op"]),
            bare: f1(&fl["bare"]["apiserver_login"]["requests_per_op"]),
            ..row(
                "apiserver requests per login",
                "storm",
                f1(&st["apiserver_during_logins"]["requests_per_op"]),
                "",
            )
        },
        rate_row(
            "logout of all → every object gone, sessions/s",
            "storm",
            &logout_rate,
            fl,
            ["cleanup", "per_s"],
            "≥ 50 % of floor",
        ),
        rate_row(
            "controller provisioning, sessions/s",
            "footprint",
            &fp["provision"]["per_s"],
            &fp["floor"],
            ["login", "per_s"],
            "≥ 50 % of floor",
        ),
        rate_row(
            "controller cleanup, sessions/s",
            "footprint",
            &fp["cleanup"]["per_s"],
            &fp["floor"],
            ["cleanup", "per_s"],
            "≥ 50 % of floor",
        ),
    ];
    out.extend(cpu_rows(fl, st, fp));
    for (metric, p) in [
        ("/healthz during the storm, p99 / max ms", "/healthz"),
        ("/ready during the storm, p99 / max ms", "/ready"),
        ("/metrics during the storm, p99 / max ms", "/metrics"),
    ] {
        let h = &st["health_during_storm"][p];
        let value = format!("{} / {}", f1(&h["p99_ms"]), f1(&h["max_ms"]));
        out.push(row(metric, "storm", value, "< 100"));
    }
    out.push(row(
        "logout idle / during the storm, p50 / max ms",
        "storm",
        format!(
            "{} / {} — {} / {}",
            f1(&st["logout_idle"]["p50_ms"]),
            f1(&st["logout_idle"]["max_ms"]),
            f1(&st["logout_during_storm"]["p50_ms"]),
            f1(&st["logout_during_storm"]["max_ms"])
        ),
        "not behind logins",
    ));
    out.push(row(
        "noisy node: requests, 429 from the per-node limiter",
        "storm",
        format!(
            "{}, {}",
            st["noisy_node"]["requests"], st["noisy_node"]["rate_limited_429"]
        ),
        "limited",
    ));
    out.push(row(
        "pushback: apiserver 429s to tka; commands failed (retrying as `tka` does)",
        "pushback",
        format!(
            "{}; {} (logins), {} (logouts)",
            pb["apiserver"]["tka_rejected_429"], pb["login"]["errors"], pb["logout"]["errors"]
        ),
        "0 user errors",
    ));
    out.extend(footprint_rows(fp));
    let sz = &r["sizes"];
    out.push(row(
        "binary MiB, static: tka-server / tka",
        "sizes",
        format!(
            "{} / {}",
            f1(&sz["static"]["tka-server"]),
            f1(&sz["static"]["tka"])
        ),
        "≤ 15 / ≤ 8",
    ));
    out
}

/// Where the CPU went in the four phases that write (login storm, mass logout, provisioning, cleanup): what
/// one session cost the apiserver and etcd, and how busy the machine was. A phase near 100 % busy is
/// CPU-bound, and then its rate follows the CPU each session costs.
fn cpu_rows(fl: &Value, st: &Value, fp: &Value) -> Vec<Row> {
    let product = [
        &st["apiserver_during_logins"],
        &st["apiserver_during_logouts"],
        &fp["provision"]["apiserver"],
        &fp["cleanup"]["apiserver"],
    ];
    let floor = |w: &str| {
        [
            &fl[w]["apiserver_login"],
            &fl[w]["apiserver_cleanup"],
            &fp["floor"][w]["apiserver_login"],
            &fp["floor"][w]["apiserver_cleanup"],
        ]
    };
    let four = |phases: &[&Value; 4], f: &dyn Fn(&Value) -> String| {
        phases.iter().map(|v| f(v)).collect::<Vec<_>>().join(" / ")
    };
    let control_plane = |v: &Value| {
        let ms = &v["cpu_ms_per_op"];
        match (num(&ms["kube-apiserver"]), num(&ms["etcd"])) {
            (Some(a), Some(e)) => format!("{:.1}", a + e),
            _ => "–".into(),
        }
    };
    let busy = |v: &Value| num(&v["machine_busy_pct"]).map_or("–".into(), |b| format!("{b:.0}"));
    let both = |metric, f: &dyn Fn(&Value) -> String| Row {
        floor: four(&floor("spec"), f),
        bare: four(&floor("bare"), f),
        ..row(metric, "storm", four(&product, f), "")
    };
    vec![
        both(
            "apiserver + etcd CPU ms per session: login / logout / provisioning / cleanup",
            &control_plane,
        ),
        both("machine CPU busy %, same four phases", &busy),
    ]
}

fn footprint_rows(fp: &Value) -> Vec<Row> {
    let rss = |v: &Value| f1(&v["rss_mib"]);
    let big = &fp["big"];
    let per_session = |with: &Value, n: &Value| match (
        num(&with["rss_mib"]),
        num(&fp["rss_idle"]["rss_mib"]),
        num(n),
    ) {
        (Some(w), Some(i), Some(n)) if n > 0.0 => format!("{:.1}", (w - i) * 1024.0 / n),
        _ => "–".into(),
    };
    vec![
        row(
            "tka-server RSS MiB: idle / 1,000 / 10,000 sessions",
            "footprint",
            format!(
                "{} / {} / {}",
                rss(&fp["rss_idle"]),
                rss(&fp["rss_with_sessions"]),
                rss(&big["rss"])
            ),
            "≤ 30 / ≤ 60 / linear",
        ),
        row(
            "RSS per session KiB (1,000 / 10,000)",
            "footprint",
            format!(
                "{} / {}",
                per_session(&fp["rss_with_sessions"], &fp["sessions"]),
                per_session(&big["rss"], &big["sessions"])
            ),
            "",
        ),
    ]
}

/// The 1-minute load average when `phase` started.
fn load(report: &Value, phase: &str) -> String {
    let l = &report["results"][format!("{phase}_load")]["before"];
    l.as_str()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("–")
        .to_string()
}

pub fn markdown(report: &Value, before: Option<&Value>, label: Option<&str>) -> String {
    let title = label.map_or(String::new(), |l| format!(" — {l}"));
    let mut md = format!(
        "## Scale{title} (`cargo bench --features integration --bench storm`)\n\ncommit {}, {} CPUs; \
         load = 1-minute load average when the phase started (all three per phase in storm.json)\n\n",
        report["commit"].as_str().unwrap_or("?"),
        report["cpus"]
    );
    let after = rows(report);
    match before {
        None => {
            md.push_str(
                "| metric | tka | floor | ratio | bare floor | ratio | load | target |\n\
                 |---|---|---|---|---|---|---|---|\n",
            );
            for r in &after {
                let l = load(report, r.phase);
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {l} | {} |\n",
                    r.metric, r.product, r.floor, r.ratio, r.bare, r.bare_ratio, r.target
                ));
            }
        }
        Some(b) => {
            md.push_str(&format!(
                "before = commit {} (saved with `--as before`), after = this commit; each run has its own \
                 floor, so the ratios are the comparable figures.\n\n",
                b["commit"].as_str().unwrap_or("?")
            ));
            md.push_str(
                "| metric | before | floor | ratio | load | after | floor | ratio | load | target |\n\
                 |---|---|---|---|---|---|---|---|---|---|\n",
            );
            for (a, o) in after.iter().zip(rows(b)) {
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    a.metric,
                    o.product,
                    o.floor,
                    o.ratio,
                    load(b, o.phase),
                    a.product,
                    a.floor,
                    a.ratio,
                    load(report, a.phase),
                    a.target
                ));
            }
        }
    }
    md
}
