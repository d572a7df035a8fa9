//! The Kubernetes manifests of `deploy/k8s/`, with no cluster: parsed, and checked
//! against one another, against the Dockerfile, and against what the binary serves.

pub mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use yaml_rust2::{Yaml, YamlLoader};

use util::bench::{count, json_lines, now_unix};
use util::child::{Proc, bin, run_bin, run_bin_with_stdin};
use util::net::{connect, http_get, wait_until};

/// The one document of `deploy/k8s/NAME`.
fn manifest(name: &str) -> Yaml {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one document");
    docs.remove(0)
}

/// `y[k1][k2]...`, failing with the path when a key is missing.
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(y, |y, k| {
        let next = match k.parse::<usize>() {
            Ok(i) => &y[i],
            Err(_) => &y[k],
        };
        assert!(!next.is_badvalue(), "no {path} (at {k})");
        next
    })
}

fn str_at<'a>(y: &'a Yaml, path: &str) -> &'a str {
    at(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string"))
}

fn int_at(y: &Yaml, path: &str) -> i64 {
    at(y, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path} is not an integer"))
}

/// The Deployment's one container.
fn container(deployment: &Yaml) -> &Yaml {
    let containers = at(deployment, "spec.template.spec.containers");
    assert_eq!(containers.as_vec().map(Vec::len), Some(1));
    &containers[0]
}

/// The container's `args`.
fn args(c: &Yaml) -> Vec<&str> {
    at(c, "args")
        .as_vec()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect()
}

/// The value after `--option` in `args`.
fn option<'a>(args: &[&'a str], option: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| *a == option)
        .unwrap_or_else(|| panic!("no {option} in {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{option} without a value"))
}

/// The container's literal `env` values by name.
fn env(c: &Yaml) -> HashMap<&str, &Yaml> {
    at(c, "env")
        .as_vec()
        .expect("env")
        .iter()
        .map(|e| (str_at(e, "name"), e))
        .collect()
}

/// The container ports: name -> (number, protocol).
fn container_ports(c: &Yaml) -> HashMap<&str, (i64, &str)> {
    at(c, "ports")
        .as_vec()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                str_at(p, "name"),
                (int_at(p, "containerPort"), str_at(p, "protocol")),
            )
        })
        .collect()
}

/// A probe's HTTP path and the container port number it targets.
fn probe(c: &Yaml, which: &str) -> (String, i64) {
    let get = at(c, &format!("{which}.httpGet"));
    let port = match &get["port"] {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => {
            container_ports(c)
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{which}: no container port named {name}"))
                .0
        }
        other => panic!("{which}: port {other:?}"),
    };
    (str_at(get, "path").to_owned(), port)
}

