"""`mfpg bench report`: learning curves, final-return chart and a markdown results table from a suite folder.

Per setting and method: final return (last deterministic HF evaluation) mean +- 95% CI over seeds; ratio to the
HF-only reference (REINFORCE; PPO for MF-PPO); Welch t-test p-value against it; the HF steps (actual, k-x methods
included) at which the seed-mean curve, averaged over 3 consecutive evaluations, first reaches the reference's
final mean, and the speed-up reach(reference) / reach(method), where reach(reference) is its own first reach (its
budget if it only gets there at the end); and the ratio of the curves' means over all evaluations (area under the
learning curve, which also sees gains made before the methods plateau).
Last line printed: `median_return_ratio_mf_vs_hf: <ratio>`.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import math
from pathlib import Path

import numpy as np

from mfpg_ros.bench import stats
from mfpg_ros.bench.methods import HF_ONLY, METHODS, REFERENCE
from mfpg_ros.bench.settings import SETTINGS

BEGIN, END = '<!-- bench-report:begin -->', '<!-- bench-report:end -->'
GAP_ORDER = {'mild': 0, 'moderate': 1, 'large': 2, 'drastic': 3}


def reference(method: str) -> str:
    return HF_ONLY.get(method, REFERENCE)


def mf_methods(results: dict) -> list[str]:
    """The multi-fidelity methods present, REINFORCE's first (the headline)."""
    return [m for m in HF_ONLY if any(m in r for r in results.values())]


def load(out: Path) -> tuple[list[dict], list[dict]]:
    """(curve rows, summaries) of every finished run under OUT/runs (summary.json marks a finished run)."""
    curves, summaries = [], []
    for path in sorted(out.glob('runs/*/*/seed*/summary.json')):
        summaries.append(json.loads(path.read_text()))
        with (path.parent / 'curve.csv').open() as f:
            for row in csv.DictReader(f):
                row.update(seed=int(row['seed']), hf_steps=int(row['hf_steps']), x_steps=float(row['x_steps']),
                           eval_return=float(row['eval_return']))
                curves.append(row)
    return curves, summaries


def analyse(curves: list[dict], summaries: list[dict]) -> dict:
    """{setting: {method: stats}} with finals, curve band, reach and comparisons."""
    finals = collections.defaultdict(dict)
    for s in summaries:
        finals[(s['setting'], s['method'])][s['seed']] = s
    per_seed = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in curves:
        per_seed[(r['setting'], r['method'])][r['seed']].append((r['x_steps'], r['eval_return']))
    out: dict = collections.defaultdict(dict)
    for (setting, method), runs in finals.items():
        values = [runs[k]['final_return'] for k in sorted(runs)]
        x, mean, half = stats.curve_band(per_seed[(setting, method)])
        mult = METHODS[method].hf_multiplier if method in METHODS else 1
        out[setting][method] = {'finals': values, 'mean': stats.mean_ci(values)[0], 'ci': stats.mean_ci(values)[1],
                                'x': x, 'curve': mean, 'band': half, 'k': mult, 'runs': list(runs.values())}
    for setting, methods in out.items():
        for method, m in methods.items():
            ref = methods.get(reference(method))
            m['reference'] = reference(method)
            if ref is None:
                m.update(ratio=float('nan'), p=float('nan'), reach=None, speedup=float('nan'), auc_ratio=float('nan'))
                continue
            target = ref['mean']
            m['ratio'] = m['mean'] / target if target > 0 else float('nan')
            ref_auc = float(np.mean(ref['curve'])) if len(ref['curve']) else float('nan')
            m['auc_ratio'] = float(np.mean(m['curve'])) / ref_auc if ref_auc > 0 and len(m['curve']) else float('nan')
            m['p'] = stats.welch_p(m['finals'], ref['finals']) if method != m['reference'] else float('nan')
            reach = stats.steps_to_reach(m['x'], m['curve'], target) * m['k']
            ref_reach = stats.steps_to_reach(ref['x'], ref['curve'], target) * ref['k']
            if not math.isfinite(ref_reach) and len(ref['x']):
                ref_reach = ref['x'][-1] * ref['k']  # gets there only at the end
            m['reach'], m['speedup'] = reach, ref_reach / reach if reach > 0 else float('nan')
    return out


def _fmt(v, spec='.1f', empty='–') -> str:
    return empty if v is None or not math.isfinite(v) else format(v, spec)


def _ordered(results: dict) -> list[str]:
    return sorted(results, key=lambda s: (GAP_ORDER.get(_gap(s), 9), s))


def _gap(setting: str) -> str:
    return SETTINGS[setting].gap if setting in SETTINGS else '?'


