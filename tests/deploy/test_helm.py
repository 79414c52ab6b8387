"""The Helm chart, rendered with `helm template` for each helm/cfstream/ci/*.yaml value set."""

from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from chart import CHART, VALUE_SETS, Rendered, helm, needs_helm, render

from cfstream.settings import Settings

ALLOWED_ENV = {f"CFSTREAM_{spec.name.upper()}" for spec in fields(Settings)}
ENV_NAME = re.compile(r"\bCFSTREAM_[A-Z0-9_]+\b")


pytestmark = needs_helm


@pytest.fixture(scope="module", params=VALUE_SETS, ids=[p.stem for p in VALUE_SETS])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(render("-f", str(request.param)))


def test_the_value_sets_are_there() -> None:
    names = {p.stem for p in VALUE_SETS}
    assert {"defaults-values", "sasl-tls-existing-secret-values",
            "hpa-servicemonitor-values"} <= names


@pytest.mark.parametrize("values", VALUE_SETS, ids=[p.stem for p in VALUE_SETS])
def test_helm_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_sources_name_only_settings_fields() -> None:
    sources = [CHART / "values.yaml", *CHART.glob("templates/*"), *VALUE_SETS]
    used = {m for path in sources for m in ENV_NAME.findall(path.read_text())}
    assert used, "the chart sets no CFSTREAM_* variable at all"
    assert used <= ALLOWED_ENV, f"not Settings fields: {sorted(used - ALLOWED_ENV)}"


