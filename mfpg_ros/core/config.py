"""Typed training configuration: one dataclass tree, loaded from YAML, passed to the core and the nodes."""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ALGORITHMS = ('mf_reinforce', 'reinforce', 'lf_reinforce', 'mf_ppo', 'ppo', 'darc', 'par')
PPO_ALGORITHMS = ('ppo', 'mf_ppo')  # the algorithms core/ppo.py runs
MF_ALGORITHMS = ('mf_reinforce', 'mf_ppo')  # the control variate (algo.estimator)
OFF_DYNAMICS_ALGORITHMS = ('darc', 'par')  # algo.offdyn
EVERY_LEARNER_READS = ('min_aligned_steps',)  # an estimator setting that is no control-variate choice
CLIP_MODES = ('joint', 'separate')
PAIRINGS = ('paper', 'matched')  # estimator.pairing (docs/pairing.md)


@dataclass
class EstimatorConfig:
    """The control-variate choices the paper leaves open (paper notes §6); defaults follow the authors' code."""

    ema_alpha: float = 0.95  # weight on the old value when smoothing rho, sigma_h, sigma_l; 0 disables the EMA
    clamp_negative_rho: bool = True  # c = 0 when the current batch's rho < 0
    c_from_previous: bool = False  # use only earlier iterations' statistics (no same-batch dependence)
    mu_from_pool_only: bool = False  # mu_l over the independent pool only (the figure), not paired + pool (the code)
    vector_c: bool = False  # trace-optimal c from per-sample gradient vectors instead of scalar surrogates
    permutation_quirk: bool = False  # pair A[perm i] with log-prob[i] in the c statistics, as the authors' code does
    trim_pairs: bool = True  # cut each HF/LF pair to the shorter length; HF term uses the trimmed HF steps
    min_aligned_steps: int = 20  # skip the update when this many or fewer aligned HF steps remain
    fixed_c: float | None = None  # use this c instead of estimating it (tests, ablations)
    # 'paper': as the authors' code, each replay stops with its HF segment and mu comes from a persistent LF pool;
    # the control variate's mean is then not zero (docs/results.md). 'matched': each replay runs on with fresh
    # noise to where its HF segment's batch ends, and mu from fresh LF rollouts branching from the same HF states
    # with the same stopping rule, so E[X_l] = mu exactly (docs/pairing.md). trim_pairs and mu_from_pool_only
    # belong to 'paper'. 'auto' (the default) is resolved by AlgoConfig: 'matched' for mf_ppo (measured better, and
    # the paper's code has no PPO), 'paper' for everything else (the authors' code).
    pairing: str = 'auto'

    def __post_init__(self):
        self.fixed_c = _optional(self.fixed_c)
        if self.pairing not in ('auto', *PAIRINGS):
            raise ValueError(f"algo.estimator.pairing {self.pairing!r} is not one of {('auto', *PAIRINGS)}")
        if self.pairing == 'matched' and (not self.trim_pairs or self.mu_from_pool_only):
            raise ValueError("algo.estimator.pairing 'matched' uses whole replays and its own mean term: trim_pairs "
                             "and mu_from_pool_only apply to 'paper' only")

    def resolve_pairing(self, algorithm: str) -> None:
        """'auto' becomes the pairing `algorithm` defaults to; an explicit choice stays."""
        if self.pairing != 'auto':
            return
        self.pairing = 'matched' if algorithm == 'mf_ppo' else 'paper'
        try:
            self.__post_init__()
        except ValueError as err:
            raise ValueError(f'{err} ({algorithm} defaults to it: set algo.estimator.pairing: paper)') from None


