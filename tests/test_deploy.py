"""Static checks of the deployment files: Dockerfile, docker-compose.kafka.yml, Helm chart.

No Docker engine, cluster or network is needed.

Compose: the file is validated against the Compose Specification's JSON Schema (the copy
bundled in the `check-jsonschema` wheel, Apache-2.0, from the compose-spec project), then
checked for its wiring: the worker reaches Kafka and ClickHouse where those services listen,
dependencies exist and are health-checked, the published port is the web port, the topology
is mounted, Grafana gets its plugin and provisioning, Prometheus scrapes the worker and sends
alerts to Alertmanager, and the alert rules name metrics the worker exports.

Helm: the chart is checked statically (every `.Values.x.y` a template uses exists in
values.yaml, every `include` is defined, the bundled topology equals the repository's),
rendered and linted with Helm itself as a library (`helm-python-sdk`, import name
`helm_python`), its values checked against values.schema.json, and the rendered manifests
validated against the Kubernetes OpenAPI schemas bundled in `kubernetes-validate`.
"""

from __future__ import annotations

import base64
import copy
import glob
import importlib.resources
import json
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.kafka.yml"
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "deploy" / "helm" / "cxstream"
METRICS_SOURCES = sorted((ROOT / "stream").rglob("*.py"))

DEFAULT_WEB_PORT = Settings.model_fields["web_port"].default  # 6066


# --------------------------------------------------------------------------- helpers

_INTERP = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: object, env: dict[str, str] | None = None) -> str:
    """Resolve compose `${VAR}` / `${VAR:-default}` with `env` (default: none set)."""
    env = env or {}
    text = str(value)

    def sub(m: re.Match[str]) -> str:
        if m["name"] in env:
            return env[m["name"]]
        if m["default"] is None:
            raise AssertionError(f"{text!r}: ${{{m['name']}}} has no default; the stack would need it set")
        return m["default"]

    return _INTERP.sub(sub, text).replace("$$", "$")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: interpolate(v) for k, v in env.items()}


def volume_mounts(service: dict) -> list[dict]:
    """Volumes of a service in long form: {type, source, target, read_only}."""
    mounts = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            mounts.append({"read_only": False, **v})
            continue
        parts = v.split(":")
        source, target = parts[0], parts[1]
        opts = parts[2].split(",") if len(parts) > 2 else []
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        mounts.append({"type": kind, "source": source, "target": target, "read_only": "ro" in opts})
    return mounts


