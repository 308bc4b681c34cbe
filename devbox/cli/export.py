"""``devbox export compose|k8s``: this project on the real backends (see :mod:`devbox.export`)."""

from __future__ import annotations

from pathlib import Path

import typer

from devbox.cli.common import ConfigOption, config_or_exit, console, fail


def compose(
    output: Path = typer.Option(Path("compose.yaml"), "--output", "-o", help="The compose file to write."),
    network: str = typer.Option("bridge", "--network",
                                help="bridge: backends by name on the compose network; host: all on the host "
                                     "network (engines without a bridge)."),
    base_image: str = typer.Option(None, "--base-image",
                                   help="Base image of services without a Dockerfile (123: folder + start.sh)."),
    config_path: str | None = ConfigOption,
) -> None:
    """Write a compose file: the services as images with devbox's env, plus Polaris, Collector, Jaeger,
    Prometheus and Alertmanager configured from devbox.yaml."""
    from devbox.export.compose import write_compose
    from devbox.mocks.deploy.docker import BASE_IMAGE

    if network not in ("bridge", "host"):
        raise typer.BadParameter(f"--network must be bridge or host, not {network!r}")
    config = config_or_exit(config_path)
    try:
        written = write_compose(config, output, network=network, base_image=base_image or BASE_IMAGE)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print(f"start it with: docker compose -f {output} up", highlight=False)


def k8s(
    output: Path = typer.Option(Path("k8s"), "--output", "-o", help="The folder to write the manifests into."),
    base_image: str = typer.Option(None, "--base-image",
                                   help="Base image of services without a Dockerfile (123: folder + start.sh)."),
    config_path: str | None = ConfigOption,
) -> None:
    """Write Kubernetes manifests: Deployments (env, replicas, probes), Services, ConfigMaps (alert rules)."""
    from devbox.export.k8s import write_k8s
    from devbox.mocks.deploy.docker import BASE_IMAGE

    config = config_or_exit(config_path)
    try:
        written = write_k8s(config, output, base_image=base_image or BASE_IMAGE)
    except ValueError as exc:
        fail(str(exc))
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    console.print(f"apply with: kubectl apply -f {output}", highlight=False)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Write this project for the real backends: compose file or Kubernetes manifests.",
                        no_args_is_help=True)
    group.command("compose")(compose)
    group.command("k8s")(k8s)
    app.add_typer(group, name="export")