@dataclass
class PPOConfig:
    """Proximal policy optimisation settings, used by algorithms 'ppo' (HF-only) and 'mf_ppo' (see docs/mf_ppo.md)."""

    clip_range: float = 0.2  # policy ratio clipped to [1 - clip_range, 1 + clip_range]
    n_epochs: int = 10  # passes over each iteration's data
    minibatch_size: int = 64  # HF steps (MF: aligned HF/LF pairs) per gradient step
    gae_lambda: float = 0.95  # 1.0 gives Monte-Carlo returns minus the value, as the REINFORCE learner uses
    normalize_advantage: bool = True  # HF: per minibatch; MF-PPO's LF: one affine map per iteration
    clip_value: bool = False  # clip the value prediction to old value +- value_clip_range (PPO2 style)
    value_clip_range: float = 0.2
    target_kl: float | None = None  # stop the epochs early once the HF approx KL exceeds 1.5 * target_kl
    pool_minibatch_size: int = 0  # LF pool steps per minibatch (MF-PPO); 0: each epoch splits the pool evenly
    # MF-PPO: the first cv_epochs epochs use the control variate, later ones plain PPO on HF; 0: every epoch. One by
    # default: its mean is ~0 only before a sample moved theta; later on it shrinks the std (docs/mf_ppo.md §4)
    cv_epochs: int = 1
    # MF-PPO: 'plain' clips the LF surrogates as PPO does and weights them by c and -c afterwards; 'signed' clips
    # each term with its weight inside (min(r cA, clip(r) cA)), so a term the loss pushes down keeps a trust region
    cv_clip: str = 'plain'
    # MF-PPO: where the LF terms' gradients are taken. 'current': at the minibatch's weights, ratios and clipping as
    # for HF. 'rollout': at the weights that collected the data (ratio 1), so each minibatch's correction is a fixed
    # vector in every epoch, nothing in it fitted to its own samples (docs/mf_ppo.md §4)
    cv_policy: str = 'current'
    # MF-PPO under pairing 'matched': what the control variate corrects. 'update': the whole update, PPO's epochs run
    # from the same start on the replays and on cv_batches batches of branches (one branch per segment), their
    # difference times c added to the HF update's change of the actor (docs/mf_ppo.md §7). 'gradient': the
    # rollout-weight gradient, a fixed vector added in the first cv_epochs epochs. 'auto': 'update' under 'matched';
    # pairing 'paper' has its own per-minibatch correction ('gradient')
    cv_level: str = 'auto'
    cv_batches: int = 4

    def resolve_cv_level(self, pairing: str) -> None:
        """'auto' -> 'update' under pairing 'matched', 'gradient' under 'paper'; refuses what cannot run."""
        if self.cv_level == 'auto':
            self.cv_level = 'update' if pairing == 'matched' else 'gradient'
        if self.cv_level == 'update' and pairing != 'matched':
            raise ValueError("algo.ppo.cv_level 'update' needs the branches of algo.estimator.pairing 'matched'")
        if self.cv_level == 'update' and self.cv_epochs != 1:
            raise ValueError("algo.ppo.cv_epochs applies to algo.ppo.cv_level 'gradient'; 'update' corrects all "
                             "epochs at once (set cv_level: gradient, or leave cv_epochs at 1)")

    def __post_init__(self):
        self.target_kl = _optional(self.target_kl)
        _require(self, 'algo.ppo.', clip_range=_positive, n_epochs=_at_least_one, minibatch_size=_at_least_one,
                 gae_lambda=_unit, value_clip_range=_positive, pool_minibatch_size=_not_negative,
                 cv_batches=_at_least_one)
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f'algo.ppo.target_kl must be > 0 (or null: no early stop), not {self.target_kl}')
        if self.cv_epochs < 0:
            raise ValueError(f'algo.ppo.cv_epochs must be >= 0 (0: every epoch), not {self.cv_epochs}')
        if self.cv_clip not in ('plain', 'signed'):
            raise ValueError(f"algo.ppo.cv_clip must be 'plain' or 'signed', not {self.cv_clip!r}")
        if self.cv_policy not in ('current', 'rollout'):
            raise ValueError(f"algo.ppo.cv_policy must be 'current' or 'rollout', not {self.cv_policy!r}")
        if self.cv_level not in ('auto', 'gradient', 'update'):
            raise ValueError(f"algo.ppo.cv_level must be 'auto', 'gradient' or 'update', not {self.cv_level!r}")
        if self.cv_policy == 'rollout' and self.cv_clip != 'plain':
            raise ValueError("algo.ppo.cv_policy 'rollout' takes the LF gradients at ratio 1, where nothing is "
                             "clipped: use it with algo.ppo.cv_clip 'plain'")