def published_ports(service: dict) -> list[tuple[int, int]]:
    """(published, container) pairs of a service's `ports`."""
    pairs = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            pairs.append((int(p.get("published", p["target"])), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.split(":")
        container = int(parts[-1])
        published = int(parts[-2]) if len(parts) > 1 else container
        pairs.append((published, container))
    return pairs


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        instruction, _, args = buf.partition(" ")
        out.append((instruction.upper(), args.strip()))
        buf = ""
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for ins, args in stage:
        if ins == "ENV":
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def image_env_default(name: str) -> str | None:
    return dockerfile_env(final_stage(dockerfile_instructions())).get(name)


def test_compose_has_the_services(services):
    assert {"kafka", "clickhouse", "worker", "simulator", "grafana", "prometheus", "alertmanager"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server")
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / services["worker"]["build"]["context"] / "Dockerfile").is_file()


def test_kafka_is_a_single_kraft_node(services):
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    bound = listeners(env["KAFKA_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert bound.keys() <= protocols.keys(), "every listener needs a security protocol"
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    # the quorum is this node, reached on the controller listener
    node_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node_id == str(env["KAFKA_NODE_ID"])
    host, _, port = voter.rpartition(":")
    assert host in services and int(port) == bound[controller][1]
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert controller not in advertised, "a controller listener is not advertised to clients"
    for name, (_, port) in advertised.items():
        assert name in bound and bound[name][1] == port, f"advertised {name} is not a bound listener port"
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1  # one broker


def test_worker_reaches_kafka_where_it_advertises(services):
    advertised = listeners(env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]).values()
    for svc in ("worker", "simulator"):
        bootstrap = env_of(services[svc])["CXSTREAM_KAFKA_BOOTSTRAP"]
        for server in bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            assert host in services, f"{svc}: {host} is not a compose service"
            assert services[host]["image"].startswith("apache/kafka"), f"{svc}: {host} is not the Kafka service"
            assert (host, int(port)) in advertised, f"{svc}: Kafka advertises no listener at {server}"


def test_worker_reaches_clickhouse_with_its_credentials(services):
    url = urlsplit(env_of(services["worker"])["CXSTREAM_CLICKHOUSE_URL"])
    assert url.scheme == "http"
    assert url.hostname in services
    ch = services[url.hostname]
    assert ch["image"].startswith("clickhouse/clickhouse-server")
    assert (url.port or 8123) == 8123  # the server's HTTP interface
    ch_env = env_of(ch)
    assert url.username == ch_env["CLICKHOUSE_USER"]
    assert url.password == ch_env["CLICKHOUSE_PASSWORD"]


def test_dependencies_exist_and_are_health_checked(services):
    assert {"kafka", "clickhouse"} <= set(services["worker"]["depends_on"])
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for target, spec in deps.items():
            assert target in services, f"{name} depends on unknown service {target}"
            if spec.get("condition") == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{target} has no healthcheck"
            # a profiled service must not be a dependency of an always-on one
            if services[target].get("profiles"):
                assert set(services[target]["profiles"]) <= set(svc.get("profiles") or [])


def test_worker_publishes_its_web_port(services):
    worker = services["worker"]
    env = env_of(worker)
    port = int(env.get("CXSTREAM_WEB_PORT") or image_env_default("CXSTREAM_WEB_PORT") or DEFAULT_WEB_PORT)
    assert port in [container for _, container in published_ports(worker)]
    host = env.get("CXSTREAM_WEB_HOST") or image_env_default("CXSTREAM_WEB_HOST")
    assert host == "0.0.0.0", "the web server must listen beyond the container's loopback"
    assert f":{port}/healthz" in " ".join(worker["healthcheck"]["test"])


def test_worker_mounts_topology_and_state(compose, services):
    for svc in ("worker", "simulator"):
        service = services[svc]
        env = env_of(service)
        topology = env.get("CXSTREAM_TOPOLOGY") or image_env_default("CXSTREAM_TOPOLOGY")
        mounts = {m["target"]: m for m in volume_mounts(service)}
        assert topology in mounts, f"{svc}: nothing mounted at CXSTREAM_TOPOLOGY={topology}"
        m = mounts[topology]
        assert m["read_only"] and m["type"] == "bind"
        assert (COMPOSE.parent / m["source"]).resolve() == ROOT / "topology.yaml"
    worker = services["worker"]
    data_dir = env_of(worker).get("CXSTREAM_DATA_DIR") or image_env_default("CXSTREAM_DATA_DIR")
    state = {m["target"]: m for m in volume_mounts(worker)}[data_dir]
    assert state["type"] == "volume"
    for service in services.values():
        for m in volume_mounts(service):
            if m["type"] == "volume":
                assert m["source"] in (compose.get("volumes") or {}), f"undeclared volume {m['source']}"


def test_simulator_is_opt_in(services):
    sim = services["simulator"]
    assert sim["profiles"] == ["simulate"]
    assert sim["command"] == ["simulate", "--events", "100000", "--rate", "200"]
    assert sim.get("image") == services["worker"].get("image")


def compose_schema() -> dict:
    """The Compose Specification's JSON Schema, as bundled (with its licence) in check-jsonschema."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(schema: dict, document: dict) -> list[str]:
    # Draft 7, named as https://json-schema.org/draft-07/schema, which validator_for() does not recognise.
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_matches_the_compose_specification(compose):
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    assert schema_errors(schema, compose) == []
    # the check can fail: a misspelt key and a wrongly typed value are caught
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["helthcheck"] = broken["services"]["worker"].pop("healthcheck")
    broken["services"]["kafka"]["depends_on"] = "clickhouse"
    errors = schema_errors(schema, broken)
    assert any(e.startswith("services.worker:") and "helthcheck" in e for e in errors), errors
    assert any(e.startswith("services.kafka.depends_on:") for e in errors), errors


def test_every_long_running_service_is_health_checked(services):
    for name, svc in services.items():
        if svc.get("profiles"):
            continue  # opt-in one-shot jobs (the simulator)
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def bind_source(service: dict, container_path: str) -> Path:
    """Host path behind `container_path`, through the service's longest matching bind mount."""
    best = None
    for m in volume_mounts(service):
        target = m["target"].rstrip("/")
        covers = container_path == target or container_path.startswith(target + "/")
        if m["type"] == "bind" and covers and (best is None or len(target) > len(best["target"].rstrip("/"))):
            best = m
    assert best is not None, f"nothing bind-mounted at {container_path}"
    rest = container_path[len(best["target"].rstrip("/")) :].lstrip("/")
    return (COMPOSE.parent / best["source"] / rest).resolve()


def command_flag(service: dict, name: str) -> str | None:
    """Value of `--name=value` (or `--name value`) in a service's command."""
    command = service.get("command") or []
    command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    for i, arg in enumerate(command):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(command):
            return command[i + 1]
    return None


def host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def worker_web_port(services) -> int:
    env = env_of(services["worker"])
    return int(env.get("CXSTREAM_WEB_PORT") or image_env_default("CXSTREAM_WEB_PORT") or DEFAULT_WEB_PORT)


GRAFANA_PLUGIN = "grafana-clickhouse-datasource"
GRAFANA_PLUGIN_VARIABLES = ("GF_PLUGINS_PREINSTALL_SYNC", "GF_PLUGINS_PREINSTALL", "GF_INSTALL_PLUGINS")


def test_grafana_gets_the_plugin_and_the_provisioning(services):
    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    env = env_of(grafana)
    plugins = [p.strip().split("@")[0] for var in GRAFANA_PLUGIN_VARIABLES for p in env.get(var, "").split(",")]
    assert GRAFANA_PLUGIN in plugins, f"none of {GRAFANA_PLUGIN_VARIABLES} installs {GRAFANA_PLUGIN}"
    mounts = {m["target"]: m for m in volume_mounts(grafana)}
    for target, source in {
        "/etc/grafana/provisioning": ROOT / "deploy" / "grafana" / "provisioning",
        "/var/lib/grafana/dashboards": ROOT / "deploy" / "grafana" / "dashboards",
    }.items():
        assert mounts[target]["type"] == "bind" and mounts[target]["read_only"], target
        assert bind_source(grafana, target) == source
    # the datasources log in to ClickHouse as the worker does
    ch_env = env_of(services["clickhouse"])
    assert env["CLICKHOUSE_USER"] == ch_env["CLICKHOUSE_USER"]
    assert env["CLICKHOUSE_PASSWORD"] == ch_env["CLICKHOUSE_PASSWORD"]
    assert 3000 in [container for _, container in published_ports(grafana)]
    deps = grafana["depends_on"]
    assert deps["clickhouse"]["condition"] == deps["prometheus"]["condition"] == "service_healthy"


_GRAFANA_ENV_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def test_grafana_datasources_are_wired(services):
    """The provisioned datasources (written alongside, in deploy/grafana/) point at compose services and
    read only variables the grafana service sets. Nothing to check while that folder has no datasources."""
    env = env_of(services["grafana"])
    files = sorted((ROOT / "deploy" / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
    for path in files:
        text = path.read_text()
        for m in _GRAFANA_ENV_REF.finditer(text):
            name = m[1] or m[2]
            if not name.startswith("__"):  # $__file{...}, $__env{...} are Grafana's own
                assert name in env, f"{path.name}: ${name} is not set on the grafana service"
        for ds in (yaml.safe_load(text) or {}).get("datasources") or []:
            data = ds.get("jsonData") or {}
            if ds.get("type") == GRAFANA_PLUGIN and data.get("host"):
                assert data["host"] in services and services[data["host"]]["image"].startswith("clickhouse/")
                if data.get("protocol", "native") == "http":
                    assert int(data.get("port", 8123)) == 8123
            if ds.get("type") == "prometheus" and ds.get("url"):
                url = urlsplit(ds["url"])
                assert url.hostname == "prometheus" and url.port == 9090, ds["url"]


@pytest.fixture(scope="module")
def prometheus_config(services) -> dict:
    path = bind_source(services["prometheus"], command_flag(services["prometheus"], "config.file"))
    return yaml.safe_load(path.read_text())


def static_targets(config: dict) -> list[str]:
    return [t for sc in config.get("static_configs") or [] for t in sc.get("targets") or []]


def test_prometheus_scrapes_the_worker(services, prometheus_config):
    port = worker_web_port(services)
    jobs = [
        job
        for job in prometheus_config["scrape_configs"]
        if any(host_port(t) == ("worker", port) for t in static_targets(job))
    ]
    assert jobs, f"no scrape job targets worker:{port}"
    (job,) = jobs
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job.get("scheme", "http") == "http"
    assert '@app.page("/metrics")' in (ROOT / "stream" / "runtime" / "app.py").read_text()
    assert job["job_name"] == "cxstream"  # the alert rules select on it


def test_prometheus_alerts_to_alertmanager(services, prometheus_config):
    am = services["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    listen = command_flag(am, "web.listen-address") or ":9093"
    am_port = host_port(listen)[1]
    targets = [t for c in prometheus_config["alerting"]["alertmanagers"] for t in static_targets(c)]
    assert ("alertmanager", am_port) in [host_port(t) for t in targets]
    assert services["prometheus"]["depends_on"]["alertmanager"]["condition"] == "service_healthy"
    assert f":{am_port}/" in " ".join(am["healthcheck"]["test"])
    assert am_port in [container for _, container in published_ports(am)]


def exported_metric_names() -> set[str]:
    """Every `cxstream_*` metric name defined in the worker's source."""
    names = set()
    for path in METRICS_SOURCES:
        names |= set(re.findall(r"""["'](cxstream_[a-z0-9_]+)["']""", path.read_text()))
    return names


def alert_rules(services, prometheus_config) -> list[dict]:
    prom = services["prometheus"]
    files = []
    for pattern in prometheus_config["rule_files"]:
        files += sorted(glob.glob(str(bind_source(prom, pattern))))
    assert files, f"rule_files {prometheus_config['rule_files']} match no file"
    return [rule for f in files for group in yaml.safe_load(Path(f).read_text())["groups"] for rule in group["rules"]]


def test_alert_rules_name_exported_metrics(services, prometheus_config):
    rules = alert_rules(services, prometheus_config)
    exported = exported_metric_names()
    assert {"cxstream_events_total", "cxstream_consumer_lag"} <= exported  # the source scan finds them
    jobs = {job["job_name"] for job in prometheus_config["scrape_configs"]}
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        for name in re.findall(r"\bcxstream_[a-z0-9_]+", rule["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in exported or base in exported, f"{rule['alert']}: {name} is not a cxstream metric"
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, f"{rule['alert']}: no scrape job {job}"


def test_alertmanager_routes_to_defined_receivers(services):
    am = services["alertmanager"]
    config = yaml.safe_load(bind_source(am, command_flag(am, "config.file")).read_text())
    receivers = {r["name"] for r in config["receivers"]}

    def walk(route: dict):
        yield route
        for child in route.get("routes") or []:
            yield from walk(child)

    routes = list(walk(config["route"]))
    assert config["route"]["receiver"] in receivers, "the root route needs a default receiver"
    matcher = re.compile(r'^[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"[^"]*"$')
    for route in routes:
        assert route.get("receiver", config["route"]["receiver"]) in receivers
        for m in route.get("matchers") or []:
            assert matcher.match(m), m
    for rule in config.get("inhibit_rules") or []:
        for m in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            assert matcher.match(m), m


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_runtime_stage():
    instructions = dockerfile_instructions()
    stage = final_stage(instructions)
    assert stage[0][1].split()[0] == "python:3.11-slim"
    assert all(args.split()[0] == "python:3.11-slim" for ins, args in instructions if ins == "FROM")
    env = dockerfile_env(stage)
    assert env["CXSTREAM_DATA_DIR"] == "/var/lib/cxstream"
    assert env["CXSTREAM_WEB_HOST"] == "0.0.0.0"
    assert int(env.get("CXSTREAM_WEB_PORT", DEFAULT_WEB_PORT)) == DEFAULT_WEB_PORT
    by = {}
    for ins, args in stage:
        by[ins] = args  # last wins, as in Docker
    assert by["EXPOSE"].split() == [str(DEFAULT_WEB_PORT)]
    assert by["USER"] not in ("root", "0")
    assert json.loads(by["ENTRYPOINT"]) == ["cxstream"]
    assert json.loads(by["CMD"]) == ["run"]
    assert "/healthz" in by["HEALTHCHECK"] and "curl" not in by["HEALTHCHECK"]
    # the topology baked in at CXSTREAM_TOPOLOGY is the repository's
    assert any(ins == "COPY" and args.split() == ["topology.yaml", env["CXSTREAM_TOPOLOGY"]] for ins, args in stage)


def test_dockerfile_installs_the_package():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^cxstream\s*=\s*"stream\.cli:main"', pyproject, re.MULTILINE), (
        "console script `cxstream` is gone"
    )
    instructions = dockerfile_instructions()
    assert any(ins == "RUN" and re.search(r"pip install (\S+ )*\.$", args) for ins, args in instructions)
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for ins, args in instructions:
        if ins != "COPY" or "--from" in args:
            continue
        *sources, _ = args.split()
        for src in sources:
            if any(ch in src for ch in "*?["):
                continue  # optional (globbed) source
            assert (ROOT / src).exists(), f"COPY {src}: not in the build context"
            assert src not in ignored and src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"


# --------------------------------------------------------------------------- Helm chart

_VALUES_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_INCLUDE = re.compile(r"""(?:include|template)\s+"([^"]+)\"""")
_DEFINE = re.compile(r"""define\s+"([^"]+)\"""")


def missing_values_refs(templates: dict[str, str], values: dict) -> list[str]:
    """`file: .Values.a.b` for every reference whose path is not in `values`."""
    missing = []
    for name, text in templates.items():
        for m in _VALUES_REF.finditer(text):
            node = values
            for key in m[1].strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{name}: .Values{m[1]}")
                    break
                node = node[key]
    return sorted(set(missing))


def chart_templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir()) if p.is_file()}


def test_values_ref_check_can_fail():
    found = missing_values_refs({"t.yaml": "{{ .Values.a.b }} {{ $.Values.a.nope }} {{ .Values.x }}"}, {"a": {"b": 1}})
    assert found == ["t.yaml: .Values.a.nope", "t.yaml: .Values.x"]


def test_bundled_topology_is_the_repositorys():
    bundled = CHART / "files" / "topology.yaml"
    assert bundled.read_bytes() == (ROOT / "topology.yaml").read_bytes(), (
        "deploy/helm/cxstream/files/topology.yaml differs: cp topology.yaml deploy/helm/cxstream/files/"
    )


# Rendering: Helm's own engine, through helm-python-sdk (no helm binary, no cluster).

RENDER_VALUES = {
    "kafka": {"bootstrap": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "clickhouse": {"url": "http://ch.db:8123/", "password": "p@ss w+rd/#1"},
}
# Every optional part switched on: what kubernetes-validate should see once.
FULL_VALUES = {
    **RENDER_VALUES,
    "replicaCount": 3,
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "imagePullSecrets": [{"name": "registry"}],
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "podAnnotations": {"team": "cx"},
    "podLabels": {"tier": "stream"},
    "service": {"annotations": {"note": "headless"}},
    "persistence": {"storageClass": "fast-ssd"},
    "podDisruptionBudget": {"maxUnavailable": "50%"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "stream", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
}
NAMESPACE = "cx"


def merged(*layers: dict) -> dict:
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render_files(values: dict) -> dict[str, str]:
    """Template path -> rendered text (Helm validates `values` against values.schema.json first)."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name="rel", namespace=NAMESPACE)


def render(values: dict) -> list[dict]:
    manifests = render_files(values)
    text = "\n---\n".join(manifests[name] for name in sorted(manifests) if name.endswith(".yaml"))
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


def worker_container(docs: dict[str, dict]) -> dict:
    (container,) = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return container


def expand_env(container: dict, secrets: dict[str, dict]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secretKeyRef resolved, $(VAR) expanded from earlier
    variables."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        else:
            env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), var["value"])
    return env


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    pyproject_version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert chart["appVersion"] == pyproject_version, "appVersion is the default image tag"
    with helm.Chart.load(str(CHART)) as loaded:
        assert loaded.name == "cxstream" and loaded.schema is not None


def test_every_values_reference_exists():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = chart_templates()
    expected = {"statefulset.yaml", "service.yaml", "configmap.yaml", "secret.yaml", "servicemonitor.yaml"}
    assert expected | {"poddisruptionbudget.yaml", "_helpers.tpl", "NOTES.txt"} <= templates.keys()
    assert missing_values_refs(templates, values) == []
    for key in ("image", "kafka", "clickhouse", "resources", "persistence", "serviceMonitor", "podDisruptionBudget"):
        assert key in values
    assert values["replicaCount"] == 1
    assert values["webPort"] == values["service"]["port"] == DEFAULT_WEB_PORT


def test_every_include_is_defined():
    templates = chart_templates()
    defined = {d for text in templates.values() for d in _DEFINE.findall(text)}
    used = {u for text in templates.values() for u in _INCLUDE.findall(text)}
    assert used - defined == set()


def test_chart_lints_clean():
    for values in ({}, RENDER_VALUES, FULL_VALUES):
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == [], report
        # severity 1 is information ("icon is recommended"); warnings and errors fail
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_values_schema_accepts_the_defaults():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with helm.Chart.load(str(CHART)) as chart:
        for values in ({}, RENDER_VALUES, FULL_VALUES):
            chart.validate_schema(values)  # Helm merges them over values.yaml
            assert schema_errors(schema, chart.merge_values(values)) == []
    assert set(defaults) <= set(schema["properties"]), "every value is described by the schema"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"clickhouse": {"url": "http://u:p@ch:8123/"}}, "at '/clickhouse/url'"),
        ({"kafka": {"bootstrap": "kafka:9092; kafka2:9092"}}, "at '/kafka/bootstrap'"),
        ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
        ({"persistence": {"size": "5 GB"}}, "at '/persistence/size'"),
        ({"serviceMonitor": {"interval": 30}}, "at '/serviceMonitor/interval'"),
    ],
)
def test_values_schema_rejects_bad_values(bad, message):
    values = merged(RENDER_VALUES, bad)
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as checked:
        chart.validate_schema(values)
    assert message in str(checked.value)
    # an install or a template refuses them the same way, naming the value
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render_files(values)


def test_chart_renders_the_worker():
    docs = by_kind(render(RENDER_VALUES))
    assert docs.keys() == {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"}
    sts = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    pod = sts["spec"]["template"]["spec"]
    container = worker_container(docs)
    env = {e["name"]: e for e in container["env"]}
    assert env["CXSTREAM_KAFKA_BOOTSTRAP"]["value"] == RENDER_VALUES["kafka"]["bootstrap"]
    port = int(env["CXSTREAM_WEB_PORT"]["value"])
    assert env["CXSTREAM_WEB_HOST"]["value"] == "0.0.0.0"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http"] == port == docs["Service"]["spec"]["ports"][0]["port"]
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # state on a persistent volume per worker, at CXSTREAM_DATA_DIR
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert mounts[env["CXSTREAM_DATA_DIR"]["value"]] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # the topology from the ConfigMap, byte for byte the repository's
    topology = Path(env["CXSTREAM_TOPOLOGY"]["value"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    cm = volumes[mounts[str(topology.parent)]]["configMap"]["name"]
    assert cm == docs["ConfigMap"]["metadata"]["name"]
    assert docs["ConfigMap"]["data"][topology.name] == (ROOT / "topology.yaml").read_text()
    # the PodDisruptionBudget covers exactly the workers
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb["selector"] == sts["spec"]["selector"] and pdb["maxUnavailable"] == 1
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert pod["automountServiceAccountToken"] is False


def test_clickhouse_password_comes_from_the_charts_secret():
    docs = by_kind(render(RENDER_VALUES))
    container = worker_container(docs)
    plain = {e["name"]: e.get("value") for e in container["env"]}
    assert plain["CXSTREAM_CLICKHOUSE_URL"] == "http://$(CLICKHOUSE_USER):$(CLICKHOUSE_PASSWORD)@ch.db:8123/"
    secret = docs["Secret"]
    assert RENDER_VALUES["clickhouse"]["password"] not in json.dumps(docs["StatefulSet"])
    env = expand_env(container, {secret["metadata"]["name"]: secret})
    url = urlsplit(env["CXSTREAM_CLICKHOUSE_URL"])
    # what clickhouse-connect reads back (it unquotes user and password)
    assert (url.hostname, url.port, url.path) == ("ch.db", 8123, "/")
    assert unquote(url.username) == "cxstream"
    assert unquote(url.password) == RENDER_VALUES["clickhouse"]["password"]
    # a new password rolls the workers
    other = by_kind(render(merged(RENDER_VALUES, {"clickhouse": {"password": "other"}})))
    annotations = docs["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    other_annotations = other["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/clickhouse"] != other_annotations["checksum/clickhouse"]
    assert annotations["checksum/topology"] == other_annotations["checksum/topology"]


def test_clickhouse_password_from_an_existing_secret():
    values = {
        "kafka": {"bootstrap": "k:9092"},
        "clickhouse": {
            "url": "https://ch:8443/?secure=true",
            "existingSecret": "ch",
            "existingSecretPasswordKey": "pw",
        },
    }
    docs = by_kind(render(values))
    assert "Secret" not in docs
    container = worker_container(docs)
    ref = {e["name"]: e for e in container["env"]}["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "ch", "key": "pw"}
    existing = {"ch": {"data": {"pw": base64.b64encode(b"s3cret").decode()}}}
    url = urlsplit(expand_env(container, existing)["CXSTREAM_CLICKHOUSE_URL"])
    assert (url.scheme, url.hostname, url.port, url.password, url.query) == (
        "https",
        "ch",
        8443,
        "s3cret",
        "secure=true",
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"clickhouse": {"url": "http://ch:8123/", "password": "x"}}, "kafka.bootstrap is required"),
        ({"kafka": {"bootstrap": "k:9092"}, "clickhouse": {"password": "x"}}, "clickhouse.url is required"),
        ({"kafka": {"bootstrap": "k:9092"}, "clickhouse": {"url": "http://ch:8123/"}}, "clickhouse.password"),
    ],
)
def test_chart_requires_kafka_and_clickhouse(values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_optional_parts():
    docs = by_kind(render(FULL_VALUES))
    sts = docs["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == 3
    assert docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] == "50%"
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["template"]["metadata"]["labels"]["tier"] == "stream"
    assert {"name": "TZ", "value": "UTC"} in worker_container(docs)["env"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-ssd"
    # without persistence the state directory is an emptyDir
    off = by_kind(
        render(merged(RENDER_VALUES, {"persistence": {"enabled": False}, "podDisruptionBudget": {"enabled": False}}))
    )
    assert "volumeClaimTemplates" not in off["StatefulSet"]["spec"] and "PodDisruptionBudget" not in off
    volumes = {v["name"]: v for v in off["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


# A structural schema for the one custom resource (ServiceMonitor is a CRD of the Prometheus Operator, so
# kubernetes-validate has no schema for it): the fields this chart sets, with the CRD's types.
PROMETHEUS_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
SERVICE_MONITOR_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"labels": {"type": "object", "additionalProperties": {"type": "string"}}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": PROMETHEUS_DURATION,
                            "scrapeTimeout": PROMETHEUS_DURATION,
                        },
                    },
                },
            },
        },
    },
}


def test_service_monitor_scrapes_every_worker():
    assert "ServiceMonitor" not in by_kind(render(RENDER_VALUES)), "off by default: it needs the operator's CRDs"
    docs = by_kind(render(FULL_VALUES))
    sm, service = docs["ServiceMonitor"], docs["Service"]
    assert schema_errors(SERVICE_MONITOR_SCHEMA, sm) == []
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # the headless Service lists every worker (not just the ready ones: a worker catching up is scraped too)
    assert service["spec"]["selector"] == docs["StatefulSet"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["publishNotReadyAddresses"] is True


# Kubernetes versions the manifests are validated against: an older supported one and the newest bundled.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("values", [RENDER_VALUES, FULL_VALUES], ids=["defaults", "everything-on"])
def test_rendered_manifests_are_valid_kubernetes(values):
    docs = render(values)
    checked = set()
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            assert schema_errors(SERVICE_MONITOR_SCHEMA, doc) == []
            continue
        for version in KUBE_VERSIONS:
            # strict: unknown fields (a misspelt key) fail too
            kubernetes_validate.validate(doc, version, strict=True)
        checked.add(doc["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= checked


def test_manifest_validation_can_fail():
    sts = by_kind(render(RENDER_VALUES))["StatefulSet"]
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(sts, KUBE_VERSIONS[-1], strict=True)


def test_notes_warn_when_workers_outnumber_partitions():
    topology = yaml.safe_load((ROOT / "topology.yaml").read_text())
    partitions = topology["topics"]["ticket_events"]["partitions"]
    notes = render_files(merged(RENDER_VALUES, {"replicaCount": partitions}))["cxstream/templates/NOTES.txt"]
    assert "WARNING" not in notes and "port-forward pod/rel-cxstream-0" in notes
    notes = render_files(merged(RENDER_VALUES, {"replicaCount": partitions + 2}))["cxstream/templates/NOTES.txt"]
    assert f"exceeds the {partitions} partitions" in notes and "2 worker(s) will get no partition" in notes


def test_the_operations_guides_values_file_installs():
    """The values file shown in docs/operations.md passes the schema and renders what it says."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```yaml\n(# values-prod\.yaml\n.*?)```", guide, re.DOTALL)
    assert len(blocks) == 1, "docs/operations.md shows one values-prod.yaml"
    values = yaml.safe_load(blocks[0])
    docs = by_kind(render(values))
    assert docs["StatefulSet"]["spec"]["replicas"] == values["replicaCount"]
    assert "Secret" not in docs and "ServiceMonitor" in docs
    ref = {e["name"]: e for e in worker_container(docs)["env"]}["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {
        "name": values["clickhouse"]["existingSecret"],
        "key": values["clickhouse"]["existingSecretPasswordKey"],
    }
