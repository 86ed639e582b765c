"""The Docker engine the deploy tests run on, when one answers: why not (to skip with), images,
and `docker compose` with the files a user runs plus those COMPOSE_FILE adds (an override such
as host networking for an engine without a bridge)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def docker_engine_problem() -> str | None:
    """Why no container can run here, or None when a Docker engine answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    try:
        result = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["`docker info` failed"]
        return lines[-1]
    return None


def missing_images(*images: str) -> list[str]:
    """Those of ``images`` the engine does not have (no test pulls: no registry may answer)."""
    return [
        image
        for image in images
        if subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, timeout=30, check=False
        ).returncode
        != 0
    ]


def compose_v2_problem() -> str | None:
    """Why `docker compose` (the v2 plugin) cannot run here, or None."""
    result = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        return "no `docker compose` plugin (compose v2)"
    return None


class ComposeProject:
    """`docker compose -p NAME -f FILE...` in the repository: ``files``, then each file in
    COMPOSE_FILE that is not one of them (compose's own variable, as `-f` would ignore it)."""

    def __init__(self, name: str, files: list[Path], profiles: tuple[str, ...] = ()) -> None:
        extra = [
            Path(entry) if Path(entry).is_absolute() else REPO / entry
            for entry in os.environ.get("COMPOSE_FILE", "").split(os.pathsep)
            if entry
        ]
        self.files = files + [f for f in extra if f.resolve() not in {p.resolve() for p in files}]
        self.name = name
        self.profiles = profiles

    def command(self, *args: str) -> list[str]:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        profiles = [arg for profile in self.profiles for arg in ("--profile", profile)]
        return ["docker", "compose", "-p", self.name, *files, *profiles, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        """Run a compose command; its output (stdout and stderr), AssertionError if it fails."""
        env = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"}
        result = subprocess.run(
            self.command(*args),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        output = result.stdout + result.stderr
        if check:
            assert result.returncode == 0, f"docker compose {' '.join(args)}: {output[-3000:]}"
        return output

    def containers(self) -> list[dict[str, Any]]:
        """`ps -a` as JSON: one dict per container (Service, Name, State, ExitCode, ...)."""
        result = subprocess.run(
            self.command("ps", "-a", "--format", "json"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        text = result.stdout.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def logs(self, container: str) -> str:
        result = subprocess.run(
            ["docker", "logs", container], capture_output=True, text=True, timeout=60, check=False
        )
        return result.stdout + result.stderr
