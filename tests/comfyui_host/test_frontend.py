"""ComfyUI's own frontend in headless Chromium: our files restore their graph when dropped, and the
node's preview plays in the browser. Needs the host fixture plus Python playwright and a Chromium
(CHROMIUM_PATH, or `chromium` on PATH); skips and says which is missing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from spacetime.video import Provenance, combine_video, metadata_entries
from spacetime.video.patterns import moving_pattern

from comfyui_host.conftest import load_workflow

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


@pytest.fixture(scope="module")
def page(comfyui):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="frontend tests need `pip install playwright`"
    )
    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("frontend tests need Chromium: install it or set CHROMIUM_PATH")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 800})
        page.goto(comfyui.url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("window.app && window.app.graph", timeout=60_000)
        yield page
        browser.close()


def _graph_node_types(page) -> list[str]:
    return page.evaluate("window.app.graph._nodes.map(n => n.type)")


@pytest.mark.parametrize(
    "name", ["video/h264-mp4", "video/h265-mp4", "video/vp9-webm", "image/webp", "image/png-sequence"]
)
def test_dropping_a_file_restores_its_workflow(name: str, page, tmp_path: Path):
    workflow = load_workflow("still_image_to_video.json")
    metadata = metadata_entries(
        {"3": {"class_type": "SpacetimeVideoCombine", "inputs": {}}}, {"workflow": workflow}
    )
    saved = combine_video(
        moving_pattern(5, 64, 64), 16.0, tmp_path, "drop", name, provenance=Provenance(metadata=metadata)
    )
    file = next(saved.path.iterdir()) if saved.path.is_dir() else saved.path

    page.evaluate("window.app.graph.clear()")
    assert _graph_node_types(page) == []
    page.set_input_files("#comfy-file-input", str(file))  # the frontend's own file-open path
    page.wait_for_function("window.app.graph._nodes.length === 3", timeout=15_000)
    assert sorted(_graph_node_types(page)) == sorted(node["type"] for node in workflow["nodes"])
    combine = page.evaluate(
        "window.app.graph._nodes.filter(n => n.type === 'SpacetimeVideoCombine').map(n => n.widgets.map(w => w.value))"
    )
    assert combine == [workflow["nodes"][2]["widgets_values"]]


def test_the_node_preview_plays_in_the_browser(page, comfyui):
    workflow = load_workflow("still_image_to_video.json")
    page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
    page.evaluate("window.app.queuePrompt(0)")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('video')).some(v => v.readyState >= 2 && v.src.includes('.mp4'))",
        timeout=120_000,
    )
    videos = page.evaluate(
        "Array.from(document.querySelectorAll('video')).map(v => ({src: v.src, width: v.videoWidth,"
        " height: v.videoHeight, duration: v.duration}))"
    )
    played = [v for v in videos if "type=output" in v["src"] and ".mp4" in v["src"]]
    assert played, json.dumps(videos)
    assert (played[-1]["width"], played[-1]["height"]) == (128, 96)
    assert played[-1]["duration"] == pytest.approx(17 / 16, abs=0.07)
