"""This tree against another revision, in the same window: alternating single runs.

On a machine whose speed drifts by a fifth within minutes, a 5-run set of one tree
and a 5-run set of another, taken minutes apart, compare the machine as much as the
trees. This runs `apply.py --runs 1` in each tree in turn (the order swapped every
pair), so both see the same periods, and reports each tree's median, min and max
per figure and in how many pairs this tree's agent/papi ratio was the lower one.
The other revision is checked out in a temporary git worktree and run with this
venv's Python (`apply.py` puts its own tree first on the path); it must have an
`apply.py` with --runs, --targets and --out.

    .venv/bin/python scripts/bench/ab.py --base d1392d6 --pairs 10 --out ab.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {  # name in the result -> (side, key) in apply.py's run entry
    "agent_s": ("agent", "wall_s"),
    "papi_s": ("papi", "wall_s"),
    "ratio": (None, "ratio_to_papi"),
    "client_s": ("client", "wall_s"),
    "agent_cpu_s": ("agent", "client_cpu_s"),
    "vpp_cpu_agent_run_s": ("agent", "vpp_cpu_s"),
    "vpp_cpu_papi_run_s": ("papi", "vpp_cpu_s"),
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def one_run(tree: Path, peers: int, target: str, out: Path) -> dict[str, Any]:
    """One apply run in `tree`: its figures, read from the JSON apply.py writes."""
    subprocess.run([sys.executable, str(tree / "scripts/bench/apply.py"), "--peers", str(peers),
                    "--runs", "1", "--targets", target, "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads(out.read_text())["targets"][target][str(peers)]
    if result.get("failed_runs"):
        raise RuntimeError(f"{tree}: the run failed: {result['failed_runs']}")
    run = result["runs"][0]
    return {name: (run[side] if side else run).get(key) for name, (side, key) in FIGURES.items()}


def summary(values: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out = {}
    for name in FIGURES:
        seen = [v[name] for v in values if v[name] is not None]
        if seen:
            out[name] = {"median": round(statistics.median(seen), 3), "min": min(seen),
                         "max": max(seen)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--target", choices=["vpp", "vppsim"], default="vpp")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    base = git("rev-parse", "--short", args.base)
    this = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        this += "+changes"  # the working tree is what runs
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp:
        work = Path(tmp)
        other = work / "base"
        git("worktree", "add", "--detach", str(other), base)
        try:
            runs: dict[str, list[dict[str, Any]]] = {this: [], base: []}
            trees = {this: ROOT, base: other}
            for i in range(args.pairs):
                order = [this, base] if i % 2 == 0 else [base, this]
                for name in order:
                    runs[name].append(one_run(trees[name], args.peers, args.target,
                                              work / f"{name}-{i}.json"))
                print(f"pair {i + 1}/{args.pairs}: " + ", ".join(
                    f"{n} {runs[n][-1]['ratio']}x" for n in (this, base)), flush=True)
        finally:
            git("worktree", "remove", "--force", str(other))
    lower = sum(a["ratio"] < b["ratio"] for a, b in zip(runs[this], runs[base], strict=True))
    result = {
        "what": f"apply {args.peers} peers into {args.target}, one run each, alternating: "
                f"{this} vs {base}, {args.pairs} pairs",
        "pairs": [{this: a, base: b} for a, b in zip(runs[this], runs[base], strict=True)],
        this: summary(runs[this]), base: summary(runs[base]),
        "this_ratio_lower_in": lower,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    for name in (this, base):
        s = result[name]
        print(f"{name}: agent {s['agent_s']['median']} s, papi {s['papi_s']['median']} s, "
              f"ratio {s['ratio']['median']}x ({s['ratio']['min']}-{s['ratio']['max']})")
    print(f"{this}'s ratio the lower in {lower} of {args.pairs} pairs")


if __name__ == "__main__":
    main()
