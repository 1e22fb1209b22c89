"""The multi-fidelity control-variate policy gradient (paper notes §1.3-1.6), as pure functions plus the
coefficient's running statistics, and the grouping and segment statistics of pairing 'matched' (docs/pairing.md).
The losses work on flat per-step tensors; algorithms.py and ppo.py feed them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from mfpg_ros.core.episode import Episode


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Reward-to-go inside one segment, no bootstrap at its end (as the authors' buffers do)."""
    out = np.empty(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


@dataclass
class Steps:
    """Flat per-step data of some segments: what the loss needs."""

    obs: torch.Tensor
    actions: torch.Tensor
    returns: torch.Tensor

    def __len__(self) -> int:
        return int(self.returns.shape[0])


def flatten(episodes: list[Episode], gamma: float, lengths: list[int] | None = None) -> Steps:
    """Concatenate segments (each optionally cut to its first lengths[i] steps, returns computed before the cut)."""
    lengths = lengths or [len(e) for e in episodes]
    if not episodes:
        return Steps(torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0))
    obs = np.concatenate([e.obs[:n] for e, n in zip(episodes, lengths)])
    act = np.concatenate([e.actions[:n] for e, n in zip(episodes, lengths)])
    ret = np.concatenate([discounted_returns(e.rewards, gamma)[:n] for e, n in zip(episodes, lengths)])
    return Steps(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(act, dtype=torch.float32),
                 torch.as_tensor(ret, dtype=torch.float32))


def pair_segments(hifi: list[Episode], paired: list[Episode]) -> list[tuple[Episode, Episode]]:
    """Match each HF segment with the LF replay of it (by episode id); unmatched ones are dropped."""
    by_id = {e.pair_of: e for e in paired}
    return [(h, by_id[h.episode_id]) for h in hifi if h.episode_id in by_id]


def pearson_stats(x_h: np.ndarray, x_l: np.ndarray) -> tuple[float, float, float]:
    """(rho, sigma_h, sigma_l) of paired per-step surrogates; population std (ddof 0); zeros when undefined."""
    if len(x_h) <= 1:
        return 0.0, 0.0, 0.0
    s_h, s_l = float(x_h.std()), float(x_l.std())
    if s_h == 0.0 or s_l == 0.0 or not math.isfinite(s_h * s_l):
        return 0.0, s_h, s_l
    rho = float(((x_h - x_h.mean()) * (x_l - x_l.mean())).mean() / (s_h * s_l))
    return max(-1.0, min(1.0, rho)), s_h, s_l


@dataclass
class Coefficient:
    """c = -rho * sigma_h / sigma_l from EMA-smoothed statistics (alpha = weight on the old value). Pairing
    'matched' instead smooths cross = sum_i <g_i, d_i> and spread = sum_i |d_i|^2 over segments i and takes
    c = -cross / spread (segment_c)."""

    rho: float = 0.0
    sigma_h: float = 0.0
    sigma_l: float = 0.0
    initialised: bool = False
    cross: float = 0.0
    spread: float = 0.0

    def value(self) -> float:
        return -self.rho * self.sigma_h / self.sigma_l if self.initialised and self.sigma_l > 0 else 0.0

    def segment_c(self) -> float:
        return -self.cross / self.spread if self.spread > 0 else 0.0

    def update(self, rho: float, sigma_h: float, sigma_l: float, alpha: float) -> None:
        if not self.initialised:
            self.rho, self.sigma_h, self.sigma_l, self.initialised = rho, sigma_h, sigma_l, True
            return
        self.rho = alpha * self.rho + (1 - alpha) * rho
        self.sigma_h = alpha * self.sigma_h + (1 - alpha) * sigma_h
        self.sigma_l = alpha * self.sigma_l + (1 - alpha) * sigma_l

    def update_segments(self, cross: float, spread: float, alpha: float) -> None:
        first = self.spread == 0.0
        self.cross = cross if first else alpha * self.cross + (1 - alpha) * cross
        self.spread = spread if first else alpha * self.spread + (1 - alpha) * spread

    def state(self) -> list[float]:
        return [self.rho, self.sigma_h, self.sigma_l, float(self.initialised), self.cross, self.spread]

    def load(self, values) -> None:
        self.rho, self.sigma_h, self.sigma_l = (float(v) for v in values[:3])
        self.initialised = bool(values[3])
        segments = [float(v) for v in values[4:6]]  # absent in states written before pairing 'matched'
        self.cross, self.spread = segments if len(segments) == 2 else (0.0, 0.0)


def mf_policy_loss(x_h: torch.Tensor, x_l: torch.Tensor, x_mu: torch.Tensor, c: float) -> torch.Tensor:
    """Negative MF surrogate -[mean(x_h) + c * (mean(x_l) - mean(x_mu))] with x = A * log pi (A detached), over
    the last axis (leading axes are independent batches).

    Its gradient is the estimator g = X_h + c (X_l - mu_l); unbiased for any fixed c when E[x_l] = E[x_mu].
    """
    loss = -x_h.mean(-1)
    if c != 0.0 and x_l.shape[-1] and x_mu.shape[-1]:
        loss = loss - c * (x_l.mean(-1) - x_mu.mean(-1))
    return loss