def tables(results: dict, summaries: list[dict]) -> str:
    lines = ['| setting (gap) | method | final return (95% CI) | ratio vs ref | Welch p vs ref | HF steps to ref final '
             '| speed-up | curve-mean ratio |', '|---|---|---|---|---|---|---|---|']
    method_order = list(METHODS)
    for setting in _ordered(results):
        for method in sorted(results[setting], key=lambda m: method_order.index(m) if m in method_order else 99):
            m = results[setting][method]
            ref_tag = '' if m['reference'] == 'reinforce' else f" ({m['reference']})"
            lines.append(f"| {setting} ({_gap(setting)}) | {method} | {_fmt(m['mean'])} ± {_fmt(m['ci'])} "
                         f"(n={len(m['finals'])}) | {_fmt(m['ratio'], '.2f')}{ref_tag} | {_fmt(m['p'], '.3f')} | "
                         f"{_fmt(m['reach'], '.0f', 'not reached')} | {_fmt(m['speedup'], '.2f')} | "
                         f"{_fmt(m['auc_ratio'], '.2f')} |")
    mf = (mf_methods(results) or ['mf_reinforce'])[0]  # the estimator statistics of this MF method
    columns = [(f'{mf} rho (mean)', mf, 'rho_mean', '.3f'), (f'{mf} c (mean)', mf, 'c_mean', '+.3f'),
               ('Var ratio with/without CV', mf, 'var_ratio_mean', '.3f'),
               ('c clamped', mf, 'clamped_fraction', '.1%'),
               ('aligned HF steps', mf, 'n_aligned_mean', '.1f'),
               ('s/iter MF', mf, 'iteration_seconds', '.3f'),
               ('s/iter HF-only', reference(mf), 'iteration_seconds', '.3f'),
               ('s/iter LF-only', 'lf_reinforce', 'iteration_seconds', '.3f'),
               ('LF steps/s (MF)', mf, 'lf_steps_per_s', '.0f')]
    lines += ['', '| setting | ' + ' | '.join(c[0] for c in columns) + ' |', '|---' * (len(columns) + 1) + '|']
    by = collections.defaultdict(list)
    for s in summaries:
        by[(s['setting'], s['method'])].append(s)

    def avg(setting, method, key):
        vals = [r[key] for r in by.get((setting, method), []) if r.get(key) is not None and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float('nan')

    for setting in _ordered(results):
        cells = [_fmt(avg(setting, method, key), spec) for _, method, key, spec in columns]
        lines.append(f"| {setting} | {' | '.join(cells)} |")
    return '\n'.join(lines)


def goals(results: dict, mf: str = 'mf_reinforce') -> tuple[list[str], float]:
    """The issue's goals, measured: ratio median / best / worst, speed-ups on mild and moderate gaps."""
    ratios = {s: r[mf]['ratio'] for s, r in results.items() if mf in r and math.isfinite(r[mf]['ratio'])}
    speed = {s: r[mf]['speedup'] for s, r in results.items() if mf in r and _gap(s) in ('mild', 'moderate')}
    significant = [s for s, r in results.items() if mf in r and r[mf]['p'] < 0.05 and r[mf]['ratio'] > 1]
    worse = [s for s, r in results.items() if mf in r and r[mf]['p'] < 0.05 and r[mf]['ratio'] < 1]
    median = float(np.median(list(ratios.values()))) if ratios else float('nan')
    auc = [r[mf]['auc_ratio'] for r in results.values() if mf in r and math.isfinite(r[mf]['auc_ratio'])]
    lines = [f'{mf} vs {reference(mf)} over {len(ratios)} settings:',
             f'- final-return ratio: median {_fmt(median, ".2f")} (goal >= 1.2), best '
             f'{_fmt(max(ratios.values(), default=float("nan")), ".2f")} (goal >= 2), worst '
             f'{_fmt(min(ratios.values(), default=float("nan")), ".2f")} (goal >= 0.9); below 0.9: '
             f'{", ".join(s for s, v in ratios.items() if v < 0.9) or "none"}',
             f'- curve-mean (area) ratio: median {_fmt(float(np.median(auc)) if auc else float("nan"), ".2f")}, '
             f'range {_fmt(min(auc, default=float("nan")), ".2f")}-{_fmt(max(auc, default=float("nan")), ".2f")}',
             f'- significantly better (Welch p < 0.05): {", ".join(significant) or "none"}; '
             f'significantly worse: {", ".join(worse) or "none"}',
             '- speed-up to the reference final return on mild/moderate gaps (goal >= 3): '
             + (', '.join(f'{s} {_fmt(v, ".2f", "not reached")}' for s, v in sorted(speed.items())) or 'none')]
    return lines, median


def plot(results: dict, folder: Path) -> list[Path]:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    settings = _ordered(results)
    methods = [m for m in METHODS if any(m in results[s] for s in settings)]
    colours = {m: plt.cm.tab10(i) for i, m in enumerate(methods)}
    folder.mkdir(parents=True, exist_ok=True)
    ncols = min(4, len(settings))
    nrows = math.ceil(len(settings) / ncols)
    width = max(8, 4 * ncols)  # wide enough for the legend's labels even with one setting
    legend_cols = max(1, min(len(methods), int(width // 2.7)))
    legend_rows = math.ceil(len(methods) / legend_cols)
    height = 3 * nrows + 0.3 * legend_rows
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    for ax, setting in zip(axes.flat, settings):
        for method in methods:
            m = results[setting].get(method)
            if m is None or not len(m['x']):
                continue
            band = np.nan_to_num(m['band'])
            ax.plot(m['x'], m['curve'], color=colours[method], lw=1.4)
            ax.fill_between(m['x'], m['curve'] - band, m['curve'] + band, color=colours[method], alpha=0.18, lw=0)
        ax.set_title(f'{setting} ({_gap(setting)})', fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(settings):]:
        ax.axis('off')
    for ax in axes[-1]:
        ax.set_xlabel('HF steps (k-x methods: HF steps / k)', fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel('eval return (HF)', fontsize=8)
    handles = [plt.Line2D([], [], color=colours[m], lw=2) for m in methods]
    fig.legend(handles, [METHODS[m].label for m in methods], loc='lower center', ncol=legend_cols, fontsize=8)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.05) / height, 1, 1))
    curves_png = folder / 'curves.png'
    fig.savefig(curves_png, dpi=70)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(settings)), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        xs, ys, es = [], [], []
        for j, setting in enumerate(settings):
            m, ref = results[setting].get(method), results[setting].get(reference(method))
            if m is None or ref is None or not ref['mean'] > 0:
                continue
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            ys.append(m['mean'] / ref['mean'])
            es.append(np.nan_to_num(m['ci']) / ref['mean'])
        ax.bar(xs, ys, width, yerr=es, color=colours[method], label=METHODS[method].label, capsize=2)
    ax.axhline(1.0, color='k', lw=0.8)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([f'{s}\n({_gap(s)})' for s in settings], fontsize=7, rotation=20, ha='right')
    ax.set_ylabel('final return / HF-only mean', fontsize=8)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    final_png = folder / 'final_returns.png'
    fig.savefig(final_png, dpi=70)
    plt.close(fig)
    return [curves_png, final_png]


def update_doc(doc: Path, block: str) -> None:
    """Replace the text between the report markers in doc (append the block if there are no markers)."""
    text = doc.read_text() if doc.exists() else ''
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + '\n' + block + '\n' + END + rest.split(END, 1)[1]
    else:
        text += f'\n{BEGIN}\n{block}\n{END}\n'
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='mfpg bench report', description=__doc__)
    parser.add_argument('--out', default='bench_out/quick', help='the suite results folder')
    parser.add_argument('--figures', default=None, help='where to write the PNGs (default: OUT/report)')
    parser.add_argument('--update-doc', default=None,
                        help=f'markdown file whose {BEGIN} ... {END} block receives the tables and figure links')
    args = parser.parse_args(argv)
    out = Path(args.out)
    curves, summaries = load(out)
    if not summaries:
        parser.error(f'no finished runs under {out}/runs')
    results = analyse(curves, summaries)
    figures = Path(args.figures) if args.figures else out / 'report'
    pngs = plot(results, figures)
    table = tables(results, summaries)
    goal_lines, medians = [], []
    for mf in mf_methods(results):
        lines, median = goals(results, mf)
        goal_lines += ['', *lines] if goal_lines else lines
        medians.append(median)
    report = '\n'.join([table, '', *goal_lines])
    (figures / 'results_table.md').write_text(report + '\n')
    if args.update_doc:
        doc = Path(args.update_doc)
        links = [f'![{p.stem}]({_relative(p, doc.parent)})' for p in pngs]
        update_doc(doc, '\n'.join([f'Generated by `mfpg bench report` from {len(summaries)} runs in `{out}`.', '',
                                   report, '', *links]))
    print(report)
    print(f'figures: {", ".join(str(p) for p in pngs)}')
    print(f'median_return_ratio_mf_vs_hf: {_fmt(medians[0] if medians else float("nan"), ".3f", "nan")}')
    return 0


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
