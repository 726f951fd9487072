"""The reader's review: the report's controls (headless Chromium) and review.json applied."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.review import read_review, reviewed_mask
from tests.test_report import AFFINE, summary

MISSED = (60, 100, 70)  # a bright blob on the follow-up that the "model" did not mark


def _ball(shape: tuple[int, ...], centre: tuple[int, int, int], radius: float) -> np.ndarray:
    grid = np.indices(shape) - np.array(centre)[:, None, None, None]
    return (grid**2).sum(0) <= radius**2


def review_file(tmp_path: Path, **changes: object) -> Path:
    """A review of a 3-lesion mask on a grid shifted by (2, 3, 4) voxels from the MNI grid."""
    affine = AFFINE.copy()
    affine[:3, 3] += [2, 3, 4]
    data: dict[str, object] = {
        "format": "msnewlesions-review",
        "version": 1,
        "inputs": {"baseline": {"sha256": "b" * 64}, "followup": {"sha256": "f" * 64}},
        "grid": {"shape": [50, 50, 50], "affine": affine.tolist()},
        "lesions": [
            {"id": 1, "decision": "confirmed"},
            {"id": 2, "decision": "rejected"},
            {"id": 3, "decision": "undecided"},
        ],
        "added": [[30, 30, 30], [30, 30, 31]],
        "erased": [[8, 7, 6]],
        "note": "one missed",
        "saved_at": "2026-12-07T10:00:00Z",
    }
    data.update(changes)
    path = tmp_path / "review.json"
    path.write_text(json.dumps(data))
    return path


def three_lesions() -> Volume:
    mask = np.zeros((60, 60, 60), np.uint8)
    mask[_ball(mask.shape, (10, 10, 10), 3)] = 1  # 123 voxels: lesion 1 (largest)
    mask[_ball(mask.shape, (40, 40, 10), 2)] = 1  # 33 voxels: lesion 2
    mask[40:42, 10:12, 40:42] = 1  # 8 voxels: lesion 3
    return Volume(mask, AFFINE)


def test_the_reviewed_mask_holds_the_confirmed_lesions_and_the_added_voxels(
    tmp_path: Path,
) -> None:
    mask = three_lesions()
    reviewed, tally = reviewed_mask(mask, read_review(review_file(tmp_path)))
    expected = _ball(mask.shape, (10, 10, 10), 3)
    expected[10, 10, 10] = False  # erased: review voxel (8, 7, 6) + shift (2, 3, 4)
    expected[32, 33, 34] = expected[32, 33, 35] = True  # added, shifted the same way
    np.testing.assert_array_equal(reviewed.array > 0, expected)
    assert tally == {
        "confirmed": 1,
        "rejected": 1,
        "undecided": 1,
        "added_voxels": 2,
        "erased_voxels": 1,
        "voxels_outside_grid": 0,
    }
    kept, _ = reviewed_mask(mask, read_review(review_file(tmp_path)), undecided="keep")
    assert kept.array[40:42, 10:12, 40:42].all()
    assert int(kept.array.sum()) == int(reviewed.array.sum()) + 8


def test_a_review_that_does_not_fit_is_refused_in_one_sentence(tmp_path: Path) -> None:
    mask = three_lesions()
    with pytest.raises(MSNewLesionsError, match="another segmentation"):
        reviewed_mask(
            mask, read_review(review_file(tmp_path, lesions=[{"id": 1, "decision": "confirmed"}]))
        )
    with pytest.raises(MSNewLesionsError, match="unknown decision"):
        read_review(review_file(tmp_path, lesions=[{"id": 1, "decision": "maybe"}]))
    with pytest.raises(MSNewLesionsError, match="not a review"):
        read_review(review_file(tmp_path, format="something-else"))
    with pytest.raises(MSNewLesionsError, match=r"\[i, j, k\]"):
        read_review(review_file(tmp_path, added=[[1, 2]]))


def synthetic_report(tmp_path: Path) -> tuple[Path, Volume]:
    from msnewlesions.report.html import render_report
    from tests.test_report import volumes

    baseline, followup, labels, table = volumes()
    array = followup.array.copy()
    array[_ball(array.shape, MISSED, 3)] += 4.0
    page = tmp_path / "report.html"
    page.write_text(
        render_report(summary(), table, baseline, Volume(array, AFFINE), labels), encoding="utf-8"
    )
    return page, labels


def click_on_voxel(session: object, mm: list[float]) -> None:
    """A real mouse click on the follow-up view where it shows the point ``mm``."""
    at = json.loads(
        str(
            session.evaluate(  # type: ignore[attr-defined]
                "(() => { const nv = window.msnlViews[1];"
                f" nv.scene.crosshairPos = nv.mm2frac({json.dumps(mm)}); nv.drawScene();"
                " const p = nv.frac2canvasPos(nv.mm2frac(" + json.dumps(mm) + "));"
                " const r = nv.canvas.getBoundingClientRect();"
                " const s = r.width / nv.canvas.width;"
                " return JSON.stringify([r.left + p[0] * s, r.top + p[1] * s]); })()"
            )
        )
    )
    for kind in ("mousePressed", "mouseReleased"):
        session.call(  # type: ignore[attr-defined]
            "Input.dispatchMouseEvent", type=kind, x=at[0], y=at[1], button="left", clickCount=1
        )


def press(session: object, key: str) -> None:
    code = ord(key.upper())
    for kind in ("rawKeyDown", "char", "keyUp"):
        extra = {"text": key} if kind == "char" else {}
        session.call(  # type: ignore[attr-defined]
            "Input.dispatchKeyEvent", type=kind, key=key, code=f"Key{key.upper()}",
            windowsVirtualKeyCode=code, **extra,
        )  # fmt: skip


def review_in_browser(
    page: Path, profile: Path, downloads: Path, seed_mm: list[float], extent: float | None = None
) -> dict:
    """Open ``page``, confirm lesion 1 (keys n, c), reject lesion 2 (n, r), add a lesion by a
    click at ``seed_mm`` on the follow-up (then set its extent, if given), write a note and
    save; return the saved file, with the voxels first added as ``first_added``."""
    from tests.browser import DevToolsPage

    session = DevToolsPage(page, profile)
    try:
        session.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        assert session.wait_for("document.body.dataset.viewer") == "ready"
        assert session.evaluate("document.body.dataset.review") == "ready"
        for key in ("n", "c", "n", "r"):
            press(session, key)
        counts = json.loads(str(session.evaluate("document.body.dataset.reviewCounts")))
        assert (counts["confirmed"], counts["rejected"]) == (1, 1), counts
        session.evaluate("document.getElementById('review-mode-seed').click()")
        click_on_voxel(session, seed_mm)
        session.wait_for("JSON.parse(document.body.dataset.reviewCounts).added_voxels > 0", 20)
        first = json.loads(str(session.evaluate("document.body.dataset.reviewCounts")))
        if extent is not None:
            session.evaluate(
                "(() => { const s = document.getElementById('review-extent');"
                f" s.value = '{extent}'; s.dispatchEvent(new Event('input')); }})()"
            )
        session.evaluate("document.getElementById('review-note').value = 'checked by test'")
        session.evaluate("document.getElementById('review-save').click()")
        session.wait_for("document.body.dataset.reviewSaved", 20)
        for _ in range(100):
            if (downloads / "review.json").exists():
                break
            time.sleep(0.1)
        saved = dict(json.loads((downloads / "review.json").read_text()))
        return saved | {"first_added": first["added_voxels"]}
    finally:
        session.close()


def test_the_report_records_decisions_and_a_clicked_lesion_in_review_json(tmp_path: Path) -> None:
    """Headless Chromium over DevTools (skips without it)."""
    page, labels = synthetic_report(tmp_path)
    centre = labels.index_to_world(np.array([MISSED], dtype=float))[0].tolist()
    saved = review_in_browser(page, tmp_path / "profile", tmp_path / "downloads", centre, 2.0)
    assert {item["id"]: item["decision"] for item in saved["lesions"]} == {
        1: "confirmed",
        2: "rejected",
    }
    assert saved["note"] == "checked by test"
    review = read_review(tmp_path / "downloads" / "review.json")
    reviewed, tally = reviewed_mask(labels.with_array((labels.array > 0).astype(np.uint8)), review)
    grown = reviewed.array.astype(bool) & ~(labels.array == 1)
    # The click grew the missed blob (a ball of radius 3: 123 voxels, 4 z above noise of 1 z):
    # within 1 z of the clicked voxel, part of it; the extent widened to 2 z, nearly all of it
    # and little beyond (a few noise voxels above 2 z touch it).
    blob = _ball(labels.shape, MISSED, 3)
    assert grown.sum() == tally["added_voxels"] > saved["first_added"] >= 0.3 * blob.sum()
    assert (grown & blob).sum() >= 0.9 * blob.sum() and (grown & ~blob).sum() <= 0.1 * blob.sum()
    assert reviewed.array[labels.array == 1].all() and not reviewed.array[labels.array == 2].any()


def test_the_pen_erases_a_lesions_voxels_and_paints_added_ones(tmp_path: Path) -> None:
    """Headless Chromium over DevTools: in erase mode a click on lesion 1 removes voxels from it;
    in paint mode a click on the missed blob adds voxels; both reach the saved review."""
    from tests.browser import DevToolsPage

    page, labels = synthetic_report(tmp_path)
    session = DevToolsPage(page, tmp_path / "profile")
    try:
        assert session.wait_for("document.body.dataset.viewer") == "ready"
        centre = labels.index_to_world(np.array([[40.0, 50.0, 50.0]]))[0].tolist()
        session.evaluate("document.getElementById('review-mode-erase').click()")
        click_on_voxel(session, centre)
        session.wait_for("JSON.parse(document.body.dataset.reviewCounts).erased_voxels > 0", 20)
        missed = labels.index_to_world(np.array([MISSED], dtype=float))[0].tolist()
        session.evaluate("document.getElementById('review-mode-paint').click()")
        click_on_voxel(session, missed)
        session.wait_for("JSON.parse(document.body.dataset.reviewCounts).added_voxels > 0", 20)
        session.evaluate("document.getElementById('review-save').click()")
        saved = json.loads(str(session.wait_for("document.body.dataset.reviewSaved", 20)))
    finally:
        session.close()
    # The saved voxels are indices of the viewer's grid: carried to the labels' grid by position.
    to_labels = np.linalg.inv(labels.affine) @ np.asarray(saved["grid"]["affine"])

    def on_labels(voxels: list[list[int]]) -> set[tuple[int, ...]]:
        moved = (to_labels @ np.c_[voxels, np.ones(len(voxels))].T)[:3].T
        return {tuple(int(i) for i in np.rint(v)) for v in moved}

    erased, added = on_labels(saved["erased"]), on_labels(saved["added"])
    assert erased and added
    # Erased voxels were lesion 1's; painted ones lie at the missed blob (the pen's few voxels).
    assert all(labels.array[v] == 1 for v in erased)
    assert all(np.linalg.norm(np.subtract(v, MISSED)) <= 3 for v in added)
