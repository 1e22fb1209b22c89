"""lofi_sim: the vectorised MuJoCo low-fidelity side. For every HF segment of the current policy version it runs
the paired replay (same s0, same eps); per version it runs its share of the independent pool for mu_l. Under
pairing 'matched' (docs/pairing.md) the replay runs on to the segment's batch end and the segment's branches (fresh
rollouts from its s0) replace the pool. Several lofi_sim nodes share the work by worker_index / num_workers.

The pool runs on a worker thread, the replays on the executor's: a replay is wanted as soon as its HF segment
arrives, and the pool would otherwise hold it back for its whole run (MuJoCo releases the GIL while stepping, so
the two interleave). An error in the pool thread is raised again in the executor's thread: the node stops as it
would on an error in a callback."""
from __future__ import annotations

import zlib
from concurrent.futures import Future, ThreadPoolExecutor

from rclpy.node import Node
from std_msgs.msg import UInt8MultiArray

from mfpg_ros.core.codec import CodecError, decode_episode, encode_batches, encode_episode
from mfpg_ros.core.episode import LOFI_POOL
from mfpg_ros.core.numpy_policy import NumpyPolicy
from mfpg_ros.core.pairing import branch_copies, needs_paired, needs_pool, replay_horizon, uses_branches
from mfpg_ros.nodes.common import EPISODES_IN, HIFI_EPISODES, LATCHED, LOFI_EPISODES, QUIET_PUB, QUIET_SUB, \
    WEIGHTS, Diagnostics, Rejections, bytes_msg, lofi_episodes_qos, msg_bytes, newer_weights, run, signing_key
from mfpg_ros.nodes.params import declare_config
from mfpg_ros.sim.engine import Engine
from mfpg_ros.sim.tasks import make_task


def pool_share(total_envs: int, worker: int, workers: int) -> int:
    """Environments of the pool this worker runs (the shares add up to total_envs)."""
    return total_envs // workers + (1 if worker < total_envs % workers else 0)


