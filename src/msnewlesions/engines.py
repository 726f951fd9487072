"""Inference engines for the networks' passes on the CPU: PyTorch, ONNX Runtime, OpenVINO.

PyTorch is the reference and the training engine. ONNX Runtime and OpenVINO run the same network
from an ONNX graph exported from the weights the project already loads safely (a state dict read
with ``weights_only``): the graph is written once into a cache folder, under a name made from the
SHA-256 of those weights, and is a graph only (protocol buffers), never a file that runs code.
The cache is the user's (``$XDG_CACHE_HOME/msnewlesions/engines``, else
``~/.cache/msnewlesions/engines``); ``MSNEWLESIONS_ENGINE_CACHE`` names another one, as the
container does for the graphs it ships ready-made. A cache that cannot be written is not an
error: the graph is then exported into a temporary folder for the run (about a second a network).

``"auto"`` takes OpenVINO where it is installed and the device is the CPU, else PyTorch. Measured
on a 64^3 window of the shipped lesion network (fold 0, 2 threads): on a 2-core AMD EPYC with
AVX2 and no AVX-512, PyTorch float32 (oneDNN convolutions) 0.22 s, ONNX Runtime 0.25 s, OpenVINO
0.14 s; on a 2-core AMD EPYC with AVX-512 BF16, PyTorch 0.38 s in float32 and 0.11 s in
bfloat16, ONNX Runtime 0.29 s (float32 only), OpenVINO 0.14 s in float32 and 0.075 s in
bfloat16. OpenVINO runs the precision :mod:`msnewlesions.precision` resolves (its bfloat16 where
the CPU has it); ONNX Runtime runs float32 whatever the precision.

Nothing here reaches the network: OpenVINO is imported without its usage telemetry
(:func:`import_openvino`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from msnewlesions.atomic import atomic_file
from msnewlesions.errors import MSNewLesionsError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "onnxruntime", "openvino"]
ENGINES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
#: The module each engine other than PyTorch needs.
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
#: The ONNX operator set the graphs are exported with.
OPSET = 17
#: Environment variable naming the folder of exported graphs (else the user's cache folder).
CACHE_VARIABLE = "MSNEWLESIONS_ENGINE_CACHE"


def engine_installed(engine: str) -> bool:
    """Whether ``engine``'s package can be imported here (PyTorch always can)."""
    module = _MODULES.get(engine)
    return module is None or importlib.util.find_spec(module) is not None


def resolve_engine(engine: str, device: str = "cpu") -> Literal["torch", "onnxruntime", "openvino"]:
    """The engine ``engine`` means on ``device``: ``"auto"`` is OpenVINO on the CPU where it is
    installed, else PyTorch; ONNX Runtime and OpenVINO are CPU engines here."""
    if engine not in ENGINES:
        raise MSNewLesionsError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}.")
    if engine == "auto":
        return "openvino" if device == "cpu" and engine_installed("openvino") else "torch"
    if engine != "torch" and device != "cpu":
        raise MSNewLesionsError(
            f"the {engine} engine runs on the CPU; on {device} use --engine torch or auto."
        )
    if not engine_installed(engine):
        raise MSNewLesionsError(
            f"the {engine} engine is not installed; pip install {_MODULES[engine]} "
            "(or use --engine auto)."
        )
    return engine  # type: ignore[return-value]


def import_openvino() -> ModuleType:
    """``openvino``, imported without its usage telemetry.

    ``import openvino`` imports its model converter, which sends an "import" event to Google
    Analytics (package ``openvino_telemetry``) unless the user has opted out (a consent file in
    the home folder); it also writes a client ID under ``~/intel``. This tool makes no network
    call at run time and writes nothing outside its outputs and caches: while OpenVINO is first
    imported, ``openvino_telemetry`` cannot be, so the converter takes its own no-op stand-in.
    Where the process imported either package before, they are left as they are.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    blocked = "openvino_telemetry" not in sys.modules
    if blocked:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        import openvino
    finally:
        if blocked:
            del sys.modules["openvino_telemetry"]
    return openvino


def cache_folder() -> Path:
    """Where exported graphs are kept: ``$MSNEWLESIONS_ENGINE_CACHE``, else the user's cache."""
    named = os.environ.get(CACHE_VARIABLE)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "msnewlesions" / "engines"


def weights_digest(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's names, shapes, types and values, in name order: one network's
    weights, whichever file (or zip) they were read from."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        array = value.detach().cpu().contiguous().numpy() if hasattr(value, "detach") else value
        array = np.asarray(array)
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def export_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``network`` (in inference mode) as an ONNX graph at ``path``, atomically, with its
    three spatial axes free."""
    import torch

    axes = {2: "depth", 3: "height", 4: "width"}
    with atomic_file(path) as partial, torch.no_grad(), warnings.catch_warnings():
        # The exporter warns about every normalisation layer in inference mode; not for users.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(partial),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def exported_graph(
    key: str, export: Callable[[Path], Path], folder: Path | None = None
) -> tuple[Path, bool]:
    """The graph named ``key`` in the cache (``folder`` or :func:`cache_folder`), exported by
    ``export(path)`` when it is not there yet. Returns its path and whether it is temporary (the
    cache could not be written; the caller removes it after use)."""
    folder = cache_folder() if folder is None else folder
    path = folder / f"{key}.onnx"
    if path.is_file():
        return path, False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        logger.info("exporting a network for the CPU engines into %s (once)", path)
        return export(path), False
    except OSError as error:
        logger.warning(
            "cannot write %s (%s): this network's graph is exported for this run only (about a "
            "second); %s=FOLDER names a writable cache that keeps it",
            folder,
            error,
            CACHE_VARIABLE,
        )
    temporary = Path(tempfile.mkdtemp(prefix="msnewlesions-engine-")) / path.name
    return export(temporary), True


def engine_precision(engine: str, precision: str) -> Literal["float32", "bfloat16"]:
    """The number format ``engine`` runs for the resolved ``precision``: ONNX Runtime's CPU
    kernels are float32 only."""
    return "bfloat16" if precision == "bfloat16" and engine != "onnxruntime" else "float32"


class CompiledNetwork:
    """One exported network compiled by ONNX Runtime or OpenVINO: float32 arrays in and out."""

    def __init__(self, graph: Path, engine: str, precision: str, threads: int) -> None:
        self.engine = engine
        self.precision = engine_precision(engine, precision)
        if engine == "openvino":
            core = import_openvino().Core()
            model = core.read_model(str(graph))
            settings = {
                "INFERENCE_NUM_THREADS": threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
            }
            compiled: dict[tuple[int, ...], Any] = {}

            def run(x: np.ndarray) -> np.ndarray:
                # Compiled for each input shape met (a window's, a head's): OpenVINO plans its
                # buffers for a static shape (HD-BET on a head: 0.4 GB less than a dynamic one).
                if x.shape not in compiled:
                    compiled.clear()
                    model.reshape({"image": list(x.shape)})
                    compiled[x.shape] = core.compile_model(model, "CPU", settings)
                return compiled[x.shape](x)[0]

            self._run: Callable[[np.ndarray], np.ndarray] = run
        elif engine == "onnxruntime":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(graph), options, providers=["CPUExecutionProvider"]
            )
            self._run = lambda x: session.run(None, {"image": x})[0]
        else:
            raise ValueError(f"not a compiled engine: {engine!r}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        output = self._run(np.ascontiguousarray(image, dtype=np.float32))
        return np.asarray(output, dtype=np.float32)


def compile_network(
    network: torch.nn.Module,
    state_dict: Mapping[str, Any],
    example: torch.Tensor,
    engine: str,
    precision: str,
    name: str,
    for_export: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> CompiledNetwork:
    """``network`` with ``state_dict`` loaded, exported (or found in the cache by the weights'
    digest) and compiled by ``engine`` (``"onnxruntime"`` or ``"openvino"``). ``network`` is
    loaded with the weights and put in inference mode, then given to ``for_export`` (which
    returns the module to export, e.g. a copy whose layers behave as in the caller's passes);
    ``name`` prefixes the cache file."""
    import torch

    def export(path: Path) -> Path:
        network.load_state_dict(state_dict)
        network.eval()
        exported = network if for_export is None else for_export(network)
        return export_onnx(exported, example, path)

    key = f"{name}-{weights_digest(state_dict)[:32]}-{example.shape[1]}ch-opset{OPSET}"
    graph, temporary = exported_graph(key, export)
    try:
        return CompiledNetwork(graph, engine, precision, torch.get_num_threads())
    finally:
        if temporary:
            graph.unlink(missing_ok=True)
            graph.parent.rmdir()


def _engine_module_class() -> type:
    import torch

    class EngineNetwork(torch.nn.Module):
        """Stands in for a network inside a caller that loads each fold's weights and calls the
        network (nnU-Net's predictor): ``load_state_dict`` selects the fold compiled from those
        very weights, ``forward`` runs it."""

        def __init__(self, compiled: list[tuple[Mapping[str, Any], CompiledNetwork]]) -> None:
            super().__init__()
            self._folds = compiled
            self._current = compiled[0][1]

        def load_state_dict(
            self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
        ) -> Any:
            for weights, compiled in self._folds:
                if weights is state_dict:
                    self._current = compiled
                    return None
            raise ValueError("these weights were not compiled for this engine")

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            array = image.detach().cpu().numpy()
            return torch.from_numpy(self._current(array)).to(image.device)

    return EngineNetwork


def engine_network(compiled: list[tuple[Mapping[str, Any], CompiledNetwork]]) -> torch.nn.Module:
    """A :class:`torch.nn.Module` that runs the compiled folds; ``compiled`` pairs each fold's
    state dict (the very object the caller will load) with its compiled network."""
    return _engine_module_class()(compiled)