def test_rendered_env_names_are_settings_fields(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        names = {n for n in rendered.container_env(workload) if n.startswith("CFSTREAM_")}
        assert names <= ALLOWED_ENV, f"not Settings fields: {sorted(names - ALLOWED_ENV)}"
    text = "\n".join(str(d) for d in rendered.docs)
    assert set(ENV_NAME.findall(text)) <= ALLOWED_ENV


def test_rendered_env_parses_as_settings(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload in rendered.workloads():
        for name in [n for n in os.environ if n.startswith("CFSTREAM_")]:
            monkeypatch.delenv(name)
        for name, value in rendered.container_env(workload).items():
            # A secretKeyRef stands in for a value only the cluster knows.
            monkeypatch.setenv(name, value if isinstance(value, str) else "from-secret")
        settings = Settings()
        assert settings.http_port is not None and settings.http_port > 0
        assert settings.bootstrap_servers


def probe_target(probe: dict[str, Any], named_ports: dict[str, int]) -> tuple[str, int]:
    port = probe["httpGet"]["port"]
    return probe["httpGet"]["path"], named_ports[port] if isinstance(port, str) else port


def test_probes_hit_healthz_and_readyz_on_the_http_port(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        http_port = int(rendered.container_env(workload)["CFSTREAM_HTTP_PORT"])
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named["http"] == http_port

        assert probe_target(container["livenessProbe"], named) == ("/healthz", http_port)
        assert probe_target(container["readinessProbe"], named) == ("/readyz", http_port)
        if "startupProbe" in container:
            assert probe_target(container["startupProbe"], named) == ("/healthz", http_port)


def test_processor_state_is_on_a_claim_per_replica(rendered: Rendered) -> None:
    sts = rendered.one("StatefulSet", "processor")
    templates = sts["spec"]["volumeClaimTemplates"]
    assert len(templates) == 1
    claim = templates[0]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    state_dir = rendered.container_env(sts)["CFSTREAM_STATE_DIR"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == state_dir
    # The claim, not a pod volume of the same name, backs the state.
    pod_volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    assert claim["metadata"]["name"] not in pod_volumes
    assert container["args"] == ["processor"]


@pytest.mark.parametrize(("args", "leave"), [((), "true"),
                                             (("--set", "processor.leaveOnStop=false"), "false")])
def test_each_processor_pod_is_a_static_member_under_its_name(args: tuple[str, ...],
                                                              leave: str) -> None:
    r = Rendered(render(*args))
    env = r.container_env(r.one("StatefulSet", "processor"))
    assert env["CFSTREAM_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["CFSTREAM_LEAVE_ON_STOP"] == leave
    # Workers hold no state: they stay dynamic members.
    assert "CFSTREAM_INSTANCE_ID" not in r.container_env(r.one("Deployment", "worker"))


@pytest.mark.parametrize(("args", "standbys", "warmup"), [
    ((), "1", "300"),
    (("--set", "processor.standbyReplicas=2", "--set", "processor.warmupTimeout=60"), "2", "60")])
def test_processor_pods_keep_standby_copies_and_warm_up(args: tuple[str, ...], standbys: str,
                                                        warmup: str) -> None:
    r = Rendered(render(*args))
    env = r.container_env(r.one("StatefulSet", "processor"))
    assert (env["CFSTREAM_STANDBY_REPLICAS"], env["CFSTREAM_WARMUP_TIMEOUT"]) == (standbys, warmup)
    # The names are the settings the processor reads.
    assert {"standby_replicas", "warmup_timeout"} <= {spec.name for spec in fields(Settings)}


def test_grace_period_exceeds_the_shutdown_timeout(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        timeout = float(rendered.container_env(workload)["CFSTREAM_SHUTDOWN_TIMEOUT"])
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert isinstance(grace, int) and grace > timeout


def test_processor_has_a_disruption_budget(rendered: Rendered) -> None:
    pdb = rendered.one("PodDisruptionBudget", "processor")
    sts = rendered.one("StatefulSet", "processor")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]


def test_worker_runs_the_configured_modules(rendered: Rendered) -> None:
    (container,) = rendered.one("Deployment", "worker")["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "worker"
    assert "cfstream.examples.notifications" in container["args"][1:]


def test_services_select_their_pods_and_expose_http(rendered: Rendered) -> None:
    for component, kind in (("processor", "StatefulSet"), ("worker", "Deployment")):
        service = rendered.one("Service", component)
        workload = rendered.one(kind, component)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    sts = rendered.one("StatefulSet", "processor")
    assert sts["spec"]["serviceName"] == rendered.one("Service", "processor")["metadata"]["name"]


def test_defaults_need_no_secret_and_no_monitoring_crds() -> None:
    r = Rendered(render())
    assert not r.of_kind("Secret")
    assert not r.of_kind("ServiceMonitor")
    assert not r.of_kind("PrometheusRule")
    assert not r.of_kind("HorizontalPodAutoscaler")
    assert r.one("Deployment", "worker")["spec"]["replicas"] == 2
    assert r.one("StatefulSet", "processor")["spec"]["replicas"] == 2


def test_existing_secret_supplies_password_and_ca() -> None:
    r = Rendered(render("-f", str(CHART / "ci" / "sasl-tls-existing-secret-values.yaml")))
    assert not r.of_kind("Secret"), "the chart must not create a Secret next to existingSecret"
    for workload in r.workloads():
        env = r.container_env(workload)
        ref = env["CFSTREAM_SASL_PASSWORD"]["secretKeyRef"]
        assert ref == {"name": "cfstream-kafka-credentials", "key": "password"}
        ca = Path(env["CFSTREAM_SSL_CA_LOCATION"])
        pod = workload["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(ca.parent))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == "cfstream-kafka-credentials"
        assert {"key": "ca.pem", "path": ca.name} in volume["secret"]["items"]
    sts = r.one("StatefulSet", "processor")
    # shutdownTimeout 40.5 -> ceil + 10 s margin
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 51


def test_chart_secret_holds_password_and_tls_files() -> None:
    r = Rendered(render("-f", str(CHART / "ci" / "hpa-servicemonitor-values.yaml")))
    secret = r.one("Secret")
    assert set(secret["data"]) == {"sasl-password", "ca.crt", "tls.crt", "tls.key"}
    env = r.container_env(r.one("StatefulSet", "processor"))
    assert env["CFSTREAM_SASL_PASSWORD"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    for name in ("CFSTREAM_SSL_CA_LOCATION", "CFSTREAM_SSL_CERTIFICATE_LOCATION",
                 "CFSTREAM_SSL_KEY_LOCATION"):
        assert env[name].startswith("/etc/cfstream/tls/")


def test_hpa_and_service_monitor() -> None:
    r = Rendered(render("-f", str(CHART / "ci" / "hpa-servicemonitor-values.yaml")))
    hpa = r.one("HorizontalPodAutoscaler")
    worker = r.one("Deployment", "worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": worker["metadata"]["name"]}
    assert "replicas" not in worker["spec"], "the HPA owns the replica count"
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "External"}

    monitor = r.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    selected = [
        s for s in r.of_kind("Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected} == {
        "processor", "worker"}


@pytest.mark.parametrize(
    ("why", "args", "message"),
    [
        ("SASL without password", ["--set", "kafka.securityProtocol=SASL_SSL",
                                   "--set", "kafka.sasl.username=u"], "kafka.sasl.password"),
        ("SASL without username", ["--set", "kafka.securityProtocol=SASL_PLAINTEXT",
                                   "--set", "kafka.sasl.password=p"], "kafka.sasl.username"),
        ("unknown protocol", ["--set", "kafka.securityProtocol=TLS"], "securityProtocol"),
        ("worker without modules", ["--set", "worker.modules=null"], "worker.modules"),
        ("alert threshold not a number",
         ["--set", "metrics.prometheusRule.enabled=true",
          "--set", "metrics.prometheusRule.consumerLagGrowing.threshold=lots"],
         "metrics.prometheusRule.consumerLagGrowing.threshold must be a number"),
    ],
)
def test_refuses_values_that_would_fail_at_run_time(
    why: str, args: list[str], message: str
) -> None:
    result = helm("template", "t", str(CHART), *args)
    assert result.returncode != 0, why
    assert message in result.stderr
