//! `serve --metrics [IP:]PORT`: the front's figures in the Prometheus text exposition format
//! (version 0.0.4), on `GET /metrics`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bakeoff_front::{Front, Stats, Window};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the service adds to the front's figures.
#[derive(Debug, Clone)]
pub struct Labels {
    pub service: String,
    pub platform: String,
    pub backend: String,
    pub switches: u64,
    pub window: Duration,
}

/// Label values are quoted; backslash, quote and newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text for one scrape. Pure.
pub fn render(stats: &Stats, window: &Window, labels: &Labels) -> String {
    let svc = format!("service=\"{}\"", esc(&labels.service));
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (extra, value) in samples {
            let sep = if extra.is_empty() { "" } else { "," };
            let _ = writeln!(out, "{name}{{{svc}{sep}{extra}}} {value}");
        }
    };
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "bakeoff_front_requests_total",
        "counter",
        "HTTP requests received by the front.",
        &one(stats.requests.to_string()),
    );
    let r = &stats.responses;
    let classes: Vec<(String, String)> = [
        ("2xx", r.s2xx),
        ("3xx", r.s3xx),
        ("4xx", r.s4xx),
        ("5xx", r.s5xx),
        ("other", r.other),
    ]
    .iter()
    .map(|(c, v)| (format!("class=\"{c}\""), v.to_string()))
    .collect();
    metric(
        "bakeoff_front_responses_total",
        "counter",
        "Responses sent to clients, by status class.",
        &classes,
    );
    metric(
        "bakeoff_front_errors_total",
        "counter",
        "Responses the front made up itself (502, 503) or TCP connections it could not forward.",
        &one(stats.front_errors.to_string()),
    );
    metric(
        "bakeoff_front_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        &one(stats.connections_accepted.to_string()),
    );
    metric(
        "bakeoff_front_connections_active",
        "gauge",
        "Client connections open now.",
        &one(stats.connections_active.to_string()),
    );
    metric(
        "bakeoff_front_bytes_in_total",
        "counter",
        "Bytes read from clients.",
        &one(stats.bytes_in.to_string()),
    );
    metric(
        "bakeoff_front_bytes_out_total",
        "counter",
        "Bytes written to clients.",
        &one(stats.bytes_out.to_string()),
    );
    metric(
        "bakeoff_front_window_request_rate",
        "gauge",
        "Requests per second over the observation window.",
        &one(format!("{:.3}", window.rate)),
    );
    let lat: Vec<(String, String)> = match &window.latency {
        Some(l) => [("0.5", l.p50), ("0.9", l.p90), ("0.99", l.p99)]
            .iter()
            .map(|(q, d)| {
                (
                    format!("quantile=\"{q}\""),
                    format!("{:.6}", d.as_secs_f64()),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    metric(
        "bakeoff_front_window_latency_seconds",
        "gauge",
        "Backend response-head latency over the observation window, by quantile.",
        &lat,
    );
    metric(
        "bakeoff_front_window_seconds",
        "gauge",
        "The observation window.",
        &one(labels.window.as_secs_f64().to_string()),
    );
    metric(
        "bakeoff_service_backend_info",
        "gauge",
        "The backend new traffic goes to (value 1).",
        &[(
            format!(
                "platform=\"{}\",backend=\"{}\"",
                esc(&labels.platform),
                esc(&labels.backend)
            ),
            "1".into(),
        )],
    );
    metric(
        "bakeoff_service_switches_total",
        "counter",
        "Switches between backends (by hand or by placement) since the front started.",
        &one(labels.switches.to_string()),
    );
    out
}

/// Answers every request on `listener` with the current figures (bounded reads; one
/// connection at a time is enough for a scraper).
pub async fn serve(
    listener: TcpListener,
    front: Front,
    labels: Arc<dyn Fn() -> Labels + Send + Sync>,
) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let front = front.clone();
        let labels = labels.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let line = String::from_utf8_lossy(&head);
            let path = line.split_whitespace().nth(1).unwrap_or("/");
            let l = labels();
            let (status, ctype, body) = if path == "/metrics" || path == "/" {
                (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(&front.stats(), &front.window(l.window), &l),
                )
            } else {
                ("404 Not Found", "text/plain", "see /metrics\n".to_string())
            };
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakeoff_front::Mode;
    use tokio::io::AsyncWriteExt;

    /// Every sample line is `name{labels} value` with a number, under its own HELP and TYPE.
    fn check_exposition(text: &str) -> Vec<(String, f64)> {
        let mut typed = std::collections::HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().unwrap();
                assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
                typed.insert(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
            assert!(
                series.ends_with('}') && series.contains("service=\""),
                "{line}"
            );
            samples.push((series.to_string(), value.parse::<f64>().expect(line)));
        }
        samples
    }

    #[tokio::test]
    async fn a_scrape_is_valid_exposition_text_with_the_fronts_figures() {
        let front = Front::bind("127.0.0.1:0".parse().unwrap(), Mode::Http)
            .await
            .unwrap();
        // One request without a backend: the front answers 503 itself.
        let mut s = tokio::net::TcpStream::connect(front.local_addr())
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
        let labels = Labels {
            service: "we\"b".into(),
            platform: "docker".into(),
            backend: "web.docker.1".into(),
            switches: 2,
            window: Duration::from_secs(5),
        };
        let text = render(&front.stats(), &front.window(labels.window), &labels);
        let samples = check_exposition(&text);
        let get = |series: &str| {
            samples
                .iter()
                .find(|(s, _)| s == series)
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .1
        };
        assert_eq!(
            get("bakeoff_front_requests_total{service=\"we\\\"b\"}"),
            1.0
        );
        assert_eq!(
            get("bakeoff_front_responses_total{service=\"we\\\"b\",class=\"5xx\"}"),
            1.0
        );
        assert_eq!(get("bakeoff_front_errors_total{service=\"we\\\"b\"}"), 1.0);
        assert_eq!(
            get("bakeoff_service_switches_total{service=\"we\\\"b\"}"),
            2.0
        );
        assert_eq!(
            get("bakeoff_service_backend_info{service=\"we\\\"b\",platform=\"docker\",backend=\"web.docker.1\"}"),
            1.0
        );
        front.shutdown().await;
    }
}
