"""Medians and ratios of the RESULT lines that benches/compare-queue collected.

Prints a Markdown table, then `RESULT system=... test=... key=median` and one
`RESULT system=ratio test=... key=value` line per comparison the performance targets name."""

import statistics
import sys
from collections import defaultdict

values = defaultdict(list)
for line in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in line.split()[1:])
    system, test = fields.pop("system"), fields.pop("test")
    for key, value in fields.items():
        values[(system, test, key)].append(float(value))

median = {k: statistics.median(v) for k, v in values.items()}
print("| system | test | measurement | runs | median |")
print("| --- | --- | --- | --- | ---: |")
for (system, test, key), runs in sorted(values.items()):
    shown = ", ".join(f"{v:.1f}" for v in runs)
    print(f"| {system} | {test} | {key} | {shown} | {median[(system, test, key)]:.1f} |")
print()
for (system, test, key), m in sorted(median.items()):
    print(f"RESULT system={system} test={test} {key}={m:.3f}")

# (what, numerator, denominator, target)
comparisons = [
    ("drain c16 vs graphile local queue", ("infrahub", "drain", "c16_jobs_per_s"),
     ("graphile-worker-localqueue", "drain", "c16_jobs_per_s"), ">= 1.0"),
    ("drain c16 vs graphile default", ("infrahub", "drain", "c16_jobs_per_s"),
     ("graphile-worker", "drain", "c16_jobs_per_s"), "-"),
    ("batched enqueue vs graphile addJobs", ("infrahub", "enqueue", "batched_jobs_per_s"),
     ("graphile-worker", "enqueue", "batched_jobs_per_s"), ">= 1.0 (and >= 70k/s)"),
    ("single enqueue vs bare INSERT", ("infrahub", "enqueue", "single_jobs_per_s"),
     ("skip-locked-baseline", "enqueue", "single_jobs_per_s"), ">= 0.9"),
    ("pickup p50 vs LISTEN baseline", ("infrahub", "pickup", "p50_ms"),
     ("skip-locked-baseline", "pickup", "p50_ms"), "<= 1 ms absolute"),
    ("pickup p99 vs LISTEN baseline", ("infrahub", "pickup", "p99_ms"),
     ("skip-locked-baseline", "pickup", "p99_ms"), "<= 3 ms absolute"),
]
print()
print("| comparison | InfraHub | peer | ratio | target |")
print("| --- | ---: | ---: | ---: | --- |")
for what, mine, peer, target in comparisons:
    if mine in median and peer in median and median[peer]:
        ratio = median[mine] / median[peer]
        print(f"| {what} | {median[mine]:.1f} | {median[peer]:.1f} | {ratio:.2f} | {target} |")
        print(f"RESULT system=ratio test={mine[1]} {what.replace(' ', '_')}={ratio:.3f}")
