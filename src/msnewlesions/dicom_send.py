"""The DICOM objects of a result stored in a PACS with C-STORE (pynetdicom).

``--send-to AET@HOST:PORT`` sends ``new_lesions.seg.dcm`` and ``new_lesions.sr.dcm`` once the
local outputs are complete; a node that refuses them or cannot be reached is one clear error, and
the local outputs stay as they are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msnewlesions.errors import MSNewLesionsError

logger = logging.getLogger(__name__)

#: The application entity title this tool calls with.
CALLING_AET = "MSNEWLESIONS"
_DESTINATION = re.compile(r"^(?P<aet>[^@\\]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class DicomNode:
    """A DICOM node to store into: its AE title, host and port."""

    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """``AET@HOST:PORT`` (``PACS@pacs.hospital.org:104``) as a node; else a clear error."""
        found = _DESTINATION.match(text.strip())
        if found is None or not 0 < int(found["port"]) < 65536:
            raise MSNewLesionsError(
                f"--send-to takes AET@HOST:PORT (an AE title of at most 16 characters, e.g. "
                f"PACS@pacs.example.org:104), not {text!r}."
            )
        return cls(found["aet"].strip(), found["host"], int(found["port"]))

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def send(paths: Sequence[Path], node: DicomNode, timeout_s: float = 30.0) -> None:
    """Store the DICOM files ``paths`` on ``node`` in one association; every one must be
    accepted (status 0x0000), else one error naming the node and what went wrong."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(path) for path in paths]
    if not datasets:
        return
    ae = AE(ae_title=CALLING_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in sorted({str(dataset.SOPClassUID) for dataset in datasets}):
        ae.add_requested_context(sop_class)
    association = ae.associate(node.host, node.port, ae_title=node.aet)
    if not association.is_established:
        reason = "rejected the association" if association.is_rejected else "could not be reached"
        raise MSNewLesionsError(
            f"the DICOM node {node} {reason}; nothing was sent (the local outputs are complete)."
        )
    try:
        for path, dataset in zip(paths, datasets, strict=True):
            status = association.send_c_store(dataset)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                detail = "no answer" if code is None else f"status 0x{int(code):04X}"
                raise MSNewLesionsError(
                    f"the DICOM node {node} did not store {path.name} ({detail}); the local "
                    "outputs are complete."
                )
            logger.info("stored %s on %s", path.name, node)
    finally:
        association.release()
