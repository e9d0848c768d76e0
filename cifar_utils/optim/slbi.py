"""SLBI and SLBI-Adam: the split linearized Bregman iteration of DessiLBI (depends on torch only).

Fu, Liu, Yao et al., "DessiLBI: Exploring Structural Sparsity of Deep Networks via Differential
Inclusion Paths", ICML 2020. Every *coupled* weight W (by default every parameter with 2 or 4
dimensions: fully connected and conv weights) gets two auxiliary tensors of its shape, V and Gamma,
both starting at zero. With learning rate ``lr`` (alpha), ``kappa``, ``mu`` and ``lam`` (lambda, the
sparsity threshold), one step on W with gradient g is::

    d         = the momentum buffer of g  (SLBI)  |  Adam's m_hat / (sqrt(v_hat) + eps)  (SLBI-Adam)
    W_new     = W - kappa * lr * d - (kappa * lr / mu) * (W - Gamma)
    V_new     = V - (lr / mu) * (Gamma - W)                  # W and Gamma from before the step
    Gamma_new = kappa * Prox(V_new)

``Prox`` is the elementwise soft threshold ``sign(v) * max(|v| - lam, 0)`` for a 2-D (fc) weight and
the group soft threshold ``v_f * max(0, 1 - lam / ||v_f||_2)`` per output filter f for a 4-D (conv)
weight. Gamma is the sparse companion of W: it starts empty and its support (the non-zero filters /
weights) grows along the training path, important structure first. Every other parameter (biases,
BatchNorm) takes plain momentum SGD (SLBI) or Adam (SLBI-Adam) with step ``kappa * lr``.

Weight decay, when non-zero, adds ``weight_decay * W`` to the gradient of parameters with more than
one dimension only (conv and fc weights; not biases nor BatchNorm), as in the authors' code.
Momentum follows ``torch.optim.SGD``: the buffer is g on the first step, then
``momentum * buf + (1 - dampening) * g``.

V, Gamma and the momentum / Adam buffers live in ``optimizer.state[p]`` (keys ``"V"``, ``"gamma"``,
``"momentum_buffer"`` / ``"exp_avg"``, ``"exp_avg_sq"``, ``"step"``), so ``state_dict()`` carries them
and the engine's checkpoints resume a run exactly. Parameter names are kept in each param group's
``"names"``. :meth:`SLBI.support` gives Gamma's support per coupled weight; the per-epoch bookkeeping
(first epoch each filter was selected, the pruning order) is in :mod:`cifar_utils.sparsity`.

Registered as ``"slbi"`` and ``"slbi_adam"``: ``RunConfig(optimizer="slbi", lr=0.1,
optimizer_options={"kappa": 1, "mu": 20})``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .optimizers import register_optimizer

__all__ = ["SLBI", "SLBIAdam", "prox", "soft_threshold", "group_soft_threshold", "is_couplable", "support_of"]


def soft_threshold(v: Tensor, lam: float) -> Tensor:
    """Elementwise ``sign(v) * max(|v| - lam, 0)``."""
    return torch.sign(v) * (v.abs() - lam).clamp_min(0)


def group_soft_threshold(v: Tensor, lam: float) -> Tensor:
    """Per output filter (first dimension) ``v_f * max(0, 1 - lam / ||v_f||_2)`` (0 for a zero filter)."""
    flat = v.reshape(v.shape[0], -1)
    norms = flat.norm(dim=1)
    factor = torch.where(norms > 0, (1 - lam / norms.clamp_min(torch.finfo(v.dtype).tiny)).clamp_min(0),
                         torch.zeros_like(norms))
    return (flat * factor[:, None]).reshape(v.shape)


def prox(v: Tensor, lam: float) -> Tensor:
    """The proximal map of SLBI's penalty: elementwise for fc (2-D) weights, per filter for conv (4-D)."""
    if v.dim() == 2:
        return soft_threshold(v, lam)
    if v.dim() == 4:
        return group_soft_threshold(v, lam)
    raise ValueError(f"only 2-D (fc) and 4-D (conv) weights are coupled, got shape {tuple(v.shape)}")


def is_couplable(param: Tensor) -> bool:
    """Whether a parameter can be coupled to a Gamma: fc (2-D) and conv (4-D) weights."""
    return param.dim() in (2, 4)


