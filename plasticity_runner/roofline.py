"""Roofline of a call: its FLOPs, its dominant matrix-multiply shape, and the machine's dense-matmul
peak at that shape, so that a benchmark row can say what fraction of the machine it uses.

* **FLOPs** come from ``torch.utils.flop_counter.FlopCounterMode``: it counts matrix multiplies
  (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and their backward, and the fused attention
  kernels, at the ATen level, as ``2 * M * K * N`` per GEMM. Elementwise ops, reductions and
  optimizer updates count zero. It sits below ``torch.func`` transforms, so ``vmap`` (as the ``bmm``
  the batching rule emits), ``grad`` and forward-mode ``jvp`` (the primal and tangent GEMMs the
  forward-AD formulas run) are counted as the GEMMs they execute (tests/test_roofline.py checks
  an MLP train step and the probe's vectorised step against hand counts).
  Its formula for a grouped ``convolution_backward`` ignores ``groups``; those ops are recounted
  here (``GemmRecorder.correction``).
* **Dominant shape**: the GEMM ``(batch, M, K, N)`` carrying the most FLOPs in one call, a
  convolution lowered to its im2col GEMM (``M = N_img * H_out * W_out``, ``K = C_in / groups * kh * kw``,
  ``N = C_out``; its backward counted with the same shape).
* **Peak**: FLOP/s of ``torch.mm`` (``torch.bmm`` when batched) on random operands of that shape,
  in the row's precision (``fp32``; on CUDA also ``tf32`` and ``bf16``), at the current thread count,
  median of interleaved timed blocks. A row's fraction of peak is its achieved FLOP/s over that.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
Shape = tuple[int, int, int, int]  # (batch, M, K, N)
PRECISIONS = ("fp32", "tf32", "bf16")


def measure(fn: Callable[[], Any]) -> dict[str, Any]:
    """``{"flops", "shapes", "flop_counter_raw"}`` of one call of ``fn``: ``FlopCounterMode``'s total
    (GEMMs, convolutions, attention) with grouped convolution backward recounted
    (``GemmRecorder.correction``), and the GEMM shapes with their FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, GemmRecorder() as rec:
        fn()
    raw = int(counter.get_total_flops())
    return {"flops": raw + rec.correction, "shapes": dict(rec.flops), "flop_counter_raw": raw}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` (see ``measure``)."""
    return int(measure(fn)["flops"])


def _conv_shape(x: torch.Tensor, w: torch.Tensor, out_spatial: int, groups: int) -> Shape:
    per_group_k = w.shape[1] * math.prod(w.shape[2:])
    return (int(groups), int(x.shape[0]) * out_spatial, int(per_group_k), int(w.shape[0]) // int(groups))


class GemmRecorder(TorchDispatchMode):
    """Records the GEMMs (and convolutions as GEMMs) dispatched inside it: ``flops[shape]``.

    ``correction``: what to add to ``FlopCounterMode``'s total for the same ops. Its formula for
    ``convolution_backward`` ignores ``groups`` (it counts a grouped backward as if every output
    channel read every input channel, ``groups`` times too many FLOPs); ``vmap`` of a per-sample
    convolution gradient (gradcov) runs exactly such grouped convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: dict[Shape, int] = {}
        self.correction = 0

    def _add(self, shape: Shape, times: int = 1) -> None:
        b, m, k, n = shape
        self.flops[shape] = self.flops.get(shape, 0) + 2 * b * m * k * n * times

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        try:
            if packet is aten.mm:
                a, b = args[0], args[1]
                self._add((1, a.shape[0], a.shape[1], b.shape[1]))
            elif packet is aten.addmm:
                a, b = args[1], args[2]
                self._add((1, a.shape[0], a.shape[1], b.shape[1]))
            elif packet is aten.bmm:
                a, b = args[0], args[1]
                self._add((a.shape[0], a.shape[1], a.shape[2], b.shape[2]))
            elif packet is aten.baddbmm:
                a, b = args[1], args[2]
                self._add((a.shape[0], a.shape[1], a.shape[2], b.shape[2]))
            elif packet is aten.convolution and not args[6]:  # not transposed
                x, w = args[0], args[1]
                self._add(_conv_shape(x, w, int(out.numel() // (out.shape[0] * out.shape[1])), int(args[8])))
            elif packet is aten.convolution_backward:
                grad_out, x, w = args[0], args[1], args[2]
                mask = args[-1]
                spatial = int(grad_out.numel() // (grad_out.shape[0] * grad_out.shape[1]))
                times = int(bool(mask[0])) + int(bool(mask[1]))
                groups = int(args[-2])
                if times:
                    shape = _conv_shape(x, w, spatial, groups)
                    self._add(shape, times)
                    if groups > 1:
                        from torch.utils.flop_counter import flop_registry

                        theirs = flop_registry[aten.convolution_backward](*args, out_val=out)
                        self.correction += 2 * math.prod(shape) * times - int(theirs)
        except Exception:  # noqa: BLE001 - a shape we cannot read is left out, never fails the call
            pass
        return out


def gemm_shapes(fn: Callable[[], Any]) -> dict[Shape, int]:
    """``{(batch, M, K, N): FLOPs}`` of the GEMMs one call of ``fn`` runs."""
    with GemmRecorder() as rec:
        fn()
    return dict(rec.flops)


def dominant_shape(shapes: dict[Shape, int]) -> Shape | None:
    """The shape carrying the most FLOPs (None when there is no GEMM)."""
    return max(shapes, key=shapes.get) if shapes else None


def shape_str(shape: Shape | None) -> str:
    if shape is None:
        return "-"
    b, m, k, n = shape
    return f"{b}x{m}x{k}x{n}" if b > 1 else f"{m}x{k}x{n}"


@contextmanager
def precision(mode: str, device: torch.device) -> Iterator[torch.dtype]:
    """Context for a matmul in ``mode`` (fp32: TF32 off; tf32: TF32 on; bf16): yields the dtype."""
    if device.type != "cuda":
        if mode == "tf32":
            raise ValueError("tf32 is a CUDA precision")
        yield torch.bfloat16 if mode == "bf16" else torch.float32
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        yield torch.bfloat16 if mode == "bf16" else torch.float32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(shape: Shape, mode: str, device: torch.device, block_s: float = 0.2, repeats: int = 3) -> list[float]:
    """FLOP/s of ``mm``/``bmm`` of ``shape`` in precision ``mode``, one value per timed block."""
    b, m, k, n = shape
    with precision(mode, device) as dtype:
        g = torch.Generator(device).manual_seed(0)
        lhs = torch.randn((b, m, k) if b > 1 else (m, k), generator=g, device=device).to(dtype)
        rhs = torch.randn((b, k, n) if b > 1 else (k, n), generator=g, device=device).to(dtype)
        out = torch.empty((b, m, n) if b > 1 else (m, n), device=device, dtype=dtype)
        op = torch.bmm if b > 1 else torch.mm

        def call() -> None:
            op(lhs, rhs, out=out)

        for _ in range(3):
            call()
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        calls = max(1, min(100_000, int(block_s / one)))
        rates = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            _sync(device)
            rates.append(2.0 * b * m * k * n * calls / (time.perf_counter() - t0))
    return rates


class Peaks:
    """Matmul peaks per (shape, precision), medians of timed blocks. ``rate`` measures again when
    ``fresh`` (a shared machine's speed drifts: a row's peak is best measured next to the row) and
    keeps every measurement in ``measured``."""

    def __init__(self, device: torch.device, block_s: float = 0.2, repeats: int = 3) -> None:
        self.device, self.block_s, self.repeats = device, block_s, repeats
        self.measured: dict[tuple[Shape, str], list[list[float]]] = {}

    def rate(self, shape: Shape, mode: str = "fp32", fresh: bool = False) -> float:
        key = (shape, mode)
        if fresh or key not in self.measured:
            self.measured.setdefault(key, []).append(matmul_rate(shape, mode, self.device, self.block_s, self.repeats))
        return statistics.median(self.measured[key][-1])


def row_precision(device: torch.device) -> str:
    """The precision of an fp32 row's matmuls: tf32 on CUDA when TF32 is on, else fp32."""
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "fp32"
