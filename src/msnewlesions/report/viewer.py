"""The report's viewer: both visits side by side in NiiVue, linked cursors, the new lesions
drawn on both, and a lesion list that moves both views to a lesion. Offline and in the page itself.

NiiVue (``@niivue/niivue``, BSD-2-Clause) is a pinned asset of the package
(``report/assets``: ``niivue.umd.js``, its record ``niivue.json`` and its licence;
``scripts/refresh_niivue.py`` refreshes it from the npm registry). The volumes are the
preprocessed pair the network saw (MNI grid, cut to what they hold) and the lesion mask, embedded
as gzipped NIfTI in base64: the images as 8-bit (their z-scores from -3 to 5 in 256 steps, scaled
back by the header), the mask as NiiVue's drawing layer (8-bit, on the scans' grid), shown filled
at the chosen opacity or as an outline only (NiiVue's drawing rim, in the plane shown).

Moving around: the wheel, a click, NiiVue's own keys, and on a clicked view the arrow keys (one
slice) and Page Up / Page Down (five) through the plane shown; the two views follow each other.

For automated checks the page sets ``data-viewer="ready"`` on ``<body>`` once both scans and the
lesions are loaded and drawn (the GPU's queued work done), ``data-viewer="error: <reason>"`` if
they cannot be (no WebGL2, a failed load), ``data-ready-ms`` (milliseconds from the page's start
to ready) with the steps' times in ``data-timing``, and after each move
``data-cursor-baseline`` / ``data-cursor-followup`` (the cursor in MNI mm, JSON) and
``data-selected-lesion``; ``window.msnlViews`` holds the two NiiVue views. ``#lesion=N`` in the
address selects lesion N once ready, as a click on its row does.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.postprocessing import Lesion
from msnewlesions.preprocessing.intensity import brain_bounding_box, crop
from msnewlesions.report import review

#: The z-score range the 8-bit images keep (the report's grey window is -2.5 to 4), and the z
#: of one of their 254 steps.
IMAGE_RANGE = (-3.0, 5.0)
IMAGE_STEP_Z = (IMAGE_RANGE[1] - IMAGE_RANGE[0]) / 254


@functools.lru_cache(maxsize=1)
def niivue_script() -> str:
    """NiiVue's UMD bundle (defines the global ``niivue``)."""
    return (resources.files("msnewlesions.report") / "assets" / "niivue.umd.js").read_text(
        encoding="utf-8"
    )


@functools.lru_cache(maxsize=1)
def niivue_record() -> dict[str, Any]:
    """Version, licence and checksums of the embedded NiiVue."""
    text = (resources.files("msnewlesions.report") / "assets" / "niivue.json").read_text()
    record: dict[str, Any] = json.loads(text)
    return record


def _nifti_base64(
    array: np.ndarray, affine: np.ndarray, slope: float = 1.0, inter: float = 0.0
) -> str:
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_slope_inter(slope, inter)
    image.set_qform(affine, code=4)  # MNI
    image.set_sform(affine, code=4)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0)).decode()


def encode_image(volume: Volume) -> str:
    """An image as base64 gzipped NIfTI, 8-bit over :data:`IMAGE_RANGE` (zero stays zero)."""
    low, high = IMAGE_RANGE
    step = IMAGE_STEP_Z
    values = np.clip(volume.array, low, high)
    quantised = np.round((values - low) / step).astype(np.uint8) + 1
    quantised[volume.array == 0] = 0  # outside the brain
    # Stored 1..255 map back to low..high; 0 maps to low - step (below the window: black).
    return _nifti_base64(quantised, volume.affine, step, low - step)


def encode_mask(labels: Volume) -> str:
    """The new lesions as an 8-bit mask (1 on every lesion), NiiVue's drawing layer's format."""
    return _nifti_base64((labels.array > 0).astype(np.uint8), labels.affine)


def _cut_to_content(*volumes: Volume) -> tuple[Volume, ...]:
    content = np.zeros(volumes[0].shape, dtype=bool)
    for volume in volumes:
        content |= volume.array != 0
    if not content.any():
        return volumes
    box = brain_bounding_box(volumes[0].with_array(content.astype(np.uint8)), margin_mm=1.0)
    return tuple(crop(volume, box) for volume in volumes)


_STYLE = """
#viewer{margin:1rem 0} #viewer .panes{display:flex;gap:.6rem;flex-wrap:wrap}
#viewer .pane{flex:1 1 360px;min-width:300px} #viewer .frame{height:440px;position:relative}
#viewer canvas{width:100%;height:100%;background:#000;border-radius:6px;display:block}
#viewer .controls{display:flex;gap:1rem;flex-wrap:wrap;align-items:center;margin:.5rem 0;
font-size:.9rem}
#viewer table{border-collapse:collapse;font-size:.9rem;margin-top:.4rem}
#viewer td,#viewer th{padding:.15rem .7rem;border-bottom:1px solid #e3e3e3;text-align:left}
#viewer tr.lesion-row{cursor:pointer} #viewer tr.lesion-row:hover{background:#f2f6ff}
#viewer tr.selected{background:#dde8ff} #viewer-fallback{background:#fff4e5;padding:.6rem 1rem}
@media print{#viewer,#viewer-fallback{display:none}}
"""

