"""Static checks of the deployment files: Dockerfile, docker-compose.kafka.yml, Helm chart.

No Docker engine or cluster is needed. The compose file is checked for its
wiring (the worker reaches Kafka and ClickHouse where those services listen,
dependencies exist and are health-checked, the published port is the web port,
the topology is mounted). The chart is checked statically (every `.Values.x.y`
a template uses exists in values.yaml, every `include` is defined, the bundled
topology equals the repository's) and rendered when `helm` or the
`helm_python` SDK is available.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.kafka.yml"
DOCKERFILE = ROOT / "Dockerfile"
CHART = ROOT / "deploy" / "helm" / "cxstream"

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
    assert {"kafka", "clickhouse", "worker", "simulator"} <= services.keys()
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
    assert re.search(r'^cxstream\s*=\s*"stream\.cli:main"', pyproject, re.M), "console script `cxstream` is gone"
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


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    pyproject_version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert chart["appVersion"] == pyproject_version, "appVersion is the default image tag"


def test_every_values_reference_exists():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = chart_templates()
    assert {"statefulset.yaml", "service.yaml", "configmap.yaml", "secret.yaml", "_helpers.tpl"} <= templates.keys()
    assert missing_values_refs(templates, values) == []
    for key in ("image", "kafka", "clickhouse", "resources", "persistence"):
        assert key in values
    assert values["replicaCount"] == 1
    assert values["webPort"] == DEFAULT_WEB_PORT


def test_every_include_is_defined():
    templates = chart_templates()
    defined = {d for text in templates.values() for d in _DEFINE.findall(text)}
    used = {u for text in templates.values() for u in _INCLUDE.findall(text)}
    assert used - defined == set()


def test_bundled_topology_is_the_repositorys():
    bundled = CHART / "files" / "topology.yaml"
    assert bundled.read_text() == (ROOT / "topology.yaml").read_text(), (
        "deploy/helm/cxstream/files/topology.yaml differs: cp topology.yaml deploy/helm/cxstream/files/"
    )


# Rendering: the helm binary, else the helm_python SDK, else skipped.

RENDER_VALUES = {"kafka": {"bootstrap": "kafka-0.kafka:9092"}, "clickhouse": {"url": "http://u:p@ch:8123/"}}


def render(values: dict) -> list[dict]:
    if shutil.which("helm"):
        args = ["helm", "template", "rel", str(CHART), "-f", "-"]
        proc = subprocess.run(args, input=yaml.safe_dump(values), capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(proc.stderr)
        text = proc.stdout
    else:
        helm = pytest.importorskip("helm_python", reason="neither helm nor helm_python is available")
        text = "\n---\n".join(helm.Chart.load(str(CHART)).render(values, name="rel", namespace="default").values())
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_chart_renders_the_worker():
    docs = {d["kind"]: d for d in render(RENDER_VALUES)}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret"} <= docs.keys()
    sts = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CXSTREAM_KAFKA_BOOTSTRAP"]["value"] == "kafka-0.kafka:9092"
    ref = env["CXSTREAM_CLICKHOUSE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == docs["Secret"]["metadata"]["name"] and ref["key"] in docs["Secret"]["data"]
    port = int(env["CXSTREAM_WEB_PORT"]["value"])
    assert env["CXSTREAM_WEB_HOST"]["value"] == "0.0.0.0"
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named["http"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mounts[env["CXSTREAM_DATA_DIR"]["value"]] == claim
    topology = Path(env["CXSTREAM_TOPOLOGY"]["value"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    cm = volumes[mounts[str(topology.parent)]]["configMap"]["name"]
    assert cm == docs["ConfigMap"]["metadata"]["name"]
    assert docs["ConfigMap"]["data"][topology.name] == (ROOT / "topology.yaml").read_text()


def test_chart_with_existing_secret_and_required_values():
    values = {"kafka": {"bootstrap": "k:9092"}, "clickhouse": {"existingSecret": "ch", "existingSecretKey": "dsn"}}
    docs = {d["kind"]: d for d in render(values)}
    assert "Secret" not in docs
    (container,) = docs["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    ref = {e["name"]: e for e in container["env"]}["CXSTREAM_CLICKHOUSE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "ch", "key": "dsn"}
    with pytest.raises(Exception, match="kafka.bootstrap"):
        render({"clickhouse": {"url": "http://ch:8123/"}})
    with pytest.raises(Exception, match="clickhouse.url"):
        render({"kafka": {"bootstrap": "k:9092"}})
