"""``devbox docker base``: build devbox's Python base image on the local engine (see
:mod:`devbox.mocks.deploy.base_image`)."""

from __future__ import annotations

from pathlib import Path

import typer

from devbox.cli.common import console, fail


def base(
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="Build python and devbox's layer again (the Debian tree is reused)."),
    mirror: str = typer.Option(None, "--mirror", help="Debian mirror for debootstrap (default: apt's sources)."),
    log: Path = typer.Option(Path.home() / ".cache" / "devbox" / "docker-base.log", "--log",
                             help="Where the debootstrap and build output goes."),
) -> None:
    """Build devbox-base:bookworm (Debian by debootstrap, python3, the shop's packages, devbox's SDK): the
    image `runtime: docker` services without `image:` or a Dockerfile run their start.sh on. Minutes, once."""
    from devbox.mocks.deploy.base_image import build_base
    from devbox.mocks.deploy.docker import BASE_IMAGE, BuildFailed, DockerUnavailable, connect

    try:
        client = connect()
    except DockerUnavailable as exc:
        fail(str(exc))
    try:
        image = build_base(client, log_path=log, mirror=mirror, rebuild=rebuild,
                           say=lambda line: console.print(line, highlight=False))
    except BuildFailed as exc:
        fail("\n".join([str(exc), *(f"  {line}" for line in exc.tail)]))
    finally:
        client.close()
    console.print(f"{BASE_IMAGE} is built: {image.split(':')[-1][:12]}", highlight=False)


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The local Docker engine: devbox's base image.", no_args_is_help=True)
    group.command("base")(base)
    app.add_typer(group, name="docker")