@dataclass
class OffDynamicsConfig:
    """DARC / PAR baselines (core/baselines.py; paper notes §3.3): how LF rewards are corrected from HF data."""

    beta: float = 1.0  # scale of the LF reward correction (DARC: 1.0; PAR: 0.5 hopper, 0.1 walker, 1.0 cheetah)
    hidden: int = 256  # width of the classifier / encoder layers
    latent_dim: int = 256  # PAR latent size
    input_noise: float = 0.5  # DARC: Gaussian noise std added to classifier inputs while training
    lr: float = 3e-4
    batch_size: int = 128  # transitions drawn from each replay buffer per training step
    updates_per_iter: int = 1  # classifier / encoder steps per learner iteration
    warmup_hf_steps: int = 2000  # no correction (and no training) before this many HF steps were seen
    buffer_size: int = 1_000_000  # transitions kept per fidelity
    tau: float = 0.005  # PAR: Polyak rate of the target encoder


@dataclass
class AlgoConfig:
    algorithm: str = 'mf_reinforce'
    lr: float = 7e-4
    gamma: float = 0.97
    max_grad_norm: float = 1.0
    # joint: one grad-norm clip over policy + value parameters together (the authors' code; the critic's gradient
    # dominates the norm, so it sets the policy's step). separate: policy parameters (pi, log_std) and value
    # parameters (vf) are each clipped to max_grad_norm on their own. REINFORCE-family learners only.
    clip_mode: str = 'joint'
    vf_coef: float = 1.0
    adam_eps: float = 1e-5
    hidden: tuple[int, ...] = (64, 64)
    log_std_init: float = 0.0
    hf_steps_per_iter: int = 100
    pool_envs: int = 9
    pool_steps_per_env: int = 1000
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    offdyn: OffDynamicsConfig = field(default_factory=OffDynamicsConfig)

    def __post_init__(self):
        if not isinstance(self.hidden, (list, tuple)):
            raise ValueError(f'algo.hidden must be a list of layer widths, e.g. [64, 64], not {self.hidden!r}')
        self.hidden = tuple(self.hidden)
        _require(self, 'algo.', lr=_positive, gamma=_unit, max_grad_norm=_positive, vf_coef=_not_negative,
                 adam_eps=_positive, hf_steps_per_iter=_at_least_one, pool_envs=_at_least_one,
                 pool_steps_per_env=_at_least_one)
        if any(width < 1 for width in self.hidden):  # () is a linear policy
            raise ValueError(f'algo.hidden must list layer widths >= 1, not {list(self.hidden)}')
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f'algo.algorithm {self.algorithm!r} is not one of {ALGORITHMS}')
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f'algo.clip_mode {self.clip_mode!r} is not one of {CLIP_MODES}')
        if self.clip_mode != 'joint' and self.algorithm in ('mf_ppo', 'ppo'):
            raise ValueError(f"algo.clip_mode {self.clip_mode!r} is not implemented for {self.algorithm!r} "
                             "(joint only)")
        if isinstance(self.estimator, dict):
            self.estimator = _build(EstimatorConfig, self.estimator, 'estimator')
        if isinstance(self.ppo, dict):
            self.ppo = _build(PPOConfig, self.ppo, 'ppo')
        if isinstance(self.offdyn, dict):
            self.offdyn = _build(OffDynamicsConfig, self.offdyn, 'offdyn')
        self.estimator.resolve_pairing(self.algorithm)
        if self.estimator.pairing == 'matched' and (self.ppo.cv_policy != 'current' or self.ppo.cv_clip != 'plain'):
            raise ValueError("algo.estimator.pairing 'matched' (mf_ppo's default) takes MF-PPO's correction once "
                             "per iteration at the rollout weights: algo.ppo.cv_policy and algo.ppo.cv_clip apply to "
                             "pairing 'paper' only")
        if self.algorithm == 'mf_ppo':
            self.ppo.resolve_cv_level(self.estimator.pairing)


@dataclass
class TrainConfig:
    task: str = 'cartpole'
    hifi_variant: str | dict | None = 'cartpole_twin'  # the "real" plant (or its stand-in)
    lofi_variant: str | dict | None = None  # the simulator the low-fidelity side uses
    seed: int = 0
    iterations: int = 300
    eval_every: int = 20  # iterations between deterministic evaluations on the HF plant
    eval_episodes: int = 10
    target_return: float | None = None  # stop once the mean of the last 10 HF episode returns reaches this
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def __post_init__(self):
        self.hifi_variant, self.lofi_variant = _optional(self.hifi_variant), _optional(self.lofi_variant)
        self.target_return = _optional(self.target_return)
        _require(self, '', seed=_not_negative, iterations=_at_least_one, eval_every=_not_negative,
                 eval_episodes=_at_least_one)
        if isinstance(self.algo, dict):
            self.algo = _build(AlgoConfig, self.algo, 'algo')

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def ignored_settings(algo: AlgoConfig) -> list[str]:
    """The algo.estimator / algo.ppo / algo.offdyn keys set away from their defaults that algo.algorithm does not
    read: a warning for the user (one config file may well serve several algorithms, so not an error)."""
    ignored = []
    for section, users in (('estimator', MF_ALGORITHMS), ('ppo', PPO_ALGORITHMS), ('offdyn', OFF_DYNAMICS_ALGORITHMS)):
        if algo.algorithm in users:
            continue
        value = getattr(algo, section)
        default = type(value)()
        if section == 'estimator':
            default.resolve_pairing(algo.algorithm)
        ignored += [f'algo.{section}.{f.name}' for f in dataclasses.fields(value)
                    if getattr(value, f.name) != getattr(default, f.name) and f.name not in EVERY_LEARNER_READS]
    return ignored


