"""report.html: self-contained, says what it found, and renders in a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.io import Volume
from msnewlesions.postprocessing import lesion_labels, lesion_table
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.quality import QualityReport
from msnewlesions.report.html import render_report
from msnewlesions.segment import SegmentationSummary

AFFINE = np.array([[1.0, 0, 0, -60], [0, 1, 0, -70], [0, 0, 1, -50], [0, 0, 0, 1]])


def volumes() -> tuple[Volume, Volume, Volume, list]:
    rng = np.random.default_rng(0)
    baseline = rng.normal(0, 1, (120, 140, 100)).astype(np.float32)
    followup = baseline + rng.normal(0, 0.2, baseline.shape).astype(np.float32)
    probability = np.zeros(baseline.shape, np.float32)
    for centre, radius in (((40, 50, 50), 4), ((80, 90, 40), 2.5)):
        grid = np.indices(baseline.shape) - np.array(centre)[:, None, None, None]
        ball = (grid**2).sum(0) <= radius**2
        followup[ball] += 3.0
        probability[ball] = 0.9
    labels, _ = lesion_labels(Volume(probability, AFFINE))
    identity = registration.transform_from_matrix(np.eye(4))
    table = lesion_table(labels, labels, Volume(probability, AFFINE), identity)
    return Volume(baseline, AFFINE), Volume(followup, AFFINE), labels, table


WARNING = "the two timepoints correlate weakly inside the brain (0.42)"


def summary(
    count: int = 2, slice_matching: bool = True, slice_matches: list | None = None
) -> SegmentationSummary:
    qc = QualityReport(
        timepoint_correlation_in_brain=0.42,
        brain_mask_template_dice=0.85,
        brain_volume_ml=1300.0,
        registration_refinement_shift_mm=0.3,
        edge_alignment=0.91,
        edge_residual_shift_mm=[0.1, -0.2, 0.05],
        voxel_size_mm={"baseline_in": [1.0, 1.0, 3.0], "followup_in": [1.0, 1.0, 1.0]},
        shape={},
        warnings=[WARNING],
    )
    return SegmentationSummary(
        new_lesion_count=count,
        new_lesion_volume_mm3=0.0,
        threshold=0.5,
        min_lesion_mm3=3.0,
        min_depth_mm=0.0,
        slice_matching=slice_matching,
        slice_matches=slice_matches or [],
        model="test",
        qc=qc,
        warnings=list(qc.warnings),
        seconds={},
        inputs={"baseline": {"path": "b.nii.gz"}, "followup": {"path": "f.nii.gz"}},
        versions={},
    )


def test_report_is_self_contained_with_four_views_per_lesion_and_a_registration_check() -> None:
    baseline, followup, labels, table = volumes()
    page = render_report(summary(), table, baseline, followup, labels)
    assert re.search(r"2 new lesions \(0\.\d\d ml\): ", page)
    assert page.count('class="lesion"') == 2
    assert page.count('alt="registration check: baseline edges on the follow-up"') == 2
    # The pair's check runs through the lesions' own axial slices.
    lesion_slices = {
        round(float(baseline.world_to_index(np.array([x.centroid_mni_mm]))[0][2])) for x in table
    }
    checks = re.findall(r'alt="registration check, axial slice (\d+)"', page)
    assert sorted(int(k) for k in checks) == sorted(lesion_slices)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 8 + len(lesion_slices)
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched: opens offline
    assert 'class="warning"' in page and "correlate weakly" in page
    assert "expert review" in page


def test_a_patient_without_new_lesions_is_told_so_plainly() -> None:
    baseline, followup, labels, _ = volumes()
    page = render_report(summary(0), [], baseline, followup, labels.with_array(labels.array * 0))
    assert "No new lesion was found." in page and 'class="lesion"' not in page
    # The registration check is still there: three slices through the brain.
    assert len(re.findall(r'alt="registration check, axial slice \d+"', page)) == 3


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    baseline, followup, labels, table = volumes()
    page = tmp_path / "report.html"
    page.write_text(render_report(summary(), table, baseline, followup, labels), encoding="utf-8")
    screenshot = tmp_path / "report.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,1400",
        f"--screenshot={screenshot}",
        page.as_uri(),
    ]
    subprocess.run([browser, *flags], check=True, capture_output=True, timeout=120)
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.parametrize(
    ("slice_matching", "matches", "expected"),
    [
        (
            True,
            [
                {"axis": 2, "resliced": "followup", "thickness_mm": 4.0},
                {"axis": 0, "resliced": "baseline", "thickness_mm": 3.25},
            ],
            "follow-up seen through 4 mm slices along z (across axial slices), like the other "
            "scan; baseline seen through 3.25 mm slices along x (left-right), like the other scan",
        ),
        (True, [], "not needed"),
        (False, [], "off (--no-slice-matching)"),
    ],
)
def test_the_report_says_what_slice_matching_did(
    slice_matching: bool, matches: list, expected: str
) -> None:
    baseline, followup, labels, table = volumes()
    page = render_report(summary(2, slice_matching, matches), table, baseline, followup, labels)
    row = re.search(r"<td>Slice matching before the comparison</td><td>([^<]*)</td>", page)
    assert row is not None
    assert expected in row.group(1)


def test_the_viewer_travels_inside_the_page_with_its_licence_recorded(tmp_path: Path) -> None:
    from msnewlesions.report.viewer import niivue_record, niivue_script

    baseline, followup, labels, table = volumes()
    page = render_report(summary(), table, baseline, followup, labels)
    record = niivue_record()
    assert record["license"] == "BSD-2-Clause" and record["version"] in page
    assert niivue_script() in page  # the script itself, not a link to it
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing from a network
    # One row per lesion in the viewer's list, with its location, and the static views kept.
    assert page.count('class="lesion-row"') == 2
    assert page.count('class="lesion" id="lesion-') == 2
    static = render_report(summary(), table, baseline, followup, labels, interactive=False)
    assert 'id="viewer"' not in static and 'class="lesion" id="lesion-1"' in static


def test_without_webgl2_the_page_says_so_and_keeps_the_static_views(tmp_path: Path) -> None:
    from tests import browser

    baseline, followup, labels, table = volumes()
    page = tmp_path / "report.html"
    page.write_text(render_report(summary(), table, baseline, followup, labels), encoding="utf-8")
    flags = browser.FLAGS
    try:
        browser.FLAGS = [*flags, "--disable-webgl", "--disable-3d-apis"]
        loaded = browser.open_page(page, tmp_path / "profile")
    finally:
        browser.FLAGS = flags
    assert loaded.body["data-viewer"] == "error: this browser has no WebGL2"
    assert loaded.console_errors == []


def test_wheel_and_keys_move_both_visits_through_the_slices_together(tmp_path: Path) -> None:
    """Headless Chromium over DevTools (skips without it): a wheel turn on the baseline moves
    both views' cursors through the axial slices; after a click on a view, the arrow keys move
    one slice (1 mm on this grid) and Page Up five, on both views."""
    import json

    from tests.browser import DevToolsPage

    baseline, followup, labels, table = volumes()
    page = tmp_path / "report.html"
    page.write_text(render_report(summary(), table, baseline, followup, labels), encoding="utf-8")
    session = DevToolsPage(page, tmp_path / "profile", "lesion=1")
    try:
        assert session.wait_for("document.body.dataset.viewer") == "ready"

        def cursors() -> tuple[list[float], list[float]]:
            both = [
                json.loads(str(session.evaluate(f"document.body.dataset.{name}")))
                for name in ("cursorBaseline", "cursorFollowup")
            ]
            return both[0], both[1]

        start, other = cursors()
        assert start == other
        x, y = session.centre_of("viewer-baseline")
        for _ in range(3):
            session.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=y, deltaX=0,
                         deltaY=-100)  # fmt: skip
        wheeled, other = cursors()
        assert wheeled == other and abs(wheeled[2] - start[2]) >= 2  # three slices, in z
        session.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left",
                     clickCount=1)  # fmt: skip
        session.call("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left",
                     clickCount=1)  # fmt: skip
        for key, code, step in (("ArrowUp", 38, 1), ("ArrowDown", 40, -1), ("PageUp", 33, 5)):
            before, _ = cursors()
            session.call("Input.dispatchKeyEvent", type="rawKeyDown", key=key, code=key,
                         windowsVirtualKeyCode=code)  # fmt: skip
            session.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=key,
                         windowsVirtualKeyCode=code)  # fmt: skip
            after, other = cursors()
            assert after == other, key
            # The key snaps the cursor to the voxel centres (a click may leave it between them).
            assert all(abs(a - b) <= 0.5 for a, b in zip(after[:2], before[:2], strict=True)), key
            assert abs(after[2] - before[2] - step) <= 0.5, key
    finally:
        session.close()
