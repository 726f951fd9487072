"""The reader's review inside the report: confirm or reject each lesion, add the ones the model
missed, erase what is too much, write a note, and save it all as ``review.json``.

Offline, in the page, on the viewer's follow-up view (:mod:`msnewlesions.report.viewer`):

* **decide**: buttons, a click on a lesion's row, or keys: ``n`` / ``p`` next and previous lesion,
  ``c`` confirm, ``r`` reject (not while typing in the note). Pending lesions are red, confirmed
  ones green; rejected ones are no longer drawn (their row says so, and a click on it takes the
  decision back to be changed);
* **add by a click**: in "add lesion" mode a click on the follow-up seeds a region: the voxels
  6-connected to the clicked one, inside the brain, at most :data:`MAX_RADIUS_MM` from it, whose
  follow-up signal is within ``extent`` (z) of the clicked voxel's; the slider changes the last
  region's extent. Added voxels are blue;
* **paint** and **erase** with NiiVue's pen on the follow-up (the pen's value 3: added; 0: erased);
  what is painted over a pending or confirmed lesion joins it, what is erased from one leaves it;
* **save**: ``review.json`` is downloaded. It holds the checksums of the two input scans (so that
  ``review apply`` never applies it to another pair), the viewer's grid (shape and affine, MNI mm),
  each lesion's decision (``confirmed``, ``rejected`` or ``undecided``), the added and erased voxels
  as ``[i, j, k]`` indices of that grid, the note and the time.

For automated checks ``<body>`` carries ``data-review`` (``ready``), ``data-review-counts``
(JSON: confirmed, rejected, undecided, added voxels, erased voxels) and, after a save,
``data-review-saved`` (the file's JSON). :func:`review_data` is what the page needs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.postprocessing import Lesion
from msnewlesions.review import REVIEW_FORMAT, REVIEW_VERSION

#: How far a region seeded by a click may reach, and its default extent (z below the seed).
MAX_RADIUS_MM = 12.0
DEFAULT_EXTENT_Z = 1.0


def review_data(
    labels: Volume, lesions: Sequence[Lesion], inputs: dict[str, Any], image_step_z: float
) -> dict[str, Any]:
    """What the page's review needs besides the images: the grid, the lesions and the inputs'
    checksums. ``labels``: the lesion numbers on the viewer's (cut) grid."""
    return {
        "format": REVIEW_FORMAT,
        "version": REVIEW_VERSION,
        "shape": [int(s) for s in labels.shape],
        "affine": np.round(labels.affine, 6).tolist(),
        "lesions": [
            {"id": lesion.lesion_id, "mm": [round(float(v), 2) for v in lesion.centroid_mni_mm]}
            for lesion in lesions
        ],
        "inputs": {
            role: {"sha256": str(value.get("sha256", "")), "path": str(value.get("path", ""))}
            for role, value in inputs.items()
        },
        "image_step_z": image_step_z,
        "max_radius_mm": MAX_RADIUS_MM,
    }


STYLE = """
#review{margin:.6rem 0;padding:.6rem .8rem;background:#f6f8fb;border-radius:8px;font-size:.9rem}
#review .row{display:flex;gap:.6rem;flex-wrap:wrap;align-items:center;margin:.3rem 0}
#review button{font-size:.9rem;padding:.2rem .7rem} #review button.on{background:#cfe0ff}
#review textarea{width:100%;min-height:3em;font:inherit}
#viewer tr.decision-confirmed td:last-child{color:#0a7d2c;font-weight:600}
#viewer tr.decision-rejected td{color:#999;text-decoration:line-through}
#viewer tr.decision-rejected td:last-child{text-decoration:none;color:#b00020}
"""


def controls() -> str:
    """The review's buttons, modes, extent slider, note and save button."""
    return (
        '<div id="review"><div class="row"><b>Review</b>'
        '<button id="review-previous" title="previous lesion (p)">&larr; previous</button>'
        '<button id="review-next" title="next lesion (n)">next &rarr;</button>'
        '<button id="review-confirm" title="confirm the selected lesion (c)">confirm</button>'
        '<button id="review-reject" title="reject the selected lesion (r)">reject</button>'
        '<button id="review-confirm-rest">confirm all undecided</button>'
        '<span id="review-status" class="muted"></span></div>'
        '<div class="row muted">Keys: n / p next and previous lesion, c confirm, r reject. '
        '<span style="color:#d00">red</span>: undecided, <span style="color:#080">green</span>: '
        'confirmed, <span style="color:#00c">blue</span>: added; rejected lesions are no longer '
        "drawn (click their row to decide again).</div>"
        '<div class="row">on the follow-up: '
        '<button id="review-mode-look" class="on">look</button>'
        '<button id="review-mode-seed" title="click a missed lesion to add it">add lesion '
        "(click)</button>"
        '<button id="review-mode-paint">paint</button>'
        '<button id="review-mode-erase">erase</button>'
        '<label>extent <input id="review-extent" type="range" min="0.2" max="3" step="0.1" '
        f'value="{DEFAULT_EXTENT_Z}"> <span id="review-extent-value">{DEFAULT_EXTENT_Z:g}'
        "</span> z</label></div>"
        '<textarea id="review-note" placeholder="Note (optional)"></textarea>'
        '<div class="row"><button id="review-save"><b>Save review</b></button>'
        '<span class="muted">downloads review.json; apply it with: msnewlesions review apply '
        "OUTPUT_FOLDER review.json. Lesions left undecided are not in the reviewed mask.</span>"
        "</div></div>"
    )