/// The Dockerfile's instruction `word` in its last stage (the image), joined lines.
fn dockerfile(word: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("the Dockerfile");
    let joined = text.replace("\\\n", " ");
    let last_stage = joined.rsplit_once("\nFROM ").expect("stages").1;
    last_stage
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{word} ")))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Port and address of a `tcp://HOST:PORT` URL.
fn tcp_url(url: &str) -> (&str, i64) {
    let rest = url
        .strip_prefix("tcp://")
        .unwrap_or_else(|| panic!("{url}"));
    let (host, port) = rest.rsplit_once(':').expect("HOST:PORT");
    (host, port.parse().expect("a port"))
}

const METRICS_PORT: i64 = 9100;
const ECHO_PORT: i64 = 5001;

#[test]
fn the_deployment_probes_listens_drains_and_runs_as_the_image_user() {
    let d = manifest("deployment.yaml");
    assert_eq!(str_at(&d, "apiVersion"), "apps/v1");
    assert_eq!(str_at(&d, "kind"), "Deployment");
    let c = container(&d);
    let env = env(c);

    // The probes go to the paths the metrics listener serves, on its port.
    assert_eq!(probe(c, "readinessProbe"), ("/readyz".into(), METRICS_PORT));
    assert_eq!(probe(c, "livenessProbe"), ("/healthz".into(), METRICS_PORT));
    let metrics = str_at(env["SOCKLOOP_METRICS"], "value");
    assert_eq!(tcp_url(metrics), ("0.0.0.0", METRICS_PORT), "{metrics}");

    // All interfaces: the kubelet and the Service reach the pod's address.
    let listen = str_at(env["SOCKLOOP_LISTEN"], "value");
    let listen: Vec<&str> = listen.split(',').collect();
    assert_eq!(listen, ["tcp://0.0.0.0:5001", "udp://0.0.0.0:5001"]);
    let ports = container_ports(c);
    assert_eq!(ports["echo-tcp"], (ECHO_PORT, "TCP"));
    assert_eq!(ports["echo-udp"], (ECHO_PORT, "UDP"));
    assert_eq!(ports["metrics"], (METRICS_PORT, "TCP"));

    // SIGKILL must not cut the drain short.
    let args = args(c);
    assert_eq!(args[0], "serve");
    let drain: u64 = option(&args, "--drain-delay").parse().unwrap();
    let shutdown: u64 = option(&args, "--shutdown-timeout").parse().unwrap();
    let grace = int_at(&d, "spec.template.spec.terminationGracePeriodSeconds") as u64;
    assert!(
        grace > drain + shutdown,
        "terminationGracePeriodSeconds {grace} <= --drain-delay {drain} + --shutdown-timeout {shutdown}"
    );
    // The readiness probe must notice the drain before it ends.
    let period = int_at(c, "readinessProbe.periodSeconds") as u64;
    let failures = int_at(c, "readinessProbe.failureThreshold") as u64;
    assert!(
        period * failures < drain,
        "readiness fails after {}s, the drain lasts {drain}s",
        period * failures
    );

    // Which pod answered: the banner names it.
    assert!(option(&args, "--banner").contains("{env:POD_NAME}"));
    assert_eq!(
        str_at(env["POD_NAME"], "valueFrom.fieldRef.fieldPath"),
        "metadata.name"
    );

    // Not root, and the image's own user; nothing written to the image.
    let pod_security = at(&d, "spec.template.spec.securityContext");
    assert_eq!(at(pod_security, "runAsNonRoot").as_bool(), Some(true));
    let user = format!(
        "{}:{}",
        int_at(pod_security, "runAsUser"),
        int_at(pod_security, "runAsGroup")
    );
    assert_eq!(vec![user], dockerfile("USER"));
    assert_eq!(
        at(c, "securityContext.readOnlyRootFilesystem").as_bool(),
        Some(true)
    );
    assert_eq!(
        at(c, "securityContext.allowPrivilegeEscalation").as_bool(),
        Some(false)
    );
    for r in ["cpu", "memory"] {
        assert!(at(c, &format!("resources.requests.{r}")).as_str().is_some());
    }

    // The manifest says what the image says.
    let image_env = dockerfile("ENV").join(" ");
    for name in ["SOCKLOOP_LISTEN", "SOCKLOOP_METRICS"] {
        let value = str_at(env[name], "value");
        assert!(
            image_env.contains(&format!("{name}={value}")),
            "{name}={value} is not the image's: {image_env}"
        );
    }
    let exposed = dockerfile("EXPOSE").join(" ");
    for (port, proto) in ports.values() {
        let p = format!("{port}/{}", proto.to_lowercase());
        assert!(
            exposed.split(' ').any(|e| e == p),
            "{p} not in EXPOSE {exposed}"
        );
    }

    let labels = at(&d, "spec.template.metadata.labels");
    assert_eq!(at(&d, "spec.selector.matchLabels"), labels);
}

#[test]
fn the_service_carries_tcp_and_udp_echo_and_metrics_to_the_pods() {
    let d = manifest("deployment.yaml");
    let c = container(&d);
    let pod_ports = container_ports(c);
    let s = manifest("service.yaml");
    assert_eq!(str_at(&s, "kind"), "Service");
    assert_eq!(
        at(&s, "spec.selector"),
        at(&d, "spec.template.metadata.labels")
    );

    let mut seen = Vec::new();
    for p in at(&s, "spec.ports").as_vec().expect("ports") {
        let (port, proto) = (int_at(p, "port"), str_at(p, "protocol"));
        let target = match &p["targetPort"] {
            Yaml::String(name) => pod_ports
                .get(name.as_str())
                .copied()
                .unwrap_or_else(|| panic!("no container port {name}")),
            Yaml::Integer(n) => (*n, proto),
            other => panic!("targetPort {other:?}"),
        };
        assert_eq!(target, (port, proto), "service port {port}/{proto}");
        seen.push((port, proto));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (ECHO_PORT, "TCP"),
            (ECHO_PORT, "UDP"),
            (METRICS_PORT, "TCP")
        ]
    );
}

