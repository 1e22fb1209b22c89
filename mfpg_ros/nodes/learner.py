"""learner: gathers one policy version's HF segments, paired LF replays and LF pool; takes the MF update; publishes
the next weights (latched), per-iteration metrics (rqt_plot-ready) and checkpoints."""
from __future__ import annotations

import collections
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Float64, String, UInt8MultiArray

from mfpg_ros.core.bookkeeping import EpisodeReturns
from mfpg_ros.core.checkpoint import load_checkpoint, save_checkpoint
from mfpg_ros.core.codec import CodecError, decode_episodes, encode_weights
from mfpg_ros.core.config import ignored_settings_warning
from mfpg_ros.core.episode import LOFI_POOL
from mfpg_ros.core.learners import iteration_assembler, make_learner
from mfpg_ros.core.run_folder import check_start, drop_rows_from
from mfpg_ros.nodes.common import EPISODES_IN, HIFI_EPISODES, HISTORY, LOFI_EPISODES, METRICS, QUIET_PUB, QUIET_SUB, \
    WEIGHTS, WEIGHTS_OUT, Diagnostics, Rejections, bytes_msg, msg_bytes, run, signing_key, steady_timer
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.tasks import make_task
from mfpg_ros.tensorboard_log import TensorBoardLog


class LearnerNode(Node):
    def __init__(self):
        super().__init__('learner')
        self.tensorboard = None  # first: destroy_node runs even when a check below refuses to start
        torch.set_num_threads(1)
        self.cfg = cfg = declare_config(self)
        run_dir = self.declare_parameter('run_dir', '').value
        self.run_dir = Path(run_dir) if run_dir else None
        self.checkpoint_every = self.declare_parameter('checkpoint_every', 10).value
        if self.checkpoint_every < 1:
            raise ValueError(f'checkpoint_every must be >= 1, got {self.checkpoint_every}')
        self.lofi_timeout = self.declare_parameter('lofi_timeout_s', 30.0).value
        self.exit_when_done = self.declare_parameter('exit_when_done', True).value
        resume = self.declare_parameter('resume', '').value  # a checkpoint file, or a run folder (its latest)
        self.resumed = bool(resume)
        self.key = signing_key(self)
        task = make_task(cfg.task, cfg.lofi_variant)
        self.contract = task.contract
        algo = cfg.algo
        self.learner = make_learner(algo, self.contract, cfg.seed)
        self.assembler = iteration_assembler(algo)
        self.returns = EpisodeReturns(task.max_episode_steps)
        self.recent = collections.deque(maxlen=10)
        self.hf_total = self.lofi_timeouts = self.nonfinite_updates = 0
        self.hf_complete_since: float | None = None
        self.iteration_started = time.perf_counter()
        resume_path = check_start(self.run_dir, cfg, resume)
        if resume_path is not None:
            self.resume_from(resume_path)
        if self.run_dir:  # a checkpoint write a crash cut short
            for tmp in (self.run_dir / 'checkpoints').glob('.tmp-*'):
                tmp.unlink(missing_ok=True)
        self.done = False
        self.csv_fields: list[str] | None = None
        self.rejections = Rejections(self)
        self.weights_pub = self.create_publisher(UInt8MultiArray, WEIGHTS, WEIGHTS_OUT, **QUIET_PUB)
        self.summary_pub = self.create_publisher(String, f'{METRICS}/summary', HISTORY, **QUIET_PUB)
        self.metric_pubs: dict[str, object] = {}
        self.create_subscription(UInt8MultiArray, HIFI_EPISODES, lambda m: self.on_episode(m, HIFI_EPISODES),
                                 EPISODES_IN, **QUIET_SUB)
        self.create_subscription(UInt8MultiArray, LOFI_EPISODES, lambda m: self.on_episode(m, LOFI_EPISODES),
                                 EPISODES_IN, **QUIET_SUB)
        steady_timer(self, 0.1, self.maybe_update)  # the lofi timeout runs while sim time stands still
        Diagnostics(self, self.diagnostics, rejections=self.rejections)
        if self.run_dir:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not resume:
                self.checkpoint()  # a learner that dies before its first update resumes too
        if self.run_dir:  # resumed: forget what the dead learner logged after its last checkpoint
            if resume:
                drop_rows_from(self.run_dir / 'metrics.csv', self.learner.version)
            self.tensorboard = TensorBoardLog(self.run_dir / 'tensorboard',
                                              resume_step=self.learner.version + 1 if resume else None)
        self.publish_weights()
        self.get_logger().info(f'{algo.algorithm} on {cfg.task}: waiting for version {self.learner.version} data')
        unused = ignored_settings_warning(algo)
        if unused:
            self.get_logger().warning(unused)

    def on_episode(self, msg: UInt8MultiArray, topic: str) -> None:
        try:
            episodes = decode_episodes(msg_bytes(msg), contract=self.contract, key=self.key,
                                       hifi_stream=topic == HIFI_EPISODES)
        except CodecError as err:
            self.rejections(topic, err)
            return
        for episode in episodes:
            self.assembler.add(episode)
        if any(e.fidelity == LOFI_POOL for e in episodes):  # sum the pool's term now, not after the last HF segment
            self.learner.prefetch_pool(self.assembler.data.pool)
        self.maybe_update()

    def maybe_update(self) -> None:
        if self.done or not self.assembler.hf_complete():
            return
        now = time.perf_counter()
        self.hf_complete_since = self.hf_complete_since or now
        timed_out = not self.assembler.lofi_complete() and now - self.hf_complete_since > self.lofi_timeout
        if not (self.assembler.ready() or timed_out):
            return
        data = self.assembler.take()
        if timed_out:  # a low-fidelity simulator is missing: carry on HF-only (c = 0) and say so
            self.lofi_timeouts += 1
            self.get_logger().warning(f'low-fidelity data for version {self.learner.version} incomplete after '
                                      f'{self.lofi_timeout:.0f} s: HF-only update')
            data.paired, data.pool = [], []
        metrics = self.learner.update(data.hifi, data.paired, data.pool)
        if metrics['nonfinite_update']:
            self.nonfinite_updates += 1
            self.get_logger().error(f'the update of version {self.learner.version - 1} made the weights non-finite '
                                    f'(absurd rewards or observations?): undone, the previous weights go on')
        for segment in data.hifi:
            self.returns.add(segment)
        finished = self.returns.take()
        self.recent.extend(finished)
        self.hf_total += data.steps('hifi')
        metrics.update(hf_total_steps=self.hf_total, lofi_timeouts=self.lofi_timeouts,
                       hf_return=float(np.mean(finished)) if finished else math.nan,
                       hf_return_recent=float(np.mean(self.recent)) if self.recent else math.nan,
                       wait_seconds=now - self.iteration_started - metrics['update_seconds'],
                       iteration_seconds=time.perf_counter() - self.iteration_started,
                       dropped=sum(self.assembler.dropped.values()))
        self.iteration_started, self.hf_complete_since = time.perf_counter(), None
        target = self.cfg.target_return
        self.done = self.learner.version >= self.cfg.iterations or (
            target is not None and len(self.recent) == self.recent.maxlen and metrics['hf_return_recent'] >= target)
        metrics['done'] = self.done
        # one line per iteration: under `ros2 launch` (output on the screen) this is the progress a user sees
        c = f", c {metrics['c']:.3f}" if 'c' in metrics else ''
        self.get_logger().info(f"iteration {metrics['iteration']}: HF steps {self.hf_total}, recent HF return "
                               f"{metrics['hf_return_recent']:.1f}{c}, {metrics['iteration_seconds']:.2f} s")
        # The row, then the checkpoint, then the weights: a crash anywhere in between loses no row, and a
        # restarted learner resumes at the version the robot runs (dropping any row it is about to redo).
        self.record(metrics)
        if self.run_dir:
            self.checkpoint()
        self.publish_weights()
        # Last. The runner stops the graph on a 'done' row: its SIGINT lets this callback finish the checkpoint.
        self.publish_metrics(metrics)
        if self.done and self.exit_when_done:
            self.finish()

    def finish(self) -> None:
        """Training is over: make sure the last weights and metrics were delivered, then exit cleanly (a
        launch file's on_exit=Shutdown or the runner then ends the graph)."""
        for pub in (self.weights_pub, self.summary_pub):
            pub.wait_for_all_acked(Duration(seconds=2.0))
        self.get_logger().info(f'training done after {self.learner.version} iterations')
        raise SystemExit(0)

    def publish_weights(self) -> None:
        payload = encode_weights(self.learner.model, version=self.learner.version, contract=self.contract,
                                 key=self.key)
        self.weights_pub.publish(bytes_msg(payload))

    def publish_metrics(self, metrics: dict) -> None:
        self.summary_pub.publish(String(data=json.dumps(metrics)))
        for name, value in metrics.items():
            if name not in self.metric_pubs:
                self.metric_pubs[name] = self.create_publisher(Float64, f'{METRICS}/{name}', 10, **QUIET_PUB)
            self.metric_pubs[name].publish(Float64(data=float(value)))

    def record(self, metrics: dict) -> None:
        """The iteration's row in metrics.csv and its TensorBoard scalars."""
        if not self.run_dir:
            return
        path = self.run_dir / 'metrics.csv'
        if self.csv_fields is None and self.resumed and path.is_file():  # resumed into its run folder: append
            with path.open(newline='') as f:
                self.csv_fields = next(csv.reader(f), None) or None
        new = self.csv_fields is None
        self.csv_fields = self.csv_fields or sorted(metrics)
        with path.open('w' if new else 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.csv_fields, extrasaction='ignore', restval='')
            if new:
                writer.writeheader()
            writer.writerow(metrics)
        self.tensorboard.log(self.learner.version, metrics)

    def resume_from(self, path: Path) -> None:
        """The learner's state, and the node's counters and episode returns, as the checkpoint (checked by check_start)
        has them."""
        extra = load_checkpoint(self.learner, path)
        book = extra.get('learner_node', {})
        self.hf_total, self.lofi_timeouts = book.get('hf_total', 0), book.get('lofi_timeouts', 0)
        self.nonfinite_updates = book.get('nonfinite_updates', 0)
        self.returns.load(book)
        self.recent.extend(book.get('recent', []))
        self.assembler.version = self.learner.version  # continue from the checkpoint's policy version
        self.get_logger().info(f'resumed from {path} at policy version {self.learner.version}')

    def checkpoint(self) -> None:
        """Every version is checkpointed (the initial one too); every checkpoint_every-th and the newest are kept."""
        folder = self.run_dir / 'checkpoints'
        book = {'hf_total': self.hf_total, 'lofi_timeouts': self.lofi_timeouts,
                'nonfinite_updates': self.nonfinite_updates, 'recent': list(self.recent), **self.returns.state()}
        save_checkpoint(self.learner, folder / f'learner_{self.learner.version:06d}.safetensors',
                        extra={'config': self.cfg.to_dict(), 'learner_node': book})
        previous = self.learner.version - 1
        if previous >= 0 and previous % self.checkpoint_every:
            (folder / f'learner_{previous:06d}.safetensors').unlink(missing_ok=True)

    def destroy_node(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        super().destroy_node()

    def diagnostics(self) -> dict:
        return {'policy_version': self.learner.version, 'waiting_for': self.assembler.waiting_for(),
                'hf_total_steps': self.hf_total,
                'hf_steps_waiting': self.assembler.data.steps('hifi'),
                'pool_steps_waiting': self.assembler.data.steps('pool'),
                'pairs_missing': len(self.assembler.missing_pairs()), 'lofi_timeouts': self.lofi_timeouts,
                'nonfinite_updates': self.nonfinite_updates,
                'rejected': self.rejections.total, **{f'dropped {k}': v for k, v in self.assembler.dropped.items()}}


def main(args=None):
    run(LearnerNode, args)
