"""BatchNorm folded into the convolution before it, for inference and frozen prefixes.

The fold needs the model's graph, which torch.fx gets by tracing: while it traces, fx replaces
`torch.nn.Module.__call__` (and `__getattr__`) for the whole process, so a forward pass running in another
thread at that moment went through the tracer and failed ("NameError: module is not installed as a
submodule"). In the app a training job validates (and so traces) every epoch while other users predict: the
load test's predict and live-webcam "internal error"s (issue 20). The tracer here acts only for the thread
that traces; every other thread's modules run as if nothing were patched, and one trace runs at a time.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from torch import fx, nn

_TRACE_LOCK = threading.Lock()  # two traces at once would stack their patches of Module.__call__


class _OwnThreadTracer(fx.Tracer):
    """An fx tracer whose patched Module.__call__ / __getattr__ trace only in the thread that traces."""

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        self._owner = threading.get_ident()
        return super().trace(root, concrete_args)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self._owner:
            return forward(*args, **kwargs)  # another thread's model: a plain call
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self._owner:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _traced(module: nn.Module) -> fx.GraphModule:
    """A GraphModule of `module` (a copy), traced without disturbing other threads."""
    root = copy.deepcopy(module)
    tracer = _OwnThreadTracer()
    with _TRACE_LOCK:
        graph = tracer.trace(root)
    return fx.GraphModule(tracer.root, graph, root.__class__.__name__)


def fuse_for_inference(module: nn.Module) -> nn.Module:
    """An eval-mode copy with each BatchNorm folded into the convolution before it (same outputs, measured
    ~1.5-2x faster on CPU); the module itself (in eval mode) when it cannot be traced."""
    from torch.fx.experimental.optimization import fuse

    was_training = module.training
    module.eval()
    try:
        fused = fuse(_traced(module), inplace=True, no_trace=True)
    except Exception:  # noqa: BLE001 - a model fx cannot trace still runs, just unfused
        return module
    finally:
        module.train(was_training)
    fused.eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused

