#!/usr/bin/env python3
"""Turns the JSON of bench_norms or bench_layers (--benchmark_out=FILE --benchmark_out_format=json)
into a markdown table: time per call, GFLOP/s or GB/s, time over a plain copy of the same bytes
(x copy), and for the norms the time over the vendor library's BN of the same shape and pass
(BatchNorm_onednn on the CPU, BatchNorm_cudnn on the GPU; --baseline picks another op). Rows
measured in another layout (names ending in /nchw8c, /nchw16c) show it after the device, and so
do CPU convolutions run with a chosen algorithm (/nchw16c/direct, /nchw16c/winograd).

usage: perf/summarize.py bench.json [--baseline BatchNorm]
"""
import argparse
import json
import sys

UNIT_MS = {"ms": 1, "us": 1e-3, "ns": 1e-6, "s": 1e3}


def rate(b, key):
    """Google Benchmark writes rate counters per second; older versions scale them by 1e9."""
    v = b.get(key)
    return None if v is None else (v / 1e9 if v > 1e6 else v)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json_file")
    ap.add_argument("--baseline", default=None,
                    help="op to divide by (default: the vendor library's BN of each device)")
    args = ap.parse_args()
    try:
        with open(args.json_file) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"summarize: cannot read {args.json_file}: {e}")
    rows = {}
    for b in data.get("benchmarks", []):
        if b.get("error_occurred") or b.get("run_type") == "aggregate":
            continue
        parts = b["name"].replace("/real_time", "").split("/")
        if len(parts) > 4:  # Op/pass/shape/device/layout[/algorithm] (CPU rows in nchw8c, ...)
            parts = parts[:3] + [" ".join(parts[3:])]
        if len(parts) != 4:
            continue
        ms = b["real_time"] * UNIT_MS[b["time_unit"]]
        rows[tuple(parts)] = (ms, rate(b, "GFLOP/s"), rate(b, "GB/s"), b.get("vs_copy"))
    norms = any(k[0].startswith("BatchNorm") for k in rows)

    def base_op(dev):
        return args.baseline or ("BatchNorm_onednn" if dev == "cpu" else "BatchNorm_cudnn")

    head = "| op | pass | shape | device | ms | GFLOP/s | GB/s | x copy |"
    print(head + (f" x {args.baseline or 'vendor BN'} |" if norms else ""))
    print("|---" * (head.count("|") - 1 + (1 if norms else 0)) + "|")
    fmt = lambda v, p: "-" if v is None else f"{v:.{p}f}"
    # devices, then shapes in the order the suite ran them, then pass and op (norms: side by side
    # per pass, to compare with the vendor BN) or op and pass
    first = {}
    for k in rows:
        first.setdefault(k[2], len(first))
    order = (lambda k: (k[1], k[0])) if norms else (lambda k: (k[0], k[1]))
    for key in sorted(rows, key=lambda k: (k[3], first[k[2]], *order(k))):
        op, pas, shape, dev = key
        ms, gflops, gbs, vs_copy = rows[key]
        line = (f"| {op} | {pas} | {shape} | {dev} | {ms:.3f} | {fmt(gflops, 1)} | {fmt(gbs, 1)} "
                f"| {fmt(vs_copy, 2)} |")
        if norms:
            device = dev.split()[0]  # the vendor BN of the device, in its plain layout
            base = rows.get((base_op(device), pas, shape, device))
            line += f" {ms / base[0]:.2f} |" if base else " - |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
