"""A picture of a DICOM SEG over its source series, both read back from the DICOM files.

    python scripts/seg_overlay_png.py SEG_FILE SERIES_FOLDER OUT.png

Draws the source frame that holds the most segment pixels, and the same frame with each
segment's pixels outlined in colour: what a DICOM viewer shows of new_lesions.seg.dcm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import highdicom as hd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from scipy import ndimage


def main(argv: list[str]) -> int:
    seg_path, series, out = Path(argv[0]), Path(argv[1]), Path(argv[2])
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(p) for p in sorted(series.iterdir())]
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(
        [s.SOPInstanceUID for s in sources], segment_numbers=numbers
    )
    best = int(np.argmax(pixels.reshape(len(sources), -1).sum(1)))
    image = sources[best].pixel_array.astype(float)
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.8), dpi=110)
    for axis in axes:
        axis.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image, 99.5))
        axis.axis("off")
    for index in range(len(numbers)):
        inside = pixels[best, :, :, index] > 0
        edge = inside & ~ndimage.binary_erosion(inside)
        overlay = np.zeros((*edge.shape, 4))
        overlay[edge] = (*plt.cm.tab10(index % 10)[:3], 1.0)
        axes[1].imshow(overlay, interpolation="nearest")
    axes[0].set_title(f"follow-up (DICOM), instance {sources[best].InstanceNumber}")
    axes[1].set_title(f"{seg_path.name}: segments outlined")
    figure.tight_layout()
    figure.savefig(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