_SCRIPT = r"""
(async function () {
  const body = document.body;
  const marks = {start: Math.round(performance.now())};
  const mark = (name) => { marks[name] = Math.round(performance.now()); };
  const data = JSON.parse(document.getElementById('viewer-data').textContent);
  const fail = (reason) => {
    body.dataset.viewer = 'error: ' + reason;
    document.getElementById('viewer').hidden = true;
    const note = document.getElementById('viewer-fallback');
    note.hidden = false;
    note.textContent = 'The interactive viewer cannot run here (' + reason +
      '); the static views below are the report.';
  };
  try {
    if (!document.createElement('canvas').getContext('webgl2')) {
      fail('this browser has no WebGL2');
      return;
    }
    const background = body.style.backgroundColor;
    const attach = async (canvas) => {
      const nv = new niivue.Niivue({backColor: [0, 0, 0, 1], crosshairColor: [1, 0.8, 0, 0.8],
                                    crosshairWidth: 1, crosshairGap: 8, show3Dcrosshair: true,
                                    isColorbar: false});
      await nv.attachTo(canvas);
      mark(canvas + ' attached');
      return nv;
    };
    // One view after the other: the second reuses the shaders the browser compiled for the first.
    const views = [await attach('viewer-baseline'), await attach('viewer-followup')];
    const scan = (image, name) => niivue.NVImage.loadFromBase64(
      {base64: image, name: name, colormap: 'gray', cal_min: -2.5, cal_max: 4.0,
       trustCalMinMax: true});
    const [baseline, followup, lesions] = await Promise.all([
      scan(data.baseline, 'baseline.nii.gz'), scan(data.followup, 'followup.nii.gz'),
      niivue.NVImage.loadFromBase64({base64: data.lesions, name: 'new_lesions.nii.gz'})]);
    mark('decoded');
    [baseline, followup].forEach((image, i) => {
      const nv = views[i];
      nv.addVolume(image);
      // The lesions as NiiVue's drawing layer (value 1: red in its default colours): a byte
      // texture on the scan's own grid; an overlay volume would cost a resampling pass and a
      // second rendering of the scan.
      nv.setDrawOpacity(0.5);
      if (!nv.loadDrawing(lesions)) throw new Error('the lesion mask does not fit the scans');
      nv.setSliceType(nv.sliceTypeAxial);
      mark(nv.canvas.id + ' loaded');
    });
    // Wait until both views have drawn (reading one pixel back waits for the queued GPU work),
    // so that "ready" means on screen, not only handed to the GPU.
    views.forEach((nv) => {
      nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, new Uint8Array(4));
    });
    mark('drawn');
    body.style.backgroundColor = background;
    views[0].broadcastTo(views[1], {'2d': true, '3d': true});
    views[1].broadcastTo(views[0], {'2d': true, '3d': true});
    const record = () => {
      const at = (nv) => JSON.stringify(Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3)
        .map((v) => Math.round(v * 100) / 100));
      body.dataset.cursorBaseline = at(views[0]);
      body.dataset.cursorFollowup = at(views[1]);
    };
    views.forEach((nv) => { nv.onLocationChange = record; });
    const goTo = (mm) => {
      for (const nv of views) {
        nv.scene.crosshairPos = nv.mm2frac(mm);
        nv.drawScene();
      }
      record();
    };
    // Keys on a view: arrow up/down one slice, Page up/down five, through the plane shown
    // (axial: z, coronal: y, sagittal: x; with all three shown, z). NiiVue's own keys stay.
    const steps = {ArrowUp: 1, ArrowDown: -1, PageUp: 5, PageDown: -5};
    views.forEach((nv) => nv.canvas.addEventListener('keydown', (event) => {
      const step = steps[event.key];
      if (step === undefined) return;
      event.preventDefault();
      const axis = {1: 1, 2: 0}[nv.opts.sliceType] ?? 2;
      const move = [0, 0, 0];
      move[axis] = step;
      nv.moveCrosshairInVox(...move);
      goTo(Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3));
    }));
    for (const row of document.querySelectorAll('#viewer tr.lesion-row')) {
      row.addEventListener('click', () => {
        for (const other of document.querySelectorAll('#viewer tr.selected')) {
          other.classList.remove('selected');
        }
        row.classList.add('selected');
        body.dataset.selectedLesion = row.dataset.lesion;
        goTo(JSON.parse(row.dataset.mm));
      });
    }
    const slicing = document.getElementById('viewer-slicing');
    slicing.addEventListener('change', () => {
      views.forEach((nv) => nv.setSliceType(Number(slicing.value)));
    });
    const opacity = document.getElementById('viewer-opacity');
    const outline = document.getElementById('viewer-outline');
    // Outline mode: NiiVue's drawing rim (one screen pixel where the mask changes, in the shown
    // plane) opaque, the inside nearly clear so the signal under the lesion shows.
    const shade = () => views.forEach((nv) => {
      nv.drawRimOpacity = outline.checked ? 1.0 : -1;
      nv.setDrawOpacity(outline.checked ? 0.01 : Number(opacity.value));
    });
    opacity.addEventListener('input', shade);
    outline.addEventListener('change', shade);
    shade();  // the controls' state (a reloaded page keeps it)
    const low = document.getElementById('viewer-low');
    const high = document.getElementById('viewer-high');
    const window_ = () => views.forEach((nv) => {
      nv.volumes[0].cal_min = Number(low.value);
      nv.volumes[0].cal_max = Number(high.value);
      nv.updateGLVolume();
    });
    low.addEventListener('change', window_);
    high.addEventListener('change', window_);
    record();
    window.msnlViews = views;  // for automated checks
    if (window.msnlReview && data.review) await window.msnlReview({views, goTo, data});
    mark('ready');
    body.dataset.timing = JSON.stringify(marks);
    body.dataset.readyMs = String(marks.ready);
    body.dataset.viewer = 'ready';
    const wanted = /lesion=(\d+)/.exec(window.location.hash);
    if (wanted) {
      const row = document.querySelector('#viewer tr[data-lesion="' + wanted[1] + '"]');
      if (row) row.click();
    }
  } catch (error) {
    fail(error && error.message ? error.message : String(error));
  }
})();
"""