#[test]
fn the_disruption_budget_keeps_a_pod_serving_and_lets_one_go() {
    let d = manifest("deployment.yaml");
    let p = manifest("pdb.yaml");
    assert_eq!(str_at(&p, "apiVersion"), "policy/v1");
    assert_eq!(str_at(&p, "kind"), "PodDisruptionBudget");
    assert_eq!(
        at(&p, "spec.selector.matchLabels"),
        at(&d, "spec.template.metadata.labels")
    );
    let replicas = int_at(&d, "spec.replicas");
    let unavailable = int_at(&p, "spec.maxUnavailable");
    assert!(
        unavailable >= 1 && replicas - unavailable >= 1,
        "{replicas} replicas, {unavailable} may go"
    );
}

/// `sockloop serve` with the Deployment's own `args` for the options that exist
/// now: the banner template expands POD_NAME, and the timeout is accepted.
#[test]
fn the_binary_expands_the_deployments_banner_with_the_pod_name() {
    let d = manifest("deployment.yaml");
    let args = args(container(&d));
    let banner = option(&args, "--banner");
    let mut server = Proc::serve_env(
        &[("POD_NAME", "sockloop-7d9f-x2x4q")],
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--banner",
            banner,
            "--shutdown-timeout",
            option(&args, "--shutdown-timeout"),
        ],
        1,
    );
    let mut s = connect(server.addr(0));
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).unwrap();
    assert_eq!(
        line,
        banner.replace("{env:POD_NAME}", "sockloop-7d9f-x2x4q") + "\n"
    );
    server.signal(Signal::SIGTERM);
    assert!(server.wait().success());
}

/// `GET path`: the status code.
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    http_get(addr, path).0
}

/// The Deployment's whole command line and environment, addresses moved to loopback
/// ports of the test's (flags win over the environment): the probes' paths answer,
/// and readiness fails at once on SIGTERM while the drain lasts.
#[test]
fn the_binary_serves_the_probe_paths_of_the_deployment() {
    let d = manifest("deployment.yaml");
    let c = container(&d);
    let metrics_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics: SocketAddr = (Ipv4Addr::LOCALHOST, metrics_port).into();
    let mut cmd = Command::new(bin());
    cmd.args(args(c))
        .args(["--listen", "tcp://127.0.0.1:0"])
        .args(["--metrics", &format!("tcp://{metrics}")]);
    for (name, e) in env(c) {
        if let Some(v) = e["value"].as_str() {
            cmd.env(name, v);
        }
    }
    cmd.env("POD_NAME", "sockloop-test");
    // The listener's ready line, then the metrics listener's: bound, both.
    let mut server = Proc::spawn(cmd, 2);
    assert_eq!(server.metrics_addr(), metrics);
    let (ready, _) = probe(c, "readinessProbe");
    let (live, _) = probe(c, "livenessProbe");
    assert_eq!(http_status(metrics, &ready), 200);
    assert_eq!(http_status(metrics, &live), 200);
    server.signal(Signal::SIGTERM);
    wait_until("not ready", || http_status(metrics, &ready) == 503);
    assert_eq!(http_status(metrics, &live), 200, "alive while draining");
    assert!(server.wait().success());
}

