"""`pam-jax annotate` in a real browser: headless Chromium driven by Playwright.

The server runs in a thread on a free loopback port over a fresh folder of rope rollouts; the
tests rank candidates with the mouse and the keyboard, give an own action by clicking the 3D
cloud, submit, check the YAML on disk against hand-written rows, reload and resume, edit a
sample, and see a conflict and a validation error on the page.

Needs /usr/bin/chromium (Debian: apt-get install chromium) and the playwright package; skipped
with the reason otherwise. PAM_JAX_ANNOTATE_SCREENSHOT=docs/annotate.png makes
test_screenshot also save its screenshot there.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import threading
import time

import numpy as np
import pytest
import yaml

CHROMIUM = "/usr/bin/chromium"
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install playwright)"),
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                       reason=f"{CHROMIUM} not found (apt-get install chromium)"),
]
if sync_playwright is not None:
    expect.set_options(timeout=20_000)     # a loaded CI machine renders WebGL in software
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("plotly")

from pam_jax.annotate import server as server_lib  # noqa: E402
from pam_jax.annotate import store as store_lib  # noqa: E402
from pam_jax.data import fixtures, layout  # noqa: E402

K = 8
NS = "experiment_real"
PAD = [0, 1, 0, 1]


def write_rollouts(root: pathlib.Path, n: int, *, points: int = 400, seed: int = 0) -> list[str]:
    """n rope samples waiting for annotation: a cloud and K candidates (pick on the rope, place
    beside it), one episode each."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        cloud = fixtures._cloud(rng, points, "rope")
        c32 = cloud.astype(np.float32)
        cands = np.concatenate([fixtures._action(rng, c32, "rope") for _ in range(K)])
        sid = f"rope_rollout_ep{i:03d}"
        layout.write_sample(root, sid, points=cloud, episode_idx=i, action_type="single_pick_and_place",
                            candidates=cands, annotated=False, namespace=NS)
        ids.append(sid)
    return ids


def annotation(root, sid) -> dict:
    return yaml.safe_load((root / sid / layout.ANNOTATION).read_text())[NS]["annotation"]


@contextlib.contextmanager
def serve(root, **kw):
    store = store_lib.Store(root, **kw)
    server, sock, url = server_lib.make_server(store, "127.0.0.1", 0)
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and t.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield store, url
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        yield b
        b.close()


@contextlib.contextmanager
def page_on(browser, url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 850})
    page = ctx.new_page()
    page.set_default_timeout(20000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # a refused submission (400, 409) is logged by the browser; anything else is a failure
    expected = ("status of 400", "status of 409")
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not any(e in m.text for e in expected) else None)
    try:
        page.goto(url)
        ready(page)
        yield page, errors
    finally:
        ctx.close()


def ready(page):
    page.wait_for_selector("#candidates li")
    page.wait_for_selector("#plot .gl-container canvas")
    # record where plotly says the hovered point is (test instrumentation, not the page's code)
    page.evaluate("""() => { const d = document.getElementById('plot');
        if (!d.__testHover) { d.__testHover = true;
          d.on('plotly_hover', (e) => { window.__hover = e.points[0].bbox; }); } }""")


def wait_sample(page, sid):
    expect(page.locator("#sample-id")).to_have_text(sid)


def ranking(page) -> list[str]:
    return [t.strip() for t in page.locator("#ranking li").all_inner_texts() if t.strip().startswith("#")]


