#!/usr/bin/python3
"""e2e_report.py NAME REPORT.json IO_FILE TIMES_FILE TORCH.json OUT_DIR - the tables of
bench_e2e.sh: wall times and their ratio, cloq's stage breakdown and I/O, the baseline's stages,
and the per-layer mean calibrated errors of both. Missing torch output: cloq's side only."""
import json
import os
import sys

name, rep_path, io_path, times_path, torch_path, out_dir = sys.argv[1:7]
rep = json.load(open(rep_path))
io = {}
for line in open(io_path):
    k, v = line.split(":")
    io[k.strip()] = int(v)
times = {}
for line in open(times_path):
    side, t0, t1, l0, l1 = line.split()
    times[side] = (float(t1) - float(t0), l0, l1)
tj = json.load(open(torch_path)) if os.path.exists(torch_path) else None

print("| %s | wall s | load 1m (start-end) |" % name)
print("|---|---|---|")
for side, (s, l0, l1) in times.items():
    print("| %s | %.1f | %s-%s |" % (side, s, l0, l1))
if "torch" in times:
    print("time ratio torch / cloq: %.2fx (same run, same %s threads)" % (times["torch"][0] / times["cloq"][0],
                                                                          rep["settings"]["threads"]))

rs = rep["run_seconds"]
tot = rs["total"]
print()
print("cloq stages (report.json run_seconds; read = weights + activation-cache reads incl. decompression,")
print("write = cache appends/commits + shards incl. compression and fsync):")
print("| stage | s | share |")
print("|---|---|---|")
for k in ["read", "statistics", "quantize", "solve", "propagate", "write"]:
    print("| %s | %.1f | %.0f%% |" % (k, rs[k], 100 * rs[k] / tot))
print("| total | %.1f | |" % tot)
print("(statistics and propagate include their cache reads; the stage sums overlap by those reads)")
iosh = (rs["read"] + rs["write"]) / tot
print("I/O: %.0f%% of cloq's wall time is in its read+write stages (CPU (de)compression included; the"
      " disk is not waited on separately); bytes from/to the block device %.0f MB / %.0f MB, syscall bytes"
      " %.0f MB / %.0f MB; peak RSS %.2f GiB" % (100 * iosh, io.get("read_bytes", 0) / 1e6,
                                                io.get("write_bytes", 0) / 1e6, io.get("rchar", 0) / 1e6,
                                                io.get("wchar", 0) / 1e6, rep.get("peak_rss_gib", 0)))
if tj:
    ts = tj["run_seconds"]
    print()
    print("torch stages (report = the error evaluation, which cloq does inside solve):")
    print("| stage | s | share |")
    print("|---|---|---|")
    for k in ["read", "statistics", "quantize", "solve", "propagate", "report"]:
        print("| %s | %.1f | %.0f%% |" % (k, ts[k], 100 * ts[k] / ts["total"]))
    print("| total | %.1f | |" % ts["total"])
    print("stage ratios torch / cloq: statistics+propagate %.1fx, quantize %.1fx, solve(+report) %.1fx" % (
        (ts["statistics"] + ts["propagate"]) / max(rs["statistics"] + rs["propagate"], 1e-9),
        ts["quantize"] / max(rs["quantize"], 1e-9), (ts["solve"] + ts["report"]) / max(rs["solve"], 1e-9)))

print()
print("per-layer mean calibrated relative error ||X (W - Q - sBA)^T|| / ||X W^T|| over the 7 linears:")
hdr = "| layer | cloq quantized | cloq final |"
if tj:
    hdr += " torch quantized | torch final | diff quantized | diff final | max per-linear diff final |"
print(hdr)
print("|" + "---|" * (hdr.count("|") - 1))
worst = 0.0
for lc in rep["layers"]:
    lins = lc["linears"]
    cq = sum(e["quantized"] for e in lins) / len(lins)
    cf = sum(e["final"] for e in lins) / len(lins)
    row = "| %d | %.5f | %.5f |" % (lc["layer"], cq, cf)
    if tj:
        lt = tj["layers"][lc["layer"]]["linears"]
        tq = sum(v["quantized"] for v in lt.values()) / len(lt)
        tf = sum(v["final"] for v in lt.values()) / len(lt)
        mx = max(abs(lt[e["name"]]["final"] / e["final"] - 1) for e in lins)
        worst = max(worst, abs(tf / cf - 1))
        row += " %.5f | %.5f | %+.2f%% | %+.2f%% | %.2f%% |" % (tq, tf, 100 * (tq / cq - 1), 100 * (tf / cf - 1), 100 * mx)
    print(row)
if tj:
    print("largest per-layer difference of the mean final error: %.2f%% (target: within 1%%) -> %s" % (
        100 * worst, "ok" if worst <= 0.01 else "ABOVE TARGET"))
