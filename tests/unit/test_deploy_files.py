"""The deployment files in deploy/, validated without a container engine.

Each file is parsed and checked by the best validator installable from PyPI: Kubernetes manifests
against the API schemas (kubernetes-validate, strict: unknown fields fail), the compose file by
the compose-spec parser, PromQL by promql-parser, the Dockerfile by dockerfile-parse. On top, the
checks that tie the files to the code: the embedded cdc.yaml files load as Settings with the
secrets the deployment provides, and every metric a rule or panel uses exists.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import kubernetes_validate
import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from cdc.runtime import metrics
from cdc.runtime.config import load_settings
from cdc.runtime.daemon import expand_roles

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def metric_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def check_promql(expr: str) -> None:
    promql_parser.parse(expr)  # raises ValueError on a syntax error
    unknown = set(re.findall(r"\bcdc_[a-z_]+", expr)) - metric_names()
    assert not unknown, f"{expr}: unknown metrics {unknown}"


def load_cdc_yaml(text: str, tmp_path, monkeypatch, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "cdc.yaml"
    path.write_text(text)
    return load_settings(path)


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_with_the_cli_as_entry_point():
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    instructions = parser.structure
    bases = [i["value"].split()[0] for i in instructions if i["instruction"] == "FROM"]
    assert bases and all("slim" in b for b in bases), bases
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert json.loads(next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")) == ["cdc"]
    assert any(i["instruction"] == "HEALTHCHECK" and "/healthz" in i["value"] for i in instructions)
    assert any(i["instruction"] == "EXPOSE" and i["value"] == str(load_settings(None).metrics.port) for i in instructions)
    for copy_ in (i["value"].split() for i in instructions if i["instruction"] == "COPY" and "--from" not in i["value"]):
        sources = [s for s in copy_[:-1] if not s.startswith("--")]
        assert all((REPO / s).exists() for s in sources), f"COPY of a missing path: {sources}"


# --- compose -------------------------------------------------------------------------------------


def compose() -> dict:
    # Merge keys (<<) are resolved by PyYAML as compose does; the parser wants them resolved.
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_is_valid_and_complete():
    import compose_spec

    data = compose()
    compose_spec.PyCompose.from_yaml(yaml.safe_dump(data)).validate()
    services = data["services"]
    assert {"mysql", "rabbitmq", "postgres", "redis", "opensearch", "cdc-reader", "cdc-sinks"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for config in service.get("configs", []):
            assert config["source"] in data["configs"], f"{name} uses unknown config {config['source']}"
    mysql_flags = " ".join(services["mysql"]["command"])
    assert services["mysql"]["image"].startswith("mysql:8")
    for flag in ("--log-bin", "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL"):
        assert flag in mysql_flags  # what the reader's preflight demands
    assert "rabbitmq_consistent_hash_exchange" in data["configs"]["rabbitmq-plugins"]["content"]


def test_compose_cdc_config_loads_with_its_environment(tmp_path, monkeypatch):
    data = compose()
    reader = data["services"]["cdc-reader"]
    env = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for k, v in reader["environment"].items()}
    settings = load_cdc_yaml(data["configs"]["cdc-config"]["content"], tmp_path, monkeypatch, env)
    assert set(settings.sinks) == {"crm", "cache", "search"}
    assert settings.metrics.host == "0.0.0.0" and settings.admin.token is not None
    for name in ("cdc-reader", "cdc-sinks"):
        command = data["services"][name]["command"]
        assert command[0] == "run"
        expand_roles(settings, command[command.index("--role") + 1:][:1])


# --- Kubernetes ----------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("name,doc", manifests(), ids=lambda v: v if isinstance(v, str) else v.get("kind"))
def test_kubernetes_manifest_matches_the_api_schema(name, doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_schema_check_catches_a_misspelt_field():
    _, deployment = next((n, d) for n, d in manifests() if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz", "port": 9108}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_workloads_have_probes_limits_budgets_and_run_as_non_root():
    docs = [d for _, d in manifests()]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} == {"cdc-reader", "cdc-sinks"}
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets), \
            f"no PodDisruptionBudget selects {workload['metadata']['name']}"
    reader = next(w for w in workloads if w["metadata"]["name"] == "cdc-reader")
    assert reader["spec"]["replicas"] >= 2  # one active, one standby


def test_kubernetes_config_and_secret_make_valid_settings(tmp_path, monkeypatch):
    docs = [d for _, d in manifests()]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["cdc.yaml"]
    secret = next(d for d in docs if d["kind"] == "Secret")["stringData"]
    settings = load_cdc_yaml(config, tmp_path, monkeypatch, secret)
    assert settings.state.url.startswith("postgresql"), "readers on several nodes need a shared state store"
    sinks = next(d for d in docs if d["kind"] == "StatefulSet")
    env = {e["name"]: e for e in sinks["spec"]["template"]["spec"]["containers"][0]["env"]}
    workers = int(env["CDC_WORKER__COUNT"]["value"])
    assert workers == sinks["spec"]["replicas"]
    assert "pod-index" in env["CDC_WORKER__INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    for name, sink in settings.sinks.items():
        assert sink.shards == 1 or sink.shards >= workers, f"sink {name}: fewer shards than workers leaves workers idle"


# --- Prometheus and Grafana ----------------------------------------------------------------------


def test_alert_rules_parse_and_cover_what_ops_must_know():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    alerts = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
            check_promql(rule["expr"])
            alerts[rule["alert"]] = rule["expr"]
    used = " ".join(alerts.values())
    for metric in ("cdc_source_lag_seconds", "cdc_checkpoint_age_seconds", "cdc_sink_dlq_depth", "cdc_reader_active",
                   "cdc_reader_restarts_total"):
        assert metric in used, f"no alert on {metric}"


def test_grafana_dashboard_queries_parse_and_use_existing_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "cdc-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    for expr in exprs:
        check_promql(expr.replace("$__rate_interval", "5m").replace("$source", ".*"))
    for metric in ("cdc_sink_queue_depth", "cdc_sink_apply_latency_seconds_bucket", "cdc_snapshot_rows_remaining",
                   "cdc_source_lag_bytes", "cdc_sink_reconnects_total"):
        assert any(metric in e for e in exprs), f"no panel shows {metric}"
