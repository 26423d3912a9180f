"""Adam without ``torch.optim``: the first ``torch.optim`` optimizer a process makes imports ``torch._dynamo``, and
with it sympy and FSDP (about 2 s on a warm disk, 5 s and more on a cold one, in a run of 30 s).

:class:`Adam` computes what ``torch.optim.Adam(..., fused=True)`` computes, by the same kernel (``torch._fused_adam_``,
one launch per group), and has the parts of an optimizer that gsplat's densification strategies and the training
loops use: ``param_groups`` (each a dict with ``params`` and ``lr``), ``state`` keyed by parameter (``step``,
``exp_avg``, ``exp_avg_sq``), :meth:`step` and :meth:`zero_grad`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class Adam:
    def __init__(self, groups: Iterable[dict[str, Any]], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        """``groups``: dicts with ``params`` (a tensor or a list of them) and, optionally, their own ``lr`` and any
        other keys (gsplat's strategies name a group by ``name``)."""
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            params = group["params"]
            self.param_groups.append({**group, "params": [params] if isinstance(params, Tensor) else list(params),
                                      "lr": group.get("lr", lr)})
        self.betas, self.eps = betas, eps
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)  # as torch.optim keeps it

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1.0)
            torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                               [s["exp_avg_sq"] for s in states], [], steps, lr=float(group["lr"]), beta1=beta1,
                               beta2=beta2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def _state(self, param: Tensor) -> dict[str, Tensor]:
        state = self.state[param]  # gsplat's strategies move a parameter's state to the tensor that replaces it
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        return state
