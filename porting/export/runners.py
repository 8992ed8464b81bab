"""Runtimes that load an exported artifact back and run it on the CPU, one per format: ``runner(x: ndarray) ->
{output name: ndarray}``, with ``runner.runtime`` naming what ran. Shared by every family's verification and by
``port detect``'s exported backends; nothing here knows what the artifact computes.
"""

from __future__ import annotations

import platform
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import MalformedModelError

ONNX_HINT = "pip install 'porting[onnx]'"
TFLITE_HINT = "pip install 'porting[tflite]'"
RESOLVERS = ("builtin", "xnnpack")


def onnx_missing() -> str | None:
    """Why ONNX export/run is unavailable (a one-line hint), or None when onnx and onnxruntime are installed."""
    from importlib.util import find_spec

    for module in ("onnx", "onnxruntime"):
        if find_spec(module) is None:  # found without importing it
            return f"{module} is not installed; {ONNX_HINT}"
    return None


def tflite_missing() -> str | None:
    """Why TFLite export/run is unavailable (a one-line hint), or None when litert-torch is installed."""
    from importlib.util import find_spec

    for module in ("litert_torch", "ai_edge_litert"):
        if find_spec(module) is None:  # found without importing it (litert_torch takes seconds to import)
            return f"{module} is not installed; {TFLITE_HINT}"
    return None


class OnnxRunner:
    """One onnxruntime CPU session: ``runner(x) -> {output name: array}``."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        # Memory patterns pre-plan one block per input shape: measured (rn18, batches of 32 and a last of 27)
        # peak RSS 987 -> 822 MiB without them, at the same speed. The arena stays (off: 630 MiB, ~10% slower).
        opts.enable_mem_pattern = False
        # No spin-waiting after a run: between batches its idle thread would compete with torch's frontend threads
        # for the same 2 cores (measured: Detector.run on the bundled recording 0.95 -> 0.91 s median).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MalformedModelError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]}); re-run `port convert`") from exc
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.runtime = f"onnxruntime {ort.__version__} CPUExecutionProvider"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self.outputs, values))


class TFLiteRunner:
    """The LiteRT interpreter with the builtin kernels (default) or the XNNPACK delegate.

    ``runner(x)`` splits ``x`` greedily over the fixed-batch signatures (largest first) and concatenates.
    """

    def __init__(self, path: str | Path, resolver: str = "builtin", threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if resolver not in RESOLVERS:
            raise ValueError(f"TFLiteRunner: resolver must be one of {RESOLVERS}, got {resolver!r}")
        kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if resolver == "builtin" else OpResolverType.AUTO
        try:
            self.interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=kind,
                                           num_threads=threads or torch.get_num_threads())
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError with multi-line text
            raise MalformedModelError(f"{path}: the LiteRT interpreter cannot load it ({str(exc).splitlines()[0]}); re-run `port convert`") from exc
        self.signatures = {}
        for name, sig in self.interpreter.get_signature_list().items():
            m = re.fullmatch(r"batch_(\d+)", name)
            if m:
                self.signatures[int(m.group(1))] = (self.interpreter.get_signature_runner(name), sig["inputs"][0])
        if 1 not in self.signatures:
            raise MalformedModelError(f"{path}: no batch_1 signature; re-run `port convert`")
        from importlib import metadata

        label = "builtin resolver (no default delegates)" if resolver == "builtin" else "default XNNPACK delegate"
        self.runtime = f"ai-edge-litert {metadata.version('ai-edge-litert')} {label}"

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {}
        i = 0
        while i < len(x):
            n = max(s for s in self.signatures if s <= len(x) - i)
            run, input_name = self.signatures[n]
            for key, value in run(**{input_name: x[i:i + n]}).items():
                parts.setdefault(key, []).append(np.array(value))
            i += n
        return {k: np.concatenate(v) for k, v in parts.items()}


class ExportedRunner:
    """A TorchScript or torch.export artifact reloaded on the CPU: ``runner(x) -> {output name: array}``.

    ``load(path)`` returns the callable module; ``loader`` names it in errors; ``outputs`` names what it returns,
    in order (the artifact's declaration).
    """

    def __init__(self, path, outputs: tuple[str, ...], loader: str, load: Callable[[str], Callable], runtime: str):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = load(str(path))
        except Exception as exc:  # torch.jit and torch.export raise several error types of their own
            raise MalformedModelError(f"{path}: {loader} cannot load it ({str(exc).splitlines()[0]}); re-run `port convert`") from exc
        self.outputs = tuple(outputs)
        self.runtime = runtime

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.outputs, (t.numpy() for t in out)))


def load_torchscript(path: str | Path, outputs: tuple[str, ...]) -> ExportedRunner:
    """The artifact reloaded with ``torch.jit.load`` on the CPU: ``runner(x) -> {output name: array}``."""
    return ExportedRunner(path, outputs, "torch.jit.load", lambda p: torch.jit.load(p, map_location="cpu"),
                          f"torch.jit {torch.__version__} CPU")


def load_pt2(path: str | Path, outputs: tuple[str, ...]) -> ExportedRunner:
    """The artifact reloaded with ``torch.export.load`` on the CPU: ``runner(x) -> {output name: array}``."""
    return ExportedRunner(path, outputs, "torch.export.load", lambda p: torch.export.load(p).module(),
                          f"torch.export {torch.__version__} CPU")


def load(fmt: str, path: str | Path, outputs: tuple[str, ...], resolver: str = "builtin") -> Callable:
    """An artifact of format ``fmt`` loaded back in its own runtime: ``run(x: ndarray) -> {output: array}`` with
    ``run.runtime``; ``outputs`` names what a TorchScript / torch.export module returns, in order. ``resolver``
    ("builtin" | "xnnpack") only matters for TFLite."""
    if fmt == "tflite":
        return TFLiteRunner(path, resolver=resolver)
    if fmt == "onnx":
        return OnnxRunner(path)
    if fmt == "torchscript":
        return load_torchscript(path, outputs)
    return load_pt2(path, outputs)


def runtime_versions() -> dict:
    """Versions of everything that produced or ran the artifacts (those installed)."""
    from importlib import metadata

    from .. import __version__

    out = {"python": platform.python_version(), "platform": platform.platform(), "porting": __version__,
           "torch": torch.__version__, "numpy": np.__version__}
    for dist in ("onnx", "onnxruntime", "litert-torch", "ai-edge-litert"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