def matched_policy_loss(x_h: torch.Tensor, x_l: torch.Tensor, x_mu: torch.Tensor, w_mu: torch.Tensor,
                        c: float) -> torch.Tensor:
    """Negative MF surrogate of pairing 'matched': -[sum(x_h) + c * (sum(x_l) - sum(w_mu * x_mu))] / len(x_h).

    x_h: every HF step of the batch; x_l: every step of each segment's whole replay; x_mu: the steps of the fresh
    rollouts from the same segments' states, weighted 1 / (that segment's number of rollouts). Sums, not means:
    each replay and each rollout group then has the same expectation, so E[X_l] = mu for any policy."""
    loss = -x_h.sum()
    if c != 0.0:
        loss = loss - c * (x_l.sum() - (w_mu * x_mu).sum())
    return loss / max(1, x_h.shape[-1])


@dataclass
class Matched:
    """One iteration's data under pairing 'matched'. hifi: every HF segment, in batch order; replays and branches
    (flat, grouped per segment) of the n segments that have a replay and at least one branch. rows (2n x steps over
    [HF steps, replay steps, branch steps]) sums per-step terms into segment i's HF gradient g_i (row i) and its
    control variate d_i = replay minus the mean of its branches (row n + i)."""

    hifi: list[Episode]
    replays: list[Episode]
    branches: list[Episode]
    rows: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.replays)

    def branch_weights(self) -> torch.Tensor:
        """Per branch step: 1 / (its segment's number of branches)."""
        return -self.rows[self.n:, self.rows.shape[1] - sum(len(b) for b in self.branches):].sum(0)


def match(hifi: list[Episode], paired: list[Episode], pool: list[Episode]) -> Matched | None:
    """Group replays and branches (pool episodes whose pair_of names an HF segment) with their segments; None when
    no segment has both. A segment whose replay or every branch was lost (unstable) leaves both LF terms."""
    groups: dict[str, list[Episode]] = {}
    for e in pool:
        groups.setdefault(e.pair_of, []).append(e)
    replay_of = {r.pair_of: r for r in paired}
    used = [h for h in hifi if h.episode_id in replay_of and groups.get(h.episode_id)]
    if not used:
        return None
    replays = [replay_of[h.episode_id] for h in used]
    branches = [b for h in used for b in groups[h.episode_id]]
    n, hf_steps, lf_steps = len(used), sum(len(h) for h in hifi), sum(len(r) for r in replays)
    rows = torch.zeros(2 * n, hf_steps + lf_steps + sum(len(b) for b in branches))
    starts = dict(zip((h.episode_id for h in hifi), np.cumsum([0, *(len(h) for h in hifi)]).tolist()))
    l_at, b_at = hf_steps, hf_steps + lf_steps
    for i, (h, r) in enumerate(zip(used, replays)):
        rows[i, starts[h.episode_id]:starts[h.episode_id] + len(h)] = 1.0
        rows[n + i, l_at:l_at + len(r)] = 1.0
        group = groups[h.episode_id]
        size = sum(len(b) for b in group)
        rows[n + i, b_at:b_at + size] = -1.0 / len(group)
        l_at, b_at = l_at + len(r), b_at + size
    return Matched(hifi, replays, branches, rows)


def segment_gradients(x: torch.Tensor, rows: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """rows @ (per-step gradients of x over params), flattened: one backward pass per row, batched."""
    grads = torch.autograd.grad(x, params, grad_outputs=rows, is_grads_batched=True, retain_graph=True,
                                allow_unused=True)
    return torch.cat([g.reshape(len(rows), -1) for g in grads if g is not None], dim=1)


def segment_c(coef: Coefficient, g: torch.Tensor, d: torch.Tensor, alpha: float,
              fixed_c: float | None = None) -> tuple[float, dict]:
    """c = -sum_i <g_i, d_i> / sum_i |d_i|^2 from earlier iterations' EMA only (so c does not depend on this batch's
    d and the estimate stays unbiased; E[d_i] = 0 needs no centring); then this batch joins the EMA. Also the
    variance proxy sum_i |g_i + c d_i|^2 over sum_i |g_i|^2."""
    cross, spread = float((g * d).sum()), float((d * d).sum())
    c = fixed_c if fixed_c is not None else coef.segment_c()
    coef.update_segments(cross, spread, alpha)
    var_without, var_with = float((g * g).sum()), float(((g + c * d) ** 2).sum())
    return c, {'segment_cross': cross, 'segment_spread': spread, 'var_without_cv': var_without,
               'var_with_cv': var_with, 'var_ratio': var_with / var_without if var_without > 0 else 1.0}


def actor_grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d params, zeros for parameters the loss does not reach."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]


def fixed_gradient(params: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """A scalar of value 0 whose gradient over params is grads (a gradient computed earlier, joined to a loss)."""
    linear = sum((p * g).sum() for p, g in zip(params, grads))
    return linear - linear.detach()


def trace_optimal_c(grads_h: torch.Tensor, grads_l: torch.Tensor) -> float:
    """Vector form: c = -sum_k Cov(g_h,k, g_l,k) / sum_k Var(g_l,k) over per-sample gradient rows."""
    if len(grads_h) <= 1:
        return 0.0
    dh, dl = grads_h - grads_h.mean(0), grads_l - grads_l.mean(0)
    var_l = float((dl * dl).sum())
    return -float((dh * dl).sum()) / var_l if var_l > 0 else 0.0