def lesion_rows(lesions: Sequence[Lesion]) -> str:
    rows = []
    for lesion in lesions:
        mm = json.dumps([round(float(v), 2) for v in lesion.centroid_mni_mm])
        rows.append(
            f'<tr class="lesion-row" data-lesion="{lesion.lesion_id}" data-mm="{html.escape(mm)}">'
            f"<td>{lesion.lesion_id}</td><td>{lesion.volume_mm3:.0f}</td>"
            f"<td>{html.escape(lesion.location or 'n/a')}</td>"
            f"<td>{lesion.max_probability:.2f}</td>{review.decision_cell(lesion.lesion_id)}</tr>"
        )
    return "".join(rows)


def viewer_section(
    baseline: Volume,
    followup: Volume,
    labels: Volume,
    lesions: Sequence[Lesion],
    inputs: dict[str, Any] | None = None,
) -> str:
    """The viewer's HTML, its data and its scripts (NiiVue's included), with the reader's review
    (:mod:`msnewlesions.report.review`; ``inputs``: the input scans' paths and checksums, which
    the saved review carries). The volumes are cut to the box of what either visit or the
    lesions hold (plus one voxel): the viewer's set-up cost grows with the voxel count."""
    baseline, followup, labels = _cut_to_content(baseline, followup, labels)
    data = {
        "baseline": encode_image(baseline),
        "followup": encode_image(followup),
        "lesions": encode_mask(labels),
        "lesion_ids": _nifti_base64(labels.array.astype(np.uint16), labels.affine),
        "review": review.review_data(labels, lesions, inputs or {}, IMAGE_STEP_Z),
    }
    record = niivue_record()
    table = (
        "<table><tr><th>lesion</th><th>volume (mm&sup3;)</th><th>location</th>"
        f"<th>max. probability</th><th>decision</th></tr>{lesion_rows(lesions)}</table>"
        if lesions
        else "<p>No new lesion: scroll both visits to review them.</p>"
    )
    return (
        f"<style>{_STYLE}{review.STYLE}</style>"
        '<p id="viewer-fallback" hidden></p>'
        '<div id="viewer"><div class="controls">'
        '<label>view <select id="viewer-slicing"><option value="0">axial</option>'
        '<option value="1">coronal</option><option value="2">sagittal</option>'
        '<option value="3">all three</option></select></label>'
        '<label>lesion overlay <input id="viewer-opacity" type="range" min="0" max="1" '
        'step="0.05" value="0.5"></label>'
        '<label><input id="viewer-outline" type="checkbox"> outline the lesions</label>'
        '<label>window <input id="viewer-low" type="number" step="0.5" value="-2.5" '
        'style="width:4em"> to <input id="viewer-high" type="number" step="0.5" value="4" '
        'style="width:4em"> (z)</label></div>'
        '<div class="panes"><div class="pane"><b>Baseline</b><div class="frame">'
        '<canvas id="viewer-baseline" tabindex="0"></canvas></div></div>'
        '<div class="pane"><b>Follow-up</b>'
        '<div class="frame"><canvas id="viewer-followup" tabindex="0"></canvas></div></div></div>'
        f"{table}{review.controls()}"
        '<p class="muted">Click a lesion to centre both visits on it. Move through the slices '
        "with the wheel, or click a view and use the arrow keys (one slice) and Page Up / Page "
        "Down (five); right-drag sets a view's window; the cursors are linked. Both visits as "
        "the network saw them: registered, in MNI space. "
        f"Viewer: NiiVue {html.escape(str(record['version']))} "
        f"({html.escape(str(record['license']))}).</p></div>"
        '<script id="viewer-data" type="application/json">'
        f"{json.dumps(data)}</script>"
        f"<script>{niivue_script()}</script><script>{review.SCRIPT}</script>"
        f"<script>{_SCRIPT}</script>"
    )