class LofiSim(Node):
    def __init__(self):
        super().__init__('lofi_sim')
        # One pool at a time, in order. Made first: rclpy's shutdown calls destroy_node (which shuts it down) even on
        # a node whose parameters were refused below.
        self.pool_thread = ThreadPoolExecutor(1, thread_name_prefix='lofi_pool')
        cfg = declare_config(self)
        self.worker = self.declare_parameter('worker_index', 0).value
        self.workers = self.declare_parameter('num_workers', 1).value
        # Physics lanes. One by default: in the graph the robot-facing nodes share the cores, and a second lane's
        # Python thread fights the first for the GIL (measured: the cart-pole graph iterates ~35% faster on one).
        # Scale out with more lofi_sim processes; raise it where physics dominates and cores are free.
        nthread = self.declare_parameter('nthread', 1).value
        # The pool goes out in this many parts, each with the segments that ended in it: the learner sums the pool's
        # term as they come instead of after the last one.
        self.pool_pieces = self.declare_parameter('pool_pieces', 8).value
        if not 0 <= self.worker < self.workers:
            raise ValueError(f'worker_index {self.worker} must be in [0, num_workers={self.workers})')
        # Each piece may add one part-filled batch; the writer's history keeps 64 pool batches of a version
        # (lofi_episodes_qos), so 32 pieces leave room for a pool of 32 full batches (8 MB).
        if not 1 <= self.pool_pieces <= 32:
            raise ValueError(f'pool_pieces {self.pool_pieces} must be in [1, 32]')
        self.key = signing_key(self)
        task = make_task(cfg.task, cfg.lofi_variant)
        self.contract = task.contract
        self.algorithm, self.steps_per_env = cfg.algo.algorithm, cfg.algo.pool_steps_per_env
        self.batch_steps = cfg.algo.hf_steps_per_iter
        self.matched = uses_branches(cfg.algo)
        self.copies = branch_copies(cfg.algo)
        envs = 0 if self.matched else pool_share(cfg.algo.pool_envs, self.worker, self.workers)
        self.pool = Engine(task, envs, seed=cfg.seed * 1000 + 2 * self.worker + 1, nthread=nthread) if envs else None
        self.replayer = Engine(task, 1, seed=cfg.seed * 1000 + 2 * self.worker + 2, nthread=nthread)
        self.policy, self.version, self.pool_done = None, -1, -1
        self.waiting = []  # HF segments of versions whose weights have not arrived yet
        self.replays = self.pool_steps = self.stale = self.messages_sent = 0
        self.rejections = Rejections(self)
        self.episode_pub = self.create_publisher(UInt8MultiArray, LOFI_EPISODES,
                                                 lofi_episodes_qos(cfg.algo.hf_steps_per_iter), **QUIET_PUB)
        self.create_subscription(UInt8MultiArray, WEIGHTS, self.on_weights, LATCHED, **QUIET_SUB)
        self.create_subscription(UInt8MultiArray, HIFI_EPISODES, self.on_hifi_episode, EPISODES_IN, **QUIET_SUB)
        self.pool_failed = self.create_guard_condition(self.raise_pool_error)
        self.pool_error: BaseException | None = None
        Diagnostics(self, lambda: {'policy_version': self.version, 'replays': self.replays,
                                   'pool_steps': self.pool_steps, 'messages_sent': self.messages_sent,
                                   'stale_dropped': self.stale,
                                   'waiting': len(self.waiting), 'rejected': self.rejections.total},
                    rejections=self.rejections)

    def on_weights(self, msg: UInt8MultiArray) -> None:
        weights = newer_weights(msg, self.contract, self.key, self.version, self.rejections)
        if weights is None:
            return
        self.policy, self.version = NumpyPolicy.from_state(weights.state), weights.version
        if self.pool is not None and needs_pool(self.algorithm):
            self.pool_thread.submit(self.run_pool, self.policy, self.version).add_done_callback(self.pool_finished)
        waiting, self.waiting = self.waiting, []
        for segment in waiting:
            self.process(segment)

    def on_hifi_episode(self, msg: UInt8MultiArray) -> None:
        try:
            segment = decode_episode(msg_bytes(msg), contract=self.contract, key=self.key, hifi_stream=True)
        except CodecError as err:
            self.rejections(HIFI_EPISODES, err)
            return
        if zlib.crc32(segment.episode_id.encode()) % self.workers == self.worker:
            self.process(segment)

    def process(self, segment) -> None:
        if len(self.waiting) >= 1000 or (self.policy is not None and segment.policy_version > self.version + 1):
            self.rejections(HIFI_EPISODES, f'segment of version {segment.policy_version} while at {self.version}',
                            'too far ahead')
        elif self.policy is None or segment.policy_version > self.version:
            self.waiting.append(segment)  # its weights are on the way (a new node may get the HF history first)
        elif segment.policy_version < self.version:
            self.stale += 1
        elif needs_paired(self.algorithm) and not segment.aborted:
            try:
                horizons = [replay_horizon(segment, self.batch_steps)] if self.matched else None
            except ValueError as err:
                self.rejections(HIFI_EPISODES, err)
                return
            for replay in self.replayer.replay(self.policy, [segment], self.version, horizons):
                self.send(encode_episode(replay, key=self.key))
            if self.matched:
                branches = self.replayer.branch(self.policy, [segment], horizons, self.copies, self.version)
                for batch in encode_batches(branches, key=self.key):
                    self.send(batch)
                self.pool_steps += sum(len(b) for b in branches)
            self.replays += 1

    def run_pool(self, policy: NumpyPolicy, version: int) -> None:
        """On the pool thread: this version's share of the pool, unless newer weights came while it queued."""
        if version < self.version or self.pool_done >= version:
            return
        self.pool.collect(policy, self.steps_per_env, version, LOFI_POOL, emit=self.publish_pool,
                          pieces=self.pool_pieces)
        self.pool_done = version

    def publish_pool(self, segments: list) -> None:
        for batch in encode_batches(segments, key=self.key):  # a few messages, not hundreds
            self.send(batch)
        self.pool_steps += sum(len(segment) for segment in segments)

    def send(self, payload: bytes) -> None:  # from either thread
        self.episode_pub.publish(bytes_msg(payload))
        self.messages_sent += 1

    def pool_finished(self, done: Future) -> None:
        if done.cancelled() or done.exception() is None or not self.context.ok():  # failing in a shutdown is no error
            return
        self.pool_error = done.exception()
        self.pool_failed.trigger()

    def raise_pool_error(self) -> None:
        raise RuntimeError('the LF pool failed') from self.pool_error

    def destroy_node(self) -> None:
        self.pool_thread.shutdown(wait=True, cancel_futures=True)  # a running pool ends before its node goes
        super().destroy_node()


def main(args=None):
    run(LofiSim, args)
