"""`mfpg` command line: train through the node graph, train in-process, replay a recorded run, run benchmarks."""
from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = ('throughput', 'variance', 'latency', 'graph', 'watchdog', 'suite', 'report', 'fuzz', 'scaleout',
              'ppo_anchor')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog='mfpg', description=__doc__,
                                     epilog='`mfpg COMMAND --help` shows a command\'s options.')
    parser.add_argument('command', choices=['train', 'train-inprocess', 'replay', 'bench'],
                        help='train: full ROS 2 node graph; train-inprocess: no ROS; replay BAG: re-run the learner '
                             f'on a recorded run; bench NAME: a benchmark, one of {", ".join(BENCHMARKS)}')
    args, rest = parser.parse_args(argv[:1]), argv[1:]  # the rest, --help included, goes to the subcommand
    if args.command == 'bench':
        if rest[:1] in (['-h'], ['--help']):
            print(f'usage: mfpg bench NAME [options]; NAME is one of {", ".join(BENCHMARKS)}; '
                  '`mfpg bench NAME --help` shows its options (docs/performance.md and docs/results.md: what they '
                  'measure)')
            return 0
        if not rest or rest[0] not in BENCHMARKS:
            parser.error(f'bench needs one of {BENCHMARKS}')
        return importlib.import_module(f'mfpg_ros.bench.{rest[0]}').main(rest[1:]) or 0
    module = {'train': 'mfpg_ros.runner', 'train-inprocess': 'mfpg_ros.train_inprocess',
              'replay': 'mfpg_ros.replay'}[args.command]
    return importlib.import_module(module).main(rest) or 0


if __name__ == '__main__':
    sys.exit(main())
