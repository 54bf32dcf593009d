"""A real ComfyUI, started headless on 127.0.0.1 with this pack linked into its custom_nodes.

Set COMFYUI_PATH to a ComfyUI checkout whose requirements are installed in this Python; without
it the host tests skip and say so. ComfyUI is never part of this repository.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import save_file

from spacetime.video import Provenance, combine_video
from spacetime.video.patterns import moving_pattern

from comfyui_host.comfy_workflow import ui_to_api
from media import PACK_ROOT
from tiny_models import write_tiny_models
from wan_reference import T2V, random_wan_state_dict, write
from wan_vae_reference import TINY_21, random_vae_state_dict

STARTUP_SECONDS = 300
RUN_SECONDS = 300
TEST_IMAGE = "spacetime_host_test.png"
TINY_DIT = "spacetime_tiny_wan.safetensors"
TINY_VAE = "spacetime_tiny_vae.safetensors"
WORKFLOWS = Path(__file__).parent / "workflows"


@dataclass
class ComfyUI:
    url: str
    base: Path  # --base-directory: custom_nodes, input, output, temp, user
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(self, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return json.loads(body) if body else {}  # /interrupt answers with an empty body
        except urllib.error.HTTPError as error:
            raise AssertionError(
                f"{path} answered {error.code}: {error.read().decode(errors='replace')}"
            ) from None

    def queue_workflow(self, workflow: dict) -> str:
        """Queue a UI-format workflow as the frontend would; return its prompt id."""
        prompt = ui_to_api(workflow, self.request("/object_info"))
        return self.queue_prompt(prompt, {"extra_pnginfo": {"workflow": workflow}})

    def queue_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt ({node id: {class_type, inputs}}); return its prompt id."""
        queued = self.request(
            "/prompt", {"prompt": prompt, "client_id": "spacetime-tests", "extra_data": extra_data or {}}
        )
        return queued["prompt_id"]

    def run_prompt(self, prompt: dict) -> dict:
        """Queue an API-format prompt, wait for it, and insist that it succeeded."""
        entry = self.wait_for(self.queue_prompt(prompt))
        status = entry["status"]
        assert status["status_str"] == "success", json.dumps(status["messages"], indent=1)[-4000:]
        return entry

    def wait_for(self, prompt_id: str) -> dict:
        """The history entry of a finished prompt (succeeded, failed or interrupted)."""
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            history = self.request(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                return history[prompt_id]
            time.sleep(0.2)
        raise AssertionError(
            f"workflow did not finish in {RUN_SECONDS}s; log tail:\n{self.log_text()[-3000:]}"
        )

    def run_workflow(self, workflow: dict) -> dict:
        """Queue a workflow, wait for it, and insist that it succeeded."""
        entry = self.wait_for(self.queue_workflow(workflow))
        status = entry["status"]
        assert status["status_str"] == "success", json.dumps(status["messages"], indent=1)[-4000:]
        return entry


INPUT_CLIPS = (
    "clip",
    "clip_a",
    "clip_b",
)  # <name>.mp4, 32x32, as the shipped workflows' Load Video name them
INPUT_CLIP_FRAMES = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory) -> ComfyUI:
    checkout = os.environ.get("COMFYUI_PATH")
    if not checkout:
        pytest.skip(
            "host tests need a ComfyUI checkout: set COMFYUI_PATH=/path/to/ComfyUI (requirements installed)"
        )
    checkout = Path(checkout)
    if not (checkout / "main.py").is_file():
        pytest.skip(f"COMFYUI_PATH={checkout} is not a ComfyUI checkout (no main.py)")

    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-Spacetime").symlink_to(PACK_ROOT, target_is_directory=True)
    (base / "input").mkdir()
    frame = moving_pattern(1, 96, 128)[0].mul(255).round().byte().numpy()
    Image.fromarray(frame).save(base / "input" / TEST_IMAGE)
    Image.fromarray(frame).save(base / "input" / "example.png")  # the shipped workflows' input files
    for seed, name in enumerate(INPUT_CLIPS):
        combine_video(
            moving_pattern(INPUT_CLIP_FRAMES, 32, 32, seed=seed),
            16.0,
            base / "input",
            name,
            provenance=Provenance(watermark=False),
        )
        (base / "input" / f"{name}_00001_.mp4").rename(base / "input" / f"{name}.mp4")
    models = base / "models" / "diffusion_models"
    models.mkdir(parents=True)
    write(random_wan_state_dict(T2V), models / TINY_DIT)
    (base / "models" / "vae").mkdir()
    save_file(random_vae_state_dict(TINY_21), str(base / "models" / "vae" / TINY_VAE))
    write_tiny_models(base / "models", image_to_video=True)  # the files the shipped workflows name

    port = _free_port()
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--disable-auto-launch"]  # fmt: skip
    if "--database-url" in (checkout / "comfy" / "cli_args.py").read_text():
        command += ["--database-url", "sqlite:///:memory:"]  # keep the checkout's own database untouched
    log = base / "comfyui.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(command, cwd=checkout, stdout=log_file, stderr=subprocess.STDOUT)
    server = ComfyUI(f"http://127.0.0.1:{port}", base, log, process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"ComfyUI exited with {process.returncode}:\n{server.log_text()[-4000:]}"
                )
            try:
                server.request("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, AssertionError):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"ComfyUI did not start in {STARTUP_SECONDS}s:\n{server.log_text()[-4000:]}"
                    ) from None
                time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