/// `$(NAME)` in `arg` replaced by `env[NAME]`, as the kubelet expands container args.
fn kubelet_expand(arg: &str, env: &HashMap<&str, String>) -> String {
    let mut out = arg.to_string();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// The bench Job: Indexed, N pods at once, never retried (a retry would start after
/// START_AT), against the Service, printing JSON, started at the `${START_AT}` that
/// `envsubst` fills in, as the image's user.
#[test]
fn the_bench_job_runs_n_generators_against_the_service_at_one_start_time() {
    let j = manifest("bench-job.yaml");
    let service = manifest("service.yaml");
    assert_eq!(str_at(&j, "apiVersion"), "batch/v1");
    assert_eq!(str_at(&j, "kind"), "Job");
    assert_eq!(str_at(&j, "spec.completionMode"), "Indexed");
    let n = int_at(&j, "spec.completions");
    assert!(n > 1);
    assert_eq!(int_at(&j, "spec.parallelism"), n, "all generators at once");
    assert_eq!(int_at(&j, "spec.backoffLimit"), 0);
    assert_eq!(str_at(&j, "spec.template.spec.restartPolicy"), "Never");
    assert_eq!(
        int_at(&j, "spec.template.spec.securityContext.runAsUser"),
        65532
    );
    let c = container(&j);
    let args = args(c);
    assert_eq!(args[0], "bench");
    let (host, port) = tcp_url(args[1]);
    assert_eq!(host, str_at(&service, "metadata.name"));
    assert_eq!(port, ECHO_PORT);
    assert!(args.contains(&"--json"));
    assert_eq!(option(&args, "--interval"), "1");
    assert_eq!(option(&args, "--start-at"), "$(START_AT)");
    assert_eq!(str_at(env(c)["START_AT"], "value"), "${START_AT}");
}

/// The Job's arguments, as the kubelet would pass them after `envsubst` set START_AT
/// 1 to 2 s ahead, run against a local server: the binary accepts every one, waits for
/// the start, and prints a report that `bench merge` reads. Only the target and the
/// length of the window (30 s in the Job) are the test's.
#[test]
fn the_binary_runs_the_bench_jobs_arguments_and_merges_their_output() {
    let j = manifest("bench-job.yaml");
    let c = container(&j);
    let server = Proc::serve(&["--listen", "tcp://127.0.0.1:0"]);
    let start_at = format!("{}", now_unix().floor() as u64 + 2);
    let manifest_env: HashMap<&str, String> = env(c)
        .into_iter()
        .map(|(name, e)| {
            let v = str_at(e, "value").replace("${START_AT}", &start_at);
            (name, v)
        })
        .collect();
    let mut args: Vec<String> = args(c)
        .iter()
        .map(|a| kubelet_expand(a, &manifest_env))
        .collect();
    args[1] = server.url(0);
    for (option, value) in [("--secs", "0.5"), ("--warmup", "0"), ("--interval", "0.25")] {
        let i = args.iter().position(|a| a == option).expect(option);
        args[i + 1] = value.to_string();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bin(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two interval objects, then the summary.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let objects = json_lines(&stdout);
    assert_eq!(objects.len(), 3, "{stdout}");
    assert!(
        objects[..2].iter().all(|o| o["type"] == "interval"),
        "{stdout}"
    );
    let report = &objects[2];
    let start: f64 = start_at.parse().unwrap();
    assert!(
        report["start_unix"].as_f64().unwrap() >= start - 0.01,
        "{report}"
    );
    assert!(report["msgs"].as_u64().unwrap() > 0, "{report}");

    // `kubectl logs -l job-name=... | sockloop bench merge -`, with two pods' logs.
    let merged = run_bin_with_stdin(
        &["bench", "merge", "-", "--json"],
        format!("{stdout}{stdout}").as_bytes(),
    );
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let merged = json_lines(&String::from_utf8_lossy(&merged.stdout));
    let summary = merged.last().expect("a merged summary");
    assert_eq!(count(summary, "msgs"), 2 * count(report, "msgs"));
    // The pods' intervals, added interval by interval.
    assert_eq!(merged.len(), 3);
    for k in 0..2 {
        assert_eq!(count(&merged[k], "msgs"), 2 * count(&objects[k], "msgs"));
    }
}