class SLBI(torch.optim.Optimizer):
    """SLBI with momentum SGD directions (see the module doc for the equations).

    ``params``: a model, ``(name, parameter)`` pairs (``model.named_parameters()``) or plain
    parameters (named ``p0, p1, ...``). ``coupled``: names of the weights to couple (default every
    2-D / 4-D parameter); a named parameter that is not 2-D or 4-D is an error.
    """

    direction_kind = "sgd"

    def __init__(self, params, lr: float, *, kappa: float = 1.0, mu: float = 100.0, lam: float = 1.0,
                 momentum: float = 0.9, dampening: float = 0.0, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 coupled: Sequence[str] | None = None) -> None:
        for name, value in (("lr", lr), ("kappa", kappa), ("mu", mu), ("lam", lam), ("momentum", momentum),
                            ("weight_decay", weight_decay), ("eps", eps)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if mu <= 0 or kappa <= 0:
            raise ValueError(f"kappa and mu must be > 0, got kappa={kappa!r}, mu={mu!r}")
        if not 0 <= dampening <= 1:
            raise ValueError(f"dampening must be in [0, 1], got {dampening!r}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        named = _named(params)
        if not named:
            raise ValueError("SLBI got no parameters")
        wanted = None if coupled is None else set(coupled)
        if wanted is not None:
            names = {n for n, _ in named}
            missing = sorted(wanted - names)
            if missing:
                raise ValueError(f"coupled names not among the parameters: {', '.join(missing)}")
            bad = sorted(n for n, p in named if n in wanted and not is_couplable(p))
            if bad:
                raise ValueError(f"only 2-D (fc) and 4-D (conv) weights can be coupled, not {', '.join(bad)}")
        couple = [(n, p) for n, p in named if (is_couplable(p) if wanted is None else n in wanted)]
        rest = [(n, p) for n, p in named if not any(p is q for _, q in couple)]
        groups = []
        for is_coupled, members in ((True, couple), (False, rest)):
            if members:
                groups.append({"params": [p for _, p in members], "names": [n for n, _ in members],
                               "coupled": is_coupled})
        defaults = dict(lr=lr, kappa=kappa, mu=mu, lam=lam, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, betas=tuple(betas), eps=eps)
        super().__init__(groups, defaults)

    # -- the step ---------------------------------------------------------------------------------
    def _direction(self, p: Tensor, g: Tensor, group: dict, state: dict) -> Tensor:
        """Momentum SGD's direction (torch.optim.SGD's buffer)."""
        momentum, dampening = group["momentum"], group["dampening"]
        if momentum == 0:
            return g
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.detach().clone()
        else:
            buf.mul_(momentum).add_(g, alpha=1 - dampening)
        return buf

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, kappa, mu, lam, wd = group["lr"], group["kappa"], group["mu"], group["lam"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0 and p.dim() > 1:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                d = self._direction(p, g, group, state)
                if not group["coupled"]:
                    p.add_(d, alpha=-kappa * lr)
                    continue
                if "V" not in state:
                    state["V"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["gamma"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                diff = p - state["gamma"]                       # W - Gamma, before the step
                p.add_(d, alpha=-kappa * lr).add_(diff, alpha=-kappa * lr / mu)
                state["V"].add_(diff, alpha=lr / mu)            # V - (lr/mu) (Gamma - W)
                state["gamma"] = prox(state["V"], lam).mul_(kappa)
        return loss

    # -- what the toolbox reads ----------------------------------------------------------------------
    def coupled_names(self) -> list[str]:
        """Names of the coupled weights, in parameter order."""
        return [n for g in self.param_groups if g["coupled"] for n in g["names"]]

    def named_state(self, key: str) -> dict[str, Tensor]:
        """``key`` (``"gamma"`` or ``"V"``) per coupled weight name (zeros before the first step)."""
        out = {}
        for g in self.param_groups:
            if g["coupled"]:
                for name, p in zip(g["names"], g["params"]):
                    out[name] = self.state[p].get(key, torch.zeros_like(p))
        return out

    def support(self) -> dict[str, Tensor]:
        """Gamma's support per coupled weight: a bool per output filter (conv) or per entry (fc)."""
        return {name: support_of(gamma) for name, gamma in self.named_state("gamma").items()}


class SLBIAdam(SLBI):
    """SLBI-Adam: the direction d is Adam's bias-corrected ``m_hat / (sqrt(v_hat) + eps)`` built from the
    gradient; the coupling to Gamma, V and Gamma's update are SLBI's. Other parameters take Adam with
    step ``kappa * lr`` (exactly ``torch.optim.Adam`` when ``kappa = 1`` and no weight decay)."""

    direction_kind = "adam"

    def _direction(self, p: Tensor, g: Tensor, group: dict, state: dict) -> Tensor:
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t = float(state["step"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
        denom = (v.sqrt() / math.sqrt(bias2)).add_(group["eps"])
        return (m / bias1) / denom


def support_of(gamma: Tensor) -> Tensor:
    """Where ``gamma`` is non-zero: per output filter for a 4-D tensor, per entry for a 2-D one."""
    if gamma.dim() == 4:
        return gamma.detach().reshape(gamma.shape[0], -1).ne(0).any(dim=1)
    return gamma.detach().ne(0)


def _named(params) -> list[tuple[str, Tensor]]:
    if isinstance(params, nn.Module):
        return [(n, p) for n, p in params.named_parameters() if p.requires_grad]
    items = list(params)
    if items and isinstance(items[0], dict):
        raise TypeError("SLBI builds its own parameter groups: pass a model, named_parameters() or parameters")
    if items and isinstance(items[0], tuple):
        return [(str(n), p) for n, p in items if p.requires_grad]
    return [(f"p{i}", p) for i, p in enumerate(items) if p.requires_grad]


# --- registry ----------------------------------------------------------------------------------------

@register_optimizer("slbi")
def slbi(target, *, lr: float, kappa: float = 1.0, mu: float = 100.0, lam: float = 1.0, momentum: float = 0.9,
         dampening: float = 0.0, weight_decay: float = 0.0, coupled: Iterable[str] | None = None) -> SLBI:
    """:class:`SLBI` over a model (coupling every conv / fc weight unless ``coupled`` names them)."""
    return SLBI(target, lr=lr, kappa=kappa, mu=mu, lam=lam, momentum=momentum, dampening=dampening,
                weight_decay=weight_decay, coupled=None if coupled is None else list(coupled))


@register_optimizer("slbi_adam")
def slbi_adam(target, *, lr: float, kappa: float = 1.0, mu: float = 100.0, lam: float = 1.0,
              weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
              coupled: Iterable[str] | None = None) -> SLBIAdam:
    """:class:`SLBIAdam` over a model (no ``momentum`` option: Adam's ``betas`` play that part)."""
    return SLBIAdam(target, lr=lr, kappa=kappa, mu=mu, lam=lam, weight_decay=weight_decay, betas=tuple(betas),
                    eps=eps, coupled=None if coupled is None else list(coupled))