def click_cloud(page, roles=("cloud",), start=0, hold=False):
    """Click a point of the 3D view with the mouse: sweep the pointer until plotly reports a
    hover on one of ``roles``, point at the exact screen position plotly gives for it, wait for
    the frame that hovers there, and click. ``hold``: keep the button down until the page takes
    the click (plotly's own click, emitted by a frame drawn while the button is down); otherwise
    press and release at once, quicker than a frame on a loaded machine (the page then takes the
    point hovered where the button was released)."""
    box = page.locator("#plot").bounding_box()
    page.evaluate("window.__hover = null")
    rows = [0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65, 0.3, 0.7]
    spots = [(fx / 24, fy) for fy in rows for fx in range(2, 23)]
    role_js = "document.getElementById('hover').dataset.role"
    for fx, fy in spots[start:] + spots[:start]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        role = page.evaluate(role_js)
        bb = page.evaluate("window.__hover")
        page.evaluate("window.__hover = null")
        if not (role in roles and bb):
            continue
        page.mouse.move(box["x"] + (bb["x0"] + bb["x1"]) / 2, box["y"] + (bb["y0"] + bb["y1"]) / 2)
        try:     # a frame drawn with the pointer here
            page.wait_for_function("window.__hover !== null", timeout=10_000)
        except PlaywrightTimeout:
            continue
        if page.evaluate(role_js) not in roles:
            continue
        status = page.inner_text("#own-status")
        page.mouse.down()
        if hold:
            expect(page.locator("#own-status")).not_to_have_text(status)
        page.mouse.up()
        return
    raise AssertionError(f"no {roles} point found under the pointer")


def give_own_action(page):
    page.click("#own-btn")                               # mouse
    click_cloud(page, hold=True)                         # pick: on the rope
    expect(page.locator("#own-status")).to_have_text(re.compile(r"^first point"))
    click_cloud(page, roles=("cloud", "table"), start=60)   # place: elsewhere on the rope or table
    expect(page.locator("#own-status")).to_have_text(re.compile(r"^pick \("))


def test_rank_submit_resume_and_edit(browser, tmp_path):
    root = tmp_path / "rollouts"
    ids = write_rollouts(root, 3)
    with serve(root, annotator="erin") as (store, url), page_on(browser, url) as (page, errors):
        wait_sample(page, ids[0])
        assert page.inner_text("#progress-text") == "0/3"
        assert page.inner_text("#position") == "sample 1 of 3"
        # rank with the mouse: #3 then #1
        page.click("#candidates button.cand[data-k='2']")
        page.click("#candidates button.cand[data-k='0']")
        assert ranking(page) == ["#3", "#1"]
        # and with the keyboard: #5 = #6, #8 not comparable, #4 ranked then undone
        for key in ("e", "5", "6", "x", "8", "4"):
            page.keyboard.press(key)
        assert ranking(page) == ["#3", "#1", "#4"]
        page.keyboard.press("u")
        assert ranking(page) == ["#3", "#1"]
        page.keyboard.press("3")                         # already ranked: a warning, no change
        assert "already ranked" in page.inner_text("#message") and ranking(page) == ["#3", "#1"]
        assert "= #6" in page.inner_text("#candidates li[data-k='4']")
        assert "not comparable" in page.inner_text("#candidates li[data-k='7'] .badge")
        give_own_action(page)
        page.keyboard.press("Enter")
        wait_sample(page, ids[1])
        assert "saved " + ids[0] in page.inner_text("#message")
        assert page.inner_text("#progress-text") == "1/3"

        ann = annotation(root, ids[0])
        rows = [
            [4, 5, 2, 3], [4, 5, 6, 7], [4, 5, 8, 9], [4, 5, 10, 11], [4, 5, 12, 13],
            [0, 1, 2, 3], [0, 1, 6, 7], [0, 1, 8, 9], [0, 1, 10, 11], [0, 1, 12, 13],
            [4, 5, 0, 1], [8, 9, 10, 11], PAD, PAD, PAD, PAD,
        ] + [[16, 17, 2 * k, 2 * k + 1] for k in range(K)]
        assert ann["selected_grasp_point_indices"] == rows
        assert ann["grasp_point_rankings"] == [0] * 11 + [2] + [3] * 4 + [0] * 7 + [3]
        assert ann["annotator"] == "erin" and ann["pam_jax_annotate"]["own_action"] is True
        # the clicked pick is a point of the cloud
        pick = np.asarray(ann["action_poses"][0][:3])
        cloud = layout.load_points(root / ids[0] / "observations/0/pcd/processed_begin.npz", ids[0])
        assert np.abs(cloud - pick).max(axis=1).min() < 1e-4
        assert np.isfinite(ann["action_poses"][2][:3]).all()

        # skip, then back
        page.keyboard.press("s")
        wait_sample(page, ids[2])
        page.keyboard.press("ArrowLeft")
        wait_sample(page, ids[1])
        # an inconsistent ranking is refused with the server's message; nothing is written
        for key in ("1", "2", "3", "e", "1", "3", "Enter"):
            page.keyboard.press(key)
        expect(page.locator("#message")).to_have_class("error")
        assert "ranked between them" in page.inner_text("#message")
        assert not (root / ids[1] / layout.ANNOTATION).exists()
        page.keyboard.press("u")
        page.keyboard.press("Enter")
        wait_sample(page, ids[2])
        assert annotation(root, ids[1])["pam_jax_annotate"]["ranked"] == [0, 1, 2]

        # reload: resumes at the first unannotated sample
        page.reload()
        ready(page)
        wait_sample(page, ids[2])
        assert page.inner_text("#progress-text") == "2/3"

        # revisit the first sample: its ranking is shown again; edit it
        page.select_option("#sample-list", "0")
        wait_sample(page, ids[0])
        assert ranking(page)[:2] == ["#3", "#1"]
        assert page.inner_text("#own-status").startswith("pick (")
        page.keyboard.press("c")
        page.keyboard.press("7")
        page.keyboard.press("ArrowRight")               # unsaved changes: stays, warns
        assert "unsaved changes" in page.inner_text("#message")
        assert page.inner_text("#sample-id") == ids[0]
        page.keyboard.press("Enter")
        wait_sample(page, ids[2])                       # the only unannotated one
        ann = annotation(root, ids[0])
        assert ann["pam_jax_annotate"]["ranked"] == [6]
        assert ann["pam_jax_annotate"]["own_action"] is False
        assert ann["grasp_point_rankings"] == [0] * 7 + [3] * 17
        assert errors == []


def test_conflict_is_shown_and_reload_shows_the_other_annotation(browser, tmp_path):
    root = tmp_path / "rollouts"
    ids = write_rollouts(root, 2, seed=1)
    with serve(root) as (store, url), page_on(browser, url) as (page, errors):
        wait_sample(page, ids[0])
        page.fill("#annotator", "frank")
        page.keyboard.press("Escape")
        page.keyboard.press("2")
        # someone else saves the same sample meanwhile (another server on the folder)
        other = store_lib.Store(root, annotator="grace")
        other.save(0, {"sample_id": ids[0], "version": other.version(0), "ranked": [4]})
        page.keyboard.press("Enter")
        expect(page.locator("#message")).to_have_class("error")
        assert "conflict" in page.inner_text("#message") and "grace" in page.inner_text("#message")
        assert annotation(root, ids[0])["annotator"] == "grace"
        page.keyboard.press("r")                         # unsaved changes: press again
        page.keyboard.press("r")
        expect(page.locator("#sample-state")).to_contain_text("grace")
        assert ranking(page) == ["#5"]
        page.keyboard.press("c")
        page.keyboard.press("2")
        page.keyboard.press("Enter")
        wait_sample(page, ids[1])
        ann = annotation(root, ids[0])
        assert ann["annotator"] == "frank" and ann["pam_jax_annotate"]["ranked"] == [1]
        assert errors == []


def test_screenshot(browser, tmp_path):
    root = tmp_path / "rope"
    ids = write_rollouts(root, 12, points=2500, seed=3)
    for i in range(5):     # some progress to show
        s = store_lib.Store(root, annotator="x")
        s.save(i, {"sample_id": ids[i], "version": s.version(i), "ranked": [0]})
    with serve(root, task="rope", annotator="alice") as (store, url), page_on(browser, url) as (page, errors):
        wait_sample(page, ids[5])
        for key in ("4", "2", "7", "e", "1", "6", "x", "8"):
            page.keyboard.press(key)
        give_own_action(page)
        page.mouse.move(5, 5)
        page.wait_for_timeout(300)
        shot = tmp_path / "annotate.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 50_000 and errors == []
    target = os.environ.get("PAM_JAX_ANNOTATE_SCREENSHOT")
    if target:
        pathlib.Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