def decision_cell(lesion_id: int) -> str:
    return f'<td class="decision" data-lesion="{html.escape(str(lesion_id))}">undecided</td>'


SCRIPT = r"""
window.msnlReview = async function (ctx) {
  const {views, goTo, data} = ctx;
  const review = data.review;
  const body = document.body;
  const $ = (id) => document.getElementById(id);
  const follow = views[1];
  const image = follow.volumes[0];
  if (String(image.permRAS) !== '1,2,3') {
    $('review-status').textContent = 'review unavailable: the images are not on an RAS grid';
    body.dataset.review = 'error: not an RAS grid';
    return;
  }
  const [nx, ny, nz] = [image.hdr.dims[1], image.hdr.dims[2], image.hdr.dims[3]];
  const n = nx * ny * nz;
  const idsImage = await niivue.NVImage.loadFromBase64({base64: data.lesion_ids,
                                                        name: 'lesion_ids.nii.gz'});
  const ids = idsImage.img;
  const signal = image.img;
  const added = new Uint8Array(n);
  const erased = new Uint8Array(n);
  const decisions = {};
  const order = review.lesions.map((l) => l.id);
  let current = -1;
  let expected = null;
  let lastRegion = null;
  let lastSeed = null;
  const PENDING = 1, CONFIRMED = 2, ADDED = 3;
  const counts = () => {
    let addedVoxels = 0, erasedVoxels = 0;
    for (let i = 0; i < n; i++) { addedVoxels += added[i]; erasedVoxels += erased[i]; }
    const values = Object.values(decisions);
    const confirmed = values.filter((d) => d === 'confirmed').length;
    const rejected = values.filter((d) => d === 'rejected').length;
    return {confirmed, rejected, undecided: order.length - confirmed - rejected,
            added_voxels: addedVoxels, erased_voxels: erasedVoxels};
  };
  const render = () => {
    const bitmap = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      if (added[i]) bitmap[i] = ADDED;
      else if (ids[i] && !erased[i]) {
        const d = decisions[ids[i]];
        bitmap[i] = d === 'rejected' ? 0 : d === 'confirmed' ? CONFIRMED : PENDING;
      }
    }
    expected = bitmap;
    views.forEach((nv) => { nv.drawBitmap = bitmap.slice(); nv.refreshDrawing(true); });
    for (const cell of document.querySelectorAll('#viewer td.decision')) {
      const d = decisions[Number(cell.dataset.lesion)] || 'undecided';
      cell.textContent = d;
      cell.parentElement.classList.remove('decision-confirmed', 'decision-rejected');
      if (d !== 'undecided') cell.parentElement.classList.add('decision-' + d);
    }
    const c = counts();
    $('review-status').textContent = c.confirmed + ' confirmed, ' + c.rejected + ' rejected, ' +
      c.undecided + ' undecided; ' + c.added_voxels + ' voxels added, ' + c.erased_voxels +
      ' erased';
    body.dataset.reviewCounts = JSON.stringify(c);
  };
  // What the pen changed on the follow-up: painted voxels are added, erased ones leave.
  const takeDrawing = () => {
    const drawn = follow.drawBitmap;
    for (let i = 0; i < n; i++) {
      if (drawn[i] === expected[i]) continue;
      if (drawn[i] === 0) {
        if (added[i]) added[i] = 0;
        else if (ids[i]) erased[i] = 1;
      } else {
        if (ids[i] && !added[i] && erased[i]) erased[i] = 0;
        else if (!ids[i] || decisions[ids[i]] === 'rejected') added[i] = 1;
      }
    }
    lastRegion = null;
    render();
  };
  follow.onDrawingChanged = takeDrawing;
  const select = (index) => {
    if (!order.length) return;
    current = (index + order.length) % order.length;
    const id = order[current];
    const row = document.querySelector('#viewer tr[data-lesion="' + id + '"]');
    if (row) row.click(); else goTo(review.lesions[current].mm);
  };
  const decide = (decision) => {
    if (current < 0) select(0);
    decisions[order[current]] = decision;
    render();
  };
  // Region growing from a clicked voxel of the follow-up (its 8-bit signal: image_step_z z each).
  const grow = (seed, extent) => {
    const [i0, j0, k0] = seed;
    const start = i0 + nx * (j0 + ny * k0);
    const level = signal[start];
    const region = [];
    if (!level) return region;
    const low = Math.max(1, level - extent / review.image_step_z);
    const radius = review.max_radius_mm;
    const seen = new Uint8Array(n);
    const queue = [start];
    seen[start] = 1;
    while (queue.length && region.length < 20000) {
      const v = queue.pop();
      region.push(v);
      const i = v % nx, j = Math.floor(v / nx) % ny, k = Math.floor(v / (nx * ny));
      const next = [[i - 1, j, k], [i + 1, j, k], [i, j - 1, k], [i, j + 1, k], [i, j, k - 1],
                    [i, j, k + 1]];
      for (const [a, b, c] of next) {
        if (a < 0 || b < 0 || c < 0 || a >= nx || b >= ny || c >= nz) continue;
        if ((a - i0) ** 2 + (b - j0) ** 2 + (c - k0) ** 2 > radius * radius) continue;
        const w = a + nx * (b + ny * c);
        if (seen[w] || signal[w] < low) continue;
        seen[w] = 1;
        queue.push(w);
      }
    }
    return region;
  };
  const extent = $('review-extent');
  const seedRegion = () => {
    if (lastRegion) lastRegion.forEach((v) => { added[v] = 0; });
    lastRegion = grow(lastSeed, Number(extent.value)).filter((v) => !added[v]);
    lastRegion.forEach((v) => { added[v] = 1; erased[v] = 0; });
    render();
  };
  extent.addEventListener('input', () => {
    $('review-extent-value').textContent = extent.value;
    if (lastSeed && lastRegion) seedRegion();
  });
  let mode = 'look';
  const setMode = (wanted) => {
    mode = wanted;
    for (const name of ['look', 'seed', 'paint', 'erase']) {
      $('review-mode-' + name).classList.toggle('on', name === mode);
    }
    follow.setDrawingEnabled(mode === 'paint' || mode === 'erase');
    follow.setPenValue(mode === 'erase' ? 0 : ADDED, false);
    body.dataset.reviewMode = mode;
  };
  for (const name of ['look', 'seed', 'paint', 'erase']) {
    $('review-mode-' + name).addEventListener('click', () => setMode(name));
  }
  follow.canvas.addEventListener('pointerup', () => {
    if (mode !== 'seed') return;
    setTimeout(() => {
      lastSeed = Array.from(follow.frac2vox(follow.scene.crosshairPos)).slice(0, 3)
        .map((v) => Math.round(v));
      lastRegion = null;
      seedRegion();
    }, 0);
  });
  $('review-next').addEventListener('click', () => select(current + 1));
  $('review-previous').addEventListener('click', () => select(current - 1));
  $('review-confirm').addEventListener('click', () => decide('confirmed'));
  $('review-reject').addEventListener('click', () => decide('rejected'));
  $('review-confirm-rest').addEventListener('click', () => {
    order.forEach((id) => { if (!decisions[id]) decisions[id] = 'confirmed'; });
    render();
  });
  for (const row of document.querySelectorAll('#viewer tr.lesion-row')) {
    row.addEventListener('click', () => { current = order.indexOf(Number(row.dataset.lesion)); });
  }
  document.addEventListener('keydown', (event) => {
    const target = event.target;
    if (target && (target.tagName === 'TEXTAREA' || target.tagName === 'INPUT')) return;
    const action = {n: () => select(current + 1), p: () => select(current - 1),
                    c: () => decide('confirmed'), r: () => decide('rejected')}[event.key];
    if (action) { event.preventDefault(); action(); }
  });
  const voxels = (mask) => {
    const list = [];
    for (let v = 0; v < n; v++) {
      if (mask[v]) list.push([v % nx, Math.floor(v / nx) % ny, Math.floor(v / (nx * ny))]);
    }
    return list;
  };
  $('review-save').addEventListener('click', () => {
    const saved = {
      format: review.format, version: review.version, inputs: review.inputs,
      grid: {shape: review.shape, affine: review.affine},
      lesions: order.map((id) => ({id, decision: decisions[id] || 'undecided'})),
      added: voxels(added), erased: voxels(erased),
      note: $('review-note').value, saved_at: new Date().toISOString(),
    };
    const text = JSON.stringify(saved);
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([text], {type: 'application/json'}));
    link.download = 'review.json';
    document.body.appendChild(link);
    link.click();
    link.remove();
    body.dataset.reviewSaved = text;
  });
  setMode('look');
  render();
  body.dataset.review = 'ready';
};
"""