def ignored_settings_warning(algo: AlgoConfig) -> str | None:
    ignored = ignored_settings(algo)
    return (f'{", ".join(ignored)} {"is" if len(ignored) == 1 else "are"} set but {algo.algorithm} does not use '
            f'{"it" if len(ignored) == 1 else "them"}') if ignored else None


RUN_CONTROL = ('iterations', 'eval_every', 'eval_episodes', 'target_return')  # may change when a run is resumed


def check_resumable(saved: dict, current: TrainConfig, path) -> None:
    """ValueError naming the dotted keys, other than RUN_CONTROL, in which the config a checkpoint was saved under
    (its dict) differs from the current one: checked before loading, so a changed network size is named, not met
    as a tensor mismatch."""
    def flat(d: dict, prefix: str = '') -> dict:
        out = {}
        for key, value in d.items():
            out.update(flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {prefix + key: value})
        return out
    saved = copy.deepcopy(saved)
    if saved.get('algo', {}).get('algorithm') == 'mf_ppo':  # saved before session 18: gradient-level correction
        saved['algo'].setdefault('ppo', {}).setdefault('cv_level', 'gradient')
    a, b = flat(load_config(saved).to_dict()), flat(current.to_dict())
    differing = sorted(k for k in a.keys() | b.keys() if k.split('.')[0] not in RUN_CONTROL and a.get(k) != b.get(k))
    if differing:
        raise ValueError(f'{path} was saved under another config (differs in {", ".join(differing)})')


# value rules: (test, what it asks for)
_positive = (lambda v: v > 0, '> 0')
_not_negative = (lambda v: v >= 0, '>= 0')
_at_least_one = (lambda v: v >= 1, '>= 1')
_unit = (lambda v: 0 <= v <= 1, 'in [0, 1]')


def _require(config, prefix: str, **rules) -> None:
    """ValueError naming the first field (dotted) whose value breaks its rule (NaN breaks every rule)."""
    for name, (ok, wanted) in rules.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            hint = ' (YAML reads 1e-3 as text: write 0.001 or 1.0e-3)' if isinstance(value, str) else ''
            raise ValueError(f'{prefix}{name} must be a number {wanted}, not {value!r}{hint}')


def _optional(value):
    """'' and NaN stand for None where the value came from a ROS parameter (which cannot be None)."""
    if value == '' or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _build(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f'unknown {where} keys {sorted(unknown)}; valid: {sorted(known)}')
    return cls(**values)


def load_config(source: str | Path | dict | None = None, **overrides) -> TrainConfig:
    """Build a TrainConfig from a YAML file (plain, or a ROS params file's `/**: ros__parameters` section) or a
    dict, then apply dotted overrides (e.g. algo.lr=1e-3)."""
    values = {}
    if isinstance(source, dict):
        values = dict(source)
    elif source is not None:
        values = yaml.safe_load(Path(source).read_text()) or {}
        values = values.get('/**', {}).get('ros__parameters', values)  # a ROS params file works too
    for dotted, value in overrides.items():
        node = values
        *path, leaf = dotted.split('.')
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = value
    return _build(TrainConfig, values, 'top-level')


def config_fields(cls=TrainConfig, prefix: str = '') -> dict[str, tuple[object, object]]:
    """Every TrainConfig leaf by dotted name: (default, type hint)."""
    hints, out = typing.get_type_hints(cls), {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.update(config_fields(type(default), f'{prefix}{f.name}.'))
        else:
            out[f'{prefix}{f.name}'] = (default, hints[f.name])
    return out
