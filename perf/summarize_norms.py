#!/usr/bin/env python3
"""Turns bench_norms' JSON (--benchmark_out=FILE --benchmark_out_format=json) into a markdown table:
time per pass, GB/s, time over a plain copy of the same bytes, and time over the baseline BN
(by default the vendor library's: BatchNorm_onednn on the CPU, BatchNorm_cudnn on the GPU) of the same shape and pass.

usage: perf/summarize_norms.py bench.json [--baseline BatchNorm]
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json_file")
    ap.add_argument("--baseline", default=None,
                    help="op to divide by (default: the vendor library's BN of each device)")
    args = ap.parse_args()
    with open(args.json_file) as f:
        data = json.load(f)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b["name"].replace("/real_time", "")
        op, pas, shape, dev = name.split("/")
        ms = b["real_time"] * {"ms": 1, "us": 1e-3, "ns": 1e-6, "s": 1e3}[b["time_unit"]]
        rows[(op, pas, shape, dev)] = (ms, b.get("GB/s", 0) / 1e9 if b.get("GB/s", 0) > 1e6 else b.get("GB/s", 0),
                                       b.get("vs_copy", 0))
    ops = sorted({k[0] for k in rows})
    def base_op(dev):
        return args.baseline or ("BatchNorm_onednn" if dev == "cpu" else "BatchNorm_cudnn")
    print(f"| op | pass | shape | device | ms | GB/s | x copy | x {args.baseline or 'vendor BN'} |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(rows, key=lambda k: (k[3], k[2], k[1], k[0])):
        op, pas, shape, dev = key
        ms, gbs, vs_copy = rows[key]
        base = rows.get((base_op(dev), pas, shape, dev))
        ratio = f"{ms / base[0]:.2f}" if base else "-"
        print(f"| {op} | {pas} | {shape} | {dev} | {ms:.3f} | {gbs:.1f} | {vs_copy:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
