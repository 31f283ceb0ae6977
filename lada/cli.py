"""The `lada` command line: thin wrappers that build a config and call the core.

Usage errors (unknown subcommand, bad flag) print one line and exit 2; expected
failures (unreachable Redis, bad dataset spec, ...) print one line and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lada import __version__
from lada.config import (
    ALLOCATOR_ROLES,
    AgentConfig,
    AllocatorConfig,
    ConfigError,
    LLMServiceConfig,
    load_config,
)

C = TypeVar("C")
F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """An expected failure: shown as one line, exit code 1."""


def _config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        help="YAML file with settings (flags and environment override it).",
    )(func)


def _server_options(default_port: int) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        func = click.option(
            "--metrics-port",
            type=int,
            default=None,
            help="Prometheus /metrics port (0: pick one, -1: off).",
        )(func)
        func = click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")(
            func
        )
        func = click.option(
            "--port",
            type=int,
            default=None,
            help=f"gRPC port (default {default_port}; 0 picks a free one).",
        )(func)
        func = click.option("--tls-cert", default=None, help="PEM certificate: serve TLS.")(func)
        func = click.option("--tls-key", default=None, help="PEM private key for --tls-cert.")(func)
        func = click.option(
            "--tls-client-ca",
            default=None,
            help="PEM CA bundle: require client certificates (mTLS).",
        )(func)
        return func

    return decorate


class _RegistryChoice(click.Choice):
    """The names of a plug-in registry, imported only when the option is used or shown
    (the loss registry imports torch, which most commands never need)."""

    def __init__(self, load: Callable[[], Any]) -> None:
        self._load = load
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        return sorted(self._load())

    @choices.setter
    def choices(self, value: Any) -> None:
        pass


def _policy_names() -> Any:
    from allocator.policies import POLICIES

    return POLICIES


def _loss_names() -> Any:
    from slm_agent.losses import LOSSES

    return LOSSES


def _operator_options(func: F) -> F:
    """`--allocator` and `--operator-token` for the commands that call operator RPCs."""
    func = click.option(
        "--operator-token", envvar="LADA_OPERATOR_TOKEN", default="", help="Operator token."
    )(func)
    return click.option("--allocator", default="127.0.0.1:50051", help="Allocator host:port.")(func)


def _server_overrides(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("host", "port", "metrics_port", "tls_cert", "tls_key", "tls_client_ca")
    return {f"server.{k}": kwargs.pop(k, None) for k in keys}


def _load(cls: type[C], config_path: str | None, section: str, overrides: dict[str, Any]) -> C:
    try:
        return load_config(cls, config_path, overrides, section=section)
    except (ConfigError, OSError) as exc:
        raise CliError(str(exc)) from exc


def _emit(payload: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    click.echo(json.dumps(payload, indent=2, default=str) if as_json else render(payload))


class LadaGroup(click.Group):
    """A group whose usage errors are one line and exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        import grpc

        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            click.echo(f"lada: error: {code}: {details}", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            click.echo(f"lada: error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"lada: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("lada: aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)


@click.group(cls=LadaGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """LaDa: federated reasoning distillation between one LLM and many small models.

    A gRPC microservice system: an allocator (learnability-aware data filter, round state
    in Redis), an LLM service (vLLM or transformers) and SLM agents (private local data).
    """


@cli.command()
def version() -> None:
    """Print the LaDa version and the versions of the main dependencies."""
    import grpc
    import redis

    click.echo(f"lada {__version__} (grpcio {grpc.__version__}, redis-py {redis.__version__})")


# ---- services ------------------------------------------------------------------------
@cli.group("allocator")
def allocator_group() -> None:
    """The allocator service: registry, rounds and the learnability-aware data filter."""


@allocator_group.command("serve")
@_server_options(50051)
@_config_option
@click.option("--redis-url", default=None, help="Redis URL (default $REDIS_URL, else embedded).")
@click.option("--public-pool", default=None, help="Dataset spec of the public pool.")
@click.option(
    "--policy",
    type=_RegistryChoice(_policy_names),
    default=None,
    help="Allocation policy.",
)
@click.option("--rounds", type=int, default=None, help="Rounds to run.")
@click.option("--min-agents", type=int, default=None, help="Agents needed to open round 1.")
@click.option(
    "--round-deadline",
    "round_deadline_s",
    type=float,
    default=None,
    help="Seconds an agent has to report after a round is allocated.",
)
@click.option(
    "--llm", "llm_address", default=None, help="LLM service host:port (absorb, difficulty)."
)
@click.option("--run-id", default=None, help="Run name; prefixes every Redis key.")
@click.option(
    "--llm-tls-ca",
    "llm_tls_ca",
    default=None,
    help="PEM CA of the LLM service: connect to it over TLS.",
)
@click.option(
    "--llm-tls-client-cert",
    "llm_tls_cert",
    default=None,
    help="PEM client certificate for an LLM service that requires mTLS.",
)
@click.option(
    "--llm-tls-client-key", "llm_tls_key", default=None, help="PEM key for --llm-tls-client-cert."
)
@click.option(
    "--operator-token",
    default=None,
    envvar="LADA_OPERATOR_TOKEN",
    help="Token operator RPCs must carry (status, gaps, revoke; required to invite agents).",
)
@click.option(
    "--open-enrollment/--invitations-only",
    "open_enrollment",
    default=None,
    help="Let any agent join without an invitation (local experiments only; default: "
    "invitations only).",
)
@click.option(
    "--role",
    type=click.Choice(ALLOCATOR_ROLES),
    default=None,
    help="all (default): RPCs and the round driver; rpc: RPCs only; driver: rounds only.",
)
def allocator_serve(config_path: str | None, **kwargs: Any) -> None:
    """Serve the Allocator gRPC service until SIGTERM."""
    from allocator.main import serve

    llm_tls = {f"llm_tls.{k}": kwargs.pop(f"llm_tls_{k}") for k in ("ca", "cert", "key")}
    overrides = _server_overrides(kwargs) | kwargs | llm_tls
    _run_service(serve, _load(AllocatorConfig, config_path, "allocator", overrides))


@cli.group("llm")
def llm_group() -> None:
    """The LLM service: generates and scores reasoning paths, absorbs SLM knowledge."""


@llm_group.command("serve")
@_server_options(50052)
@_config_option
@click.option("--model", default=None, help="Hugging Face model directory.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "vllm", "transformers"]),
    default=None,
    help="Inference backend (auto: vLLM when importable).",
)
@click.option("--public-pool", default=None, help="Dataset spec of the public pool.")
@click.option(
    "--redis-url",
    default=None,
    help="Redis for the shared path cache (default $REDIS_URL; none: in-process cache only).",
)
@click.option(
    "--gpu-memory-utilization",
    type=float,
    default=None,
    help="vLLM memory share (on CPU: share of RAM reserved).",
)
def llm_serve(config_path: str | None, **kwargs: Any) -> None:
    """Serve the LLMService gRPC service until SIGTERM."""
    from llm_service.main import serve

    overrides = _server_overrides(kwargs) | kwargs
    _run_service(serve, _load(LLMServiceConfig, config_path, "llm", overrides))


@cli.group("agent")
def agent_group() -> None:
    """SLM agents: one client organisation with a small model and private data."""


@agent_group.command("run")
@_server_options(0)
@_config_option
@click.option("--allocator", default=None, help="Allocator host:port.")
@click.option(
    "--allocator-watch",
    default=None,
    help="Allocator host:port to follow WatchRounds on (default: --allocator).",
)
@click.option("--llm", default=None, help="LLM service host:port.")
@click.option("--model", default=None, help="The agent's model directory.")
@click.option("--private-data", default=None, help="Dataset spec of the private data.")
@click.option(
    "--public-pool",
    default=None,
    help="Dataset spec of the public pool (must match the allocator's).",
)
@click.option("--name", default=None, help="Agent name (unique in the run).")
@click.option("--capacity", type=int, default=None, help="Samples per round.")
@click.option("--loss", type=_RegistryChoice(_loss_names), default=None, help="Distillation loss.")
@click.option(
    "--contribute/--no-contribute",
    default=None,
    help="Send own correct paths on public samples to the LLM.",
)
@click.option("--state-dir", default=None, help="Checkpoints, identity and audit log.")
@click.option(
    "--enrollment-secret-file",
    default=None,
    help="File holding the invitation's enrollment secret (or $LADA_AGENT_ENROLLMENT_SECRET).",
)
@click.option(
    "--tls-ca",
    "client_tls_ca",
    default=None,
    help="PEM CA of the allocator and LLM service: connect over TLS.",
)
@click.option(
    "--tls-client-cert",
    "client_tls_cert",
    default=None,
    help="PEM client certificate for servers that require mTLS.",
)
@click.option(
    "--tls-client-key", "client_tls_key", default=None, help="PEM key for --tls-client-cert."
)
def agent_run(config_path: str | None, **kwargs: Any) -> None:
    """Run one SLM agent: register, follow rounds, train, report."""
    from slm_agent.main import run

    tls = {f"tls.{k}": kwargs.pop(f"client_tls_{k}") for k in ("ca", "cert", "key")}
    overrides = _server_overrides(kwargs) | kwargs | tls
    _run_service(run, _load(AgentConfig, config_path, "agent", overrides))


@agent_group.command("audit")
@click.option("--state-dir", required=True, help="The agent's state directory.")
@click.option("--round", "round_number", type=int, default=0, help="Only this round.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def agent_audit(state_dir: str, round_number: int, as_json: bool) -> None:
    """Print every message that left the agent (RPC, round, bytes, fields)."""
    from slm_agent.audit import AuditLog, render_table

    records = AuditLog(Path(state_dir) / "audit.jsonl").read(round_number)
    _emit([r.to_json() for r in records], as_json, lambda _: render_table(records))


@agent_group.command("revoke")
@_operator_options
@click.option("--agent-id", required=True, help="Agent to revoke.")
def agent_revoke(allocator: str, agent_id: str, operator_token: str) -> None:
    """Revoke an agent's token (its later RPCs are refused)."""
    from allocator.client import OperatorClient

    with OperatorClient(allocator, operator_token) as client:
        client.revoke(agent_id)
    click.echo(f"revoked {agent_id}")


@agent_group.command("invite")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--expires",
    default="",
    help="Expire the invitation if unused after this long (e.g. 90m, 24h, 7d; default never).",
)
@click.option(
    "--secret-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each secret to DIR/NAME.secret (mode 0600) instead of printing it; a name "
    "whose file exists keeps it and gets no new invitation.",
)
@_operator_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def agent_invite(
    names: tuple[str, ...],
    expires: str,
    secret_dir: str | None,
    allocator: str,
    operator_token: str,
    as_json: bool,
) -> None:
    """Invite organisations by agent NAME: a one-time enrollment secret for each."""
    from allocator.client import OperatorClient
    from slm_agent.checkpoint import write_atomic

    seconds = parse_duration(expires)
    rows: list[dict[str, Any]] = []
    with OperatorClient(allocator, operator_token) as client:
        for name in names:
            path = Path(secret_dir) / f"{name}.secret" if secret_dir else None
            if path is not None and path.is_file():
                rows.append({"name": name, "secret_file": str(path), "kept": True})
                continue
            reply = client.invite(name, seconds)
            row: dict[str, Any] = {
                "name": name,
                "invitation_id": reply.invitation_id,
                "expires_unix_ms": reply.expires_unix_ms,
            }
            if path is not None:
                write_atomic(path, reply.enrollment_secret.encode(), mode=0o600)
                row["secret_file"] = str(path)
            else:
                row["enrollment_secret"] = reply.enrollment_secret
            rows.append(row)
    _emit(rows, as_json, lambda items: "\n".join(_render_invitation(r) for r in items))


def _render_invitation(row: dict[str, Any]) -> str:
    from allocator.client import utc_text

    if row.get("kept"):
        return f"kept {row['secret_file']}: {row['name']} holds an invitation already"
    where = (
        f"secret in {row['secret_file']}"
        if "secret_file" in row
        else f"enrollment secret (shown once): {row['enrollment_secret']}"
    )
    expiry = row["expires_unix_ms"]
    until = f"expires {utc_text(expiry)} if unused" if expiry else "never expires"
    return f"invited {row['name']} ({row['invitation_id']}, {until}); {where}"


def parse_duration(text: str) -> int:
    """'90m', '24h', '7d', '30s' or plain seconds -> seconds (empty: 0, never)."""
    text = text.strip().lower()
    if not text:
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        raise CliError(f"--expires: cannot read {text!r} (e.g. 90m, 24h, 7d)") from None
    if seconds <= 0:
        raise CliError(f"--expires: must be positive, got {text!r}")
    return max(int(seconds), 1)


@agent_group.command("invitations")
@_operator_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def agent_invitations(allocator: str, operator_token: str, as_json: bool) -> None:
    """List invitations: name, state (PENDING, USED, EXPIRED, REVOKED), expiry, agent."""
    from allocator.client import OperatorClient, render_invitations

    with OperatorClient(allocator, operator_token) as client:
        payload = client.invitations()
    _emit(payload, as_json, render_invitations)


@agent_group.command("uninvite")
@click.argument("invitation_id")
@_operator_options
def agent_uninvite(invitation_id: str, allocator: str, operator_token: str) -> None:
    """Revoke an unused invitation; registering with its secret is then refused."""
    from allocator.client import OperatorClient

    with OperatorClient(allocator, operator_token) as client:
        client.revoke_invitation(invitation_id)
    click.echo(f"revoked invitation {invitation_id}")


@cli.group("run")
def run_group() -> None:
    """The running federation as a whole."""


@run_group.command("extend")
@click.option(
    "--rounds", type=int, required=True, help="New total number of rounds (0: until stopped)."
)
@_operator_options
def run_extend(rounds: int, allocator: str, operator_token: str) -> None:
    """Change how many rounds the run has, so organisations can still join."""
    from allocator.client import OperatorClient

    with OperatorClient(allocator, operator_token) as client:
        reply = client.set_total_rounds(rounds)
    total = f"{reply.total_rounds} rounds" if reply.total_rounds else "until stopped"
    click.echo(f"run: {total} (now at round {reply.current_round})")


def _run_service(entry: Callable[[Any], Any], config: Any) -> None:
    from lada.redis_conn import RedisUnavailable

    try:
        result = entry(config)
    except RedisUnavailable as exc:
        raise CliError(str(exc)) from exc
    if isinstance(result, int) and result != 0:
        sys.exit(result)


# ---- operator queries ----------------------------------------------------------------
@cli.command()
@_operator_options
@click.option("--round", "round_number", type=int, default=0, help="Round (0: current).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(allocator: str, round_number: int, operator_token: str, as_json: bool) -> None:
    """Show the round, its phase, and every agent's progress."""
    from allocator.client import OperatorClient, render_status

    with OperatorClient(allocator, operator_token) as client:
        payload = client.status(round_number)
    _emit(payload, as_json, render_status)


@cli.command()
@_operator_options
@click.option("--agent-id", default="", help="One agent (default: all).")
@click.option("--round", "round_number", type=int, default=0, help="Round (0: current).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def allocation(
    allocator: str, agent_id: str, round_number: int, operator_token: str, as_json: bool
) -> None:
    """Show learnability gaps, bands, bandit arms and allocations per agent."""
    from allocator.client import OperatorClient, render_allocation

    with OperatorClient(allocator, operator_token) as client:
        payload = client.allocation(agent_id, round_number)
    _emit(payload, as_json, render_allocation)


# ---- models and evaluation -----------------------------------------------------------
@cli.group("models")
def models_group() -> None:
    """The local model zoo: small LLM and SLMs built from scratch."""


@models_group.command("build")
@click.option(
    "--profile",
    type=click.Choice(["micro", "demo"]),
    default="demo",
    help="micro: seconds, for tests; demo: minutes, for the demo and the report.",
)
@click.option(
    "--out",
    "root",
    type=click.Path(file_okay=False),
    default=None,
    help="Zoo directory (default $LADA_HOME/zoo).",
)
@click.option(
    "--export",
    type=click.Path(file_okay=False),
    default=None,
    help="Also copy the weights and a key/sha256 manifest to EXPORT/<profile> (e.g. zoo/).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Models trained at once, one process each (the weights do not depend on it).",
)
def models_build(profile: str, root: str | None, export: str | None, jobs: int) -> None:
    """Pretrain the zoo's LLM and heterogeneous SLMs (cached by config hash).

    Weights committed under zoo/<profile> are used instead of training when their
    recorded spec key matches. Also links each model as <zoo>/<profile>/<name> so
    deployments can name stable paths.
    """
    from lada.config import lada_home
    from lada.zoo import build_zoo, export_zoo

    zoo_root = Path(root) if root else lada_home() / "zoo"
    manifest = build_zoo(profile, zoo_root, progress=True, jobs=jobs)
    if export:
        click.echo(f"exported to {export_zoo(manifest, Path(export))}")
    links = zoo_root / profile
    links.mkdir(parents=True, exist_ok=True)
    for name, path in {"llm": manifest.llm, **manifest.slms}.items():
        link = links / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(path).resolve(), target_is_directory=True)
        click.echo(f"{name}: {link} -> {path}")


@models_group.command("probe")
@click.option(
    "--profile", type=click.Choice(["micro", "demo"]), default="demo", help="Zoo profile."
)
@click.option(
    "--out",
    "root",
    type=click.Path(file_okay=False),
    default=None,
    help="Zoo directory (default $LADA_HOME/zoo).",
)
@click.option("--test", "test_spec", default=None, help="Held-out test set (default: the zoo's).")
@click.option("--pool", "pool_spec", default=None, help="Public samples (test set removed).")
@click.option("--distill-samples", type=int, default=200, show_default=True)
@click.option("--gap-samples", type=int, default=50, show_default=True, help="Per domain.")
@click.option("--absorb-samples", type=int, default=200, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
@click.option("--loss", default="contrastive", show_default=True, help="Distillation loss.")
@click.option("--slms", default="", help="Comma list: distillation/gap probes only for these.")
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=None,
    help="Reuse greedy results and LLM paths from here (keyed by model hash).",
)
@click.option(
    "--doc",
    type=click.Path(dir_okay=False),
    default="docs/zoo.md",
    show_default=True,
    help="Markdown file whose probe section is replaced ('' to skip).",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option(
    "--trainer",
    "trainer_sets",
    multiple=True,
    help="KEY=VALUE on the agents' trainer settings for the distillation and gap probes "
    "(e.g. distill_route=gate); repeatable. Default: the agent's default trainer.",
)
def models_probe(
    profile: str,
    root: str | None,
    test_spec: str | None,
    pool_spec: str | None,
    distill_samples: int,
    gap_samples: int,
    absorb_samples: int,
    threads: int,
    loss: str,
    slms: str,
    cache: str | None,
    doc: str,
    json_out: str | None,
    trainer_sets: tuple[str, ...],
) -> None:
    """Measure the zoo's learnability gap (accuracy, distillation, reward by gap, absorb)."""
    import torch

    from lada.config import TrainerSettings, apply_overrides, parse_overrides
    from lada.probe import ProbeSettings, render_markdown, run_probe, save, write_docs

    try:
        trainer = apply_overrides(TrainerSettings(), parse_overrides(trainer_sets, "--trainer"))
    except ConfigError as exc:
        raise CliError(f"--trainer: {exc}") from exc
    torch.set_num_threads(threads)
    settings = ProbeSettings(
        profile=profile,
        root=Path(root) if root else None,
        distill_samples=distill_samples,
        gap_samples_per_domain=gap_samples,
        absorb_samples=absorb_samples,
        loss=loss,
        slms=tuple(n for n in slms.split(",") if n),
        cache_dir=Path(cache) if cache else None,
        trainer=trainer,
    )
    if test_spec:
        settings.test_spec = test_spec
    if pool_spec:
        settings.pool_spec = pool_spec
    result = run_probe(settings, log=lambda line: click.echo(line, err=True))
    markdown = render_markdown(result)
    click.echo(markdown)
    if doc:
        write_docs(markdown, Path(doc))
    if json_out:
        save(result, Path(json_out))


@cli.command("eval")
@click.option("--model", required=True, help="Model directory.")
@click.option("--data", "data_spec", required=True, help="Dataset spec, e.g. synthetic:n=200.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the report as JSON here.",
)
@click.option("--batch-size", type=int, default=32, help="Prompts per forward pass.")
@click.option("--pass-k", type=int, default=4, help="Samples per problem for pass@k.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N problems.")
def evaluate(
    model: str,
    data_spec: str,
    json_out: str | None,
    batch_size: int,
    pass_k: int,
    limit: int | None,
) -> None:
    """Greedy accuracy per domain and difficulty, pass@k, reference log-probs."""
    from lada.evaluation import evaluate as run_eval
    from lada.modeling import ModelDirError
    from lada.tasks import DatasetSpecError

    try:
        report = run_eval(model, data_spec, batch_size=batch_size, pass_k=pass_k, limit=limit)
    except (ModelDirError, DatasetSpecError) as exc:
        raise CliError(str(exc)) from exc
    click.echo(report.to_markdown())
    if json_out:
        Path(json_out).write_text(json.dumps(report.to_json(), indent=2))


# ---- the whole federation ------------------------------------------------------------
@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default="deploy/local.yaml",
    show_default=True,
    help="Cluster YAML.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Report directory (default reports/<timestamp>).",
)
def up(config_path: str, out_dir: str | None) -> None:
    """Start Redis, the allocator, the LLM service and N agents; run; write a report."""
    from lada.cluster import run_cluster

    sys.exit(run_cluster(config_path, out_dir))


@cli.group("experiment")
def experiment_group() -> None:
    """In-process simulation of the round loop, for sweeps and the paper table."""


@experiment_group.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Experiment YAML.",
)
@click.option("--scenarios", default="S1", help="Comma list of S1..S4.")
@click.option("--policies", default="full,random,lada", help="Comma list of policies.")
@click.option("--losses", default="sft,contrastive", help="Comma list of losses.")
@click.option(
    "--seeds",
    default="1",
    show_default=True,
    help="Seeds per combination: N runs seeds 0..N-1; a list (1,3) or range (2-4) runs "
    "just those, e.g. to add seeds to a sweep's OUT.",
)
@click.option(
    "--profile",
    type=click.Choice(["micro", "demo"]),
    default="demo",
    show_default=True,
    help="Model zoo profile (micro: seconds, for tests).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="reports/experiment",
    help="Output directory (finished runs are kept in OUT/done: a rerun resumes).",
)
@click.option(
    "--address",
    default=None,
    help="Ray cluster to run on: auto (the one this machine joined), host:port or "
    "ray://host:port (Ray Client). Default: a local Ray on this machine's cores.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Runs in parallel at most (default: one per core, or as the cluster's CPUs allow).",
)
@click.option(
    "--cpus-per-run",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="CPUs Ray reserves for each run (its torch threads).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a base-config field by its dotted key, e.g. lada.ucb_alpha=1.0 "
    "(repeatable; runs with other settings get other keys, so a resume never mixes them).",
)
@click.option(
    "--path-cache",
    default="auto",
    show_default=True,
    metavar="auto|off|URL",
    help="Where the runs' LLM shares generated paths: auto, an embedded Redis under OUT (off "
    "with --address); off; or a Redis URL every node reaches. A hit is what the run would "
    "have generated, so results do not change; time does.",
)
@click.option(
    "--report-only",
    is_flag=True,
    help="Run nothing: write the tables from the runs of this grid already finished in OUT "
    "(a sweep run as several commands into one OUT, reported as one).",
)
def experiment_run(**kwargs: Any) -> None:
    """Run policy x loss x scenario x seed in simulation, as Ray tasks; write the tables.

    A killed sweep resumes: rerun the same command and finished runs are not run again.
    """
    from lada.experiment import SweepError, run_experiment

    try:
        code = run_experiment(**kwargs)
    except (SweepError, ConfigError) as exc:
        raise CliError(str(exc)) from exc
    sys.exit(code)


@experiment_group.command("choices")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def experiment_choices(results: tuple[str, ...]) -> None:
    """What each policy allocated, per round: where in the pool's gap quintiles, how
    concentrated on clusters, greedy accuracy on it before -> after and where the band went;
    then what the reward paid per gap quintile (from one or more sweeps' results.json)."""
    from lada.choices import (
        choice_rows,
        equal_quota_rows,
        render_choices,
        render_equal_quota_rows,
        render_reward_rows,
        reward_rows,
    )

    runs: list[dict[str, Any]] = []
    for path in results:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"{path}: not a results JSON file ({exc})") from exc
        if not isinstance(loaded, list) or not all(
            isinstance(r, dict) and {"scenario", "seed", "method"} <= r.keys() for r in loaded
        ):
            raise CliError(f"{path}: expected a list of runs with scenario, seed and method")
        runs.extend(loaded)
    try:
        rows, rewards, equal = choice_rows(runs), reward_rows(runs), equal_quota_rows(runs)
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"a run in {', '.join(results)} is malformed: {exc!r}") from exc
    click.echo(render_choices(rows))
    if rewards:  # runs that recorded the reward's terms per sample
        click.echo("\nWhat the reward paid per gap quintile (every allocated sample):\n")
        click.echo(render_reward_rows(rewards))
    if equal:  # reference runs that recorded each sample's cluster
        click.echo("\nWhat an equal quota per cluster would pick (from the reference's samples):\n")
        click.echo(render_equal_quota_rows(equal))


@cli.command()
@click.argument("what", type=click.Choice(["allocator", "llm", "load", "agent", "all"]))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="docs/bench",
    help="Where results (JSON + Markdown) go.",
)
@click.option("--quick", is_flag=True, help="A short run (for CI smoke checks).")
@click.option("--agents", type=click.IntRange(1), help="load: simulated agents (one scenario).")
@click.option("--rounds", type=click.IntRange(1), help="load: rounds to run.")
@click.option("--workers", type=click.IntRange(1), help="load: generator processes.")
@click.option(
    "--heartbeat-interval",
    "heartbeat_interval_s",
    type=click.FloatRange(0.05),
    help="load: seconds between an agent's heartbeats (default: the real 5 s).",
)
@click.option(
    "--train-s", type=click.FloatRange(0.0), help="load: max simulated training per round."
)
@click.option(
    "--fetch-spread-s",
    type=click.FloatRange(0.0),
    help="load: agents fetch their allocation uniform(0, S) s after ALLOCATED, 0 at once "
    "(default: within the event's fetch window, as real agents).",
)
@click.option(
    "--allocator-processes",
    type=click.IntRange(1),
    help="load: allocator replicas sharing one port (server.share_port), default 1.",
)
@click.option(
    "--driver-process/--no-driver-process",
    "driver_process",
    default=None,
    help="load: the replicas serve RPCs only (role rpc) and one more process drives the "
    "rounds (role driver).",
)
@click.option(
    "--watch-process/--no-watch-process",
    "watch_process",
    default=None,
    help="load: the agents follow WatchRounds on one more RPC process with its own port.",
)
def bench(what: str, out_dir: str, quick: bool, **load_options: Any) -> None:
    """Benchmarks: allocator speed, LLM throughput, load with simulated agents.

    `lada bench load` alone runs the standard scenarios (200 and 1,000 agents); any of
    --agents/--rounds/--workers/--heartbeat-interval/--train-s/--fetch-spread-s/
    --allocator-processes/--driver-process/--watch-process runs one custom scenario.
    """
    from lada.bench import run_bench

    sys.exit(run_bench(what, Path(out_dir), quick=quick, load_options=load_options))


def main() -> None:
    cli.main(prog_name="lada")


if __name__ == "__main__":
    main()
